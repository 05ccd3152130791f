"""Mamba's selective scan in Triton: forward scan, reverse-time backward scan, decode step.

Imported only when triton imports (see :mod:`hazyzoo.kernels.selective_scan`). The scan
kernels run one program per (block of ``BLOCK_D`` channels, batch row); the program keeps its
state ``h [BLOCK_D, N_PAD]`` in float32 registers (``N_PAD``: ``d_state`` rounded up to a power
of two; the padded lanes are masked to zero and stay zero) and walks the sequence in *time
tiles* of ``chunk`` steps (``BLOCK_T``: ``chunk`` rounded up to a power of two, the extra lanes
masked). Per tile it

* loads ``u``, ``delta`` (``z``) as ``[BLOCK_D, BLOCK_T]`` tiles and ``B``, ``C`` as
  ``[N_PAD, BLOCK_T]`` tiles, one vectorised load each (coalesced along L when L is the
  contiguous axis; any strides work, the Mamba layer passes transposed views), issued one tile
  ahead (software prefetch: the loads of tile ``k + 1`` are in flight while tile ``k``
  computes), so the loop waits on global memory once per tile, not once per step;
* forms the decays ``exp(dt A)`` and drives ``dt u B`` of all its steps at once
  (``[BLOCK_D, N_PAD, BLOCK_T]``) and solves the linear recurrence ``h_t = a_t h_{t-1} + b_t``
  with ``tl.associative_scan`` over the time axis (combine ``(a1, b1), (a2, b2) -> (a1 a2,
  a2 b1 + b2)``; the carried state enters through ``b`` at the tile's first step; masked
  steps have ``a = 1, b = 0``, so the state at the tile's last lane is the carry);
* contracts with ``C`` and writes the ``y`` tile in one store.

Backward. The forward stores the state before every tile (``B * D * ceil(L / chunk) * N``
floats) when a gradient is needed; the backward walks the tiles from last to first and
recomputes the tile's states from its checkpoint with the same scan (no workspace, no second
pass). The state gradient ``G_t`` (w.r.t. ``h_t``) obeys the reverse-time linear recurrence
``G_t = a_{t+1} G_{t+1} + g_t C_t`` (``g_t`` the gradient w.r.t. ``y_t`` before the gate), solved
by the same scan with ``reverse=True``; its coefficients ``a_{t+1}`` come from a second, shifted
load of ``delta`` (cache hits), the carry from the later tile enters at the tile's last lane.
The decay term's input ``a_t h_{t-1}`` is ``h_t - dt_t u_t B_t`` (no division, no shift).

Reductions over channels: ``dB`` and ``dC`` (``[B, N, L]``, shared by all channels) are summed
over the program's channels in registers and added with one ``[N_PAD, BLOCK_T]`` float32
atomic add per tile (relaxed; their last bits may vary run to run); ``dA``, ``dD`` and
``d(delta_bias)`` (per channel, summed over batch rows and time) are accumulated in registers
and written to per-batch-row partial buffers, summed on the host (deterministic).

Block sizes (heuristics, plain launches, no autotuning; not timed on hardware, register use
checked with an offline sm_90 compile: no spills, ~110-145 registers forward, ~160-235
backward):

* ``chunk`` (time tile and checkpoint interval): ``512 // N_PAD`` clamped to ``[8, 64]``
  (64 for ``d_state <= 8``, 32 for 16), at most ``L``; 4 when interpreting, so the tests'
  short sequences span several tiles (the last one partial).
* ``BLOCK_D``: as many channels as keep the 3-D tile ``BLOCK_D * N_PAD * BLOCK_T`` within
  2048 (forward) / 1024 (backward, which keeps about twice as many tile tensors live) float32
  elements, halved (down to 1) while the grid has fewer than 256 programs (about two per SM
  of a 132-SM H200: each program's loop is a chain of dependent tiles, more programs in
  flight hide more latency). E.g. ``(16, 256, 1024, N=4)``: 64-step tiles, 8 / 4 channels,
  512 / 1024 programs; ``(4, 256, 8192, N=16)``: 32-step tiles, 4 / 2 channels, 256 / 512
  programs.
* warps: one per 256 tile elements (8 elements of each 3-D tensor per thread), 1..8.
* The decode step keeps the one-step kernel (no time axis): ``BLOCK_D * N_PAD <= 1024``,
  at least 8 channels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.dispatch import triton_interpreting

# Whether these kernels are defined for the CPU interpreter (fixed when they are decorated).
INTERPRETED = triton_interpreting()

# Largest d_state the register-resident state supports.
MAX_TRITON_D_STATE = 256

# 3-D tile elements (BLOCK_D * N_PAD * BLOCK_T) per scan program at most (forward, backward);
# the decode step's state elements (BLOCK_D * N_PAD) per program at most. When interpreting,
# BLOCK_D * N_PAD <= 16 whatever the time tile, so the tests' few channels still span several
# channel blocks (masking and the cross-block reductions).
_FWD_TILE = 2048
_BWD_TILE = 1024
_STEP_TILE = 1024
_MIN_PROGRAMS = 256


def check_triton_d_state(n: int) -> None:
    """The state tile lives in registers: ``d_state <= 256``."""
    if n > MAX_TRITON_D_STATE:
        raise ValueError(
            f"the Triton selective scan supports d_state N <= {MAX_TRITON_D_STATE}, got N={n}; "
            "use HAZYZOO_KERNELS=torch"
        )


def _block_d(
    channels: int, n_pad: int, batch: int, tile: int, block_t: int = 1, floor: int = 1
) -> int:
    """Channels per program: as many as ``tile`` elements (``BLOCK_D * n_pad * block_t``)
    allow, halved (not below ``floor``) while the grid would have under ``_MIN_PROGRAMS``
    programs (the scan is latency-bound: more programs hide more of it), at least 1
    (interpreting: ``BLOCK_D * n_pad <= 16``, no parallelism heuristic)."""
    budget = 16 // n_pad if INTERPRETED else tile // (n_pad * block_t)
    block = max(1, min(next_power_of_2(channels), budget))
    if not INTERPRETED:
        while block > floor and batch * triton.cdiv(channels, block) < _MIN_PROGRAMS:
            block //= 2
    return block


def _num_warps(elements: int) -> int:
    """One warp per 256 register-tile elements (8 per thread), 1..8."""
    return max(1, min(8, elements // 256))


def default_chunk(length: int, n_pad: int = 1) -> int:
    """Time tile (= checkpoint interval): ``512 // n_pad`` clamped to ``[8, 64]``, at most
    ``L`` (4 when interpreting, so short test sequences span several tiles)."""
    if INTERPRETED:
        return min(4, max(length, 1))
    return min(max(length, 1), min(64, max(8, 512 // n_pad)))


@triton.jit
def _softplus(x):
    """``log(1 + exp(x))`` as torch computes it (``x`` itself above 20), with an accurate
    ``log1p`` (``log(w) * v / (w - 1)`` for ``w = 1 + v``) for very negative ``x``."""
    v = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + v
    log1p = tl.where(w == 1.0, v, tl.log(w) * (v / (w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _combine(a1, b1, a2, b2):
    """Composition of the affine maps ``h -> a1 h + b1`` then ``h -> a2 h + b2``."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _dt(r_raw, bias, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """``(raw delta (+ bias), dt)`` of a loaded ``[BLOCK_D, BLOCK_T]`` delta tile, float32;
    ``dt`` is 0 where masked (a masked step then leaves the state unchanged)."""
    r = r_raw.to(tl.float32)
    if HAS_BIAS:
        r += bias[:, None]
    if SOFTPLUS:
        dt = _softplus(r)
    else:
        dt = r
    return r, tl.where(mask, dt, 0.0)


@triton.jit
def _load_fwd_tile(
    u_ptr, dl_ptr, z_ptr, b_ptr, c_ptr, t0, s_ul, s_dl, s_zl, s_bl, s_cl, mdt, mnt,
    HAS_Z: tl.constexpr,
):  # fmt: skip
    """The raw ``u, delta, z`` (``[BLOCK_D, BLOCK_T]``) and ``B, C`` (``[BLOCK_N, BLOCK_T]``)
    tiles of the steps from ``t0`` (0 where masked; ``z`` is ``u`` without a gate)."""
    u = tl.load(u_ptr + t0 * s_ul, mask=mdt, other=0.0)
    r = tl.load(dl_ptr + t0 * s_dl, mask=mdt, other=0.0)
    if HAS_Z:
        z = tl.load(z_ptr + t0 * s_zl, mask=mdt, other=0.0)
    else:
        z = u
    bt = tl.load(b_ptr + t0 * s_bl, mask=mnt, other=0.0)
    ct = tl.load(c_ptr + t0 * s_cl, mask=mnt, other=0.0)
    return u, r, z, bt, ct


@triton.jit
def _scan_fwd_kernel(
    U, DL, A, Bm, Cm, Dv, Z, BIAS, H0, Y, LAST, CKPT,
    DIM, N, L, CHUNK,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl,
    s_D, s_zb, s_zd, s_zl, s_bias, s_hb, s_hd, s_hn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """Grid (channel blocks, B). ``y [B, D, L]`` (contiguous, u's dtype), the last state
    ``[B, D, N]`` float32 and, with ``SAVE_CKPT``, the state before every tile of ``CHUNK``
    steps into ``CKPT [B, D, ceil(L / CHUNK), N]`` float32 (module docstring)."""
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    md = offs_d < DIM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    in_chunk = offs_t < CHUNK
    a = tl.load(A + offs_d[:, None] * s_ad + offs_n[None, :] * s_an, mask=mdn, other=0.0)
    a3 = a.to(tl.float32)[:, :, None]
    d_skip = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        d_skip = tl.load(Dv + offs_d * s_D, mask=md, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(BIAS + offs_d * s_bias, mask=md, other=0.0).to(tl.float32)
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    if HAS_INIT:
        h0 = H0 + pid_b * s_hb + offs_d[:, None] * s_hd + offs_n[None, :] * s_hn
        h = tl.load(h0, mask=mdn, other=0.0).to(tl.float32)
    rows = offs_d.to(tl.int64)[:, None]
    u_ptr = U + pid_b * s_ub + rows * s_ud + offs_t[None, :] * s_ul
    dl_ptr = DL + pid_b * s_db + rows * s_dd + offs_t[None, :] * s_dl
    z_ptr = Z + pid_b * s_zb + rows * s_zd + offs_t[None, :] * s_zl
    b_ptr = Bm + pid_b * s_bb + offs_n[:, None] * s_bn + offs_t[None, :] * s_bl
    c_ptr = Cm + pid_b * s_cb + offs_n[:, None] * s_cn + offs_t[None, :] * s_cl
    y_ptr = Y + pid_b * DIM * L + rows * L + offs_t[None, :]
    first = (offs_t == 0)[None, None, :]
    last = (offs_t == BLOCK_T - 1)[None, None, :]
    n_chunks = tl.cdiv(L, CHUNK)
    ckpt_ptr = CKPT + pid_b * DIM * n_chunks * N + offs_d[:, None] * (n_chunks * N)
    ckpt_ptr += offs_n[None, :]

    mt = in_chunk & (offs_t < L)
    u_n, r_n, z_n, b_n, c_n = _load_fwd_tile(
        u_ptr, dl_ptr, z_ptr, b_ptr, c_ptr, 0, s_ul, s_dl, s_zl, s_bl, s_cl,
        md[:, None] & mt[None, :], mn[:, None] & mt[None, :], HAS_Z,
    )  # fmt: skip
    for c in range(0, n_chunks):
        t0 = c * CHUNK
        mt = in_chunk & (t0 + offs_t < L)
        mdt = md[:, None] & mt[None, :]
        u_raw, r_raw, z_raw, b_raw, c_raw = u_n, r_n, z_n, b_n, c_n
        # Prefetch the next tile (all masked past the end).
        mt_next = in_chunk & (t0 + CHUNK + offs_t < L)
        u_n, r_n, z_n, b_n, c_n = _load_fwd_tile(
            u_ptr, dl_ptr, z_ptr, b_ptr, c_ptr, t0 + CHUNK, s_ul, s_dl, s_zl, s_bl, s_cl,
            md[:, None] & mt_next[None, :], mn[:, None] & mt_next[None, :], HAS_Z,
        )  # fmt: skip
        if SAVE_CKPT:
            tl.store(ckpt_ptr + c * N, h, mask=mdn)
        u = u_raw.to(tl.float32)
        _r, dt = _dt(r_raw, bias, mdt, HAS_BIAS, SOFTPLUS)
        bt = b_raw.to(tl.float32)
        ct = c_raw.to(tl.float32)
        decay = tl.exp(dt[:, None, :] * a3)  # [BLOCK_D, BLOCK_N, BLOCK_T]
        drive = (dt * u)[:, None, :] * bt[None, :, :]
        drive = tl.where(first, drive + decay * h[:, :, None], drive)
        _, hs = tl.associative_scan((decay, drive), 2, _combine)  # h_t of every step
        y = tl.sum(hs * ct[None, :, :], axis=1)
        if HAS_D:
            y += d_skip[:, None] * u
        if HAS_Z:
            zt = z_raw.to(tl.float32)
            y = y * (zt * _sigmoid(zt))
        tl.store(y_ptr + t0, y.to(Y.dtype.element_ty), mask=mdt)
        h = tl.sum(tl.where(last, hs, 0.0), axis=2)  # masked lanes carry the last state
    tl.store(LAST + pid_b * DIM * N + offs_d[:, None] * N + offs_n[None, :], h, mask=mdn)


@triton.jit
def _load_bwd_tile(
    u_ptr, dl_ptr, z_ptr, gy_ptr, b_ptr, c_ptr, ckpt_ptr, c, t0,
    s_ul, s_dl, s_zl, s_gl, s_bl, s_cl, N, mdt, mdt1, mnt, mdn, HAS_Z: tl.constexpr,
):  # fmt: skip
    """Tile ``c`` (steps from ``t0``): its checkpoint, the raw ``u, delta, delta`` one step
    later, ``z`` (``u`` without a gate), ``grad_y`` tiles and the ``B, C`` tiles."""
    h0 = tl.load(ckpt_ptr + c * N, mask=mdn, other=0.0)
    u = tl.load(u_ptr + t0 * s_ul, mask=mdt, other=0.0)
    r = tl.load(dl_ptr + t0 * s_dl, mask=mdt, other=0.0)
    r1 = tl.load(dl_ptr + (t0 + 1) * s_dl, mask=mdt1, other=0.0)
    if HAS_Z:
        z = tl.load(z_ptr + t0 * s_zl, mask=mdt, other=0.0)
    else:
        z = u
    gy = tl.load(gy_ptr + t0 * s_gl, mask=mdt, other=0.0)
    bt = tl.load(b_ptr + t0 * s_bl, mask=mnt, other=0.0)
    ct = tl.load(c_ptr + t0 * s_cl, mask=mnt, other=0.0)
    return h0, u, r, r1, z, gy, bt, ct


@triton.jit
def _scan_bwd_kernel(
    U, DL, A, Bm, Cm, Dv, Z, BIAS, CKPT, GY, GLAST,
    DU, DDL, DZ, DA_P, DB, DC, DD_P, DBIAS_P, DH0,
    DIM, N, L, CHUNK,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl,
    s_D, s_zb, s_zd, s_zl, s_bias, s_gb, s_gd, s_gl, s_lb, s_ld, s_ln,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr,
    HAS_GLAST: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """Grid (channel blocks, B). The reverse-time scan, tile by tile (module docstring).

    ``G`` is the gradient w.r.t. the state ``h_t``: it starts as the last state's gradient,
    gains ``g_t C_t`` at each step (``g_t`` the gradient w.r.t. ``y_t`` before the gate) and
    is carried to ``h_{t-1}`` through the decay ``exp(dt_t A)``. Writes ``du``, ``d(delta)``,
    ``dz`` (``[B, D, L]``, contiguous, their inputs' dtypes), adds into ``dB``, ``dC``
    (``[B, N, L]`` float32), writes the per-batch-row partials ``dA [B, D, N]``, ``dD``,
    ``d(delta_bias)`` ``[B, D]`` and ``d(initial_state) [B, D, N]`` (float32)."""
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    md = offs_d < DIM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    in_chunk = offs_t < CHUNK
    a = tl.load(A + offs_d[:, None] * s_ad + offs_n[None, :] * s_an, mask=mdn, other=0.0)
    a = a.to(tl.float32)
    a3 = a[:, :, None]
    d_skip = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        d_skip = tl.load(Dv + offs_d * s_D, mask=md, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(BIAS + offs_d * s_bias, mask=md, other=0.0).to(tl.float32)
    g_state = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # G of the step after the tile
    if HAS_GLAST:
        gl = GLAST + pid_b * s_lb + offs_d[:, None] * s_ld + offs_n[None, :] * s_ln
        g_state = tl.load(gl, mask=mdn, other=0.0).to(tl.float32)
    acc_da = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    acc_dd = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_dbias = tl.zeros([BLOCK_D], dtype=tl.float32)

    rows = offs_d.to(tl.int64)[:, None]
    u_ptr = U + pid_b * s_ub + rows * s_ud + offs_t[None, :] * s_ul
    dl_ptr = DL + pid_b * s_db + rows * s_dd + offs_t[None, :] * s_dl
    z_ptr = Z + pid_b * s_zb + rows * s_zd + offs_t[None, :] * s_zl
    gy_ptr = GY + pid_b * s_gb + rows * s_gd + offs_t[None, :] * s_gl
    b_ptr = Bm + pid_b * s_bb + offs_n[:, None] * s_bn + offs_t[None, :] * s_bl
    c_ptr = Cm + pid_b * s_cb + offs_n[:, None] * s_cn + offs_t[None, :] * s_cl
    seq_ptr = pid_b * DIM * L + rows * L + offs_t[None, :]  # the contiguous [B, D, L] grads
    bc_ptr = pid_b * N * L + offs_n[:, None] * L + offs_t[None, :]  # dB, dC [B, N, L]
    n_chunks = tl.cdiv(L, CHUNK)
    ckpt_ptr = CKPT + pid_b * DIM * n_chunks * N + offs_d[:, None] * (n_chunks * N)
    ckpt_ptr += offs_n[None, :]
    first = (offs_t == 0)[None, None, :]
    last = (offs_t == BLOCK_T - 1)[None, None, :]

    c = n_chunks - 1
    t0 = c * CHUNK
    mt = in_chunk & (t0 + offs_t < L)
    mt1 = in_chunk & (t0 + 1 + offs_t < L)
    h0_n, u_n, r_n, r1_n, z_n, gy_n, b_n, c_n = _load_bwd_tile(
        u_ptr, dl_ptr, z_ptr, gy_ptr, b_ptr, c_ptr, ckpt_ptr, c, t0,
        s_ul, s_dl, s_zl, s_gl, s_bl, s_cl, N, md[:, None] & mt[None, :],
        md[:, None] & mt1[None, :], mn[:, None] & mt[None, :], mdn, HAS_Z,
    )  # fmt: skip
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t0 = c * CHUNK
        mt = in_chunk & (t0 + offs_t < L)
        mdt = md[:, None] & mt[None, :]
        mdt1 = md[:, None] & (in_chunk & (t0 + 1 + offs_t < L))[None, :]
        h0, u_raw, r_raw, r1_raw, z_raw = h0_n, u_n, r_n, r1_n, z_n
        gy_raw, b_raw, c_raw = gy_n, b_n, c_n
        # Prefetch the tile before (c - 1 < 0: everything masked).
        tp = t0 - CHUNK
        mtp = in_chunk & (offs_t * 0 + c > 0)
        mdnp = mdn & (offs_n * 0 + c > 0)[None, :]
        h0_n, u_n, r_n, r1_n, z_n, gy_n, b_n, c_n = _load_bwd_tile(
            u_ptr, dl_ptr, z_ptr, gy_ptr, b_ptr, c_ptr, ckpt_ptr, c - 1, tp,
            s_ul, s_dl, s_zl, s_gl, s_bl, s_cl, N, md[:, None] & mtp[None, :],
            md[:, None] & mtp[None, :], mn[:, None] & mtp[None, :], mdnp, HAS_Z,
        )  # fmt: skip

        # Recompute the tile's states h_t from its checkpoint.
        u = u_raw.to(tl.float32)
        r, dt = _dt(r_raw, bias, mdt, HAS_BIAS, SOFTPLUS)
        _r1, dt1 = _dt(r1_raw, bias, mdt1, HAS_BIAS, SOFTPLUS)  # dt_{t+1} (0 past the tile)
        bt = b_raw.to(tl.float32)
        ct = c_raw.to(tl.float32)
        decay = tl.exp(dt[:, None, :] * a3)  # [BLOCK_D, BLOCK_N, BLOCK_T]
        drive = (dt * u)[:, None, :] * bt[None, :, :]
        _, hs = tl.associative_scan(
            (decay, tl.where(first, drive + decay * h0[:, :, None], drive)), 2, _combine
        )
        g = gy_raw.to(tl.float32)
        if HAS_Z:
            y = tl.sum(hs * ct[None, :, :], axis=1)
            if HAS_D:
                y += d_skip[:, None] * u
            zt = z_raw.to(tl.float32)
            sig = _sigmoid(zt)
            dz = g * y * sig * (1.0 + zt * (1.0 - sig))
            tl.store(DZ + seq_ptr + t0, dz.to(DZ.dtype.element_ty), mask=mdt)
            g = g * zt * sig
        # State gradients G_t = a_{t+1} G_{t+1} + g_t C_t, in reverse time.
        decay1 = tl.exp(dt1[:, None, :] * a3)
        gc = g[:, None, :] * ct[None, :, :]
        gc = tl.where(last, gc + decay1 * g_state[:, :, None], gc)
        _, gs = tl.associative_scan((decay1, gc), 2, _combine, reverse=True)
        g_state = tl.sum(tl.where(first, gs, 0.0), axis=2)

        g_decay = gs * (hs - drive)  # G_t * exp(dt_t A) * h_{t-1}: d/d(dt A) of the decay
        gb = tl.sum(gs * bt[None, :, :], axis=1)  # d/d(dt u) of the drive term
        ddt = tl.sum(g_decay * a3, axis=1) + gb * u
        acc_da += tl.sum(g_decay * dt[:, None, :], axis=2)
        mnt = mn[:, None] & mt[None, :]
        tl.atomic_add(DC + bc_ptr + t0, tl.sum(g[:, None, :] * hs, axis=0), mask=mnt, sem="relaxed")
        db = tl.sum(gs * (dt * u)[:, None, :], axis=0)
        tl.atomic_add(DB + bc_ptr + t0, db, mask=mnt, sem="relaxed")
        du = gb * dt
        if HAS_D:
            acc_dd += tl.sum(g * u, axis=1)
            du += g * d_skip[:, None]
        tl.store(DU + seq_ptr + t0, du.to(DU.dtype.element_ty), mask=mdt)
        if SOFTPLUS:
            ddt = ddt * _sigmoid(r)
        tl.store(DDL + seq_ptr + t0, ddt.to(DDL.dtype.element_ty), mask=mdt)
        acc_dbias += tl.sum(tl.where(mdt, ddt, 0.0), axis=1)

    state_offs = offs_d[:, None] * N + offs_n[None, :]
    tl.store(DA_P + pid_b * DIM * N + state_offs, acc_da, mask=mdn)
    if HAS_D:
        tl.store(DD_P + pid_b * DIM + offs_d, acc_dd, mask=md)
    if HAS_BIAS:
        tl.store(DBIAS_P + pid_b * DIM + offs_d, acc_dbias, mask=md)
    if HAS_INIT:
        # d(h_{-1}) = exp(dt_0 A) G_0.
        r0 = tl.load(DL + pid_b * s_db + offs_d * s_dd, mask=md, other=0.0).to(tl.float32)
        if HAS_BIAS:
            r0 += bias
        dt0 = r0
        if SOFTPLUS:
            dt0 = _softplus(r0)
        dh0 = g_state * tl.exp(dt0[:, None] * a)
        tl.store(DH0 + pid_b * DIM * N + state_offs, dh0, mask=mdn)


@triton.jit
def _step_inputs(
    u_base, dl_base, b_base, c_base, t, s_ul, s_dl, s_bl, s_cl, offs_n, s_bn, s_cn, md, mn,
    bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):  # fmt: skip
    """Time step ``t``'s ``u [BLOCK_D]``, raw ``delta (+ bias) [BLOCK_D]``, ``dt [BLOCK_D]``,
    ``B_t [BLOCK_N]`` and ``C_t [BLOCK_N]``, float32 (0 where masked)."""
    u = tl.load(u_base + t * s_ul, mask=md, other=0.0).to(tl.float32)
    r = tl.load(dl_base + t * s_dl, mask=md, other=0.0).to(tl.float32)
    if HAS_BIAS:
        r += bias
    if SOFTPLUS:
        dt = _softplus(r)
    else:
        dt = r
    bt = tl.load(b_base + t * s_bl + offs_n * s_bn, mask=mn, other=0.0).to(tl.float32)
    ct = tl.load(c_base + t * s_cl + offs_n * s_cn, mask=mn, other=0.0).to(tl.float32)
    return u, r, dt, bt, ct


@triton.jit
def _step_kernel(
    S, U, DL, A, Bm, Cm, Dv, Z, BIAS, Y,
    DIM, N,
    s_sb, s_sd, s_sn, s_ub, s_ud, s_db, s_dd, s_ad, s_an, s_bb, s_bn, s_cb, s_cn,
    s_D, s_zb, s_zd, s_bias,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (channel blocks, B). One decode position: reads and rewrites the program's
    ``[BLOCK_D, N]`` slice of the float32 state once, writes ``y [B, D]`` (contiguous)."""
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < DIM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    a = tl.load(A + offs_d[:, None] * s_ad + offs_n[None, :] * s_an, mask=mdn, other=0.0)
    a = a.to(tl.float32)
    s_ptr = S + pid_b * s_sb + offs_d[:, None] * s_sd + offs_n[None, :] * s_sn
    h = tl.load(s_ptr, mask=mdn, other=0.0)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(BIAS + offs_d * s_bias, mask=md, other=0.0).to(tl.float32)
    u, _r, dt, bt, ct = _step_inputs(
        U + pid_b * s_ub + offs_d * s_ud, DL + pid_b * s_db + offs_d * s_dd, Bm + pid_b * s_bb,
        Cm + pid_b * s_cb, 0, 0, 0, 0, 0, offs_n, s_bn, s_cn, md, mn, bias, HAS_BIAS, SOFTPLUS,
    )  # fmt: skip
    h = h * tl.exp(dt[:, None] * a) + (dt * u)[:, None] * bt[None, :]
    tl.store(s_ptr, h, mask=mdn)
    y = tl.sum(h * ct[None, :], axis=1)
    if HAS_D:
        y += tl.load(Dv + offs_d * s_D, mask=md, other=0.0).to(tl.float32) * u
    if HAS_Z:
        zt = tl.load(Z + pid_b * s_zb + offs_d * s_zd, mask=md, other=0.0).to(tl.float32)
        y = y * (zt * _sigmoid(zt))
    tl.store(Y + pid_b * DIM + offs_d, y.to(Y.dtype.element_ty), mask=md)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _opt(t: Tensor | None, like: Tensor, dims: int) -> tuple[Tensor, tuple[int, ...]]:
    """An optional tensor argument and its strides: a dummy pointer and zero strides when
    absent (the kernel's ``HAS_*`` flag then never touches it)."""
    if t is None:
        return like, (0,) * dims
    return t, tuple(t.stride())


def _scan_forward(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    initial_state: Tensor | None,
    chunk: int | None,
    block_d: int | None,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor | None, int]:
    """``(y, last_state, checkpoints or None, chunk)``; checkpoints only when ``save``."""
    batch, channels, length = u.shape
    n_state = A.shape[1]
    n_pad = next_power_of_2(n_state)
    chunk = min(chunk or default_chunk(length, n_pad), length)
    n_chunks = triton.cdiv(length, chunk)
    block_t = next_power_of_2(chunk)
    if block_d is None:
        block_d = _block_d(channels, n_pad, batch, _FWD_TILE, block_t)
    y = torch.empty(batch, channels, length, dtype=u.dtype, device=u.device)
    last = torch.empty(batch, channels, n_state, dtype=torch.float32, device=u.device)
    ckpt = (
        torch.empty(batch, channels, n_chunks, n_state, dtype=torch.float32, device=u.device)
        if save
        else last
    )
    d_arg, d_s = _opt(D, u, 1)
    z_arg, z_s = _opt(z, u, 3)
    bias_arg, bias_s = _opt(delta_bias, u, 1)
    h0_arg, h0_s = _opt(initial_state, u, 3)
    grid = (triton.cdiv(channels, block_d), batch)
    with device_guard(u):
        _scan_fwd_kernel[grid](
            u, delta, A, B, C, d_arg, z_arg, bias_arg, h0_arg, y, last, ckpt,
            channels, n_state, length, chunk,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
            *d_s, *z_s, *bias_s, *h0_s,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            HAS_INIT=initial_state is not None, SOFTPLUS=bool(delta_softplus), SAVE_CKPT=save,
            BLOCK_D=block_d, BLOCK_N=n_pad, BLOCK_T=block_t,
            num_warps=_num_warps(block_d * n_pad * block_t),
        )  # fmt: skip
    return y, last, (ckpt if save else None), chunk


def _scan_backward(
    saved: tuple[Tensor | None, ...],
    delta_softplus: bool,
    chunk: int,
    block_d: int | None,
    grad_y: Tensor,
    grad_last: Tensor | None,
) -> tuple[Tensor | None, ...]:
    """Gradients w.r.t. ``(u, delta, A, B, C, D, z, delta_bias, initial_state)`` (``None``
    for absent inputs), each in its input's dtype."""
    u, delta, A, B, C, D, z, delta_bias, initial_state, ckpt = saved
    batch, channels, length = u.shape
    n_state = A.shape[1]
    n_pad = next_power_of_2(n_state)
    block_t = next_power_of_2(chunk)
    if block_d is None:
        block_d = _block_d(channels, n_pad, batch, _BWD_TILE, block_t)
    n_dblocks = triton.cdiv(channels, block_d)
    dev = u.device
    f32 = torch.float32
    du = torch.empty(batch, channels, length, dtype=u.dtype, device=dev)
    ddelta = torch.empty(batch, channels, length, dtype=delta.dtype, device=dev)
    dz = None if z is None else torch.empty(batch, channels, length, dtype=z.dtype, device=dev)
    db = torch.zeros(batch, n_state, length, dtype=f32, device=dev)
    dc = torch.zeros(batch, n_state, length, dtype=f32, device=dev)
    da_p = torch.empty(batch, channels, n_state, dtype=f32, device=dev)
    dd_p = None if D is None else torch.empty(batch, channels, dtype=f32, device=dev)
    dbias_p = None if delta_bias is None else torch.empty(batch, channels, dtype=f32, device=dev)
    dh0 = None
    if initial_state is not None:
        dh0 = torch.empty(batch, channels, n_state, dtype=f32, device=dev)
    d_arg, d_s = _opt(D, u, 1)
    z_arg, z_s = _opt(z, u, 3)
    bias_arg, bias_s = _opt(delta_bias, u, 1)
    gl_arg, gl_s = _opt(grad_last, u, 3)
    grid = (n_dblocks, batch)
    with device_guard(u):
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, d_arg, z_arg, bias_arg, ckpt, grad_y, gl_arg,
            du, ddelta, du if dz is None else dz, da_p, db, dc,
            da_p if dd_p is None else dd_p, da_p if dbias_p is None else dbias_p,
            da_p if dh0 is None else dh0,
            channels, n_state, length, chunk,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
            *d_s, *z_s, *bias_s, *grad_y.stride(), *gl_s,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            HAS_INIT=initial_state is not None, HAS_GLAST=grad_last is not None,
            SOFTPLUS=bool(delta_softplus), BLOCK_D=block_d, BLOCK_N=n_pad, BLOCK_T=block_t,
            num_warps=_num_warps(block_d * n_pad * block_t),
        )  # fmt: skip
    return (
        du,
        ddelta,
        da_p.sum(0).to(A.dtype),
        db.to(B.dtype),
        dc.to(C.dtype),
        None if D is None else dd_p.sum(0).to(D.dtype),
        dz,
        None if delta_bias is None else dbias_p.sum(0).to(delta_bias.dtype),
        None if initial_state is None else dh0.to(initial_state.dtype),
    )


class _SelectiveScan(torch.autograd.Function):
    """Autograd glue: the forward saves the inputs and the per-tile checkpoints (not the
    states); the backward recomputes the states tile by tile."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        z: Tensor | None,
        delta_bias: Tensor | None,
        initial_state: Tensor | None,
        delta_softplus: bool,
        chunk: int | None,
        block_d: int | None,
    ) -> tuple[Tensor, Tensor]:
        y, last, ckpt, chunk = _scan_forward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk, block_d,
            save=True,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, ckpt)
        ctx.delta_softplus = delta_softplus
        ctx.chunk = chunk
        ctx.block_d = block_d
        ctx.set_materialize_grads(False)
        return y, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_y: Tensor | None, grad_last: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(saved[0])
        grads = _scan_backward(saved, ctx.delta_softplus, ctx.chunk, ctx.block_d, grad_y, grad_last)
        return (*grads, None, None, None)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
    *,
    chunk: int | None = None,
    block_d: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Triton implementation of :func:`~hazyzoo.kernels.selective_scan.selective_scan` (same
    contract as the reference). Differentiable w.r.t. every tensor input, through ``y`` and
    the last state. ``chunk`` (time steps per tile = checkpoint interval, any positive int;
    the register tile is its next power of two) and ``block_d`` (channels per program, a power
    of two) are keyword options for tests and tuning."""
    from hazyzoo.kernels.selective_scan.reference import selective_scan_reference

    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    if torch.compiler.is_compiling() or u.numel() == 0:  # Dynamo cannot trace the launch
        return selective_scan_reference(*args, return_last_state)
    check_triton_d_state(A.shape[1])
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        y, last = _SelectiveScan.apply(
            u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), chunk,
            block_d,
        )  # fmt: skip
    else:
        y, last, _, _ = _scan_forward(*args, chunk, block_d, save=False)
    return (y, last) if return_last_state else y


def selective_state_step_triton(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    block_d: int | None = None,
) -> Tensor:
    """Triton implementation of :func:`~hazyzoo.kernels.selective_scan.selective_step`: the
    float32 ``state [B, D, N]`` is updated in place; returns ``y [B, D]`` in ``u.dtype``. Not
    differentiable (decoding)."""
    from hazyzoo.kernels.selective_scan.reference import selective_state_step

    if torch.compiler.is_compiling() or u.numel() == 0:
        return selective_state_step(state, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    batch, channels = u.shape
    n_state = A.shape[1]
    check_triton_d_state(n_state)
    n_pad = next_power_of_2(n_state)
    if block_d is None:
        block_d = _block_d(channels, n_pad, batch, _STEP_TILE, floor=8)
    y = torch.empty(batch, channels, dtype=u.dtype, device=u.device)
    d_arg, d_s = _opt(D, u, 1)
    z_arg, z_s = _opt(z, u, 2)
    bias_arg, bias_s = _opt(delta_bias, u, 1)
    grid = (triton.cdiv(channels, block_d), batch)
    with device_guard(u):
        _step_kernel[grid](
            state, u, delta, A, B, C, d_arg, z_arg, bias_arg, y,
            channels, n_state,
            *state.stride(), *u.stride(), *delta.stride(), *A.stride(), *B.stride(),
            *C.stride(), *d_s, *z_s, *bias_s,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), BLOCK_D=block_d, BLOCK_N=n_pad,
            num_warps=_num_warps(block_d * n_pad),
        )  # fmt: skip
    return y
