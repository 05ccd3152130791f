"""The RTF reference ops: parity with the released code's golden outputs, and the exactness
of hazyzoo's own recurrence and bidirectional convolution.

Golden data (``$HAZYZOO_GOLDEN_DIR/rtf_*``, made with ruke1ire/RTF; each README states the
exact model): kernels, outputs, constrained denominators and the reference recurrence's
tensors, within 1e-5 (fp32). The recurrence from :func:`exact_realization` must reproduce the
convolution itself (the released one does not: 4.3e-2 off on ``rtf_causal_l1montel``).
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from hazyzoo.kernels import rtf
from tests.conftest import golden_dir
from tests.kernels.conftest import HYPOTHESIS, requires_triton

GOLDEN = [
    "rtf_causal_l1montel",
    "rtf_causal_numa2_noconstraint",
    "rtf2_causal",
    "rtf_bidirectional",
]
TOL = 1e-5


def load_golden(name: str) -> tuple[dict, dict, dict, dict]:
    path = golden_dir(name)
    config = json.loads((path / "config.json").read_text())
    return (
        config,
        load_file(path / "weights.safetensors"),
        load_file(path / "inputs.safetensors"),
        load_file(path / "outputs.safetensors"),
    )


def reference_parameters(config: dict, weights: dict) -> dict:
    """The reference layer's parameters, unpacked by the golden README's layout."""
    channels, directions = config["d_model"], 2 if config.get("bidirectional") else 1
    num_a = config.get("num_a") or channels
    ab = weights["ab"]
    a = rtf.constrain_denominator(
        ab[: directions * num_a], config["constraint"], weights.get("scalar")
    )
    return dict(
        a=a,
        a_full=rtf.share_denominators(a, channels, directions),
        b=ab[directions * num_a :],
        h0=weights["h_0"],
        trunc_len=config["trunc_len"],
        convention="rtf2" if config["class"] == "RTF2" else "rtf",
        channels=channels,
    )


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, tol: float = TOL) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {tol}"


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_kernel_and_outputs(name):
    """Kernels ``k`` and outputs ``y`` / ``y_short`` (``y_short_even``) of the released layer."""
    config, weights, inputs, outputs = load_golden(name)
    p = reference_parameters(config, weights)
    if "a_constrained" in outputs:
        assert_close(p["a"], outputs["a_constrained"], "a_constrained")
    u = inputs["u"]
    k = rtf.rtf_kernel(p["a_full"], p["b"], p["h0"], p["trunc_len"], u.shape[1], p["convention"])
    d = p["channels"]
    if config.get("bidirectional"):
        assert_close(torch.cat([k[:d], k[d:].flip(-1)], -1), outputs["k"], "k")
        assert_close(rtf.bidirectional_conv(u, k[:d], k[d:]), outputs["y"], "y")
        short = inputs["u_short_even"]
        ks = rtf.rtf_kernel(p["a_full"], p["b"], p["h0"], p["trunc_len"], short.shape[1])
        assert_close(rtf.bidirectional_conv(short, ks[:d], ks[d:]), outputs["y_short_even"], "y8")
        return
    assert_close(k, outputs["k"], "k")
    assert_close(rtf.causal_conv(u, k), outputs["y"], "y")
    short = inputs["u_short"]
    ks = rtf.rtf_kernel(
        p["a_full"], p["b"], p["h0"], p["trunc_len"], short.shape[1], p["convention"]
    )
    assert_close(rtf.causal_conv(short, ks), outputs["y_short"], "y_short")


def test_golden_bidirectional_odd_length_defect_is_reproduced_only_on_request():
    """``y_short`` (odd L) is what the released code does: reproduced by the reference path;
    the fixed convolution differs there (by up to ~2) and equals the direct sum instead."""
    config, weights, inputs, outputs = load_golden("rtf_bidirectional")
    p = reference_parameters(config, weights)
    u = inputs["u_short"]
    assert u.shape[1] % 2 == 1
    k = rtf.rtf_kernel(p["a_full"], p["b"], p["h0"], p["trunc_len"], u.shape[1])
    d = p["channels"]
    assert_close(rtf.bidirectional_conv_reference(u, k[:d], k[d:]), outputs["y_short"], "ref")
    fixed = rtf.bidirectional_conv(u, k[:d], k[d:])
    assert (fixed - outputs["y_short"]).abs().max() > 0.5
    assert_close(fixed, direct_bidirectional(u, k[:d], k[d:]), "fixed vs direct")


@pytest.mark.parametrize("name", [g for g in GOLDEN if g != "rtf_bidirectional"])
def test_golden_reference_recurrence(name):
    """The released recurrence's tensors (``C_corrected`` / ``C_prime``, ``k_step*``,
    ``y_step_corrected``) are reproduced by the documented reference path."""
    config, weights, inputs, outputs = load_golden(name)
    p = reference_parameters(config, weights)
    length = inputs["u"].shape[1]
    if p["convention"] == "rtf":
        c = rtf.reference_corrected_numerator(p["a_full"], p["b"], p["trunc_len"])
        assert_close(c, outputs["C_corrected"], "C_corrected")
        k_step = rtf.reference_step_kernel(p["a_full"], c, p["h0"], length)
        assert_close(k_step, outputs["k_step_corrected"], "k_step_corrected")
        y_step = rtf.causal_conv(inputs["u"], k_step)
        assert_close(y_step, outputs["y_step_corrected"], "y_step_corrected")
    else:
        num = rtf.numerator_coefficients(p["a_full"], p["b"], p["trunc_len"], "rtf2")
        assert_close(num, outputs["C_prime"], "C_prime")
        k_step = rtf.reference_step_kernel(p["a_full"], p["b"], p["h0"], length, "rtf2")
        assert_close(k_step, outputs["k_step"], "k_step")


@pytest.mark.parametrize("name", [g for g in GOLDEN if g != "rtf_bidirectional"])
def test_exact_recurrence_reproduces_the_golden_convolution(name):
    """hazyzoo's recurrence has the conv kernel as its impulse response, where the released
    one is off (4.3e-2 on rtf_causal_l1montel)."""
    config, weights, inputs, outputs = load_golden(name)
    p = reference_parameters(config, weights)
    c, d = rtf.exact_realization(p["a_full"], p["b"], p["h0"], p["trunc_len"], p["convention"])
    k = rtf.kernel_from_realization(p["a_full"], c, d, inputs["u"].shape[1])
    assert_close(k, outputs["k"], "k from the recurrence")


def direct_bidirectional(u: torch.Tensor, k_c: torch.Tensor, k_a: torch.Tensor) -> torch.Tensor:
    """``y[t] = sum_{s<=t} k_c[s] u[t-s] + sum_{j<=L-2} k_a[j] u[t+1+j]``, by loops."""
    length = u.shape[1]
    y = torch.zeros_like(u, dtype=torch.float64)
    ud, kc, ka = u.double(), k_c.double(), k_a.double()
    for t in range(length):
        for s in range(t + 1):
            y[:, t] += kc[:, s] * ud[:, t - s]
        for j in range(length - 1 - t):
            y[:, t] += ka[:, j] * ud[:, t + 1 + j]
    return y.to(u.dtype)


def random_filter(seed: int, channels: int, state: int, constraint: str):
    """Stable random filters: montel-style init (|a| < 1/N), a learned slack for l1_montel."""
    gen = torch.Generator().manual_seed(seed)
    a_raw = (torch.rand(channels, state, generator=gen) * 2 - 1) / state
    scalar = torch.rand(channels, generator=gen)
    a = rtf.constrain_denominator(a_raw, constraint, scalar)
    b = torch.randn(channels, state, generator=gen) / state**0.5
    h0 = torch.randn(channels, generator=gen)
    return a, b, h0


@pytest.mark.parametrize("convention", rtf.CONVENTIONS)
@pytest.mark.parametrize("constraint", rtf.CONSTRAINTS)
@pytest.mark.parametrize("state", [4, 64])
def test_recurrence_equals_convolution_for_256_steps(state, constraint, convention):
    """Stepping the exact recurrence over 256 random inputs gives the FFT convolution's
    outputs (fp32, <= 1e-5 relative to the largest output)."""
    a, b, h0 = random_filter(state, 3, state, constraint)
    trunc_len, length = 256, 256
    u = torch.randn(2, length, 3, generator=torch.Generator().manual_seed(1))
    k = rtf.rtf_kernel(a, b, h0, trunc_len, length, convention)
    y_conv = rtf.causal_conv(u, k)
    c, d = rtf.exact_realization(a, b, h0, trunc_len, convention)
    x = torch.zeros(2, 3, state)
    steps = []
    for t in range(length):
        u_t = u[:, t]
        steps.append(d * u_t + (c * x).sum(-1))
        x = torch.cat([-(a * x).sum(-1, keepdim=True) + u_t.unsqueeze(-1), x[..., :-1]], -1)
    y_step = torch.stack(steps, dim=1)
    scale = y_conv.abs().max().item()
    err = (y_step - y_conv).abs().max().item()
    assert err <= 1e-5 * scale, f"recurrence vs conv: {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("length", [7, 8])
def test_bidirectional_conv_is_the_direct_sum_for_odd_and_even_lengths(length):
    """The bidirectional FFT convolution equals the direct double sum at every length."""
    gen = torch.Generator().manual_seed(length)
    u = torch.randn(2, length, 3, generator=gen)
    k_c, k_a = torch.randn(3, length, generator=gen), torch.randn(3, length, generator=gen)
    torch.testing.assert_close(
        rtf.bidirectional_conv(u, k_c, k_a), direct_bidirectional(u, k_c, k_a), atol=1e-5, rtol=0
    )


def test_kernel_generation_cost_does_not_depend_on_the_state_size_in_shape():
    """State-free: the kernel for N = 4 and N = 512 has the same shape, from one rFFT of
    length fft_size(trunc_len) (and an odd trunc_len is rounded up to even)."""
    assert rtf.fft_size(15) == 16 and rtf.fft_size(16) == 16
    for state in (4, 512):
        a, b, h0 = random_filter(0, 2, state, "l1_montel")
        assert rtf.rtf_kernel(a, b, h0, 1000, 600).shape == (2, 600)


def test_bad_arguments_name_what_is_wrong():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="constraint must be one of"):
        rtf.constrain_denominator(a, "l2")
    with pytest.raises(ValueError, match="needs the per-row `scalar`"):
        rtf.constrain_denominator(a, "l1_montel")
    with pytest.raises(ValueError, match="convention must be one of"):
        rtf.rtf_kernel(a, a, torch.zeros(2), 8, 8, convention="rtf3")


# --- the recurrent mode of the models: input-corrected coordinates, Triton step -------------


def _stable(channels: int, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(channels, n, generator=g, dtype=torch.float64) - 0.5) * 1.8 / n
    b = torch.randn(channels, n, generator=g, dtype=torch.float64)
    h0 = torch.randn(channels, generator=g, dtype=torch.float64)
    return a, b, h0


def _state_major(real: dict) -> tuple[torch.Tensor, ...]:
    return (*(real[k].T.float().contiguous() for k in ("a", "v", "c")), real["d"].float())


@pytest.mark.parametrize("convention", rtf.CONVENTIONS)
@pytest.mark.parametrize("trunc_len", [21, 32])
def test_recurrent_realization_reproduces_the_kernel(convention, trunc_len):
    """Impulse response of ``y = d u + c . z``, ``z <- A z + v u`` == the conv kernel on the
    whole FFT grid, odd and even ``trunc_len``."""
    a, b, h0 = _stable(5, 4, 0)
    n_fft = rtf.fft_size(trunc_len)
    k = rtf.rtf_kernel(a, b, h0, trunc_len, n_fft, convention)
    real = rtf.recurrent_realization(a, b, h0, trunc_len, convention)
    dec, inp, out, d = _state_major(real)
    state = torch.zeros(1, 4, 5)
    impulse = [
        rtf.recurrent_step_reference(torch.full((1, 5), float(t == 0)), state, dec, inp, out, d)[0]
        for t in range(n_fft)
    ]
    assert_close(torch.stack(impulse, -1).double(), k, "impulse response", tol=1e-5)


@pytest.mark.parametrize("length", [1, 3, 10, 32])
def test_prefill_state_and_free_response_equal_stepping(length):
    """The state after a prompt (one FFT) and the state's free response over the next
    positions (from the kernel) both equal running the recurrence."""
    trunc_len, n = 32, 4
    a, b, h0 = _stable(6, n, 1)
    real = rtf.recurrent_realization(a, b, h0, trunc_len)
    dec, inp, out, d = _state_major(real)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(2, trunc_len, 6, generator=g)
    state = torch.zeros(2, n, 6)
    for t in range(length):
        rtf.recurrent_step_reference(u[:, t], state, dec, inp, out, d)
    psi = rtf.periodic_inverse(a, trunc_len)
    assert_close(rtf.prefill_state(u[:, :length], psi, real["v"].float()), state, "state", 1e-5)
    rest = min(trunc_len - length, rtf.fft_size(trunc_len) - n)
    if rest:
        k = rtf.rtf_kernel(a, b, h0, trunc_len, rtf.fft_size(trunc_len)).float()
        plain = state - torch.einsum("cij,bjc->bic", real["power"].float(), state)
        want = torch.stack(
            [
                rtf.recurrent_step_reference(torch.zeros(2, 6), state, dec, inp, out, d)
                for _ in range(rest)
            ],
            1,
        )
        assert_close(rtf.free_response(plain, a.float(), k, rest), want, "free response", 1e-5)


@pytest.mark.parametrize(
    "name", ["rtf_causal_l1montel", "rtf_causal_numa2_noconstraint", "rtf2_causal"]
)
def test_reference_recurrence_reproduces_the_released_step(name):
    """``reference_recurrence=True`` is the released ``step`` (not its conv): its impulse
    response is the golden ``k_step_corrected`` / ``k_step`` and its outputs over ``u`` the
    golden ``y_step_corrected``."""
    config, weights, inputs, outputs = load_golden(name)
    p = reference_parameters(config, weights)
    real = rtf.recurrent_realization(
        p["a_full"].double(),
        p["b"].double(),
        p["h0"].double(),
        p["trunc_len"],
        p["convention"],
        reference_recurrence=True,
    )
    dec, inp, out, d = _state_major(real)
    want_k = outputs["k_step_corrected" if "k_step_corrected" in outputs else "k_step"]
    state = torch.zeros(1, dec.shape[0], p["channels"])
    steps = want_k.shape[-1]
    k = torch.stack(
        [
            rtf.recurrent_step_reference(
                torch.ones(1, p["channels"]) * (t == 0), state, dec, inp, out, d
            )[0]
            for t in range(steps)
        ],
        -1,
    )
    assert_close(k, want_k, "reference step kernel")
    if "y_step_corrected" in outputs:
        u = inputs["u"]
        state = torch.zeros(u.shape[0], dec.shape[0], p["channels"])
        y = torch.stack(
            [
                rtf.recurrent_step_reference(u[:, t], state, dec, inp, out, d)
                for t in range(u.shape[1])
            ],
            1,
        )
        assert_close(y, outputs["y_step_corrected"], "reference step outputs")


@requires_triton
@HYPOTHESIS
@given(
    batch=st.integers(1, 3),
    n_state=st.integers(1, 20),
    channels=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_triton_step_matches_reference(batch, n_state, channels, seed):
    """The Triton step (several state blocks and channel blocks, ragged edges) == the
    reference, output and in-place state, on random inputs."""
    from hazyzoo.kernels.rtf.recurrent import rtf_step_triton

    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, channels, generator=g)
    state = torch.randn(batch, n_state, channels, generator=g)
    params = [torch.randn(n_state, channels, generator=g) for _ in range(3)]
    d = torch.randn(channels, generator=g)
    ref_state, tri_state = state.clone(), state.clone()
    want = rtf.recurrent_step_reference(u, ref_state, *params, d)
    got = rtf_step_triton(u, tri_state, *params, d)
    assert_close(got, want, "y", tol=1e-5)
    assert_close(tri_state, ref_state, "state", tol=1e-5)


def test_step_rejects_bad_inputs():
    u, state, dec, inp, out, d = (
        torch.randn(2, 3),
        torch.randn(2, 4, 3),
        torch.randn(4, 3),
        torch.randn(4, 3),
        torch.randn(4, 3),
        torch.randn(3),
    )
    with pytest.raises(ValueError, match="state must be"):
        rtf.rtf_step(u, state[:, :, :2], dec, inp, out, d)
    with pytest.raises(ValueError, match="decay must be"):
        rtf.rtf_step(u, state, dec[:3], inp, out, d)
    with pytest.raises(ValueError, match="state has dtype"):
        rtf.rtf_step(u, state.double(), dec, inp, out, d)
    with pytest.raises(ValueError, match="input must be contiguous"):
        rtf.rtf_step(u, state, dec, torch.randn(3, 4).T, out, d)


@pytest.mark.parametrize("length", [1, 5, 64])
def test_direct_causal_conv_equals_the_fft_one(length):
    """The short-kernel route (cuDNN's direct convolution on the GPU) == the FFT convolution."""
    g = torch.Generator().manual_seed(length)
    u, k = torch.randn(2, length, 6, generator=g), torch.randn(6, length, generator=g)
    assert_close(rtf.causal_conv_direct(u, k), rtf.causal_conv(u, k), "direct conv", tol=1e-5)
