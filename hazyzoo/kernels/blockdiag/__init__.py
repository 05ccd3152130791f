"""Block-diagonal matmul (Monarch Mixer's MLP matrices): public entry point, checks, dispatch.

For ``x [..., nb * in_per]``, ``weight [nb, out_per, in_per]`` and an optional
``bias [nb * out_per]``::

    y[..., k * out_per : (k + 1) * out_per] = x[..., k * in_per : (k + 1) * in_per] @ weight[k].T
    y += bias

i.e. ``x @ torch.block_diag(*weight).T + bias`` without building the dense matrix: ``nb`` times
fewer FLOPs and weight bytes than the dense layer of the same shape. Blocks are contiguous and
the outputs are concatenated in block order (no shuffle), as M2's ``BlockdiagLinear``.

Why a kernel: written with einsum or bmm, the blocks need the input regrouped as
``[nb, rows, in_per]`` and the output regrouped back (two copies of activations that are the
bulk of the layer's memory traffic at M2-BERT's 32k-256k rows) and a separate bias add. The
Triton kernel reads the blocks in place, adds the bias and writes ``[..., nb * out_per]``
directly, in one launch.

Layout: :mod:`.reference` holds the spec (plain differentiable PyTorch), :mod:`.grouped` the
Triton forward / backward (imported only when triton imports). :func:`block_diagonal_matmul`
validates and dispatches through :func:`hazyzoo.kernels.dispatch.call_op`: Triton for CUDA
tensors, the reference elsewhere, ``HAZYZOO_KERNELS`` forces either (on CPU tensors Triton needs
``TRITON_INTERPRET=1`` set before this package is imported).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hazyzoo.kernels._utils import check_float, check_rank, check_same_device, check_shape
from hazyzoo.kernels.blockdiag.reference import (
    block_diagonal_matmul_native,
    block_diagonal_matmul_reference,
)
from hazyzoo.kernels.dispatch import ExampleInputs, call_op, register_op, triton_available

__all__ = ["block_diagonal_matmul", "block_diagonal_matmul_reference"]

if triton_available():
    from hazyzoo.kernels.blockdiag.grouped import INTERPRETED as _INTERPRETED
    from hazyzoo.kernels.blockdiag.grouped import block_diagonal_matmul_triton
else:  # pragma: no cover - exercised on machines without triton
    _INTERPRETED, block_diagonal_matmul_triton = False, None


def _check_inputs(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """Types, dtypes, ranks, shapes and devices, each error naming the argument."""
    check_float("x", x)
    check_float("weight", weight)
    if bias is not None:
        check_float("bias", bias)
    check_rank("weight", weight, 3, "[nb, out_per, in_per]")
    nblocks, out_per, in_per = weight.shape
    if min(weight.shape) < 1:
        raise ValueError(
            f"weight must be [nb, out_per, in_per] with every dim >= 1, got shape "
            f"{tuple(weight.shape)}"
        )
    if x.dim() < 1 or x.shape[-1] != nblocks * in_per:
        raise ValueError(
            f"x must be [..., nb * in_per] = [..., {nblocks} * {in_per} = {nblocks * in_per}] "
            f"(nb, in_per from weight [nb, out_per, in_per]), got shape {tuple(x.shape)}"
        )
    if bias is not None:
        check_shape("bias", bias, (nblocks * out_per,), "[nb * out_per]")
    tensors = (
        {"x": x, "weight": weight} if bias is None else {"x": x, "weight": weight, "bias": bias}
    )
    check_same_device(**tensors)


def _check_dtypes(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(
                f"{name} has dtype {t.dtype} but x has {x.dtype}: x, weight and bias must share "
                "a dtype (as for nn.Linear; under torch.autocast all three are cast to its dtype)"
            )


def block_diagonal_matmul(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x`` times the block-diagonal matrix with blocks ``weight[k]``, plus ``bias``.

    Args:
        x: ``[..., nb * in_per]``, float32 / bfloat16 / float16, any number of leading dims,
            any strides.
        weight: ``[nb, out_per, in_per]``: block ``k`` maps ``x``'s ``k``-th ``in_per`` columns
            to the output's ``k``-th ``out_per`` columns. Same dtype and device as ``x``.
        bias: optional ``[nb * out_per]``, same dtype and device as ``x``.

    Returns:
        ``y [..., nb * out_per]`` in ``x.dtype``, products summed in float32. Differentiable
        w.r.t. all three. Inside ``torch.autocast`` the three inputs are first cast to the
        autocast dtype (as ``nn.Linear``'s are). One Triton launch on CUDA tensors (a grouped
        GEMM, see :mod:`.grouped`), the PyTorch reference elsewhere; ``HAZYZOO_KERNELS``
        forces either. Under ``torch.compile``: one batched matmul in the inputs' dtype
        (:func:`.reference.block_diagonal_matmul_native`), which the compiler plans itself.
    """
    _check_inputs(x, weight, bias)
    if torch.compiler.is_compiling():
        _check_dtypes(x, weight, bias)
        return block_diagonal_matmul_native(x, weight, bias)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        # Already cast: the reference's float32 einsum must not be cast down again.
        with torch.autocast(device_type, enabled=False):
            return call_op("block_diagonal_matmul", (x, weight, bias), x, weight, bias)
    _check_dtypes(x, weight, bias)
    return call_op("block_diagonal_matmul", (x, weight, bias), x, weight, bias)


def _example_inputs() -> ExampleInputs:
    """``x [2, 3, 12]`` through 3 blocks of ``[5, 4]``, with a bias (float32)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, generator=gen)
    weight = torch.randn(3, 5, 4, generator=gen)
    bias = torch.randn(15, generator=gen)
    return (x, weight), {"bias": bias}


register_op(
    "block_diagonal_matmul",
    entry=block_diagonal_matmul,
    reference=block_diagonal_matmul_reference,
    triton=block_diagonal_matmul_triton,
    example_inputs=_example_inputs,
)
