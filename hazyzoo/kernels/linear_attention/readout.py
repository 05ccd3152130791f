"""The readout of a recurrent state in Triton: ``o_t = phi(q_t) @ KV``, ``z_t = phi(q_t) . KS``.

Imported only when triton imports (see :mod:`hazyzoo.kernels.linear_attention`). This is what
an initial state (a cache, or the prefix state of JRT-RNN) contributes to every query. Each
program builds ``[BLOCK_M, BLOCK_R]`` tiles of ``phi(q)`` in registers from two gathers of q
(the ``1 + F + F**2``-wide feature map never reaches memory) and multiplies them with the
matching rows of the state.

Backward (:class:`_StateReadout`):

* ``dq_t = J_phi(q_t)^T g_t`` with ``g_t = KV do_t + KS dz_t`` (``[1+F+F^2]``), computed tile by
  tile: row ``r = (i, j)`` of ``phi`` is ``c2 q_i q_j`` (linear rows ``c1 q_i``), so ``g``'s
  tile, weighted by those derivatives, is scattered onto the ``F`` columns of dq by two small
  one-hot matmuls.
* ``dKV = sum_t phi(q_t)^T do_t``, ``dKS = sum_t phi(q_t) dz_t``: the state kernel of
  :mod:`.state` with keys q, values do and weights dz.

Precision: the state is float32 and is never rounded. For float32 queries every dot runs in
IEEE float32; for half queries the dots run on float32 operands with tensor cores (TF32), and
dq is rounded to the query dtype at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.linear_attention.common import (
    autotune_configs,
    check_triton_feature_dim,
    dot,
    dv_block,
    feature_index,
    feature_scales,
    feature_values,
    l_bucket,
    load_tile,
)
from hazyzoo.kernels.linear_attention.reference import taylor_feature_dim
from hazyzoo.kernels.linear_attention.state import state_forward

_MR = ("BLOCK_M", "BLOCK_R")
# (BLOCK_M, BLOCK_R, warps, stages). "half" tiles run TF32 dots on float32 operands.
_FWD_TUNING = autotune_configs(
    half=[(64, 32, 4, 2), (64, 64, 4, 2), (128, 32, 8, 2), (32, 64, 4, 3)],
    ieee=[(32, 32, 4, 2), (64, 32, 8, 2), (32, 16, 4, 2)],
    names=_MR,
    interpret=(16, 64),
)
_DQ_TUNING = autotune_configs(
    half=[(64, 32, 4, 2), (64, 64, 8, 2), (32, 64, 4, 2), (128, 32, 8, 2)],
    ieee=[(32, 32, 4, 2), (64, 32, 8, 2), (32, 16, 4, 2)],
    names=_MR,
    interpret=(16, 64),
)
_TUNE_KEY = ["F_PAD", "BLOCK_DV", "SINGLE_DV", "HAS_Z", "L_BUCKET"]


@triton.jit
def _phi_tile(q_ptr, offs_m, ia, ib, is_const, is_lin, keep, stride_ql, stride_qd, c1, c2):
    """``phi(q)[offs_m, r]`` as a ``[BLOCK_M, BLOCK_R]`` fp32 tile (0 outside ``keep``), from
    two gathers of q."""
    base = q_ptr + offs_m[:, None] * stride_ql
    xa = tl.load(base + ia[None, :] * stride_qd, mask=keep, other=0.0).to(tl.float32)
    xb = tl.load(base + ib[None, :] * stride_qd, mask=keep, other=0.0).to(tl.float32)
    phi = feature_values(xa, xb, is_const[None, :], is_lin[None, :], c1, c2)
    return tl.where(keep, phi, 0.0)


@triton.autotune(key=_TUNE_KEY, **_FWD_TUNING)
@triton.jit
def _readout_fwd_kernel(
    Q, KV, KS, Out, Z, L, H, F, DV, D_PHI, c1, c2,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_sb, stride_sh, stride_sr, stride_sd,
    stride_kb, stride_kh, stride_kr,
    L_BUCKET,
    F_PAD: tl.constexpr, BLOCK_DV: tl.constexpr, SINGLE_DV: tl.constexpr,
    HAS_Z: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """Grid (query blocks, Dv blocks, B*H); loops over the feature rows. ``z`` (with
    ``HAS_Z``) is written by Dv block 0 only."""
    pid_m = tl.program_id(0)
    pid_v = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    in_m = offs_m < L
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    q_ptr = Q + b * stride_qb + h * stride_qh
    kv_ptr = KV + b * stride_sb + h * stride_sh
    ks_ptr = KS + b * stride_kb + h * stride_kh
    acc_o = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    acc_z = tl.zeros([BLOCK_M], dtype=tl.float32)
    for r0 in range(0, D_PHI, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        ia, ib, is_const, is_lin, in_r = feature_index(r, F, D_PHI)
        keep = in_m[:, None] & in_r[None, :]
        phi = _phi_tile(q_ptr, offs_m, ia, ib, is_const, is_lin, keep, stride_ql, stride_qd, c1, c2)
        kv = load_tile(kv_ptr, r, offs_v, stride_sr, stride_sd, D_PHI, DV).to(tl.float32)
        acc_o += dot(phi, kv, IEEE)
        if HAS_Z:
            ks = tl.load(ks_ptr + r * stride_kr, mask=in_r, other=0.0).to(tl.float32)
            acc_z += tl.sum(phi * ks[None, :], axis=1)
    row = pid_bh.to(tl.int64) * L + offs_m
    tl.store(
        Out + row[:, None] * DV + offs_v[None, :],
        acc_o,
        mask=in_m[:, None] & (offs_v[None, :] < DV),
    )
    if HAS_Z:
        # Dv block 0 only; an index bound (the interpreter rejects block & scalar masks).
        tl.store(Z + row, acc_z, mask=offs_m < L - pid_v * L)


@triton.autotune(key=_TUNE_KEY, **_DQ_TUNING)
@triton.jit
def _readout_dq_kernel(
    Q, KV, KS, DO, DZ, DQ, L, H, F, DV, D_PHI, c1, c2,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_sb, stride_sh, stride_sr, stride_sd,
    stride_kb, stride_kh, stride_kr,
    stride_ob, stride_oh, stride_ol, stride_od,
    stride_zb, stride_zh, stride_zl,
    L_BUCKET,
    F_PAD: tl.constexpr, BLOCK_DV: tl.constexpr, SINGLE_DV: tl.constexpr,
    HAS_Z: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """Grid (query blocks, B*H): ``dq = J_phi(q)^T (KV do + KS dz)``, one feature-row tile at
    a time (``HAS_Z`` is always set here; it only shares the autotune key)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    in_m = offs_m < L
    offs_f = tl.arange(0, F_PAD)
    offs_v = tl.arange(0, BLOCK_DV)
    q_ptr = Q + b * stride_qb + h * stride_qh
    kv_ptr = KV + b * stride_sb + h * stride_sh
    ks_ptr = KS + b * stride_kb + h * stride_kh
    do_ptr = DO + b * stride_ob + h * stride_oh
    dz = tl.load(DZ + b * stride_zb + h * stride_zh + offs_m * stride_zl, mask=in_m, other=0.0)
    dz = dz.to(tl.float32)
    if SINGLE_DV:
        do = load_tile(do_ptr, offs_m, offs_v, stride_ol, stride_od, L, DV).to(tl.float32)
    else:
        do = dz  # unused placeholder: do is streamed in Dv chunks below
    acc = tl.zeros([BLOCK_M, F_PAD], dtype=tl.float32)
    for r0 in range(0, D_PHI, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        ia, ib, _, is_lin, in_r = feature_index(r, F, D_PHI)
        is_quad = in_r & (r > F)
        # g[m, r] = sum_v do[m, v] KV[r, v] + dz[m] KS[r]
        ks = tl.load(ks_ptr + r * stride_kr, mask=in_r, other=0.0).to(tl.float32)
        g = dz[:, None] * ks[None, :]
        if SINGLE_DV:
            kvt = load_tile(kv_ptr, offs_v, r, stride_sd, stride_sr, DV, D_PHI).to(tl.float32)
            g += dot(do, kvt, IEEE)
        else:
            for d0 in range(0, DV, BLOCK_DV):
                offs_c = d0 + tl.arange(0, BLOCK_DV)
                doc = load_tile(do_ptr, offs_m, offs_c, stride_ol, stride_od, L, DV)
                kvt = load_tile(kv_ptr, offs_c, r, stride_sd, stride_sr, DV, D_PHI)
                g += dot(doc.to(tl.float32), kvt.to(tl.float32), IEEE)
        keep = in_m[:, None] & in_r[None, :]
        base = q_ptr + offs_m[:, None] * stride_ql
        xa = tl.load(base + ia[None, :] * stride_qd, mask=keep, other=0.0).to(tl.float32)
        xb = tl.load(base + ib[None, :] * stride_qd, mask=keep, other=0.0).to(tl.float32)
        # d phi_r / d q_ia: c1 (linear rows) or c2 q_ib (quadratic); d phi_r / d q_ib: c2 q_ia.
        wa = tl.where(is_lin[None, :], c1, tl.where(is_quad[None, :], c2 * xb, 0.0))
        wb = tl.where(is_quad[None, :], c2 * xa, 0.0)
        ga = tl.where(keep, g * wa, 0.0)
        gb = tl.where(keep, g * wb, 0.0)
        hot_a = ((ia[:, None] == offs_f[None, :]) & (is_lin | is_quad)[:, None]).to(tl.float32)
        hot_b = ((ib[:, None] == offs_f[None, :]) & is_quad[:, None]).to(tl.float32)
        acc += dot(ga, hot_a, IEEE)
        acc += dot(gb, hot_b, IEEE)
    row = pid_bh.to(tl.int64) * L + offs_m
    tl.store(
        DQ + row[:, None] * F + offs_f[None, :],
        acc.to(DQ.dtype.element_ty),
        mask=in_m[:, None] & (offs_f[None, :] < F),
    )


def _state_strides(kv_state: Tensor, k_state: Tensor | None) -> tuple[int, ...]:
    """The 4 strides of kv_state and the 3 of k_state (zeros for a missing k_state)."""
    ks_strides = (0, 0, 0) if k_state is None else k_state.stride()
    return (*kv_state.stride(), *ks_strides)


def readout_forward(
    q: Tensor, kv_state: Tensor, k_state: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """``(phi(q) @ kv_state, phi(q) . k_state)`` float32 from the kernel, no autograd; ``z`` is
    ``None`` (and not computed) when ``k_state`` is. Any strides."""
    check_triton_feature_dim(q.shape[-1])
    batch, heads, length, feat = q.shape
    dv = kv_state.shape[-1]
    d_phi = taylor_feature_dim(feat)
    o = torch.empty(batch, heads, length, dv, dtype=torch.float32, device=q.device)
    z = None
    if k_state is not None:
        z = torch.empty(batch, heads, length, dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        if z is not None:
            z.zero_()
        return o, z
    block_dv, single = dv_block(dv)

    def grid(meta: dict) -> tuple[int, int, int]:
        return triton.cdiv(length, meta["BLOCK_M"]), triton.cdiv(dv, block_dv), batch * heads

    with device_guard(q):
        _readout_fwd_kernel[grid](
            q, kv_state, kv_state if k_state is None else k_state, o, o if z is None else z,
            length, heads, feat, dv, d_phi, *feature_scales(feat),
            *q.stride(), *_state_strides(kv_state, k_state), l_bucket(length),
            F_PAD=next_power_of_2(feat, 16), BLOCK_DV=block_dv, SINGLE_DV=single,
            HAS_Z=k_state is not None, IEEE=q.dtype == torch.float32,
        )  # fmt: skip
    return o, z


def readout_dq(
    q: Tensor, kv_state: Tensor, k_state: Tensor, grad_o: Tensor, grad_z: Tensor
) -> Tensor:
    """``dq_t = J_phi(q_t)^T (kv_state grad_o_t + k_state grad_z_t)`` in q's dtype, no
    autograd. ``grad_o [B, H, L, Dv]`` and ``grad_z [B, H, L]`` of any dtype and strides
    (a stride-0 ``grad_z`` of ones is how the state backward asks for ``dKS``'s share)."""
    check_triton_feature_dim(q.shape[-1])
    batch, heads, length, feat = q.shape
    dv = kv_state.shape[-1]
    d_phi = taylor_feature_dim(feat)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # fully written by the kernel
    if dq.numel() == 0:
        return dq
    block_dv, single = dv_block(dv)

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(length, meta["BLOCK_M"]), batch * heads

    with device_guard(q):
        _readout_dq_kernel[grid](
            q, kv_state, k_state, grad_o, grad_z, dq, length, heads, feat, dv, d_phi,
            *feature_scales(feat), *q.stride(), *_state_strides(kv_state, k_state),
            *grad_o.stride(), *grad_z.stride(), l_bucket(length),
            F_PAD=next_power_of_2(feat, 16), BLOCK_DV=block_dv, SINGLE_DV=single,
            HAS_Z=True, IEEE=q.dtype == torch.float32,
        )  # fmt: skip
    return dq


class _StateReadout(torch.autograd.Function):
    """Autograd glue of the readout: saves q and the state; the backward is the dq kernel
    and the (weighted) state kernel."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, q: Tensor, kv_state: Tensor, k_state: Tensor
    ) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(q, kv_state, k_state)
        return readout_forward(q, kv_state, k_state)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_o: Tensor, grad_z: Tensor
    ) -> tuple[Tensor | None, ...]:
        q, kv_state, k_state = ctx.saved_tensors
        dq = d_kv = d_ks = None
        if ctx.needs_input_grad[0]:
            dq = readout_dq(q, kv_state, k_state, grad_o, grad_z)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            d_kv, d_ks = state_forward(q, grad_o.float(), None, grad_z)
            d_kv = d_kv if ctx.needs_input_grad[1] else None
            d_ks = d_ks if ctx.needs_input_grad[2] else None
        return dq, d_kv, d_ks


def state_readout_triton(q: Tensor, kv_state: Tensor, k_state: Tensor) -> tuple[Tensor, Tensor]:
    """What a state contributes to every query: ``o_t = phi(q_t) @ kv_state`` ``[B, H, L, Dv]``
    and ``z_t = phi(q_t) . k_state`` ``[B, H, L]``, float32, for ``q [B, H, L, F]`` and a
    float32 state ``kv_state [B, H, 1+F+F^2, Dv]``, ``k_state [B, H, 1+F+F^2]``.
    Differentiable w.r.t. q and both state tensors."""
    check_triton_feature_dim(q.shape[-1])
    return _StateReadout.apply(q, kv_state.float(), k_state.float())
