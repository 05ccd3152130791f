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
from safetensors.torch import load_file

from hazyzoo.kernels import rtf
from tests.conftest import golden_dir

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
