"""RMSNorm: public entry point, input checks and dispatch.

For ``x [..., D]`` and ``weight [D]``::

    y = x * rsqrt(mean(x**2, dim=-1) + eps) * weight      (computed in float32)

returned in ``weight.dtype``. The mixed-dtype case is the point: the models keep the residual
stream in float32 and the weights in bfloat16, and the next projection wants a bfloat16 input,
so the norm both normalises and casts in one pass.

Why a kernel: the decode step of a 36-layer model is launch-bound, and the PyTorch formula is
about nine kernels (cast, square, mean, add, rsqrt, two multiplies, casts) where this is one.

Layout: :mod:`.reference` holds the spec (plain differentiable PyTorch), :mod:`.fused` the
Triton forward and backward kernels (imported only when triton imports). :func:`rms_norm`
validates and dispatches through :func:`hazyzoo.kernels.dispatch.call_op`.

The Triton kernels need ``TRITON_INTERPRET=1`` set *before this package is imported* to run on
CPU tensors (that is how the tests run them); on CUDA tensors they are compiled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hazyzoo.kernels._utils import check_float
from hazyzoo.kernels.dispatch import ExampleInputs, call_op, register_op, triton_available
from hazyzoo.kernels.rms_norm.reference import rms_norm_reference

__all__ = ["rms_norm"]

if triton_available():
    from hazyzoo.kernels.rms_norm.fused import INTERPRETED as _INTERPRETED
    from hazyzoo.kernels.rms_norm.fused import rms_norm_triton
else:
    _INTERPRETED, rms_norm_triton = False, None


def _check_inputs(x: Tensor, weight: Tensor, eps: float) -> None:
    check_float("x", x)
    check_float("weight", weight)
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be [..., D] with D >= 1, got shape {tuple(x.shape)}")
    dim = x.shape[-1]
    if tuple(weight.shape) != (dim,):
        raise ValueError(
            f"weight must be [D] = [{dim}] (D is the last dim of x), got shape "
            f"{tuple(weight.shape)}"
        )
    if x.device != weight.device:
        raise ValueError(
            f"x and weight must be on one device, got x on {x.device}, weight on {weight.device}"
        )
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """Root-mean-square layer norm over the last dim, output in ``weight.dtype``.

    Args:
        x: ``[..., D]``, float32 / bfloat16 / float16, any strides (e.g. a float32 residual).
        weight: ``[D]``, float32 / bfloat16 / float16, on x's device.
        eps: added to ``mean(x^2)`` before the reciprocal square root.

    Returns:
        ``x * rsqrt(mean(x^2, -1) + eps) * weight`` computed in float32 and cast to
        ``weight.dtype``, shape of ``x``. Differentiable w.r.t. ``x`` (gradient in x.dtype) and
        ``weight`` (gradient in weight.dtype). Runs one Triton kernel on CUDA tensors (D <= 8192)
        and the PyTorch reference elsewhere; ``HAZYZOO_KERNELS`` forces either.
    """
    _check_inputs(x, weight, eps)
    return call_op("rms_norm", (x, weight), x, weight, eps)


def _example_inputs() -> ExampleInputs:
    """A float32 ``x [3, 8]`` and a bfloat16 weight: the models' mixed-dtype case."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, generator=gen)
    weight = torch.randn(8, generator=gen).to(torch.bfloat16)
    return (x, weight), {"eps": 1e-6}


register_op(
    "rms_norm",
    entry=rms_norm,
    reference=rms_norm_reference,
    triton=rms_norm_triton,
    example_inputs=_example_inputs,
)
