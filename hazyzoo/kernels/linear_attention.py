"""Taylor-feature-map linear attention (BASED): PyTorch references, Triton kernels, dispatch.

BASED (Arora et al., "Simple linear attention language models balance the recall-throughput
tradeoff") replaces softmax with the 2nd-order Taylor feature map, for feature dim ``F``::

    phi(x) = [1, x / F**(1/4), vec(x x^T) / (sqrt(2) * sqrt(F))]      (size 1 + F + F**2)

so that ``phi(q) . phi(k) = 1 + s + s**2 / 2`` with ``s = q . k / sqrt(F)``. Causal linear
attention with an optional key (padding) mask ``m_s`` is then::

    A_ts = phi(q_t) . phi(k_s) * m_s   (s <= t, else 0)
    o_t  = sum_s A_ts v_s              numerator   [..., Dv]
    z_t  = sum_s A_ts                  normaliser  [...]

Every op returns ``o`` and ``z`` *unnormalised* (float32): the model computes
``y = o / (z + eps)`` itself, so it can add contributions from a recurrent state first.

Public ops (each has a readable PyTorch reference that is the spec, a Triton kernel, and one
entry point that dispatches through :func:`hazyzoo.kernels.dispatch.use_triton`):

* :func:`taylor_feature_map` -- the explicit feature map (reference only; small uses).
* :func:`taylor_attention_parallel` -- training / prefill, differentiable w.r.t. q, k, v.
  The Triton kernels tile the ``L x L`` score matrix like flash attention and never write the
  ``1 + F + F**2``-wide feature map (or ``A``) to memory.
* :func:`taylor_attention_state` -- the recurrent state ``(sum phi(k)^T v, sum phi(k))`` after a
  prefill, so decoding can continue from it.
* :func:`taylor_attention_step` -- one decode token: updates the state in place, then reads it.

Key-mask semantics (everywhere): ``key_mask[b, s]`` nonzero / True keeps key ``s`` of batch
row ``b``; zero / False drops it from every query's sum (left or right padding). Queries are not
masked: a padded query position still gets an output (``z`` is 0 there if it sees no kept key).

Precision: all accumulation is float32. For float32 inputs every matmul runs in IEEE float32
(no TF32). For float16 / bfloat16 inputs the matmuls use tensor cores in the input dtype: the
attention weights ``A`` (in the backward also ``dS`` and the float32 upstream gradient ``do``;
in the state kernel ``phi(k)``) are rounded to the input dtype before their matmul, like flash
attention does with ``P``; ``z`` sums ``A`` in float32 before rounding. With float16 inputs
``A`` must stay below 65504, i.e. ``|q . k| / sqrt(F)`` below ~360.

The Triton kernels need ``TRITON_INTERPRET=1`` set *before this module is imported* to run on
CPU tensors (that is how the tests run them); on CUDA tensors they are compiled.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from hazyzoo.kernels.dispatch import triton_available, triton_interpreting, use_triton

__all__ = [
    "taylor_attention_parallel",
    "taylor_attention_state",
    "taylor_attention_step",
    "taylor_feature_dim",
    "taylor_feature_map",
]

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_TRITON_FEATURE_DIM = 64

# Whether the Triton kernels below were defined for the CPU interpreter. Triton decides this
# when a kernel is decorated, so it is fixed at import time (tests check it).
_INTERPRETED = triton_interpreting()


def taylor_feature_dim(feature_dim: int) -> int:
    """Size ``1 + F + F**2`` of the Taylor feature map for feature dim ``F`` (273 for F=16)."""
    return 1 + feature_dim + feature_dim * feature_dim


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half / float32 inputs; float64 stays float64 (used by the float64 tests)."""
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_float(name: str, t: Tensor, allowed: tuple[torch.dtype, ...] = _KERNEL_DTYPES) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise ValueError(f"{name} has dtype {t.dtype}; allowed: {names}")


def _check_rank(name: str, t: Tensor, rank: int, layout: str) -> None:
    if t.dim() != rank:
        raise ValueError(f"{name} must be {layout} ({rank} dims), got shape {tuple(t.shape)}")


def _check_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def _check_qkv(q: Tensor | None, k: Tensor, v: Tensor, key_mask: Tensor | None, seq: bool) -> None:
    """Shapes ``[B, H, L, F]`` / ``[B, H, L, Dv]`` (``seq``) or ``[B, H, F]`` / ``[B, H, Dv]``."""
    rank = 4 if seq else 3
    qk_layout = "[B, H, L, F]" if seq else "[B, H, F]"
    v_layout = "[B, H, L, Dv]" if seq else "[B, H, Dv]"
    _check_float("k", k)
    _check_rank("k", k, rank, qk_layout)
    _check_float("v", v)
    _check_rank("v", v, rank, v_layout)
    if q is not None:
        _check_float("q", q)
        _check_rank("q", q, rank, qk_layout)
        if k.shape != q.shape:
            raise ValueError(f"k has shape {tuple(k.shape)} but q has {tuple(q.shape)}")
        if k.dtype != q.dtype:
            raise ValueError(f"k has dtype {k.dtype} but q has {q.dtype}")
    if v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"v has shape {tuple(v.shape)} but k has {tuple(k.shape)}: v must be {v_layout} "
            "with the same leading dims as k"
        )
    if v.dtype != k.dtype:
        raise ValueError(f"v has dtype {v.dtype} but k has {k.dtype}")
    if k.shape[-1] < 1:
        raise ValueError(f"feature dim F (last dim of k) must be >= 1, got shape {tuple(k.shape)}")
    if v.shape[-1] < 1:
        raise ValueError(f"value dim Dv (last dim of v) must be >= 1, got shape {tuple(v.shape)}")
    tensors = {"k": k, "v": v} if q is None else {"q": q, "k": k, "v": v}
    if key_mask is not None:
        if not isinstance(key_mask, Tensor):
            raise TypeError(f"key_mask must be a torch.Tensor or None, got {type(key_mask)}")
        expected = (k.shape[0], k.shape[2])
        if tuple(key_mask.shape) != expected:
            raise ValueError(
                f"key_mask must be [B, L] = {expected}, got shape {tuple(key_mask.shape)}"
            )
        if key_mask.is_complex():
            raise ValueError(f"key_mask must be bool or real 0/1, got dtype {key_mask.dtype}")
        tensors["key_mask"] = key_mask
    _check_same_device(**tensors)


def _check_state(kv_state: Tensor, k_state: Tensor, k: Tensor, v: Tensor) -> None:
    batch, heads, feat = k.shape
    d_phi, dv = taylor_feature_dim(feat), v.shape[-1]
    for name, t in (("kv_state", kv_state), ("k_state", k_state)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise ValueError(f"{name} must be float32 (the recurrent state), got {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous: it is updated in place")
    if tuple(kv_state.shape) != (batch, heads, d_phi, dv):
        raise ValueError(
            f"kv_state must be [B, H, 1+F+F^2, Dv] = {(batch, heads, d_phi, dv)}, "
            f"got shape {tuple(kv_state.shape)}"
        )
    if tuple(k_state.shape) != (batch, heads, d_phi):
        raise ValueError(
            f"k_state must be [B, H, 1+F+F^2] = {(batch, heads, d_phi)}, "
            f"got shape {tuple(k_state.shape)}"
        )
    _check_same_device(k=k, kv_state=kv_state, k_state=k_state)


def _check_triton_feature_dim(feat: int) -> None:
    if feat > _MAX_TRITON_FEATURE_DIM:
        raise ValueError(
            f"the Triton Taylor-attention kernels support feature dim F <= "
            f"{_MAX_TRITON_FEATURE_DIM}, got F={feat}; use HAZYZOO_KERNELS=torch"
        )


# --------------------------------------------------------------------------------------------
# PyTorch references (the spec)
# --------------------------------------------------------------------------------------------


def _feature_map_reference(x: Tensor) -> Tensor:
    acc = _accumulate_dtype(x.dtype)
    feat = x.shape[-1]
    x = x.to(acc)
    ones = torch.ones(*x.shape[:-1], 1, dtype=acc, device=x.device)
    linear = x * feat**-0.25
    quadratic = (x[..., :, None] * x[..., None, :]).flatten(-2) / (math.sqrt(2.0) * math.sqrt(feat))
    return torch.cat([ones, linear, quadratic], dim=-1)


def _taylor_attention_parallel_reference(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Quadratic form: ``A = 1 + s + s^2/2`` with ``s = q k^T / sqrt(F)``, masked, fp32."""
    acc = _accumulate_dtype(q.dtype)
    length, feat = q.shape[-2], q.shape[-1]
    s = (q.to(acc) @ k.to(acc).transpose(-1, -2)) / math.sqrt(feat)
    a = 1.0 + s + 0.5 * s * s
    keep = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    if key_mask is not None:
        keep = keep & key_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]
    a = torch.where(keep, a, torch.zeros((), dtype=acc, device=q.device))
    return a @ v.to(acc), a.sum(-1)


def _taylor_attention_state_reference(
    k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(sum_s m_s phi(k_s)^T v_s, sum_s m_s phi(k_s))`` with the explicit feature map, fp32."""
    acc = _accumulate_dtype(k.dtype)
    phi = _feature_map_reference(k)  # [B, H, L, D_phi]
    if key_mask is not None:
        phi = phi * key_mask.to(device=k.device, dtype=torch.bool)[:, None, :, None].to(acc)
    return phi.transpose(-1, -2) @ v.to(acc), phi.sum(-2)


def _taylor_attention_step_reference(
    q: Tensor, k: Tensor, v: Tensor, kv_state: Tensor, k_state: Tensor
) -> tuple[Tensor, Tensor]:
    """Add ``phi(k)^T v`` / ``phi(k)`` to the states in place, then read them with ``phi(q)``."""
    phi_q = _feature_map_reference(q).to(kv_state.dtype)
    phi_k = _feature_map_reference(k).to(kv_state.dtype)
    kv_state.add_(phi_k[..., :, None] * v.to(kv_state.dtype)[..., None, :])
    k_state.add_(phi_k)
    o = torch.einsum("bhd,bhdv->bhv", phi_q, kv_state)
    z = (phi_q * k_state).sum(-1)
    return o, z


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

if triton_available():
    import triton
    import triton.language as tl

    _Tiles = list[tuple[int, ...]]

    def _configs(half: _Tiles, ieee: _Tiles, names: tuple[str, ...], interpret: tuple) -> dict:
        """``@triton.autotune`` arguments. Each tile is ``(*block sizes, num_warps, num_stages)``
        named by ``names``. float32 inputs (IEEE dots run on FMA units, which hold far more in
        registers) and half inputs (tensor cores) get their own sets, chosen by ``_pick``. When
        interpreting: one config (the interpreter cannot autotune over several), small blocks."""
        if _INTERPRETED:
            return {"configs": [triton.Config(dict(zip(names, interpret)), num_warps=4)]}

        def make(tiles: _Tiles, tag: str) -> list:
            configs = []
            for *blocks, warps, stages in tiles:
                config = triton.Config(dict(zip(names, blocks)), num_warps=warps, num_stages=stages)
                config.precision = tag  # read by _pick below; not passed to the kernel
                configs.append(config)
            return configs

        def _pick(configs: list, named_args: dict, **kwargs: object) -> list:
            ieee = kwargs.get("IEEE", named_args.get("IEEE"))
            return [c for c in configs if c.precision == ("ieee" if ieee else "half")]

        return {
            "configs": make(half, "half") + make(ieee, "ieee"),
            "prune_configs_by": {"early_config_prune": _pick},
        }

    # Forward and dq: BLOCK_M (queries) a multiple of BLOCK_N (keys); dk/dv: BLOCK_N a multiple
    # of BLOCK_M. The diagonal blocks then line up. Tiles checked to compile for sm_90 without
    # (or with tiny) register spills at Dv = 112, F = 16; the fp32 ones are the largest such.
    _MN = ("BLOCK_M", "BLOCK_N")
    _FWD_TUNING = _configs(
        half=[(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)],
        ieee=[(32, 32, 8, 2), (64, 32, 8, 2), (32, 16, 4, 2)],
        names=_MN,
        interpret=(16, 16),
    )
    _DQ_TUNING = _configs(
        half=[(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3)],
        ieee=[(32, 32, 8, 2), (32, 16, 4, 2)],
        names=_MN,
        interpret=(16, 16),
    )
    _DKDV_TUNING = _configs(
        half=[(64, 64, 8, 2), (64, 64, 8, 3), (32, 64, 4, 2), (32, 64, 4, 3)],
        ieee=[(16, 16, 4, 2), (16, 32, 8, 2), (32, 32, 8, 1)],
        names=_MN,
        interpret=(16, 16),
    )
    _STATE_TUNING = _configs(
        half=[(32, 4, 3), (64, 4, 2), (64, 8, 3), (32, 8, 2)],
        ieee=[(16, 8, 2), (32, 8, 2)],
        names=("BLOCK_L",),
        interpret=(32,),
    )
    _TUNE_KEY = ["F_PAD", "BLOCK_DV", "SINGLE_DV", "HAS_MASK", "L_BUCKET"]

    @triton.jit
    def _dot(a, b, IEEE: tl.constexpr):
        """``a @ b`` accumulated in fp32; IEEE fp32 (no TF32) when ``IEEE``."""
        if IEEE:
            out = tl.dot(a, b, input_precision="ieee")
        else:
            out = tl.dot(a, b)
        return out

    @triton.jit
    def _fwd_block(
        acc_o,
        acc_z,
        q,
        offs_m,
        n0,
        k_ptr,
        v_ptr,
        m_ptr,
        L,
        F,
        DV,
        offs_f,
        offs_v,
        stride_kl,
        stride_kd,
        stride_vl,
        stride_vd,
        stride_ml,
        scale,
        CAUSAL: tl.constexpr,
        HAS_MASK: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        """One key block of the forward: ``o += A v``, ``z += rowsum(A)``."""
        offs_n = n0 + tl.arange(0, BLOCK_N)
        in_l = offs_n < L
        kt = tl.load(
            k_ptr + offs_n[None, :] * stride_kl + offs_f[:, None] * stride_kd,
            mask=in_l[None, :] & (offs_f[:, None] < F),
            other=0.0,
        )
        s = _dot(q, kt, IEEE) * scale
        a = 1.0 + s + 0.5 * s * s
        if CAUSAL:
            a = tl.where(offs_m[:, None] >= offs_n[None, :], a, 0.0)
        if HAS_MASK:
            keep = tl.load(m_ptr + offs_n * stride_ml, mask=in_l, other=0.0)
            a = tl.where(keep[None, :] != 0.0, a, 0.0)
        v = tl.load(
            v_ptr + offs_n[:, None] * stride_vl + offs_v[None, :] * stride_vd,
            mask=in_l[:, None] & (offs_v[None, :] < DV),
            other=0.0,
        )
        acc_o += _dot(a.to(v.dtype), v, IEEE)
        acc_z += tl.sum(a, axis=1)
        return acc_o, acc_z

    @triton.autotune(key=_TUNE_KEY, **_FWD_TUNING)
    @triton.jit
    def _parallel_fwd_kernel(
        Q,
        K,
        V,
        M,
        Out,
        Z,
        L,
        H,
        F,
        DV,
        scale,
        stride_qb,
        stride_qh,
        stride_ql,
        stride_qd,
        stride_kb,
        stride_kh,
        stride_kl,
        stride_kd,
        stride_vb,
        stride_vh,
        stride_vl,
        stride_vd,
        stride_mb,
        stride_ml,
        L_BUCKET,
        F_PAD: tl.constexpr,
        BLOCK_DV: tl.constexpr,
        SINGLE_DV: tl.constexpr,
        HAS_MASK: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
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
        q = tl.load(
            Q
            + b * stride_qb
            + h * stride_qh
            + offs_m[:, None] * stride_ql
            + offs_f[None, :] * stride_qd,
            mask=(offs_m[:, None] < L) & (offs_f[None, :] < F),
            other=0.0,
        )
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
    def _v_dot_doT(
        v_ptr, do_ptr, offs_n, offs_m, L, DV, stride_vl, stride_vd, stride_ol, stride_od,
        IEEE: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    ):  # fmt: skip
        """``v[offs_n] @ do[offs_m]^T`` over the whole of Dv in BLOCK_DV chunks (Dv > BLOCK_DV)."""
        out = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        for d0 in range(0, DV, BLOCK_DV):
            offs_c = d0 + tl.arange(0, BLOCK_DV)
            in_c = offs_c < DV
            vc = tl.load(
                v_ptr + offs_n[:, None] * stride_vl + offs_c[None, :] * stride_vd,
                mask=(offs_n[:, None] < L) & in_c[None, :],
                other=0.0,
            )
            doc = tl.load(
                do_ptr + offs_m[:, None] * stride_ol + offs_c[None, :] * stride_od,
                mask=(offs_m[:, None] < L) & in_c[None, :],
                other=0.0,
            ).to(vc.dtype)
            out += _dot(vc, tl.trans(doc), IEEE)
        return out

    @triton.jit
    def _dkdv_block(
        acc_dk,
        acc_dv,
        k,
        v,
        keep_k,
        offs_n,
        m0,
        q_ptr,
        do_ptr,
        dz_ptr,
        v_ptr,
        L,
        F,
        DV,
        offs_f,
        offs_v,
        stride_ql,
        stride_qd,
        stride_vl,
        stride_vd,
        stride_ol,
        stride_od,
        stride_zl,
        scale,
        CAUSAL: tl.constexpr,
        HAS_MASK: tl.constexpr,
        SINGLE_DV: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_DV: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_M: tl.constexpr,
    ):
        """One query block of the dk/dv backward, in the transposed (key-major) orientation."""
        offs_m = m0 + tl.arange(0, BLOCK_M)
        in_m = offs_m < L
        qt = tl.load(
            q_ptr + offs_m[None, :] * stride_ql + offs_f[:, None] * stride_qd,
            mask=in_m[None, :] & (offs_f[:, None] < F),
            other=0.0,
        )
        st = _dot(k, qt, IEEE) * scale  # [BLOCK_N, BLOCK_M]
        at = 1.0 + st + 0.5 * st * st
        if CAUSAL:
            keep = offs_m[None, :] >= offs_n[:, None]
            if HAS_MASK:
                keep = keep & (keep_k[:, None] != 0.0)
            at = tl.where(keep, at, 0.0)
        elif HAS_MASK:
            at = tl.where(keep_k[:, None] != 0.0, at, 0.0)
        # Out-of-range queries load do = dz = 0, so they add nothing below.
        do = tl.load(
            do_ptr + offs_m[:, None] * stride_ol + offs_v[None, :] * stride_od,
            mask=in_m[:, None] & (offs_v[None, :] < DV),
            other=0.0,
        ).to(k.dtype)
        dz = tl.load(dz_ptr + offs_m * stride_zl, mask=in_m, other=0.0).to(tl.float32)
        acc_dv += _dot(at.to(k.dtype), do, IEEE)
        if SINGLE_DV:
            dat = _dot(v, tl.trans(do), IEEE)
        else:
            dat = _v_dot_doT(
                v_ptr, do_ptr, offs_n, offs_m, L, DV, stride_vl, stride_vd, stride_ol, stride_od,
                IEEE, BLOCK_DV, BLOCK_N, BLOCK_M,
            )  # fmt: skip
        dst = (dat + dz[None, :]) * (1.0 + st)
        if CAUSAL:
            dst = tl.where(keep, dst, 0.0)
        elif HAS_MASK:
            dst = tl.where(keep_k[:, None] != 0.0, dst, 0.0)
        acc_dk += _dot(dst.to(k.dtype), tl.trans(qt), IEEE)
        return acc_dk, acc_dv

    @triton.autotune(key=_TUNE_KEY, **_DKDV_TUNING)
    @triton.jit
    def _parallel_bwd_dkdv_kernel(
        Q,
        K,
        V,
        M,
        DO,
        DZ,
        DK,
        DV_OUT,
        L,
        H,
        F,
        DV,
        scale,
        stride_qb,
        stride_qh,
        stride_ql,
        stride_qd,
        stride_kb,
        stride_kh,
        stride_kl,
        stride_kd,
        stride_vb,
        stride_vh,
        stride_vl,
        stride_vd,
        stride_mb,
        stride_ml,
        stride_ob,
        stride_oh,
        stride_ol,
        stride_od,
        stride_zb,
        stride_zh,
        stride_zl,
        L_BUCKET,
        F_PAD: tl.constexpr,
        BLOCK_DV: tl.constexpr,
        SINGLE_DV: tl.constexpr,
        HAS_MASK: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
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
        k = tl.load(
            K
            + b * stride_kb
            + h * stride_kh
            + offs_n[:, None] * stride_kl
            + offs_f[None, :] * stride_kd,
            mask=in_n[:, None] & (offs_f[None, :] < F),
            other=0.0,
        )
        v_ptr = V + b * stride_vb + h * stride_vh
        if SINGLE_DV:
            v = tl.load(
                v_ptr + offs_n[:, None] * stride_vl + offs_v[None, :] * stride_vd,
                mask=in_n[:, None] & (offs_v[None, :] < DV),
                other=0.0,
            )
        else:
            v = k  # unused placeholder: v is streamed in chunks by _v_dot_doT
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
        acc_dq,
        q,
        do,
        dz,
        offs_m,
        n0,
        k_ptr,
        v_ptr,
        m_ptr,
        do_ptr,
        L,
        F,
        DV,
        offs_f,
        offs_v,
        stride_kl,
        stride_kd,
        stride_vl,
        stride_vd,
        stride_ml,
        stride_ol,
        stride_od,
        scale,
        CAUSAL: tl.constexpr,
        HAS_MASK: tl.constexpr,
        SINGLE_DV: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_DV: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_M: tl.constexpr,
    ):
        """One key block of the dq backward: ``dq += dS k`` (scaled at the end)."""
        offs_n = n0 + tl.arange(0, BLOCK_N)
        in_n = offs_n < L
        kt = tl.load(
            k_ptr + offs_n[None, :] * stride_kl + offs_f[:, None] * stride_kd,
            mask=in_n[None, :] & (offs_f[:, None] < F),
            other=0.0,
        )
        s = _dot(q, kt, IEEE) * scale  # [BLOCK_M, BLOCK_N]
        if SINGLE_DV:
            vt = tl.load(
                v_ptr + offs_n[None, :] * stride_vl + offs_v[:, None] * stride_vd,
                mask=in_n[None, :] & (offs_v[:, None] < DV),
                other=0.0,
            )
            da = _dot(do, vt, IEEE)
        else:
            da = tl.trans(
                _v_dot_doT(
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
        acc_dq += _dot(ds.to(q.dtype), tl.trans(kt), IEEE)
        return acc_dq

    @triton.autotune(key=_TUNE_KEY, **_DQ_TUNING)
    @triton.jit
    def _parallel_bwd_dq_kernel(
        Q,
        K,
        V,
        M,
        DO,
        DZ,
        DQ,
        L,
        H,
        F,
        DV,
        scale,
        stride_qb,
        stride_qh,
        stride_ql,
        stride_qd,
        stride_kb,
        stride_kh,
        stride_kl,
        stride_kd,
        stride_vb,
        stride_vh,
        stride_vl,
        stride_vd,
        stride_mb,
        stride_ml,
        stride_ob,
        stride_oh,
        stride_ol,
        stride_od,
        stride_zb,
        stride_zh,
        stride_zl,
        L_BUCKET,
        F_PAD: tl.constexpr,
        BLOCK_DV: tl.constexpr,
        SINGLE_DV: tl.constexpr,
        HAS_MASK: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
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
        q = tl.load(
            Q
            + b * stride_qb
            + h * stride_qh
            + offs_m[:, None] * stride_ql
            + offs_f[None, :] * stride_qd,
            mask=in_m[:, None] & (offs_f[None, :] < F),
            other=0.0,
        )
        do_ptr = DO + b * stride_ob + h * stride_oh
        if SINGLE_DV:
            do = tl.load(
                do_ptr + offs_m[:, None] * stride_ol + offs_v[None, :] * stride_od,
                mask=in_m[:, None] & (offs_v[None, :] < DV),
                other=0.0,
            ).to(q.dtype)
        else:
            do = q  # unused placeholder: do is streamed in chunks by _v_dot_doT
        dz = tl.load(
            DZ + b * stride_zb + h * stride_zh + offs_m * stride_zl, mask=in_m, other=0.0
        ).to(tl.float32)
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

    @triton.jit
    def _feature_index(r, F, D_PHI):
        """For flat feature rows ``r``: the two input coordinates each row multiplies and its
        kind. Row 0 is the constant, rows 1..F linear (``x[r-1]``), then ``x[i] * x[j]``."""
        in_r = r < D_PHI
        is_const = r == 0
        is_lin = (r >= 1) & (r <= F)
        rq = tl.maximum(r - 1 - F, 0)
        is_quad = r > F
        ia = tl.where(is_lin, r - 1, tl.where(is_quad, rq // F, 0))
        ib = tl.where(is_quad, rq % F, 0)
        return ia, ib, is_const, is_lin, in_r

    @triton.jit
    def _feature_values(xa, xb, is_const, is_lin, c1, c2):
        """``phi`` rows from the gathered coordinates (fp32): 1, ``x c1`` or ``x_i x_j c2``."""
        xa = xa.to(tl.float32)
        xb = xb.to(tl.float32)
        return tl.where(is_const, 1.0, tl.where(is_lin, xa * c1, xa * xb * c2))

    @triton.autotune(key=["F", "BLOCK_DV", "BLOCK_R", "HAS_MASK", "L_BUCKET"], **_STATE_TUNING)
    @triton.jit
    def _state_kernel(
        K,
        V,
        M,
        KV,
        KS,
        L,
        H,
        F,
        DV,
        D_PHI,
        c1,
        c2,
        stride_kb,
        stride_kh,
        stride_kl,
        stride_kd,
        stride_vb,
        stride_vh,
        stride_vl,
        stride_vd,
        stride_mb,
        stride_ml,
        L_BUCKET,
        BLOCK_R: tl.constexpr,
        BLOCK_DV: tl.constexpr,
        HAS_MASK: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """Grid (feature-row blocks, Dv blocks, B*H); loops over L. Each step builds the
        ``[BLOCK_R, BLOCK_L]`` tile of ``phi(k)^T`` in registers from two gathers of k."""
        pid_r = tl.program_id(0)
        pid_v = tl.program_id(1)
        pid_bh = tl.program_id(2)
        b = (pid_bh // H).to(tl.int64)
        h = (pid_bh % H).to(tl.int64)
        r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        ia, ib, is_const, is_lin, in_r = _feature_index(r, F, D_PHI)
        offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
        k_ptr = K + b * stride_kb + h * stride_kh
        v_ptr = V + b * stride_vb + h * stride_vh
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
            phit = _feature_values(xa, xb, is_const[:, None], is_lin[:, None], c1, c2)
            phit = tl.where(keep, phit, 0.0)  # [BLOCK_R, BLOCK_L]
            v = tl.load(
                v_ptr + offs_l[:, None] * stride_vl + offs_v[None, :] * stride_vd,
                mask=in_l[:, None] & (offs_v[None, :] < DV),
                other=0.0,
            )
            acc_kv += _dot(phit.to(v.dtype), v, IEEE)
            acc_k += tl.sum(phit, axis=1)
        row = pid_bh.to(tl.int64) * D_PHI + r
        tl.store(
            KV + row[:, None] * DV + offs_v[None, :],
            acc_kv,
            mask=in_r[:, None] & (offs_v[None, :] < DV),
        )
        tl.store(KS + row, acc_k, mask=r < D_PHI - pid_v * D_PHI)  # Dv block 0 only

    @triton.jit
    def _step_kernel(
        Q,
        K,
        V,
        KV,
        KS,
        Out,
        Z,
        F,
        DV,
        D_PHI,
        c1,
        c2,
        BLOCK_R: tl.constexpr,
        BLOCK_DV: tl.constexpr,
    ):
        """Grid (Dv blocks, B*H). Reads and writes its ``[D_phi, BLOCK_DV]`` slice of the state
        once. Only Dv block 0 touches ``k_state`` (read, update, write) and writes ``z``: the
        other blocks run concurrently and must neither race on it nor read it half-updated."""
        pid_v = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
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
            ia, ib, is_const, is_lin, in_r = _feature_index(r, F, D_PHI)
            phi_k = _feature_values(
                tl.load(k_ptr + ia, mask=in_r, other=0.0),
                tl.load(k_ptr + ib, mask=in_r, other=0.0),
                is_const,
                is_lin,
                c1,
                c2,
            )
            phi_q = _feature_values(
                tl.load(q_ptr + ia, mask=in_r, other=0.0),
                tl.load(q_ptr + ib, mask=in_r, other=0.0),
                is_const,
                is_lin,
                c1,
                c2,
            )
            phi_k = tl.where(in_r, phi_k, 0.0)
            phi_q = tl.where(in_r, phi_q, 0.0)
            row = pid_bh * D_PHI + r
            ptr = KV + row[:, None] * DV + offs_v[None, :]
            tile_mask = in_r[:, None] & in_v[None, :]
            kv = tl.load(ptr, mask=tile_mask, other=0.0) + phi_k[:, None] * v[None, :]
            tl.store(ptr, kv, mask=tile_mask)
            acc_o += tl.sum(phi_q[:, None] * kv, axis=0)
            ks = tl.load(KS + row, mask=r < ks_end, other=0.0) + phi_k
            tl.store(KS + row, ks, mask=r < ks_end)
            acc_z += phi_q * ks
        tl.store(Out + pid_bh * DV + offs_v, acc_o, mask=in_v)
        tl.store(Z + pid_bh, tl.sum(acc_z, axis=0), mask=first)


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, (n - 1).bit_length()))


# Widest Dv tile. Small when interpreting so that the tests' Dv = 24 exercises the several-Dv-
# blocks code paths (which on the GPU only run for Dv > 128).
_MAX_BLOCK_DV = 16 if _INTERPRETED else 128


def _dv_block(dv: int) -> tuple[int, bool]:
    """Dv tile: the whole (padded) Dv up to 128 in one block, else 128-wide blocks."""
    block = min(_pow2(dv), _MAX_BLOCK_DV)
    return block, block >= dv


def _l_bucket(length: int) -> int:
    """Autotune bucket for the sequence length (powers of two from 1k)."""
    return max(1024, _pow2(length))


def _device_guard(t: Tensor) -> contextlib.AbstractContextManager:
    """Launch on ``t``'s GPU even when another one is current (Triton uses the current one)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _mask_arg(key_mask: Tensor | None, like: Tensor) -> tuple[Tensor, int, int]:
    """The key mask as float32 ``[B, L]`` (1 keep, 0 drop) and its strides, or a dummy."""
    if key_mask is None:
        return like, 0, 0
    m = key_mask.to(device=like.device, dtype=torch.bool).to(torch.float32).contiguous()
    return m, m.stride(0), m.stride(1)


def _parallel_fwd_triton(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    batch, heads, length, feat = q.shape
    dv = v.shape[-1]
    # Every element is written by the kernel, so no memset.
    o = torch.empty(batch, heads, length, dv, dtype=torch.float32, device=q.device)
    z = torch.empty(batch, heads, length, dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, z
    mask, smb, sml = _mask_arg(key_mask, q)
    block_dv, single = _dv_block(dv)

    def grid(meta: dict) -> tuple[int, int, int]:
        return triton.cdiv(length, meta["BLOCK_M"]), triton.cdiv(dv, block_dv), batch * heads

    with _device_guard(q):
        _parallel_fwd_kernel[grid](
            q, k, v, mask, o, z, length, heads, feat, dv, 1.0 / math.sqrt(feat),
            *q.stride(), *k.stride(), *v.stride(), smb, sml, _l_bucket(length),
            F_PAD=_pow2(feat), BLOCK_DV=block_dv, SINGLE_DV=single,
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
    batch, heads, length, feat = q.shape
    dv = v.shape[-1]
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # fully written by the kernels
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dvv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if dq.numel() == 0 or dvv.numel() == 0:
        return dq, dk, dvv
    mask, smb, sml = _mask_arg(key_mask, q)
    block_dv, single = _dv_block(dv)
    common = (length, heads, feat, dv, 1.0 / math.sqrt(feat))
    strides = (*q.stride(), *k.stride(), *v.stride(), smb, sml, *grad_o.stride(), *grad_z.stride())
    meta = dict(
        F_PAD=_pow2(feat),
        BLOCK_DV=block_dv,
        SINGLE_DV=single,
        HAS_MASK=key_mask is not None,
        IEEE=q.dtype == torch.float32,
    )

    def grid_kv(m: dict) -> tuple[int, int, int]:
        return triton.cdiv(length, m["BLOCK_N"]), triton.cdiv(dv, block_dv), batch * heads

    def grid_q(m: dict) -> tuple[int, int]:
        return triton.cdiv(length, m["BLOCK_M"]), batch * heads

    with _device_guard(q):
        _parallel_bwd_dkdv_kernel[grid_kv](
            q, k, v, mask, grad_o, grad_z, dk, dvv, *common, *strides, _l_bucket(length), **meta
        )
        _parallel_bwd_dq_kernel[grid_q](
            q, k, v, mask, grad_o, grad_z, dq, *common, *strides, _l_bucket(length), **meta
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


def _taylor_attention_parallel_triton(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Triton path of :func:`taylor_attention_parallel` (differentiable w.r.t. q, k, v)."""
    _check_triton_feature_dim(q.shape[-1])
    mask, _, _ = _mask_arg(key_mask, q)  # float32 0/1, converted once and saved for backward
    return _TaylorAttentionParallel.apply(q, k, v, None if key_mask is None else mask)


def _taylor_attention_state_triton(
    k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Triton path of :func:`taylor_attention_state` (no autograd)."""
    _check_triton_feature_dim(k.shape[-1])
    batch, heads, length, feat = k.shape
    dv = v.shape[-1]
    d_phi = taylor_feature_dim(feat)
    if batch * heads == 0 or length == 0:  # empty prefix: the zero state
        kv_state = torch.zeros(batch, heads, d_phi, dv, dtype=torch.float32, device=k.device)
        return kv_state, torch.zeros(batch, heads, d_phi, dtype=torch.float32, device=k.device)
    kv_state = torch.empty(batch, heads, d_phi, dv, dtype=torch.float32, device=k.device)
    k_state = torch.empty(batch, heads, d_phi, dtype=torch.float32, device=k.device)
    mask, smb, sml = _mask_arg(key_mask, k)
    # The interpreter pays per op, not per element: one wide feature block is fastest there.
    block_r = min(_pow2(d_phi), 512) if _INTERPRETED else 64
    block_dv = min(_pow2(dv), _MAX_BLOCK_DV, 64)  # 64: keeps the fp32 accumulator in registers
    grid = (triton.cdiv(d_phi, block_r), triton.cdiv(dv, block_dv), batch * heads)
    with _device_guard(k):
        _state_kernel[grid](
            k, v, mask, kv_state, k_state, length, heads, feat, dv, d_phi,
            feat**-0.25, 1.0 / (math.sqrt(2.0) * math.sqrt(feat)),
            *k.stride(), *v.stride(), smb, sml, _l_bucket(length),
            BLOCK_R=block_r, BLOCK_DV=block_dv, HAS_MASK=key_mask is not None,
            IEEE=k.dtype == torch.float32,
        )  # fmt: skip
    return kv_state, k_state


def _taylor_attention_step_triton(
    q: Tensor, k: Tensor, v: Tensor, kv_state: Tensor, k_state: Tensor
) -> tuple[Tensor, Tensor]:
    """Triton path of :func:`taylor_attention_step` (updates the states in place)."""
    _check_triton_feature_dim(q.shape[-1])
    batch, heads, feat = q.shape
    dv = v.shape[-1]
    d_phi = taylor_feature_dim(feat)
    o = torch.empty(batch, heads, dv, dtype=torch.float32, device=q.device)
    z = torch.empty(batch, heads, dtype=torch.float32, device=q.device)
    if batch * heads == 0:
        return o, z
    # One program per (b*h, Dv block): with few heads in flight, narrower Dv blocks give the
    # GPU more programs to keep memory busy; with many, full rows read best.
    block_dv = min(_pow2(dv), _MAX_BLOCK_DV)
    while block_dv > 32 and batch * heads * triton.cdiv(dv, block_dv) < 512:
        block_dv //= 2
    # [BLOCK_R, BLOCK_DV] fp32 tiles of 8k elements; one wide block when interpreting.
    block_r = min(_pow2(d_phi), 512) if _INTERPRETED else max(16, 8192 // block_dv)
    with _device_guard(q):
        _step_kernel[(triton.cdiv(dv, block_dv), batch * heads)](
            q.contiguous(), k.contiguous(), v.contiguous(), kv_state, k_state, o, z,
            feat, dv, d_phi, feat**-0.25, 1.0 / (math.sqrt(2.0) * math.sqrt(feat)),
            BLOCK_R=block_r, BLOCK_DV=block_dv, num_warps=4,
        )  # fmt: skip
    return o, z


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def taylor_feature_map(x: Tensor) -> Tensor:
    """Explicit Taylor feature map ``[..., F] -> [..., 1 + F + F^2]`` (reference only).

    ``phi(x) = [1, x / F^(1/4), vec(x x^T) / (sqrt(2) sqrt(F))]``, quadratic part row-major
    (index ``1 + F + i*F + j`` holds ``x_i x_j``). Computed and returned in float32 (float64
    stays float64). The attention ops never build it; it is for small things like tests.
    """
    _check_float("x", x, (*_KERNEL_DTYPES, torch.float64))
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be [..., F] with F >= 1, got shape {tuple(x.shape)}")
    return _feature_map_reference(x)


def taylor_attention_parallel(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Causal Taylor linear attention over whole sequences (training and prefill).

    Args:
        q, k: ``[B, H, L, F]``, float16 / bfloat16 / float32, same dtype (any strides).
        v: ``[B, H, L, Dv]``, same dtype as q.
        key_mask: ``None`` or ``[B, L]`` (bool or 0/1 numbers); nonzero keeps key ``s``.

    Returns:
        ``(o, z)``: unnormalised numerator ``o [B, H, L, Dv]`` and normaliser ``z [B, H, L]``,
        both float32; divide ``o / (z + eps)[..., None]`` yourself. Differentiable w.r.t. q, k,
        v (gradients of both o and z flow); gradients come back in the input dtype.
    """
    _check_qkv(q, k, v, key_mask, seq=True)
    tensors = (q, k, v) if key_mask is None else (q, k, v, key_mask)
    if use_triton(*tensors):
        return _taylor_attention_parallel_triton(q, k, v, key_mask)
    return _taylor_attention_parallel_reference(q, k, v, key_mask)


def taylor_attention_state(
    k: Tensor, v: Tensor, key_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Recurrent state after a prefill, so decoding can continue with
    :func:`taylor_attention_step`.

    Args:
        k: ``[B, H, L, F]``; v: ``[B, H, L, Dv]`` (same float dtype); key_mask as in
            :func:`taylor_attention_parallel` (masked keys are left out of the state).

    Returns:
        ``kv_state [B, H, 1+F+F^2, Dv] = sum_s m_s phi(k_s)^T v_s`` and
        ``k_state [B, H, 1+F+F^2] = sum_s m_s phi(k_s)``, float32. The Triton path has no
        backward (use it under ``torch.no_grad``); the reference path is differentiable.
    """
    _check_qkv(None, k, v, key_mask, seq=True)
    tensors = (k, v) if key_mask is None else (k, v, key_mask)
    if use_triton(*tensors):
        return _taylor_attention_state_triton(k, v, key_mask)
    return _taylor_attention_state_reference(k, v, key_mask)


def taylor_attention_step(
    q: Tensor, k: Tensor, v: Tensor, kv_state: Tensor, k_state: Tensor
) -> tuple[Tensor, Tensor]:
    """One decoding step: add the new token to the state IN PLACE, then attend with q.

    Args:
        q, k: ``[B, H, F]``; v: ``[B, H, Dv]`` (same float dtype).
        kv_state: ``[B, H, 1+F+F^2, Dv]`` and k_state: ``[B, H, 1+F+F^2]``, float32 and
            contiguous, owned by the caller; updated in place to include ``(k, v)``.

    Returns:
        ``o = phi(q) . kv_state`` ``[B, H, Dv]`` and ``z = phi(q) . k_state`` ``[B, H]``,
        float32 and unnormalised, computed after the update (the token attends to itself).
    """
    _check_qkv(q, k, v, None, seq=False)
    _check_state(kv_state, k_state, k, v)
    if use_triton(q, k, v, kv_state, k_state):
        return _taylor_attention_step_triton(q, k, v, kv_state, k_state)
    return _taylor_attention_step_reference(q, k, v, kv_state, k_state)
