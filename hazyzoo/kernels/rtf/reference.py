"""The spec of the RTF (rational transfer function) SSM ops in plain PyTorch.

Parnichkun et al., "State-free inference of state-space models: the transfer function
approach" (ICML 2024). Each channel is a transfer function ``H(z) = h0 + B(z) / A(z)`` with a
monic denominator ``A(z) = 1 + a_1 z^-1 + ... + a_N z^-N``; its convolution kernel's spectrum
comes from one rFFT of the coefficients, so generating the kernel costs O(L log L) whatever
the state size N ("state-free").

Conventions (``convention``), both as the released code (ruke1ire/RTF) defines them:

- ``"rtf"``: ``B(z) = b_1 z^-1 + ... + b_N z^-N``; the kernel is the impulse response
  *aliased* on the FFT grid of ``n_fft = trunc_len + trunc_len % 2`` points:
  ``k[t] = sum_m h[t + m n_fft]``.
- ``"rtf2"``: the numerator is ``b (I - A^T)`` (``A`` the companion matrix, ``T = trunc_len``)
  placed at ``z^0 .. z^-(N-1)``; for even ``trunc_len`` this cancels the aliasing.

The conv kernel is the reference's; the recurrence here (:func:`exact_realization`) is the
state-space form whose impulse response *is* that kernel, for both conventions: the
numerator corrected by ``(I - A^n_fft)^-1`` (solved once per weight update) and a corrected
feed-through. The released recurrence is reproduced separately
(:func:`reference_corrected_numerator`, :func:`reference_step_kernel`) because it differs from
its own convolution (it solves the untransposed system and drops the wrapped tail of
``k[0]``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CONSTRAINTS",
    "CONVENTIONS",
    "bidirectional_conv",
    "bidirectional_conv_reference",
    "causal_conv",
    "causal_conv_direct",
    "companion_matrix",
    "constrain_denominator",
    "exact_realization",
    "fft_conv",
    "fft_size",
    "free_response",
    "kernel_from_realization",
    "numerator_coefficients",
    "periodic_inverse",
    "prefill_state",
    "recurrent_realization",
    "recurrent_step_reference",
    "reference_corrected_numerator",
    "reference_step_kernel",
    "rtf_kernel",
    "share_denominators",
]

CONSTRAINTS = ("no", "l1_montel")
CONVENTIONS = ("rtf", "rtf2")
_L1_EPS = 1e-6


def fft_size(trunc_len: int) -> int:
    """The kernel's FFT grid: ``trunc_len`` rounded up to even (the released code's rule)."""
    return trunc_len + trunc_len % 2


def constrain_denominator(a_raw: Tensor, constraint: str, scalar: Tensor | None = None) -> Tensor:
    """Denominator coefficients ``a [R, N]`` from the raw parameters.

    ``"no"``: ``a = a_raw``. ``"l1_montel"``: ``a = a_raw / (sum |a_raw| + |scalar| + 1e-6)``
    per row, so ``sum |a| < 1`` and every pole lies inside the unit disc (Montel's bound), the
    filter stays stable whatever the optimiser does; ``scalar [R]`` is a learned slack.
    """
    if constraint == "no":
        return a_raw
    if constraint == "l1_montel":
        if scalar is None:
            raise ValueError("constraint='l1_montel' needs the per-row `scalar` parameter")
        return a_raw / (a_raw.abs().sum(-1) + scalar.abs() + _L1_EPS).unsqueeze(-1)
    raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")


def share_denominators(a: Tensor, channels: int, directions: int = 1) -> Tensor:
    """Denominators ``[directions * num_a, N]`` as one row per channel
    ``[directions * channels, N]``: channel ``c`` of a direction uses row
    ``c // (channels // num_a)`` of that direction (consecutive channels share one)."""
    rows = a.shape[0] // directions
    per = channels // rows
    return a.reshape(directions, rows, -1).repeat_interleave(per, dim=1).reshape(-1, a.shape[-1])


def companion_matrix(a: Tensor) -> Tensor:
    """``A [C, N, N]``: first row ``-a``, ones on the sub-diagonal (controller form, ``B =
    e_1``), so ``c (zI - A)^-1 e_1 = (c_1 z^-1 + .. + c_N z^-N) / A(z)``."""
    channels, n = a.shape
    mat = torch.zeros(channels, n, n, dtype=a.dtype, device=a.device)
    mat[:, 0, :] = -a
    if n > 1:
        idx = torch.arange(n - 1, device=a.device)
        mat[:, idx + 1, idx] = 1.0
    return mat


def numerator_coefficients(a: Tensor, b: Tensor, trunc_len: int, convention: str) -> Tensor:
    """The numerator whose rFFT the kernel divides by the denominator's, as coefficients of
    ``z^0, z^-1, ...``: ``[0, b]`` for ``"rtf"``, ``b (I - A^T)`` for ``"rtf2"``. ``a`` may
    have fewer rows than ``b`` (shared denominators, see :func:`rtf_kernel`)."""
    if convention == "rtf":
        return torch.cat([torch.zeros_like(b[:, :1]), b], dim=-1)
    if convention == "rtf2":
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        power = torch.linalg.matrix_power(companion_matrix(a), trunc_len)  # per shared row
        per = b.shape[0] // a.shape[0]
        if per > 1:
            power = power.repeat_interleave(per, dim=0)
        return (b.unsqueeze(-2) @ (eye - power)).squeeze(-2)
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def rtf_kernel(
    a: Tensor, b: Tensor, h0: Tensor, trunc_len: int, length: int, convention: str = "rtf"
) -> Tensor:
    """The time-domain kernel ``[C, length]`` (``length <= trunc_len``) of each channel's
    transfer function, from one rFFT of the coefficients on the ``fft_size(trunc_len)`` grid.

    Args:
        a: denominators ``[R, N]``, shared by ``C // R`` consecutive channels each (``R = C``:
            one per channel); b: numerators ``[C, N]``; h0: feed-through ``[C]``.
    """
    channels = b.shape[0]
    if channels % a.shape[0]:
        raise ValueError(f"{a.shape[0]} denominator rows do not divide {channels} channels")
    n_fft = fft_size(trunc_len)
    per = channels // a.shape[0]
    num = numerator_coefficients(a, b, trunc_len, convention)
    den = torch.cat([torch.ones_like(a[:, :1]), a], dim=-1)
    den_spec = torch.fft.rfft(den, n=n_fft)  # one transform per shared row
    if per > 1:
        den_spec = den_spec.repeat_interleave(per, dim=0)
    spectrum = torch.fft.rfft(num, n=n_fft) / den_spec + h0.unsqueeze(-1)
    return torch.fft.irfft(spectrum, n=n_fft)[:, :length]


def fft_conv(x: Tensor, kernel: Tensor) -> Tensor:
    """The zoo's one FFT long convolution, channels first: ``x [B, C, L]`` with ``kernel
    [C, K]`` (``K <= 2L``) on a ``2L``-point grid, the first ``L`` outputs, in float32:
    ``y[b, c, t] = sum_m kernel[c, m] x[b, c, (t - m) mod 2L]`` (zero outside ``0..L-1``).

    ``K = L`` is the causal convolution; a bidirectional kernel ``[k_causal, flip(k_anti)]``
    (``K = 2L``) puts ``k_anti[j]`` at lag ``-(1 + j)``. Channels-first inputs are contiguous
    along the transformed axis, so cuFFT reads and writes them without a copy.
    """
    length = x.shape[-1]
    n = 2 * length
    spec = torch.fft.rfft(x.float(), n=n) * torch.fft.rfft(kernel.float(), n=n)
    return torch.fft.irfft(spec, n=n)[..., :length]


def causal_conv(u: Tensor, k: Tensor) -> Tensor:
    """``y[b, t, c] = sum_{s <= t} k[c, s] u[b, t - s, c]`` by FFT (linear, not circular).

    Args:
        u: ``[B, L, C]``; k: ``[C, L]``.
    """
    return fft_conv(u.transpose(1, 2), k).transpose(1, 2)


def causal_conv_direct(u: Tensor, k: Tensor) -> Tensor:
    """:func:`causal_conv` as a direct depthwise convolution (``O(L^2)`` per channel; on the GPU
    cuDNN's beats the FFT below ~128 taps, ``benchmarks/RESULTS.md``). Same arguments."""
    length = u.shape[1]
    weight = k.flip(-1).unsqueeze(1).to(u.dtype)  # conv1d is a cross-correlation
    x = torch.nn.functional.pad(u.transpose(1, 2), (length - 1, 0))
    return torch.nn.functional.conv1d(x, weight, groups=k.shape[0]).transpose(1, 2)


def bidirectional_conv(u: Tensor, k_causal: Tensor, k_anti: Tensor) -> Tensor:
    """The bidirectional RTF output for any length ``L``:
    ``y[t] = sum_{s=0..t} k_c[s] u[t-s] + sum_{j=0..L-2} k_a[j] u[t+1+j]``.

    This is what the released code computes for even ``L``; for odd ``L`` it inverts on a
    ``2L - 1`` grid after a ``2L`` forward transform (a frequency-grid mismatch that is not
    even time-invariant, :func:`bidirectional_conv_reference`); here both transforms use
    ``2L`` for every ``L``.
    """
    kernel = torch.cat([k_causal, k_anti.flip(-1)], dim=-1)
    return fft_conv(u.transpose(1, 2), kernel).transpose(1, 2)


def bidirectional_conv_reference(u: Tensor, k_causal: Tensor, k_anti: Tensor) -> Tensor:
    """The released code's bidirectional forward, defect included (inverse size
    ``2L - L % 2``); for even ``L`` equal to :func:`bidirectional_conv`."""
    length = u.shape[1]
    kernel = torch.cat([k_causal, k_anti.flip(-1)], dim=-1)
    u_pad = torch.nn.functional.pad(u.transpose(1, 2), (0, length))
    spec = torch.fft.rfft(kernel) * torch.fft.rfft(u_pad)
    return torch.fft.irfft(spec, n=2 * length - length % 2)[..., :length].transpose(1, 2)


def _strictly_proper(
    a: Tensor, b: Tensor, h0: Tensor, trunc_len: int, convention: str
) -> tuple[Tensor, Tensor]:
    """``(c [C, N], g0 [C])`` with ``H(z) = g0 + (c_1 z^-1 + .. + c_N z^-N) / A(z)`` for the
    transfer function whose aliased impulse response is the conv kernel."""
    if convention == "rtf":
        return b, h0
    p = numerator_coefficients(a, b, trunc_len, convention)  # z^0 .. z^-(N-1)
    p0 = p[:, :1]
    shifted = torch.cat([p[:, 1:], torch.zeros_like(p0)], dim=-1)  # p_1 .. p_N (p_N = 0)
    return shifted - p0 * a, h0 + p0.squeeze(-1)


def exact_realization(
    a: Tensor, b: Tensor, h0: Tensor, trunc_len: int, convention: str = "rtf"
) -> tuple[Tensor, Tensor]:
    """``(c_exact [C, N], d_exact [C])`` so that the companion-form recurrence
    ``y_t = d u_t + c . x_t``, ``x_{t+1} = A x_t + e_1 u_t`` (``x_0 = 0``) has impulse
    response equal to :func:`rtf_kernel` on its whole grid (``t < fft_size(trunc_len)``).

    With ``H = g0 + c(z)/A(z)`` and ``n = fft_size(trunc_len)``, the aliased response is
    ``k[t] = c (I - A^n)^-1 A^(t-1) e_1`` for ``t >= 1`` and
    ``k[0] = g0 + c (I - A^n)^-1 A^(n-1) e_1``: one linear solve per weight update.
    """
    n_fft = fft_size(trunc_len)
    c, g0 = _strictly_proper(a, b, h0, trunc_len, convention)
    mat = companion_matrix(a)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(mat)
    power = torch.linalg.matrix_power(mat, n_fft)
    # c' = c (I - A^n)^-1  <=>  (I - A^n)^T c'^T = c^T
    c_exact = torch.linalg.solve((eye - power).transpose(-1, -2), c.unsqueeze(-1)).squeeze(-1)
    tail = torch.linalg.matrix_power(mat, n_fft - 1)[..., :, 0]  # A^(n-1) e_1
    d_exact = g0 + (c_exact * tail).sum(-1)
    return c_exact, d_exact


def kernel_from_realization(a: Tensor, c: Tensor, d: Tensor, length: int) -> Tensor:
    """Impulse response ``[C, length]`` of ``y_t = d u_t + c . x_t``,
    ``x_{t+1} = A x_t + e_1 u_t``: ``k[0] = d``, ``k[t] = c A^(t-1) e_1`` (by stepping)."""
    state = torch.zeros_like(c)
    state[:, 0] = 1.0  # x_1 after a unit impulse
    out = [d]
    for _ in range(1, length):
        out.append((c * state).sum(-1))
        state = torch.cat([-(a * state).sum(-1, keepdim=True), state[:, :-1]], dim=-1)
    return torch.stack(out, dim=-1)


def reference_corrected_numerator(a: Tensor, b: Tensor, trunc_len: int) -> Tensor:
    """The released code's ``get_C``: solves ``(I - A^T) c = b`` (``T = trunc_len``, the
    untransposed system), which is not the correction that reproduces its own kernel."""
    mat = companion_matrix(a)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(mat)
    power = torch.linalg.matrix_power(mat, trunc_len)
    return torch.linalg.solve(eye - power, b.unsqueeze(-1)).squeeze(-1)


def reference_step_kernel(
    a: Tensor, c: Tensor, h0: Tensor, length: int, convention: str = "rtf"
) -> Tensor:
    """Impulse response of the released ``step``: ``"rtf"``: ``y_t = c . x_t + h0 u_t``;
    ``"rtf2"``: ``y_t = c . x_{t+1} + h0 u_t`` (``c`` = the raw ``b`` there)."""
    if convention == "rtf":
        return kernel_from_realization(a, c, h0, length)
    # y_t = c . (A x_t + e_1 u_t) + h0 u_t: readout c A, direct term h0 + c_1
    readout = (c.unsqueeze(-2) @ companion_matrix(a)).squeeze(-2)
    return kernel_from_realization(a, readout, h0 + c[:, 0], length)


# --- the recurrent mode used by the models ---------------------------------------------------
#
# The models keep the state in "input-corrected" coordinates z = (I - A^n)^-1 x (n =
# fft_size(trunc_len)), which obey the same companion recurrence with the corrected input
# vector v = (I - A^n)^-1 e_1:
#
#     y_t = d u_t + c . z_t,        z_{t+1} = A z_t + v u_t,        z_0 = 0,
#
# where c is the strictly proper numerator itself (``b`` for "rtf"). Its impulse response is
# the conv kernel on the whole FFT grid (c . A^(t-1) v = c' A^(t-1) e_1). In these coordinates
# the state after a prompt comes from one more FFT convolution: z_L[0] is the prompt filtered
# by the periodic inverse of A(z) on the n-point grid, psi = irfft(1 / rfft([1, a], n)), since
# psi_t = e_1 . A^t v for 0 <= t < n.


def periodic_inverse(a: Tensor, trunc_len: int) -> Tensor:
    """``psi [R, n]``: the n-periodic inverse of ``A(z)`` on the ``n = fft_size(trunc_len)``
    grid (``psi`` circularly convolved with ``[1, a]`` is a unit impulse); equal to
    ``e_1 . A^t (I - A^n)^-1 e_1`` for ``0 <= t < n``."""
    n_fft = fft_size(trunc_len)
    den = torch.cat([torch.ones_like(a[:, :1]), a], dim=-1)
    return torch.fft.irfft(1.0 / torch.fft.rfft(den, n=n_fft), n=n_fft)


def recurrent_realization(
    a: Tensor,
    b: Tensor,
    h0: Tensor,
    trunc_len: int,
    convention: str = "rtf",
    reference_recurrence: bool = False,
) -> dict[str, Tensor]:
    """The recurrence ``y_t = d u_t + c . z_t``, ``z_{t+1} = A z_t + v u_t`` per channel.

    Args:
        a: per-channel denominators ``[C, N]`` (float64 recommended: the correction solves
            ``I - A^n``), b: numerators ``[C, N]``, h0: ``[C]``.
        reference_recurrence: the released code's ``step`` instead of the exact one (its
            impulse response is not its own conv kernel; kept for parity).

    Returns:
        ``{"a", "v", "c": [C, N], "d": [C], "power": [C, N, N]}`` with ``power = A^n``; ``x =
        z - A^n z`` is the plain companion state ``sum_s A^(t-1-s) e_1 u_s``.
    """
    n_fft = fft_size(trunc_len)
    mat = companion_matrix(a)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(mat)
    power = torch.linalg.matrix_power(mat, n_fft)
    e1 = torch.zeros_like(a)
    e1[:, 0] = 1.0
    v = torch.linalg.solve(eye - power, e1.unsqueeze(-1)).squeeze(-1)
    if reference_recurrence:
        if convention == "rtf":
            readout = reference_corrected_numerator(a, b, trunc_len)
            direct = h0
        elif convention == "rtf2":  # y_t = b . x_{t+1} + h0 u_t = (b A) . x_t + (h0 + b_1) u_t
            readout = (b.unsqueeze(-2) @ mat).squeeze(-2)
            direct = h0 + b[:, 0]
        else:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        # the released step reads the plain state x = (I - A^n) z
        c = (readout.unsqueeze(-2) @ (eye - power)).squeeze(-2)
        return {"a": a, "v": v, "c": c, "d": direct, "power": power}
    c, g0 = _strictly_proper(a, b, h0, trunc_len, convention)
    tail = (torch.linalg.matrix_power(mat, n_fft - 1) @ v.unsqueeze(-1)).squeeze(-1)
    d = g0 + (c * tail).sum(-1)  # k[0] also holds the wrapped tail c' A^(n-1) e_1
    return {"a": a, "v": v, "c": c, "d": d, "power": power}


def recurrent_step_reference(
    u: Tensor, state: Tensor, a: Tensor, v: Tensor, c: Tensor, d: Tensor
) -> Tensor:
    """One step for every (row, channel): returns ``y [B, C]`` and updates ``state`` in place.

    Args:
        u: ``[B, C]`` inputs; state: ``[B, N, C]`` float32 ``z_t`` (becomes ``z_{t+1}``);
        a, v, c: ``[N, C]`` (state-major, as the state); d: ``[C]``.
    """
    z = state.float()
    uf = u.float()
    y = d * uf + (c * z).sum(1)
    first = -(a * z).sum(1, keepdim=True)
    shifted = torch.cat([first, z[:, :-1]], dim=1) + v * uf.unsqueeze(1)
    state.copy_(shifted)
    return y.to(u.dtype)


def prefill_state(u: Tensor, psi: Tensor, v: Tensor, u_spec: Tensor | None = None) -> Tensor:
    """``z_L [B, N, C]``: the state after reading ``u [B, L, C]`` from ``z_0 = 0``.

    ``z_L[j] = (psi * u)[L-1-j] + sum_{m=1..j} v[m] u[L-1-j+m]`` (the first term by FFT, the
    second a length-N convolution of the last N inputs), with ``psi [C, >= L]``,
    ``v [C, N]``. ``u_spec``: ``rfft(u^T, 2L)`` when the caller has it already.
    """
    length = u.shape[1]
    n_state = v.shape[-1]
    n = 2 * length
    if u_spec is None:
        u_spec = torch.fft.rfft(u.transpose(1, 2).float(), n=n)
    filtered = torch.fft.irfft(u_spec * torch.fft.rfft(psi[:, :length].float(), n=n), n=n)
    filtered = filtered[..., :length]  # [B, C, L]: (psi * u)[t]
    keep = min(n_state, length)
    first = filtered[..., length - keep :].flip(-1)  # j = 0 .. keep-1 -> t = L-1-j
    first = torch.nn.functional.pad(first, (0, n_state - keep))
    # second term: reversed last-N inputs convolved with v[1:]
    last = (
        u[:, length - keep :].transpose(1, 2).float().flip(-1)
    )  # [B, C, keep], last[j] = u[L-1-j]
    last = torch.nn.functional.pad(last, (0, n_state - keep))
    v_shift = torch.nn.functional.pad(v[:, 1:].float(), (1, 0))  # v'[0] = 0, v'[m] = v[m]
    m = 2 * n_state
    second = torch.fft.irfft(torch.fft.rfft(last, n=m) * torch.fft.rfft(v_shift, n=m), n=m)[
        ..., :n_state
    ]
    return (first + second).transpose(1, 2).contiguous()


def free_response(x: Tensor, a: Tensor, k: Tensor, length: int) -> Tensor:
    """``f [B, length, C]``: the outputs the state contributes to the next ``length`` positions,
    ``f_tau = c' A^tau x`` for the plain companion state ``x [B, N, C]``, from the conv kernel
    ``k [C, >= length + N]`` (``k[t] = c' A^(t-1) e_1`` for ``t >= 1``): with ``a_0 = 1``,
    ``f_tau = sum_r beta_r k[tau + r + 1]``, ``beta_r = sum_{i >= r} x_i a_{i - r}``.

    Args:
        a: per-channel denominators ``[C, N]``.
    """
    batch, n_state, channels = x.shape
    if k.shape[-1] < length + n_state:
        raise ValueError(f"the kernel must hold {length + n_state} taps, got {k.shape[-1]}")
    coeffs = torch.cat([torch.ones_like(a[:, :1]), a[:, :-1]], dim=-1).float()  # a_0 .. a_{N-1}
    idx = torch.arange(n_state, device=x.device)
    lag = idx[:, None] - idx[None, :]  # i - r
    toeplitz = coeffs[:, lag.clamp(min=0)] * (lag >= 0)  # [C, N(i), N(r)]
    beta = torch.einsum("bic,cir->bcr", x.float(), toeplitz)  # [B, C, N]
    taps = k[:, 1 : length + n_state].float()  # [C, length + N - 1]
    taps = taps.unsqueeze(0).expand(batch, -1, -1).reshape(1, batch * channels, -1)
    out = torch.nn.functional.conv1d(
        taps, beta.reshape(batch * channels, 1, n_state), groups=batch * channels
    )
    return out.reshape(batch, channels, length).transpose(1, 2)
