"""Nearest-code search for vector quantisation (VQ-VAE): public entry point, checks, dispatch.

For each row of ``x [N, d]`` the nearest row of ``codebook [K, d]`` under the squared
Euclidean distance or the cosine distance (``1 - cos``); see :mod:`.reference` for the exact
float32 arithmetic, the tie rule (lowest index) and zero-norm vectors. :mod:`.triton_nearest`
fuses the distances and the argmin in one Triton kernel (the ``N x K`` matrix is never
materialised; the reference bounds it to chunks of rows).

No backward: the argmin is not differentiable, and both paths run under ``no_grad`` (a VQ
layer gets its gradient through the straight-through estimator on ``codebook[indices]``).
Under ``torch.compile`` the entry point runs the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hazyzoo.kernels._utils import check_float, check_rank, check_same_device
from hazyzoo.kernels.dispatch import ExampleInputs, call_op, register_op, triton_available
from hazyzoo.kernels.nearest_code.reference import DISTANCES, nearest_code_reference

__all__ = ["nearest_code", "nearest_code_reference"]

if triton_available():
    from hazyzoo.kernels.nearest_code.triton_nearest import INTERPRETED as _INTERPRETED
    from hazyzoo.kernels.nearest_code.triton_nearest import nearest_code_triton
else:
    _INTERPRETED, nearest_code_triton = False, None


def _check_inputs(x: Tensor, codebook: Tensor, distance: str) -> None:
    check_float("x", x)
    check_float("codebook", codebook)
    check_rank("x", x, 2, "[N, d]")
    check_rank("codebook", codebook, 2, "[K, d]")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be [N, d] with N >= 1 and d >= 1, got shape {tuple(x.shape)}")
    if codebook.shape[0] < 1:
        raise ValueError(f"codebook must be [K, d] with K >= 1, got shape {tuple(codebook.shape)}")
    if codebook.shape[1] != x.shape[1]:
        raise ValueError(
            f"codebook must be [K, d] with d = {x.shape[1]} (the last dim of x), got shape "
            f"{tuple(codebook.shape)}"
        )
    check_same_device(x=x, codebook=codebook)
    if not isinstance(distance, str) or distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def nearest_code(x: Tensor, codebook: Tensor, distance: str = "euclidean") -> tuple[Tensor, Tensor]:
    """The nearest code of each row of ``x``.

    Args:
        x: ``[N, d]`` (N, d >= 1), float32 / bfloat16 / float16, any strides.
        codebook: ``[K, d]`` (K >= 1), float32 / bfloat16 / float16, on x's device.
        distance: ``"euclidean"`` (squared L2) or ``"cosine"`` (``1 - cos``).

    Returns:
        ``(indices [N] int64, distances [N] float32)``; ties go to the lowest index. Computed
        in float32 (half inputs are multiplied exactly and accumulated in float32; float32
        inputs on the GPU by tf32x3 products, relative distance error ~5e-7, so an index can
        differ from the reference's only between codes that close). Triton on
        CUDA tensors, the reference elsewhere; ``HAZYZOO_KERNELS`` forces either. Not
        differentiable.
    """
    _check_inputs(x, codebook, distance)
    if torch.compiler.is_compiling():  # Dynamo does not trace the Triton launch
        return nearest_code_reference(x, codebook, distance)
    return call_op("nearest_code", (x, codebook), x, codebook, distance)


def _example_inputs() -> ExampleInputs:
    """``x [6, 20]`` against ``codebook [18, 20]`` (float32): more than one block of codes and
    of ``d`` when interpreted."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 20, generator=gen)
    codebook = torch.randn(18, 20, generator=gen)
    return (x, codebook), {"distance": "euclidean"}


register_op(
    "nearest_code",
    entry=nearest_code,
    reference=nearest_code_reference,
    triton=nearest_code_triton,
    example_inputs=_example_inputs,
)
