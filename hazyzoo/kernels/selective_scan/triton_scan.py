"""Mamba's selective scan in Triton: forward scan, reverse-time backward scan, decode step.

Imported only when triton imports (see :mod:`hazyzoo.kernels.selective_scan`). Every kernel
runs one program per (block of ``BLOCK_D`` channels, batch row) and keeps that block's state
``h [BLOCK_D, N_PAD]`` in float32 registers (``N_PAD``: ``d_state`` rounded up to a power of
two; the padded lanes are masked to zero and stay zero). The scan is a loop over time: each
step loads one column of ``u``, ``delta`` (``z``) for the block and one column of ``B``, ``C``
(shared by every channel), so any strides work (the Mamba layer passes transposed views).

Backward: memory vs. recompute. Storing every state would cost ``B * D * L * N`` floats (N
times the input), so the forward instead stores a *checkpoint* of the state every ``chunk``
steps (``B * D * ceil(L / chunk) * N`` floats) when a gradient is needed. The backward walks
the chunks from last to first: it recomputes the chunk's states from its checkpoint, writing
them to a per-program workspace (``chunk * BLOCK_D * N_PAD`` floats per program, reused by
every chunk, so ``~B * D * chunk * N`` floats in all, independent of L), then runs the
reverse-time recurrence over the chunk reading them back. ``chunk`` defaults to a power of two
near ``sqrt(L)``, which balances the two buffers; the price is one extra forward scan.

Reductions over channels: ``dB`` and ``dC`` (``[B, N, L]``, shared by all channels) are summed
over the channel blocks with float32 atomic adds (so their last bits may vary run to run);
``dA``, ``dD`` and ``d(delta_bias)`` (per channel, summed over batch rows and time) are
accumulated in registers over time and written to per-batch-row partial buffers, summed on the
host (deterministic).

Block sizes and warps are heuristics (not tuned on hardware): tiles of up to 1024 (forward) /
512 (backward) state elements, halved while that leaves fewer than ~256 programs.
"""

from __future__ import annotations

import math

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

# State elements per program (BLOCK_D * N_PAD) at most; tiny when interpreting so the tests'
# few channels still span several channel blocks (masking and the cross-block reductions).
_FWD_TILE = 16 if INTERPRETED else 1024
_BWD_TILE = 16 if INTERPRETED else 512
_STEP_TILE = 16 if INTERPRETED else 1024
_MIN_PROGRAMS = 256


def check_triton_d_state(n: int) -> None:
    """The state tile lives in registers: ``d_state <= 256``."""
    if n > MAX_TRITON_D_STATE:
        raise ValueError(
            f"the Triton selective scan supports d_state N <= {MAX_TRITON_D_STATE}, got N={n}; "
            "use HAZYZOO_KERNELS=torch"
        )


def _block_d(channels: int, n_pad: int, batch: int, tile: int) -> int:
    """Channels per program: as many as ``tile`` state elements allow, fewer while the grid
    would have under ``_MIN_PROGRAMS`` programs (the scan is latency-bound: more programs
    hide more of it), at least 1 (interpreting: at least 1, no parallelism heuristic)."""
    block = max(1, min(next_power_of_2(channels), tile // n_pad))
    if not INTERPRETED:
        while block > 8 and batch * triton.cdiv(channels, block) < _MIN_PROGRAMS:
            block //= 2
    return block


def _num_warps(block_d: int, n_pad: int) -> int:
    return max(1, min(4, block_d * n_pad // 128))


def default_chunk(length: int) -> int:
    """Checkpoint interval: a power of two near ``sqrt(L)`` in ``[16, 256]`` (4 when
    interpreting, so short test sequences span several chunks)."""
    if INTERPRETED:
        return 4
    return min(256, max(16, next_power_of_2(math.isqrt(max(length, 1)))))


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
def _scan_fwd_kernel(
    U, DL, A, Bm, Cm, Dv, Z, BIAS, H0, Y, LAST, CKPT,
    DIM, N, L, CHUNK,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl,
    s_D, s_zb, s_zd, s_zl, s_bias, s_hb, s_hd, s_hn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (channel blocks, B). ``y [B, D, L]`` (contiguous, u's dtype), the last state
    ``[B, D, N]`` float32 and, with ``SAVE_CKPT``, the state before every chunk of ``CHUNK``
    steps into ``CKPT [B, D, ceil(L / CHUNK), N]`` float32."""
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < DIM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    a = tl.load(A + offs_d[:, None] * s_ad + offs_n[None, :] * s_an, mask=mdn, other=0.0)
    a = a.to(tl.float32)
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
    u_base = U + pid_b * s_ub + offs_d.to(tl.int64) * s_ud
    dl_base = DL + pid_b * s_db + offs_d.to(tl.int64) * s_dd
    z_base = Z + pid_b * s_zb + offs_d.to(tl.int64) * s_zd
    b_base = Bm + pid_b * s_bb
    c_base = Cm + pid_b * s_cb
    y_base = Y + pid_b * DIM * L + offs_d.to(tl.int64) * L
    state_offs = offs_d[:, None] * N + offs_n[None, :]
    n_chunks = tl.cdiv(L, CHUNK)
    ckpt_base = CKPT + pid_b * DIM * n_chunks * N + offs_d[:, None] * (n_chunks * N)
    for c in range(0, n_chunks):
        if SAVE_CKPT:
            tl.store(ckpt_base + c * N + offs_n[None, :], h, mask=mdn)
        t_end = tl.minimum(c * CHUNK + CHUNK, L)
        for t in range(c * CHUNK, t_end):
            u, _r, dt, bt, ct = _step_inputs(
                u_base, dl_base, b_base, c_base, t, s_ul, s_dl, s_bl, s_cl, offs_n, s_bn,
                s_cn, md, mn, bias, HAS_BIAS, SOFTPLUS,
            )  # fmt: skip
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
            y = tl.sum(h * ct[None, :], axis=1)
            if HAS_D:
                y += d_skip * u
            if HAS_Z:
                zt = tl.load(z_base + t * s_zl, mask=md, other=0.0).to(tl.float32)
                y = y * (zt * _sigmoid(zt))
            tl.store(y_base + t, y.to(Y.dtype.element_ty), mask=md)
    tl.store(LAST + pid_b * DIM * N + state_offs, h, mask=mdn)


@triton.jit
def _scan_bwd_kernel(
    U, DL, A, Bm, Cm, Dv, Z, BIAS, CKPT, GY, GLAST, WORK,
    DU, DDL, DZ, DA_P, DB, DC, DD_P, DBIAS_P, DH0,
    DIM, N, L, CHUNK,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl,
    s_D, s_zb, s_zd, s_zl, s_bias, s_gb, s_gd, s_gl, s_lb, s_ld, s_ln,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr,
    HAS_GLAST: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (channel blocks, B). The reverse-time scan, chunk by chunk (module docstring).

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
    md = offs_d < DIM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    a = tl.load(A + offs_d[:, None] * s_ad + offs_n[None, :] * s_an, mask=mdn, other=0.0)
    a = a.to(tl.float32)
    d_skip = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        d_skip = tl.load(Dv + offs_d * s_D, mask=md, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(BIAS + offs_d * s_bias, mask=md, other=0.0).to(tl.float32)
    g_state = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    if HAS_GLAST:
        gl = GLAST + pid_b * s_lb + offs_d[:, None] * s_ld + offs_n[None, :] * s_ln
        g_state = tl.load(gl, mask=mdn, other=0.0).to(tl.float32)
    acc_da = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    acc_dd = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_dbias = tl.zeros([BLOCK_D], dtype=tl.float32)

    u_base = U + pid_b * s_ub + offs_d.to(tl.int64) * s_ud
    dl_base = DL + pid_b * s_db + offs_d.to(tl.int64) * s_dd
    z_base = Z + pid_b * s_zb + offs_d.to(tl.int64) * s_zd
    gy_base = GY + pid_b * s_gb + offs_d.to(tl.int64) * s_gd
    b_base = Bm + pid_b * s_bb
    c_base = Cm + pid_b * s_cb
    seq_offs = pid_b * DIM * L + offs_d.to(tl.int64) * L  # the contiguous [B, D, L] grads
    db_base = DB + pid_b * N * L + offs_n * L
    dc_base = DC + pid_b * N * L + offs_n * L
    state_offs = offs_d[:, None] * N + offs_n[None, :]
    n_chunks = tl.cdiv(L, CHUNK)
    ckpt_base = CKPT + pid_b * DIM * n_chunks * N + offs_d[:, None] * (n_chunks * N)
    program = pid_b * tl.num_programs(0) + pid_d
    tile = BLOCK_D * BLOCK_N
    local = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]
    work = WORK + program * CHUNK * tile + local

    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t0 = c * CHUNK
        t1 = tl.minimum(t0 + CHUNK, L)
        # Recompute the chunk's states; the workspace's entry k holds h_{t0 + k - 1}.
        h = tl.load(ckpt_base + c * N + offs_n[None, :], mask=mdn, other=0.0)
        for t in range(t0, t1):
            tl.store(work + (t - t0) * tile, h)
            u, _r, dt, bt, _ct = _step_inputs(
                u_base, dl_base, b_base, c_base, t, s_ul, s_dl, s_bl, s_cl, offs_n, s_bn,
                s_cn, md, mn, bias, HAS_BIAS, SOFTPLUS,
            )  # fmt: skip
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * bt[None, :]
        tl.debug_barrier()  # the workspace is written before any thread reads it back
        h_cur = h  # h_t for t = t1 - 1
        for j in range(0, t1 - t0):
            t = t1 - 1 - j
            h_prev = tl.load(work + (t - t0) * tile)
            u, r, dt, bt, ct = _step_inputs(
                u_base, dl_base, b_base, c_base, t, s_ul, s_dl, s_bl, s_cl, offs_n, s_bn,
                s_cn, md, mn, bias, HAS_BIAS, SOFTPLUS,
            )  # fmt: skip
            g = tl.load(gy_base + t * s_gl, mask=md, other=0.0).to(tl.float32)
            if HAS_Z:
                y = tl.sum(h_cur * ct[None, :], axis=1)
                if HAS_D:
                    y += d_skip * u
                zt = tl.load(z_base + t * s_zl, mask=md, other=0.0).to(tl.float32)
                sig = _sigmoid(zt)
                dz = g * y * sig * (1.0 + zt * (1.0 - sig))
                tl.store(DZ + seq_offs + t, dz.to(DZ.dtype.element_ty), mask=md)
                g = g * zt * sig
            du = tl.zeros([BLOCK_D], dtype=tl.float32)
            if HAS_D:
                acc_dd += g * u
                du = g * d_skip
            tl.atomic_add(dc_base + t, tl.sum(g[:, None] * h_cur, axis=0), mask=mn)
            g_state += g[:, None] * ct[None, :]
            decay = tl.exp(dt[:, None] * a)
            g_decay = g_state * h_prev * decay  # d/d(dt A) of the decay term
            gb = tl.sum(g_state * bt[None, :], axis=1)  # d/d(dt u) of the drive term
            ddt = tl.sum(g_decay * a, axis=1) + gb * u
            acc_da += g_decay * dt[:, None]
            tl.atomic_add(db_base + t, tl.sum(g_state * (dt * u)[:, None], axis=0), mask=mn)
            du += gb * dt
            tl.store(DU + seq_offs + t, du.to(DU.dtype.element_ty), mask=md)
            if SOFTPLUS:
                ddt = ddt * _sigmoid(r)
            tl.store(DDL + seq_offs + t, ddt.to(DDL.dtype.element_ty), mask=md)
            acc_dbias += ddt
            g_state = g_state * decay
            h_cur = h_prev
        tl.debug_barrier()  # every read of this chunk is done before the next one writes

    tl.store(DA_P + pid_b * DIM * N + state_offs, acc_da, mask=mdn)
    if HAS_D:
        tl.store(DD_P + pid_b * DIM + offs_d, acc_dd, mask=md)
    if HAS_BIAS:
        tl.store(DBIAS_P + pid_b * DIM + offs_d, acc_dbias, mask=md)
    if HAS_INIT:
        tl.store(DH0 + pid_b * DIM * N + state_offs, g_state, mask=mdn)


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
    chunk = min(chunk or default_chunk(length), length)
    n_chunks = triton.cdiv(length, chunk)
    if block_d is None:
        block_d = _block_d(channels, n_pad, batch, _FWD_TILE)
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
            BLOCK_D=block_d, BLOCK_N=n_pad, num_warps=_num_warps(block_d, n_pad),
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
    if block_d is None:
        block_d = _block_d(channels, n_pad, batch, _BWD_TILE)
    n_dblocks = triton.cdiv(channels, block_d)
    dev = u.device
    f32 = torch.float32
    work = torch.empty(batch * n_dblocks * chunk * block_d * n_pad, dtype=f32, device=dev)
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
            u, delta, A, B, C, d_arg, z_arg, bias_arg, ckpt, grad_y, gl_arg, work,
            du, ddelta, du if dz is None else dz, da_p, db, dc,
            da_p if dd_p is None else dd_p, da_p if dbias_p is None else dbias_p,
            da_p if dh0 is None else dh0,
            channels, n_state, length, chunk,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
            *d_s, *z_s, *bias_s, *grad_y.stride(), *gl_s,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            HAS_INIT=initial_state is not None, HAS_GLAST=grad_last is not None,
            SOFTPLUS=bool(delta_softplus), BLOCK_D=block_d, BLOCK_N=n_pad,
            num_warps=_num_warps(block_d, n_pad),
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
    """Autograd glue: the forward saves the inputs and the chunk checkpoints (not the states);
    the backward recomputes the states chunk by chunk."""

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
    the last state. ``chunk`` (checkpoint interval) and ``block_d`` (channels per program)
    are keyword options for tests and tuning."""
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
        block_d = _block_d(channels, n_pad, batch, _STEP_TILE)
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
            num_warps=_num_warps(block_d, n_pad),
        )  # fmt: skip
    return y
