"""Tiled parallel Taylor attention in Triton: forward, backward and their autograd glue.

Imported only when triton imports (see :mod:`hazyzoo.kernels.linear_attention`). The kernels
tile the ``L x L`` score matrix like flash attention and never write the ``1 + F + F**2``-wide
feature map (or ``A``) to memory; the backward recomputes ``A`` from q and k.

:func:`taylor_linear_attention_triton` adds the state in and out on top: the readout of an
initial state is the readout kernel of :mod:`.readout` (differentiable w.r.t. q and the state),
the final state comes from the state kernel of :mod:`.state` under ``no_grad`` (not
differentiable).

Everything here is the tiled form at any length (cost quadratic in L). Which form runs is
decided in :mod:`.chunked`: its ``*_by_length`` functions (what the package registers, for the
prefix op of JRT-RNN too) call these below ``chunked.CHUNKED_MIN_LENGTH`` tokens and the
chunked (state-passing) kernels from there on.
"""

from __future__ import annotations

import math

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
    l_bucket,
    load_tile,
    mask_arg,
)
from hazyzoo.kernels.linear_attention.readout import state_readout_triton
from hazyzoo.kernels.linear_attention.state import state_forward

# Forward and dq: BLOCK_M (queries) a multiple of BLOCK_N (keys); dk/dv: BLOCK_N a multiple
# of BLOCK_M. The diagonal blocks then line up. Tiles checked to compile for sm_90 without
# (or with tiny) register spills at Dv = 112, F = 16; the fp32 ones are the largest such.
_MN = ("BLOCK_M", "BLOCK_N")
_FWD_TUNING = autotune_configs(
    half=[(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)],
    ieee=[(32, 32, 8, 2), (64, 32, 8, 2), (32, 16, 4, 2)],
    names=_MN,
    interpret=(16, 16),
)
_DQ_TUNING = autotune_configs(
    half=[(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)],
    ieee=[(32, 32, 8, 2), (32, 16, 4, 2)],
    names=_MN,
    interpret=(16, 16),
)
_DKDV_TUNING = autotune_configs(
    half=[(64, 64, 8, 2), (64, 64, 8, 3), (32, 64, 4, 2), (32, 64, 4, 3)],
    ieee=[(16, 16, 4, 2), (16, 32, 8, 2), (32, 32, 8, 1)],
    names=_MN,
    interpret=(16, 16),
)
_TUNE_KEY = ["F_PAD", "BLOCK_DV", "SINGLE_DV", "HAS_MASK", "L_BUCKET"]


@triton.jit
def _fwd_block(
    acc_o, acc_z, q, offs_m, n0, k_ptr, v_ptr, m_ptr, L, F, DV, offs_f, offs_v, stride_kl,
    stride_kd, stride_vl, stride_vd, stride_ml, scale,
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One key block of the forward: ``o += A v``, ``z += rowsum(A)``."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    in_l = offs_n < L
    kt = load_tile(k_ptr, offs_f, offs_n, stride_kd, stride_kl, F, L)
    s = dot(q, kt, IEEE) * scale
    a = 1.0 + s + 0.5 * s * s
    if CAUSAL:
        a = tl.where(offs_m[:, None] >= offs_n[None, :], a, 0.0)
    if HAS_MASK:
        keep = tl.load(m_ptr + offs_n * stride_ml, mask=in_l, other=0.0)
        a = tl.where(keep[None, :] != 0.0, a, 0.0)
    v = load_tile(v_ptr, offs_n, offs_v, stride_vl, stride_vd, L, DV)
    acc_o += dot(a.to(v.dtype), v, IEEE)
    acc_z += tl.sum(a, axis=1)
    return acc_o, acc_z


@triton.autotune(key=_TUNE_KEY, **_FWD_TUNING)
@triton.jit
def _parallel_fwd_kernel(
    Q, K, V, M, Out, Z, L, H, F, DV, scale,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_mb, stride_ml,
    L_BUCKET,
    F_PAD: tl.constexpr, BLOCK_DV: tl.constexpr, SINGLE_DV: tl.constexpr,
    HAS_MASK: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (query blocks, Dv blocks, B*H). Key blocks left of the diagonal need no causal
    mask; the diagonal blocks do. ``z`` is written by the first Dv block only."""
    pid_m = tl.program_id(0)
    pid_v = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_f = tl.arange(0, F_PAD)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    q = load_tile(Q + b * stride_qb + h * stride_qh, offs_m, offs_f, stride_ql, stride_qd, L, F)
    k_ptr = K + b * stride_kb + h * stride_kh
    v_ptr = V + b * stride_vb + h * stride_vh
    m_ptr = M + b * stride_mb
    acc_o = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    acc_z = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in range(0, m0, BLOCK_N):
        acc_o, acc_z = _fwd_block(
            acc_o, acc_z, q, offs_m, n0, k_ptr, v_ptr, m_ptr, L, F, DV, offs_f, offs_v,
            stride_kl, stride_kd, stride_vl, stride_vd, stride_ml, scale,
            False, HAS_MASK, IEEE, BLOCK_N,
        )  # fmt: skip
    for n0 in range(m0, tl.minimum(m0 + BLOCK_M, L), BLOCK_N):
        acc_o, acc_z = _fwd_block(
            acc_o, acc_z, q, offs_m, n0, k_ptr, v_ptr, m_ptr, L, F, DV, offs_f, offs_v,
            stride_kl, stride_kd, stride_vl, stride_vd, stride_ml, scale,
            True, HAS_MASK, IEEE, BLOCK_N,
        )  # fmt: skip
    row = pid_bh.to(tl.int64) * L + offs_m
    in_m = offs_m < L
    tl.store(
        Out + row[:, None] * DV + offs_v[None, :],
        acc_o,
        mask=in_m[:, None] & (offs_v[None, :] < DV),
    )
    # Only Dv block 0 writes z (the others computed the same values); an index bound rather
    # than `& (pid_v == 0)` because the interpreter rejects block & scalar masks.
    tl.store(Z + row, acc_z, mask=offs_m < L - pid_v * L)


@triton.jit
def _v_dot_do_t(
    v_ptr, do_ptr, offs_n, offs_m, L, DV, stride_vl, stride_vd, stride_ol, stride_od,
    IEEE: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """``v[offs_n] @ do[offs_m]^T`` over the whole of Dv in BLOCK_DV chunks (Dv > BLOCK_DV)."""
    out = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for d0 in range(0, DV, BLOCK_DV):
        offs_c = d0 + tl.arange(0, BLOCK_DV)
        vc = load_tile(v_ptr, offs_n, offs_c, stride_vl, stride_vd, L, DV)
        doc = load_tile(do_ptr, offs_m, offs_c, stride_ol, stride_od, L, DV).to(vc.dtype)
        out += dot(vc, tl.trans(doc), IEEE)
    return out


@triton.jit
def _dkdv_block(
    acc_dk, acc_dv, k, v, keep_k, offs_n, m0, q_ptr, do_ptr, dz_ptr, v_ptr, L, F, DV, offs_f,
    offs_v, stride_ql, stride_qd, stride_vl, stride_vd, stride_ol, stride_od, stride_zl, scale,
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, SINGLE_DV: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """One query block of the dk/dv backward, in the transposed (key-major) orientation."""
    offs_m = m0 + tl.arange(0, BLOCK_M)
    in_m = offs_m < L
    qt = load_tile(q_ptr, offs_f, offs_m, stride_qd, stride_ql, F, L)
    st = dot(k, qt, IEEE) * scale  # [BLOCK_N, BLOCK_M]
    at = 1.0 + st + 0.5 * st * st
    if CAUSAL:
        keep = offs_m[None, :] >= offs_n[:, None]
        if HAS_MASK:
            keep = keep & (keep_k[:, None] != 0.0)
        at = tl.where(keep, at, 0.0)
    elif HAS_MASK:
        at = tl.where(keep_k[:, None] != 0.0, at, 0.0)
    # Out-of-range queries load do = dz = 0, so they add nothing below.
    do = load_tile(do_ptr, offs_m, offs_v, stride_ol, stride_od, L, DV).to(k.dtype)
    dz = tl.load(dz_ptr + offs_m * stride_zl, mask=in_m, other=0.0).to(tl.float32)
    acc_dv += dot(at.to(k.dtype), do, IEEE)
    if SINGLE_DV:
        dat = dot(v, tl.trans(do), IEEE)
    else:
        dat = _v_dot_do_t(
            v_ptr, do_ptr, offs_n, offs_m, L, DV, stride_vl, stride_vd, stride_ol, stride_od,
            IEEE, BLOCK_DV, BLOCK_N, BLOCK_M,
        )  # fmt: skip
    dst = (dat + dz[None, :]) * (1.0 + st)
    if CAUSAL:
        dst = tl.where(keep, dst, 0.0)
    elif HAS_MASK:
        dst = tl.where(keep_k[:, None] != 0.0, dst, 0.0)
    acc_dk += dot(dst.to(k.dtype), tl.trans(qt), IEEE)
    return acc_dk, acc_dv


@triton.autotune(key=_TUNE_KEY, **_DKDV_TUNING)
@triton.jit
def _parallel_bwd_dkdv_kernel(
    Q, K, V, M, DO, DZ, DK, DV_OUT, L, H, F, DV, scale,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_mb, stride_ml,
    stride_ob, stride_oh, stride_ol, stride_od,
    stride_zb, stride_zh, stride_zl,
    L_BUCKET,
    F_PAD: tl.constexpr, BLOCK_DV: tl.constexpr, SINGLE_DV: tl.constexpr,
    HAS_MASK: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (key blocks, Dv blocks, B*H): ``dv = A^T do``, ``dk = dS^T q / sqrt(F)``.
    With several Dv blocks each recomputes dk (written by the first only)."""
    pid_n = tl.program_id(0)
    pid_v = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    in_n = offs_n < L
    offs_f = tl.arange(0, F_PAD)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    k = load_tile(K + b * stride_kb + h * stride_kh, offs_n, offs_f, stride_kl, stride_kd, L, F)
    v_ptr = V + b * stride_vb + h * stride_vh
    if SINGLE_DV:
        v = load_tile(v_ptr, offs_n, offs_v, stride_vl, stride_vd, L, DV)
    else:
        v = k  # unused placeholder: v is streamed in chunks by _v_dot_do_t
    if HAS_MASK:
        keep_k = tl.load(M + b * stride_mb + offs_n * stride_ml, mask=in_n, other=0.0)
    else:
        keep_k = offs_n  # unused placeholder
    q_ptr = Q + b * stride_qb + h * stride_qh
    do_ptr = DO + b * stride_ob + h * stride_oh
    dz_ptr = DZ + b * stride_zb + h * stride_zh
    acc_dk = tl.zeros([BLOCK_N, F_PAD], dtype=tl.float32)
    acc_dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    for m0 in range(n0, tl.minimum(n0 + BLOCK_N, L), BLOCK_M):
        acc_dk, acc_dv = _dkdv_block(
            acc_dk, acc_dv, k, v, keep_k, offs_n, m0, q_ptr, do_ptr, dz_ptr, v_ptr,
            L, F, DV, offs_f, offs_v, stride_ql, stride_qd, stride_vl, stride_vd,
            stride_ol, stride_od, stride_zl, scale,
            True, HAS_MASK, SINGLE_DV, IEEE, BLOCK_DV, BLOCK_N, BLOCK_M,
        )  # fmt: skip
    for m0 in range(n0 + BLOCK_N, L, BLOCK_M):
        acc_dk, acc_dv = _dkdv_block(
            acc_dk, acc_dv, k, v, keep_k, offs_n, m0, q_ptr, do_ptr, dz_ptr, v_ptr,
            L, F, DV, offs_f, offs_v, stride_ql, stride_qd, stride_vl, stride_vd,
            stride_ol, stride_od, stride_zl, scale,
            False, HAS_MASK, SINGLE_DV, IEEE, BLOCK_DV, BLOCK_N, BLOCK_M,
        )  # fmt: skip
    row = pid_bh.to(tl.int64) * L + offs_n
    tl.store(
        DK + row[:, None] * F + offs_f[None, :],
        (acc_dk * scale).to(DK.dtype.element_ty),
        mask=(offs_n[:, None] < L - pid_v * L) & (offs_f[None, :] < F),  # Dv block 0 only
    )
    tl.store(
        DV_OUT + row[:, None] * DV + offs_v[None, :],
        acc_dv.to(DV_OUT.dtype.element_ty),
        mask=in_n[:, None] & (offs_v[None, :] < DV),
    )


@triton.jit
def _dq_block(
    acc_dq, q, do, dz, offs_m, n0, k_ptr, v_ptr, m_ptr, do_ptr, L, F, DV, offs_f, offs_v,
    stride_kl, stride_kd, stride_vl, stride_vd, stride_ml, stride_ol, stride_od, scale,
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, SINGLE_DV: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """One key block of the dq backward: ``dq += dS k`` (scaled at the end)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    in_n = offs_n < L
    kt = load_tile(k_ptr, offs_f, offs_n, stride_kd, stride_kl, F, L)
    s = dot(q, kt, IEEE) * scale  # [BLOCK_M, BLOCK_N]
    if SINGLE_DV:
        vt = load_tile(v_ptr, offs_v, offs_n, stride_vd, stride_vl, DV, L)
        da = dot(do, vt, IEEE)
    else:
        da = tl.trans(
            _v_dot_do_t(
                v_ptr, do_ptr, offs_n, offs_m, L, DV, stride_vl, stride_vd, stride_ol,
                stride_od, IEEE, BLOCK_DV, BLOCK_N, BLOCK_M,
            )
        )  # fmt: skip
    ds = (da + dz[:, None]) * (1.0 + s)
    if CAUSAL:
        ds = tl.where(offs_m[:, None] >= offs_n[None, :], ds, 0.0)
    if HAS_MASK:
        keep = tl.load(m_ptr + offs_n * stride_ml, mask=in_n, other=0.0)
        ds = tl.where(keep[None, :] != 0.0, ds, 0.0)
    acc_dq += dot(ds.to(q.dtype), tl.trans(kt), IEEE)
    return acc_dq


@triton.autotune(key=_TUNE_KEY, **_DQ_TUNING)
@triton.jit
def _parallel_bwd_dq_kernel(
    Q, K, V, M, DO, DZ, DQ, L, H, F, DV, scale,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_mb, stride_ml,
    stride_ob, stride_oh, stride_ol, stride_od,
    stride_zb, stride_zh, stride_zl,
    L_BUCKET,
    F_PAD: tl.constexpr, BLOCK_DV: tl.constexpr, SINGLE_DV: tl.constexpr,
    HAS_MASK: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (query blocks, B*H): ``dq = dS k / sqrt(F)`` with
    ``dS = (do v^T + dz) * (1 + s)``, masked."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    in_m = offs_m < L
    offs_f = tl.arange(0, F_PAD)
    offs_v = tl.arange(0, BLOCK_DV)
    q = load_tile(Q + b * stride_qb + h * stride_qh, offs_m, offs_f, stride_ql, stride_qd, L, F)
    do_ptr = DO + b * stride_ob + h * stride_oh
    if SINGLE_DV:
        do = load_tile(do_ptr, offs_m, offs_v, stride_ol, stride_od, L, DV).to(q.dtype)
    else:
        do = q  # unused placeholder: do is streamed in chunks by _v_dot_do_t
    dz_ptr = DZ + b * stride_zb + h * stride_zh
    dz = tl.load(dz_ptr + offs_m * stride_zl, mask=in_m, other=0.0).to(tl.float32)
    k_ptr = K + b * stride_kb + h * stride_kh
    v_ptr = V + b * stride_vb + h * stride_vh
    m_ptr = M + b * stride_mb
    acc_dq = tl.zeros([BLOCK_M, F_PAD], dtype=tl.float32)
    for n0 in range(0, m0, BLOCK_N):
        acc_dq = _dq_block(
            acc_dq, q, do, dz, offs_m, n0, k_ptr, v_ptr, m_ptr, do_ptr, L, F, DV,
            offs_f, offs_v, stride_kl, stride_kd, stride_vl, stride_vd, stride_ml,
            stride_ol, stride_od, scale,
            False, HAS_MASK, SINGLE_DV, IEEE, BLOCK_DV, BLOCK_N, BLOCK_M,
        )  # fmt: skip
    for n0 in range(m0, tl.minimum(m0 + BLOCK_M, L), BLOCK_N):
        acc_dq = _dq_block(
            acc_dq, q, do, dz, offs_m, n0, k_ptr, v_ptr, m_ptr, do_ptr, L, F, DV,
            offs_f, offs_v, stride_kl, stride_kd, stride_vl, stride_vd, stride_ml,
            stride_ol, stride_od, scale,
            True, HAS_MASK, SINGLE_DV, IEEE, BLOCK_DV, BLOCK_N, BLOCK_M,
        )  # fmt: skip
    row = pid_bh.to(tl.int64) * L + offs_m
    tl.store(
        DQ + row[:, None] * F + offs_f[None, :],
        (acc_dq * scale).to(DQ.dtype.element_ty),
        mask=in_m[:, None] & (offs_f[None, :] < F),
    )


def _parallel_fwd_triton(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(o, z)`` float32 from the forward kernel; ``key_mask`` is float32 0/1 or None."""
    batch, heads, length, feat = q.shape
    dv = v.shape[-1]
    # Every element is written by the kernel, so no memset.
    o = torch.empty(batch, heads, length, dv, dtype=torch.float32, device=q.device)
    z = torch.empty(batch, heads, length, dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, z
    mask, smb, sml = mask_arg(key_mask, q)
    block_dv, single = dv_block(dv)

    def grid(meta: dict) -> tuple[int, int, int]:
        return triton.cdiv(length, meta["BLOCK_M"]), triton.cdiv(dv, block_dv), batch * heads

    with device_guard(q):
        _parallel_fwd_kernel[grid](
            q, k, v, mask, o, z, length, heads, feat, dv, 1.0 / math.sqrt(feat),
            *q.stride(), *k.stride(), *v.stride(), smb, sml, l_bucket(length),
            F_PAD=next_power_of_2(feat, 16), BLOCK_DV=block_dv, SINGLE_DV=single,
            HAS_MASK=key_mask is not None, IEEE=q.dtype == torch.float32,
        )  # fmt: skip
    return o, z


def _parallel_bwd_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    grad_o: Tensor,
    grad_z: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` in the input dtype from the two backward kernels (dk/dv, then dq)."""
    batch, heads, length, feat = q.shape
    dv = v.shape[-1]
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # fully written by the kernels
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dvv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if dq.numel() == 0 or dvv.numel() == 0:
        return dq, dk, dvv
    mask, smb, sml = mask_arg(key_mask, q)
    block_dv, single = dv_block(dv)
    common = (length, heads, feat, dv, 1.0 / math.sqrt(feat))
    strides = (*q.stride(), *k.stride(), *v.stride(), smb, sml, *grad_o.stride(), *grad_z.stride())
    meta = dict(
        F_PAD=next_power_of_2(feat, 16),
        BLOCK_DV=block_dv,
        SINGLE_DV=single,
        HAS_MASK=key_mask is not None,
        IEEE=q.dtype == torch.float32,
    )

    def grid_kv(m: dict) -> tuple[int, int, int]:
        return triton.cdiv(length, m["BLOCK_N"]), triton.cdiv(dv, block_dv), batch * heads

    def grid_q(m: dict) -> tuple[int, int]:
        return triton.cdiv(length, m["BLOCK_M"]), batch * heads

    with device_guard(q):
        _parallel_bwd_dkdv_kernel[grid_kv](
            q, k, v, mask, grad_o, grad_z, dk, dvv, *common, *strides, l_bucket(length), **meta
        )
        _parallel_bwd_dq_kernel[grid_q](
            q, k, v, mask, grad_o, grad_z, dq, *common, *strides, l_bucket(length), **meta
        )
    return dq, dk, dvv


class _TaylorAttentionParallel(torch.autograd.Function):
    """Autograd glue for the Triton path: saves q, k, v (not A) and recomputes in backward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        o, z = _parallel_fwd_triton(q, k, v, key_mask)
        ctx.save_for_backward(q, k, v, key_mask)
        return o, z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_o: Tensor, grad_z: Tensor
    ) -> tuple[Tensor | None, ...]:
        q, k, v, key_mask = ctx.saved_tensors
        dq, dk, dv = _parallel_bwd_triton(q, k, v, key_mask, grad_o, grad_z)
        return dq, dk, dv, None


def taylor_attention_parallel_triton(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Triton path of ``taylor_attention_parallel`` (differentiable w.r.t. q, k, v)."""
    check_triton_feature_dim(q.shape[-1])
    mask, _, _ = mask_arg(key_mask, q)  # float32 0/1, converted once and saved for backward
    return _TaylorAttentionParallel.apply(q, k, v, None if key_mask is None else mask)


def taylor_linear_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    initial_state: tuple[Tensor, Tensor] | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """The tiled form of ``taylor_linear_attention``'s Triton path, at any length.

    ``o, z``: the parallel kernels (gradients w.r.t. q, k, v) plus, with an initial state, its
    readout ``phi(q) @ state`` by the readout kernel (gradients w.r.t. q and the state). The
    final state: the state kernel under ``no_grad`` plus the initial state, as new tensors
    without autograd history. The package registers
    :func:`.chunked.taylor_linear_attention_triton_by_length`, which calls this below
    ``chunked.CHUNKED_MIN_LENGTH`` tokens and the chunked form from there on.
    """
    check_triton_feature_dim(q.shape[-1])
    o, z = taylor_attention_parallel_triton(q, k, v, key_mask)
    if initial_state is not None:
        o_past, z_past = state_readout_triton(q, *initial_state)
        o, z = o + o_past, z + z_past
    if not output_final_state:
        return o, z, None
    with torch.no_grad():
        kv_state, k_state = state_forward(k, v, key_mask)
        if initial_state is not None:
            kv_state.add_(initial_state[0])
            k_state.add_(initial_state[1])
    return o, z, (kv_state, k_state)
