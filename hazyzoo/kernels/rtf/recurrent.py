"""Triton kernel of one RTF recurrent step over a ``[B, N, C]`` companion-form state.

Per (batch row, block of channels): ``y = d u + c . z`` and ``z <- A z + v u`` with the
companion ``A`` (first row ``-a``, ones below the diagonal), in place. The state is read twice
(the dot products, then the shifted copy) and written once; channels are the contiguous dim,
so every access is coalesced. Blocks of the state dim are rewritten from the last to the first,
so a block's shifted read never sees a row this step has already written.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.dispatch import triton_interpreting

INTERPRETED = triton_interpreting()


@triton.jit
def _rtf_step_kernel(
    u_ptr,
    state_ptr,
    decay_ptr,
    input_ptr,
    readout_ptr,
    direct_ptr,
    y_ptr,
    C,
    N,
    stride_ub,
    stride_sb,
    stride_yb,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_c = tl.program_id(0)
    row = tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    u = tl.load(u_ptr + row * stride_ub + cols, mask=cmask, other=0.0).to(tl.float32)
    acc_y = tl.load(direct_ptr + cols, mask=cmask, other=0.0) * u
    acc_a = tl.zeros([BLOCK_C], dtype=tl.float32)
    base = state_ptr + row * stride_sb
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        m = (rows < N)[:, None] & cmask[None, :]
        offs = rows[:, None] * C + cols[None, :]
        z = tl.load(base + offs, mask=m, other=0.0)
        acc_a += tl.sum(tl.load(decay_ptr + offs, mask=m, other=0.0) * z, axis=0)
        acc_y += tl.sum(tl.load(readout_ptr + offs, mask=m, other=0.0) * z, axis=0)
    num_blocks = tl.cdiv(N, BLOCK_N)
    for i in range(0, num_blocks):
        rows = (num_blocks - 1 - i) * BLOCK_N + tl.arange(0, BLOCK_N)
        m = (rows < N)[:, None] & cmask[None, :]
        offs = rows[:, None] * C + cols[None, :]
        prev = tl.load(base + offs - C, mask=m & (rows >= 1)[:, None], other=0.0)
        v = tl.load(input_ptr + offs, mask=m, other=0.0)
        new = tl.where((rows == 0)[:, None], -acc_a[None, :], prev) + v * u[None, :]
        tl.debug_barrier()  # every thread has read the old rows before any is overwritten
        tl.store(base + offs, new, mask=m)
    tl.store(y_ptr + row * stride_yb + cols, acc_y.to(y_ptr.dtype.element_ty), mask=cmask)


def rtf_step_triton(
    u: Tensor,
    state: Tensor,
    decay: Tensor,
    input: Tensor,
    readout: Tensor,
    direct: Tensor,
    *,
    block_c: int | None = None,
    block_n: int | None = None,
    num_warps: int = 2,
) -> Tensor:
    """Triton implementation of :func:`~hazyzoo.kernels.rtf.rtf_step` (same contract); the
    block sizes are keyword options for tuning. Defaults from a sweep on an H200 (N 64, 768
    channels, batch 1 to 1024; benchmarks/rtf_kernels.py): two warps, 64 state rows per block,
    32 channels per program up to batch 16 (more programs) and 64 above."""
    batch, n_state, channels = state.shape
    y = u.new_empty(batch, channels)
    if block_c is None:
        block_c = 32 if INTERPRETED or batch <= 16 else 64
        block_c = min(block_c, next_power_of_2(channels))
    if block_n is None:
        block_n = min(8 if INTERPRETED else 64, next_power_of_2(n_state))
    grid = (triton.cdiv(channels, block_c), batch)
    with device_guard(state):
        _rtf_step_kernel[grid](
            u,
            state,
            decay,
            input,
            readout,
            direct,
            y,
            channels,
            n_state,
            u.stride(0),
            state.stride(0),
            y.stride(0),
            BLOCK_N=block_n,
            BLOCK_C=block_c,
            num_warps=num_warps,
        )
    return y
