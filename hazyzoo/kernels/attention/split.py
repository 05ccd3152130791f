"""Triton kernels of the Hydragen ops: split-key attention with log-sum-exp, and the merge.

Imported only when triton imports (see :mod:`hazyzoo.kernels.attention`).

``attention_with_lse_triton``: one program takes ``BLOCK_M`` query rows of one (key batch, key
head) pair and one slice of the keys. The rows of a key head are all the queries that read it:
every sequence of the key batch's group, every query head of the grouped-query set and every
query position, so a shared prefix is read once per step for the whole group as a matrix-
matrix product (the point of Hydragen). When those rows are too few to fill the GPU (decode
at small batch over a long prefix), the keys are split over several programs (as flash-
decoding does) and the partial results merged by the second kernel.

``merge_attention_triton``: ``out = sum_i exp(lse_i - lse) out_i`` over ``K`` partial results,
written straight into the layout the caller wants (e.g. transformers' ``[B, T, Hq, D]``).

Both run without autotuning (fixed tiles chosen from the shapes), so they are safe to call
while a CUDA graph is captured. They are wrapped as ``torch.library`` custom ops so that
``torch.compile`` (transformers' compiled decode) treats each as one opaque call.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.dispatch import triton_interpreting

# Whether the kernels below are defined for the CPU interpreter (fixed at import, tests check).
INTERPRETED = triton_interpreting()

MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634
# Programs the split heuristic aims for (about two waves of an H100/H200's 132 SMs).
_TARGET_PROGRAMS = 264
# Fewest keys one split should cover (below this the merge costs more than it saves).
_MIN_KEYS_PER_SPLIT = 256


def check_triton_head_dim(dim: int, dv: int) -> None:
    """The kernels hold a padded ``[BLOCK_M, D]`` query tile in registers: D, Dv <= 256."""
    if max(dim, dv) > MAX_HEAD_DIM:
        raise ValueError(
            f"the Triton attention kernels support head dims <= {MAX_HEAD_DIM}, got D={dim}, "
            f"Dv={dv}; use HAZYZOO_KERNELS=torch"
        )


@triton.jit
def _attention_lse_kernel(
    Q,
    K,
    V,
    MASK,
    OP,
    LSE,
    s_qb,
    s_qh,
    s_qt,
    s_kz,
    s_kh,
    s_kn,
    s_vz,
    s_vh,
    s_vn,
    s_mz,
    s_mb,
    s_mt,
    s_mn,
    s_os,
    s_ob,
    s_oh,
    s_ot,
    s_ls,
    s_lb,
    s_lh,
    s_lt,
    KV_HEADS,
    M_BLOCKS,
    PER,
    REP,
    T,
    N,
    D,
    DV,
    KEYS_PER_SPLIT,
    qk_scale,
    HAS_MASK: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Grid (row blocks * Bk * Hkv, splits), row blocks fastest (programs reading the same
    keys run together, so the keys come from L2 after the first). Rows of key head ``(z, h)`` are ``(bi, r, t)``
    flattened with ``t`` fastest: sequence ``z * PER + bi``, query head ``h * REP + r``,
    position ``t``. Writes float32 ``out`` and natural-log ``lse`` of its key slice."""
    pid_m = tl.program_id(0) % M_BLOCKS
    pid_zh = tl.program_id(0) // M_BLOCKS
    pid_s = tl.program_id(1)
    z = pid_zh // KV_HEADS
    h = pid_zh % KV_HEADS

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < PER * REP * T
    t = rows % T
    r = (rows // T) % REP
    bi = rows // (T * REP)
    b = z * PER + bi
    hq = h * REP + r

    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_rows = b.to(tl.int64) * s_qb + hq * s_qh + t * s_qt
    q = tl.load(
        Q + q_rows[:, None] + offs_d[None, :],
        mask=row_ok[:, None] & (offs_d[None, :] < D),
        other=0.0,
    )
    k_base = K + z.to(tl.int64) * s_kz + h * s_kh
    v_base = V + z.to(tl.int64) * s_vz + h * s_vh
    m_rows = z.to(tl.int64) * s_mz + bi * s_mb + t * s_mt

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)

    n_start = pid_s * KEYS_PER_SPLIT
    n_end = tl.minimum(N, n_start + KEYS_PER_SPLIT)
    for n0 in range(n_start, n_end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_end
        k = tl.load(
            k_base + cols[None, :] * s_kn + offs_d[:, None],
            mask=col_ok[None, :] & (offs_d[:, None] < D),
            other=0.0,
        )
        if IEEE:
            s = tl.dot(q, k, input_precision="ieee")
        else:
            s = tl.dot(q, k)
        s = s * qk_scale  # log2 units
        keep = col_ok[None, :] & row_ok[:, None]
        if HAS_MASK:
            mv = tl.load(MASK + m_rows[:, None] + cols[None, :] * s_mn, mask=keep, other=0)
            keep = keep & (mv != 0)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + cols[:, None] * s_vn + offs_dv[None, :],
            mask=col_ok[:, None] & (offs_dv[None, :] < DV),
            other=0.0,
        )
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    seen = l_i > 0.0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) / 1.4426950408889634, m_i)
    o_rows = pid_s.to(tl.int64) * s_os + b.to(tl.int64) * s_ob + hq * s_oh + t * s_ot
    tl.store(
        OP + o_rows[:, None] + offs_dv[None, :],
        out,
        mask=row_ok[:, None] & (offs_dv[None, :] < DV),
    )
    l_rows = pid_s.to(tl.int64) * s_ls + b.to(tl.int64) * s_lb + hq * s_lh + t * s_lt
    tl.store(LSE + l_rows, lse, mask=row_ok)


@triton.jit
def _merge_kernel(
    PARTS_O,
    PARTS_LSE,
    OUT,
    LSE_OUT,
    PARTS,
    ROWS,
    HEADS,
    T,
    DV,
    s_ok,
    s_orow,
    s_lk,
    s_lrow,
    s_b,
    s_h,
    s_t,
    BLOCK_R: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Grid (row blocks,). Rows ``(b, h, t)`` flattened (``t`` fastest) of contiguous-row
    parts ``PARTS_O [K, ROWS, DV]``, ``PARTS_LSE [K, ROWS]``; writes ``OUT`` at strides ``(s_b, s_h,
    s_t)`` in its dtype and ``LSE_OUT [ROWS]``."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < ROWS
    offs_dv = tl.arange(0, BLOCK_DV)
    lse_max = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    for k in range(0, PARTS):
        lse_k = tl.load(PARTS_LSE + k * s_lk + rows * s_lrow, mask=row_ok, other=float("-inf"))
        lse_max = tl.maximum(lse_max, lse_k)
    m_safe = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_DV], dtype=tl.float32)
    tile_ok = row_ok[:, None] & (offs_dv[None, :] < DV)
    for k in range(0, PARTS):
        lse_k = tl.load(PARTS_LSE + k * s_lk + rows * s_lrow, mask=row_ok, other=float("-inf"))
        w = tl.exp(lse_k - m_safe)
        total += w
        o_k = tl.load(
            PARTS_O + k * s_ok + rows.to(tl.int64)[:, None] * s_orow + offs_dv[None, :],
            mask=tile_ok,
            other=0.0,
        )
        acc += w[:, None] * o_k
    seen = total > 0.0
    out = acc / tl.where(seen, total, 1.0)[:, None]
    lse = tl.where(seen, m_safe + tl.log(tl.where(seen, total, 1.0)), float("-inf"))
    t = rows % T
    h = (rows // T) % HEADS
    b = rows // (T * HEADS)
    out_rows = b.to(tl.int64) * s_b + h * s_h + t * s_t
    tl.store(OUT + out_rows[:, None] + offs_dv[None, :], out.to(OUT.dtype.element_ty), mask=tile_ok)
    tl.store(LSE_OUT + rows, lse, mask=row_ok)


def _tiles(rows: int, dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` for ``rows`` query rows per key head."""
    if INTERPRETED:
        return 16, 16, 4, 1
    if dtype == torch.float32:  # IEEE dots on FMA units: small tiles
        return (16 if rows <= 16 else 32), 32, 4, 2
    block_m = min(128, next_power_of_2(rows, 16))
    block_n = 64 if dim <= 128 else 32
    warps = 8 if block_m >= 128 else 4
    return block_m, block_n, warps, 3 if dim <= 128 else 2


def choose_num_splits(programs: int, n_keys: int, block_n: int) -> int:
    """How many key slices: enough programs for about two waves, each slice at least
    ``_MIN_KEYS_PER_SPLIT`` keys."""
    if programs >= _TARGET_PROGRAMS or n_keys <= _MIN_KEYS_PER_SPLIT:
        return 1
    most = max(1, n_keys // _MIN_KEYS_PER_SPLIT)
    return max(1, min(most, math.ceil(_TARGET_PROGRAMS / programs)))


def _attention_impl(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scale: float,
    num_splits: int,
) -> tuple[Tensor, Tensor]:
    batch, heads, length, dim = query.shape
    key_batch, kv_heads, n_keys, _ = key.shape
    dv = value.shape[-1]
    per, rep = batch // key_batch, heads // kv_heads
    rows = per * rep * length
    block_m, block_n, warps, stages = _tiles(rows, dim, query.dtype)
    programs = triton.cdiv(rows, block_m) * key_batch * kv_heads
    splits = num_splits if num_splits > 0 else choose_num_splits(programs, n_keys, block_n)
    splits = max(1, min(splits, triton.cdiv(max(n_keys, 1), block_n)))
    keys_per_split = triton.cdiv(triton.cdiv(max(n_keys, 1), splits), block_n) * block_n
    splits = triton.cdiv(max(n_keys, 1), keys_per_split)

    query = query if query.stride(-1) == 1 else query.contiguous()
    key = key if key.stride(-1) == 1 else key.contiguous()
    value = value if value.stride(-1) == 1 else value.contiguous()
    out = torch.empty(splits, batch, heads, length, dv, device=query.device, dtype=torch.float32)
    lse = torch.empty(splits, batch, heads, length, device=query.device, dtype=torch.float32)
    if mask is None:
        mask_arg, ms = query, (0, 0, 0, 0)
    else:
        mask_arg = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
        bm, tm, _ = mask.shape
        s_b, s_t, s_n = mask_arg.stride()
        # batch index z * PER + bi: a per-sequence mask steps by PER * s_b per key batch
        ms = (per * s_b, s_b, s_t, s_n) if bm == batch else (s_b, 0, s_t, s_n)
        if tm == 1:
            ms = (ms[0], ms[1], 0, ms[3])
    m_blocks = triton.cdiv(rows, block_m)
    grid = (m_blocks * key_batch * kv_heads, splits)
    with device_guard(query):
        _attention_lse_kernel[grid](
            query,
            key,
            value,
            mask_arg,
            out,
            lse,
            *query.stride()[:3],
            *key.stride()[:3],
            *value.stride()[:3],
            *ms,
            *out.stride()[:4],
            *lse.stride(),
            kv_heads,
            m_blocks,
            per,
            rep,
            length,
            n_keys,
            dim,
            dv,
            keys_per_split,
            scale * _LOG2E,
            HAS_MASK=mask is not None,
            IEEE=query.dtype == torch.float32,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_D=next_power_of_2(dim, 16),
            BLOCK_DV=next_power_of_2(dv, 16),
            num_warps=warps,
            num_stages=stages,
        )
    if splits == 1:
        return out[0], lse[0]
    merged = torch.empty(batch, heads, length, dv, device=query.device, dtype=torch.float32)
    merged_lse = _merge_impl(out, lse, merged)
    return merged, merged_lse


def _merge_impl(outs: Tensor, lses: Tensor, out: Tensor) -> Tensor:
    """Merge ``outs [K, B, H, T, Dv]`` (contiguous rows) into ``out`` (a ``[B, H, T, Dv]``
    view with unit last stride); returns the merged lse ``[B, H, T]``."""
    parts, batch, heads, length, dv = outs.shape
    outs = outs.reshape(parts, batch * heads * length, dv)
    lses = lses.reshape(parts, batch * heads * length)
    if outs.stride(-1) != 1:
        outs = outs.contiguous()
    rows = batch * heads * length
    lse_out = torch.empty(batch, heads, length, device=outs.device, dtype=torch.float32)
    block_dv = next_power_of_2(dv, 16)
    block_r = 16 if INTERPRETED else max(1, min(64, 4096 // block_dv))
    grid = (triton.cdiv(rows, block_r),)
    with device_guard(outs):
        _merge_kernel[grid](
            outs,
            lses,
            out,
            lse_out,
            parts,
            rows,
            heads,
            length,
            dv,
            outs.stride(0),
            outs.stride(1),
            lses.stride(0),
            lses.stride(1),
            out.stride(0),
            out.stride(1),
            out.stride(2),
            BLOCK_R=block_r,
            BLOCK_DV=block_dv,
            num_warps=4,
        )
    return lse_out


@torch.library.custom_op("hazyzoo::attention_with_lse", mutates_args=())
def _attention_op(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scale: float,
    num_splits: int,
) -> tuple[Tensor, Tensor]:
    return _attention_impl(query, key, value, mask, scale, num_splits)


@_attention_op.register_fake
def _(query, key, value, mask, scale, num_splits):
    batch, heads, length, _ = query.shape
    out = query.new_empty(batch, heads, length, value.shape[-1], dtype=torch.float32)
    return out, query.new_empty(batch, heads, length, dtype=torch.float32)


def _merge_eager(outs: Tensor, lses: Tensor, out_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    _, batch, heads, length, dv = outs.shape
    # [B, T, H, Dv] storage (transformers' attention output layout), returned as [B, H, T, Dv]
    out = torch.empty(batch, length, heads, dv, device=outs.device, dtype=out_dtype)
    out = out.transpose(1, 2)
    return out, _merge_impl(outs, lses, out)


@torch.library.custom_op("hazyzoo::merge_attention", mutates_args=())
def _merge_op(outs: Tensor, lses: Tensor, out_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return _merge_eager(outs, lses, out_dtype)


@_merge_op.register_fake
def _(outs, lses, out_dtype):
    _, batch, heads, length, dv = outs.shape
    out = outs.new_empty(batch, length, heads, dv, dtype=out_dtype).transpose(1, 2)
    return out, lses.new_empty(batch, heads, length, dtype=torch.float32)


def attention_with_lse_triton(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scale: float,
    num_splits: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton implementation of :func:`hazyzoo.kernels.attention.attention_with_lse`."""
    check_triton_head_dim(query.shape[-1], value.shape[-1])
    if not torch.compiler.is_compiling():  # eager: skip the custom-op dispatch overhead
        return _attention_impl(query, key, value, mask, float(scale), int(num_splits or 0))
    return _attention_op(query, key, value, mask, float(scale), int(num_splits or 0))


def merge_attention_triton(
    outs: Tensor, lses: Tensor, out_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Triton implementation of :func:`hazyzoo.kernels.attention.merge_attention`."""
    check_triton_head_dim(outs.shape[-1], outs.shape[-1])
    if not torch.compiler.is_compiling():
        return _merge_eager(outs, lses, out_dtype or outs.dtype)
    return _merge_op(outs, lses, out_dtype or outs.dtype)
