"""RMSNorm: PyTorch reference, Triton forward and backward kernels, dispatch.

For ``x [..., D]`` and ``weight [D]``::

    y = x * rsqrt(mean(x**2, dim=-1) + eps) * weight      (computed in float32)

returned in ``weight.dtype``. The mixed-dtype case is the point: the models keep the residual
stream in float32 and the weights in bfloat16, and the next projection wants a bfloat16 input,
so the norm both normalises and casts in one pass.

Why a kernel: the decode step of a 36-layer model is launch-bound, and the PyTorch formula is
about nine kernels (cast, square, mean, add, rsqrt, two multiplies, casts) where this is one.
The backward is one kernel too (plus a ``sum(0)`` over per-program partial weight gradients).

Public op: :func:`rms_norm`, dispatching through :func:`hazyzoo.kernels.dispatch.use_triton`
to :func:`_rms_norm_reference` (the spec; plain differentiable PyTorch) or the Triton path
(:class:`_RMSNormFunction`, differentiable w.r.t. ``x`` and ``weight``).

Precision: all arithmetic is float32. ``dx`` comes back in ``x.dtype`` and ``dweight`` in
``weight.dtype``; the weight gradient is accumulated over rows in float32 before that cast.

The Triton kernels need ``TRITON_INTERPRET=1`` set *before this module is imported* to run on
CPU tensors (that is how the tests run them); on CUDA tensors they are compiled.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import Tensor

from hazyzoo.kernels.dispatch import triton_available, triton_interpreting, use_triton

__all__ = ["rms_norm"]

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_D = 8192

# Whether the Triton kernels below were defined for the CPU interpreter. Triton decides this
# when a kernel is decorated, so it is fixed at import time (tests check it).
_INTERPRETED = triton_interpreting()

# Most rows one program handles at once. Small when interpreting so that the tests' few rows
# still spread over several programs (and the backward's row loop runs more than once).
_MAX_BLOCK_M = 4 if _INTERPRETED else 64
# Elements in one program's [BLOCK_M, BLOCK_D] tile when several rows fit (small D).
_TILE_ELEMENTS = 2048


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _KERNEL_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in _KERNEL_DTYPES)
        raise ValueError(f"{name} has dtype {t.dtype}; allowed: {names}")


def _check_inputs(x: Tensor, weight: Tensor, eps: float) -> None:
    _check_float("x", x)
    _check_float("weight", weight)
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


def _check_triton_dim(dim: int) -> None:
    if dim > _MAX_D:
        raise ValueError(
            f"the Triton RMSNorm kernels support D <= {_MAX_D} (last dim of x), got D={dim}; "
            "use HAZYZOO_KERNELS=torch"
        )


# --------------------------------------------------------------------------------------------
# PyTorch reference (the spec)
# --------------------------------------------------------------------------------------------


def _rms_norm_reference(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """``(x * rsqrt(mean(x^2) + eps) * weight)`` in float32, cast to ``weight.dtype``."""
    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (xf * rstd * weight.float()).to(weight.dtype)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _rms_norm_fwd_kernel(
        X,
        W,
        Y,
        RSTD,
        n_rows,
        D,
        stride_x,
        eps,
        BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """Grid (row blocks,). Each program normalises BLOCK_M whole rows (BLOCK_D >= D) and
        writes ``y`` in Y's dtype and ``rstd`` in float32 for the backward."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_D)
        row_ok = rows < n_rows
        col_ok = cols < D
        mask = row_ok[:, None] & col_ok[None, :]
        rows64 = rows.to(tl.int64)
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
        x = x.to(tl.float32)
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
        y = x * rstd[:, None] * w[None, :]
        tl.store(Y + rows64[:, None] * D + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
        tl.store(RSTD + rows, rstd, mask=row_ok)

    @triton.jit
    def _rms_norm_bwd_kernel(
        X,
        W,
        DY,
        RSTD,
        DX,
        DW_PARTIAL,
        n_rows,
        D,
        stride_x,
        stride_dy,
        rows_per_program,
        BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr,
        STORE_DX: tl.constexpr,
        STORE_DW: tl.constexpr,
    ):
        """Grid (programs,). Program ``p`` walks rows ``[p * rows_per_program, ...)`` (a
        multiple of BLOCK_M) BLOCK_M at a time, writes ``dx`` for them and, summed over them in
        float32, its partial weight gradient ``DW_PARTIAL[p] = sum_rows dy * xhat``."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_D)
        col_ok = cols < D
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        row0 = pid * rows_per_program
        end = tl.minimum(row0 + rows_per_program, n_rows)
        # A while loop, not range() over a runtime bound: triton 3.6's interpreter fails on
        # the latter (seen with NumPy 2.5: it converts a 1-element array with int()).
        while row0 < end:
            rows = row0 + tl.arange(0, BLOCK_M)
            row_ok = rows < end
            mask = row_ok[:, None] & col_ok[None, :]
            rows64 = rows.to(tl.int64)
            x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
            dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0)
            rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
            xhat = x.to(tl.float32) * rstd[:, None]
            dy = dy.to(tl.float32)
            if STORE_DX:
                wdy = dy * w[None, :]
                c = tl.sum(wdy * xhat, axis=1) / D
                dx = (wdy - xhat * c[:, None]) * rstd[:, None]
                tl.store(
                    DX + rows64[:, None] * D + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask
                )
            if STORE_DW:
                dw += dy * xhat
            row0 += BLOCK_M
        if STORE_DW:
            tl.store(DW_PARTIAL + pid * D + cols, tl.sum(dw, axis=0), mask=col_ok)


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _launch_shape(rows: int, dim: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_D, num_warps)``: whole rows per program (BLOCK_D = next power of 2 of
    D), several rows when D is small, and about 256 tile elements per warp (at most 16)."""
    block_d = _pow2(dim)
    block_m = max(1, min(_MAX_BLOCK_M, _TILE_ELEMENTS // block_d, _pow2(rows)))
    num_warps = max(1, min(16, block_m * block_d // 256))
    return block_m, block_d, num_warps


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _device_guard(t: Tensor) -> contextlib.AbstractContextManager:
    """Launch on ``t``'s GPU when it is not the current one (layers spread over GPUs). Entering
    ``torch.cuda.device`` costs microseconds, which a launch-bound decode step notices."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _as_rows(t: Tensor, dim: int) -> Tensor:
    """``t`` as ``[rows, D]`` with unit column stride (a view when possible, else a copy)."""
    t = t.reshape(-1, dim)
    return t if t.stride(1) == 1 else t.contiguous()


def _rms_norm_fwd_triton(x2: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Forward over ``x2 [rows, D]``: ``y [rows, D]`` in weight.dtype and ``rstd [rows]``."""
    rows, dim = x2.shape
    y = torch.empty(rows, dim, dtype=weight.dtype, device=x2.device)
    rstd = torch.empty(rows, dtype=torch.float32, device=x2.device)
    if rows == 0:
        return y, rstd
    block_m, block_d, num_warps = _launch_shape(rows, dim)
    with _device_guard(x2):
        _rms_norm_fwd_kernel[(triton.cdiv(rows, block_m),)](
            x2, weight, y, rstd, rows, dim, x2.stride(0), eps,
            BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps,
        )  # fmt: skip
    return y, rstd


def _rms_norm_bwd_triton(
    x2: Tensor, weight: Tensor, rstd: Tensor, dy2: Tensor, need_dx: bool, need_dw: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Backward over ``[rows, D]``: ``dx`` in x.dtype and ``dweight`` in weight.dtype (each
    ``None`` when not needed). Partial weight gradients go to a ``[programs, D]`` float32
    buffer, summed by torch afterwards."""
    rows, dim = x2.shape
    dx = torch.empty(rows, dim, dtype=x2.dtype, device=x2.device) if need_dx else None
    if rows == 0 or not (need_dx or need_dw):
        dw = torch.zeros(dim, dtype=weight.dtype, device=weight.device) if need_dw else None
        return dx, dw
    block_m, block_d, num_warps = _launch_shape(rows, dim)
    row_blocks = triton.cdiv(rows, block_m)
    # Two programs per SM (they stream rows, so two hide each other's memory latency; more
    # were slower on an H200 at D >= 4096); two in all when interpreting, so that the tests run
    # the row loop and the partial-sum reduction.
    max_programs = 2 * _sm_count(x2.device) if x2.is_cuda else 2
    rows_per_program = triton.cdiv(row_blocks, min(row_blocks, max_programs)) * block_m
    programs = triton.cdiv(rows, rows_per_program)
    dw_partial = (
        torch.empty(programs, dim, dtype=torch.float32, device=x2.device) if need_dw else rstd
    )
    with _device_guard(x2):
        _rms_norm_bwd_kernel[(programs,)](
            x2, weight, dy2, rstd, dx if need_dx else x2, dw_partial,
            rows, dim, x2.stride(0), dy2.stride(0), rows_per_program,
            BLOCK_M=block_m, BLOCK_D=block_d, STORE_DX=need_dx, STORE_DW=need_dw,
            num_warps=num_warps,
        )  # fmt: skip
    dw = dw_partial.sum(0).to(weight.dtype) if need_dw else None
    return dx, dw


class _RMSNormFunction(torch.autograd.Function):
    """Autograd glue for the Triton path: saves ``x`` (as rows), ``weight`` and ``rstd``."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, weight: Tensor, eps: float
    ) -> Tensor:
        x2 = _as_rows(x, x.shape[-1])
        y, rstd = _rms_norm_fwd_triton(x2, weight, eps)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_y: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        x2, weight, rstd = ctx.saved_tensors
        dx, dw = _rms_norm_bwd_triton(
            x2,
            weight,
            rstd,
            _as_rows(grad_y, x2.shape[1]),
            need_dx=ctx.needs_input_grad[0],
            need_dw=ctx.needs_input_grad[1],
        )
        return (None if dx is None else dx.view(ctx.x_shape)), dw, None


def _rms_norm_triton(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """Triton path of :func:`rms_norm` (differentiable w.r.t. x and weight)."""
    _check_triton_dim(x.shape[-1])
    weight = weight.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _RMSNormFunction.apply(x, weight, eps)
    # Inference (decode): skip the autograd bookkeeping, one kernel launch.
    y, _ = _rms_norm_fwd_triton(_as_rows(x, x.shape[-1]), weight, eps)
    return y.view(x.shape)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


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
    if use_triton(x, weight):
        return _rms_norm_triton(x, weight, eps)
    return _rms_norm_reference(x, weight, eps)
