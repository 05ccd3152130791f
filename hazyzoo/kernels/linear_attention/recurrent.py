"""The single-token decode step in Triton: update the recurrent state in place, then read it.

Imported only when triton imports (see :mod:`hazyzoo.kernels.linear_attention`). One kernel
reads and writes each program's slice of the float32 state once, which is what bounds a decode
step (it is memory-bound: the state is ``(1 + F + F**2) * (Dv + 1)`` floats per head).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.linear_attention.common import (
    INTERPRETED,
    MAX_BLOCK_DV,
    check_triton_feature_dim,
    feature_index,
    feature_scales,
    feature_values,
)
from hazyzoo.kernels.linear_attention.reference import taylor_feature_dim


@triton.jit
def _vector_features(x_ptr, ia, ib, is_const, is_lin, in_r, c1, c2):
    """Rows ``r`` of ``phi(x)`` for the one vector at ``x_ptr`` (0 past the last row)."""
    xa = tl.load(x_ptr + ia, mask=in_r, other=0.0)
    xb = tl.load(x_ptr + ib, mask=in_r, other=0.0)
    return tl.where(in_r, feature_values(xa, xb, is_const, is_lin, c1, c2), 0.0)


@triton.jit
def _step_kernel(
    Q, K, V, M, KV, KS, Out, Z, H, F, DV, D_PHI, c1, c2,
    HAS_MASK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """Grid (Dv blocks, B*H). Reads and writes its ``[D_phi, BLOCK_DV]`` slice of the state
    once. Only Dv block 0 touches ``k_state`` (read, update, write) and writes ``z``: the
    other blocks run concurrently and must neither race on it nor read it half-updated.
    With ``HAS_MASK`` the key of batch row b enters the state times ``M[b]`` (0 or 1)."""
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    keep = 1.0
    if HAS_MASK:
        keep = tl.load(M + pid_bh // H)
    first = pid_v == 0
    ks_end = D_PHI - pid_v * D_PHI  # D_PHI for Dv block 0, <= 0 for the others
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    in_v = offs_v < DV
    v = tl.load(V + pid_bh * DV + offs_v, mask=in_v, other=0.0).to(tl.float32)
    q_ptr = Q + pid_bh * F
    k_ptr = K + pid_bh * F
    acc_o = tl.zeros([BLOCK_DV], dtype=tl.float32)
    acc_z = tl.zeros([BLOCK_R], dtype=tl.float32)
    for r0 in range(0, D_PHI, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        ia, ib, is_const, is_lin, in_r = feature_index(r, F, D_PHI)
        phi_k = _vector_features(k_ptr, ia, ib, is_const, is_lin, in_r, c1, c2) * keep
        phi_q = _vector_features(q_ptr, ia, ib, is_const, is_lin, in_r, c1, c2)
        row = pid_bh * D_PHI + r
        ptr = KV + row[:, None] * DV + offs_v[None, :]
        tile_mask = in_r[:, None] & in_v[None, :]
        kv = tl.load(ptr, mask=tile_mask, other=0.0).to(tl.float32) + phi_k[:, None] * v[None, :]
        tl.store(ptr, kv.to(KV.dtype.element_ty), mask=tile_mask)  # one rounding (half states)
        acc_o += tl.sum(phi_q[:, None] * kv, axis=0)
        ks = tl.load(KS + row, mask=r < ks_end, other=0.0) + phi_k
        tl.store(KS + row, ks, mask=r < ks_end)
        acc_z += phi_q * ks
    tl.store(Out + pid_bh * DV + offs_v, acc_o, mask=in_v)
    tl.store(Z + pid_bh, tl.sum(acc_z, axis=0), mask=first)


def taylor_attention_step_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv_state: Tensor,
    k_state: Tensor,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton path of ``taylor_attention_step`` (updates the states in place)."""
    check_triton_feature_dim(q.shape[-1])
    batch, heads, feat = q.shape
    dv = v.shape[-1]
    d_phi = taylor_feature_dim(feat)
    o = torch.empty(batch, heads, dv, dtype=torch.float32, device=q.device)
    z = torch.empty(batch, heads, dtype=torch.float32, device=q.device)
    if batch * heads == 0:
        return o, z
    # One program per (b*h, Dv block): with few heads in flight, narrower Dv blocks give the
    # GPU more programs to keep memory busy; with many, full rows read best.
    block_dv = min(next_power_of_2(dv, 16), MAX_BLOCK_DV)
    while block_dv > 32 and batch * heads * triton.cdiv(dv, block_dv) < 512:
        block_dv //= 2
    # [BLOCK_R, BLOCK_DV] fp32 tiles of 8k elements; one wide block when interpreting.
    block_r = min(next_power_of_2(d_phi, 16), 512) if INTERPRETED else max(16, 8192 // block_dv)
    mask = o if key_mask is None else key_mask.to(device=q.device, dtype=torch.bool).float()
    with device_guard(q):
        _step_kernel[(triton.cdiv(dv, block_dv), batch * heads)](
            q.contiguous(), k.contiguous(), v.contiguous(), mask.contiguous(), kv_state,
            k_state, o, z, heads, feat, dv, d_phi, *feature_scales(feat),
            HAS_MASK=key_mask is not None, BLOCK_R=block_r, BLOCK_DV=block_dv, num_warps=4,
        )  # fmt: skip
    return o, z
