"""RMSNorm in Triton: one forward kernel, one backward kernel, and their autograd glue.

Imported only when triton imports (see :mod:`hazyzoo.kernels.rms_norm`). The forward normalises
and casts in one pass (float32 arithmetic, output in ``weight.dtype``); the backward is one
kernel too, plus a ``sum(0)`` over per-program partial weight gradients. ``dx`` comes back in
``x.dtype`` and ``dweight`` in ``weight.dtype``, accumulated over rows in float32 first.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.dispatch import triton_interpreting

# Whether the kernels below are defined for the CPU interpreter. Triton decides this when a
# kernel is decorated, so it is fixed when this module is imported (tests check it).
INTERPRETED = triton_interpreting()

MAX_D = 8192
# Most rows one program handles at once. Small when interpreting so that the tests' few rows
# still spread over several programs (and the backward's row loop runs more than once).
_MAX_BLOCK_M = 4 if INTERPRETED else 64
# Elements in one program's [BLOCK_M, BLOCK_D] tile when several rows fit (small D).
_TILE_ELEMENTS = 2048


def check_triton_dim(dim: int) -> None:
    """The kernels hold a whole row in registers: D <= MAX_D."""
    if dim > MAX_D:
        raise ValueError(
            f"the Triton RMSNorm kernels support D <= {MAX_D} (last dim of x), got D={dim}; "
            "use HAZYZOO_KERNELS=torch"
        )


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
    # float32 whatever type the float eps gets (inductor passes fp64)
    rstd = tl.rsqrt((tl.sum(x * x, axis=1) / D + eps).to(tl.float32))
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


def _launch_shape(rows: int, dim: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_D, num_warps)``: whole rows per program (BLOCK_D = next power of 2 of
    D), several rows when D is small, and about 256 tile elements per warp (at most 16)."""
    block_d = next_power_of_2(dim)
    block_m = max(1, min(_MAX_BLOCK_M, _TILE_ELEMENTS // block_d, next_power_of_2(rows)))
    num_warps = max(1, min(16, block_m * block_d // 256))
    return block_m, block_d, num_warps


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


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
    with device_guard(x2):
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
    with device_guard(x2):
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


def rms_norm_triton(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """Triton path of :func:`hazyzoo.kernels.rms_norm.rms_norm` (differentiable w.r.t. x and
    weight; one launch and no autograd bookkeeping when no gradient is needed)."""
    check_triton_dim(x.shape[-1])
    weight = weight.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _RMSNormFunction.apply(x, weight, eps)
    # Inference (decode): skip the autograd bookkeeping, one kernel launch.
    y, _ = _rms_norm_fwd_triton(_as_rows(x, x.shape[-1]), weight, eps)
    return y.view(x.shape)
