"""The prefill-state reduction in Triton: ``sum_s phi(k_s)^T v_s`` and ``sum_s phi(k_s)``.

Imported only when triton imports (see :mod:`hazyzoo.kernels.linear_attention`). One pass over
the sequence per tile of feature rows: the ``phi(k)`` tile is built in registers from two
gathers of k, so the ``1 + F + F**2``-wide feature map is never written to memory.

The reduction is differentiable (:class:`_TaylorAttentionState`): for upstream gradients
``(dKV, dKS)`` of the state, ``dv_s = m_s phi(k_s) @ dKV`` and ``dk_s = m_s J_phi(k_s)^T (dKV v_s
+ dKS)`` are state readouts with query ``k_s`` (the kernels of :mod:`.readout`). The same
kernel with a per-key weight ``w`` (``sum_s w_s phi(k_s)`` as the second output) is the state
gradient of a readout: ``dKV = sum_t phi(q_t)^T do_t``, ``dKS = sum_t phi(q_t) dz_t``.
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
    autotune_configs,
    check_triton_feature_dim,
    dot,
    feature_index,
    feature_scales,
    feature_values,
    l_bucket,
    load_tile,
    mask_arg,
)
from hazyzoo.kernels.linear_attention.reference import taylor_feature_dim

_STATE_TUNING = autotune_configs(
    half=[(32, 4, 3), (64, 4, 2), (64, 8, 3), (32, 8, 2)],
    ieee=[(16, 8, 2), (32, 8, 2)],
    names=("BLOCK_L",),
    interpret=(32,),
)


@triton.autotune(
    key=["F", "BLOCK_DV", "BLOCK_R", "HAS_MASK", "HAS_WEIGHT", "L_BUCKET"], **_STATE_TUNING
)
@triton.jit
def _state_kernel(
    K, V, M, W, KV, KS, L, H, F, DV, D_PHI, c1, c2,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_mb, stride_ml,
    stride_wb, stride_wh, stride_wl,
    L_BUCKET,
    BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr, HAS_MASK: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, IEEE: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    """Grid (feature-row blocks, Dv blocks, B*H); loops over L. Each step builds the
    ``[BLOCK_R, BLOCK_L]`` tile of ``phi(k)^T`` in registers from two gathers of k. With
    ``HAS_WEIGHT`` the second output is ``sum_s w_s phi(k_s)`` instead of ``sum_s phi(k_s)``."""
    pid_r = tl.program_id(0)
    pid_v = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    ia, ib, is_const, is_lin, in_r = feature_index(r, F, D_PHI)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    k_ptr = K + b * stride_kb + h * stride_kh
    v_ptr = V + b * stride_vb + h * stride_vh
    w_ptr = W + b * stride_wb + h * stride_wh
    acc_kv = tl.zeros([BLOCK_R, BLOCK_DV], dtype=tl.float32)
    acc_k = tl.zeros([BLOCK_R], dtype=tl.float32)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        in_l = offs_l < L
        keep = in_r[:, None] & in_l[None, :]
        if HAS_MASK:
            m = tl.load(M + b * stride_mb + offs_l * stride_ml, mask=in_l, other=0.0)
            keep = keep & (m[None, :] != 0.0)
        xa = tl.load(
            k_ptr + offs_l[None, :] * stride_kl + ia[:, None] * stride_kd, mask=keep, other=0.0
        )
        xb = tl.load(
            k_ptr + offs_l[None, :] * stride_kl + ib[:, None] * stride_kd, mask=keep, other=0.0
        )
        phit = feature_values(xa, xb, is_const[:, None], is_lin[:, None], c1, c2)
        phit = tl.where(keep, phit, 0.0)  # [BLOCK_R, BLOCK_L]
        v = load_tile(v_ptr, offs_l, offs_v, stride_vl, stride_vd, L, DV)
        acc_kv += dot(phit.to(v.dtype), v, IEEE)
        if HAS_WEIGHT:
            w = tl.load(w_ptr + offs_l * stride_wl, mask=in_l, other=0.0).to(tl.float32)
            acc_k += tl.sum(phit * w[None, :], axis=1)
        else:
            acc_k += tl.sum(phit, axis=1)
    row = pid_bh.to(tl.int64) * D_PHI + r
    tl.store(
        KV + row[:, None] * DV + offs_v[None, :],
        acc_kv,
        mask=in_r[:, None] & (offs_v[None, :] < DV),
    )
    tl.store(KS + row, acc_k, mask=r < D_PHI - pid_v * D_PHI)  # Dv block 0 only


def state_forward(
    k: Tensor, v: Tensor, key_mask: Tensor | None = None, weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(sum_s m_s phi(k_s)^T v_s, sum_s m_s w_s phi(k_s))`` float32 from the kernel, no
    autograd. ``k [B, H, L, F]``, ``v [B, H, L, Dv]`` (v may be float32 with half k: the dot
    then runs on float32 operands), ``key_mask [B, L]`` or None, ``weight [B, H, L]`` (any
    dtype and strides) or None for ``w = 1``."""
    check_triton_feature_dim(k.shape[-1])
    batch, heads, length, feat = k.shape
    dv = v.shape[-1]
    d_phi = taylor_feature_dim(feat)
    if batch * heads == 0 or length == 0 or dv == 0:  # empty prefix: the zero state
        kv_state = torch.zeros(batch, heads, d_phi, dv, dtype=torch.float32, device=k.device)
        return kv_state, torch.zeros(batch, heads, d_phi, dtype=torch.float32, device=k.device)
    kv_state = torch.empty(batch, heads, d_phi, dv, dtype=torch.float32, device=k.device)
    k_state = torch.empty(batch, heads, d_phi, dtype=torch.float32, device=k.device)
    mask, smb, sml = mask_arg(key_mask, k)
    w, w_strides = (k, (0, 0, 0)) if weight is None else (weight, weight.stride())
    # The interpreter pays per op, not per element: one wide feature block is fastest there.
    block_r = min(next_power_of_2(d_phi, 16), 512) if INTERPRETED else 64
    block_dv = min(
        next_power_of_2(dv, 16), MAX_BLOCK_DV, 64
    )  # 64: keeps the fp32 accumulator in registers
    grid = (triton.cdiv(d_phi, block_r), triton.cdiv(dv, block_dv), batch * heads)
    with device_guard(k):
        _state_kernel[grid](
            k, v, mask, w, kv_state, k_state, length, heads, feat, dv, d_phi,
            *feature_scales(feat),
            *k.stride(), *v.stride(), smb, sml, *w_strides, l_bucket(length),
            BLOCK_R=block_r, BLOCK_DV=block_dv, HAS_MASK=key_mask is not None,
            HAS_WEIGHT=weight is not None, IEEE=k.dtype == torch.float32,
        )  # fmt: skip
    return kv_state, k_state


class _TaylorAttentionState(torch.autograd.Function):
    """Autograd glue of the state reduction: saves k, v (and the mask); the backward is two
    readouts of the upstream state gradient with the keys as queries (see the module doc)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        k: Tensor,
        v: Tensor,
        key_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(k, v, key_mask)
        return state_forward(k, v, key_mask)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_kv: Tensor, grad_ks: Tensor
    ) -> tuple[Tensor | None, ...]:
        from hazyzoo.kernels.linear_attention.readout import readout_dq, readout_forward

        k, v, key_mask = ctx.saved_tensors
        dk = dv = None
        drop = None if key_mask is None else (key_mask == 0)[:, None, :, None]  # [B, 1, L, 1]
        if ctx.needs_input_grad[1]:  # dv_s = phi(k_s) @ dKV
            dv, _ = readout_forward(k, grad_kv, None)
            dv = (dv if drop is None else dv.masked_fill(drop, 0.0)).to(v.dtype)
        if ctx.needs_input_grad[0]:  # dk_s = J_phi(k_s)^T (dKV v_s + dKS)
            ones = torch.ones((), dtype=torch.float32, device=k.device).expand(k.shape[:-1])
            dk = readout_dq(k, grad_kv, grad_ks, v, ones)
            if drop is not None:
                dk = dk.masked_fill(drop, 0.0)
        return dk, dv, None


def taylor_attention_state_triton(
    k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Triton path of ``taylor_attention_state``: differentiable w.r.t. k and v (masked keys
    get zero gradient); the backward runs the readout kernels of :mod:`.readout`."""
    check_triton_feature_dim(k.shape[-1])
    mask, _, _ = mask_arg(key_mask, k)  # float32 0/1, converted once and saved for backward
    return _TaylorAttentionState.apply(k, v, None if key_mask is None else mask)
