"""Block-diagonal matmul in PyTorch: the spec the Triton kernels are tested against (plain,
vectorised, differentiable)."""

from __future__ import annotations

import torch
from torch import Tensor


def block_diagonal_matmul_reference(
    x: Tensor, weight: Tensor, bias: Tensor | None = None
) -> Tensor:
    """``y[..., k, :] = x[..., k, :] @ weight[k].T (+ bias)`` per block ``k``, in float32.

    ``x [..., nb * in_per]`` is split into ``nb`` contiguous blocks of ``in_per``; block ``k``
    is multiplied by ``weight[k]`` (``[out_per, in_per]``) and the ``nb`` outputs are
    concatenated in block order into ``[..., nb * out_per]``; ``bias [nb * out_per]`` is added.
    Products and sums are float32 (inputs upcast), the result is cast back to ``x.dtype``.
    """
    nblocks, out_per, in_per = weight.shape
    lead = x.shape[:-1]
    blocks = x.float().reshape(*lead, nblocks, in_per)
    y = torch.einsum("...ki,koi->...ko", blocks, weight.float()).reshape(*lead, nblocks * out_per)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def block_diagonal_matmul_native(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The same product as one batched matmul in the inputs' dtype (cuBLAS and the CPU BLAS
    accumulate in float32 themselves): the path used under ``torch.compile``, which lowers it
    to its own GEMM (Dynamo cannot trace the autotuned Triton launcher)."""
    nblocks, out_per, in_per = weight.shape
    lead = x.shape[:-1]
    blocks = x.reshape(*lead, nblocks, in_per)
    y = torch.einsum("...ki,koi->...ko", blocks, weight).reshape(*lead, nblocks * out_per)
    return y if bias is None else y + bias
