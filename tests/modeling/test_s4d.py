"""The S4D baseline filter (hazyzoo.modeling.layers.s4d): its Vandermonde kernel against a
direct recurrence of the discretised diagonal SSM, and the bidirectional convolution against a
direct sum."""

from __future__ import annotations

import math

import pytest
import torch

from hazyzoo import RtfConfig, RtfForSequenceClassification
from hazyzoo.modeling.layers.s4d import S4DFilter, s4d_vandermonde_kernel


def random_parameters(rows: int, modes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    return {
        "log_dt": torch.empty(rows, dtype=f64).uniform_(math.log(1e-2), math.log(0.5), generator=g),
        "a_real": -torch.empty(rows, modes, dtype=f64).uniform_(0.05, 1.0, generator=g),
        "a_imag": torch.randn(rows, modes, dtype=f64, generator=g) * 3,
        "c": torch.randn(rows, modes, dtype=torch.complex128, generator=g),
    }


def recurrence(p: dict[str, torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """``x_t = A_bar x_{t-1} + B_bar u_t``, ``y_t = 2 Re(C x_t)`` step by step (ZOH, ``B = 1``);
    ``u [B, L, H]`` -> ``y [B, L, H]``."""
    a = torch.complex(p["a_real"], p["a_imag"])
    dt_a = a * p["log_dt"].exp()[:, None]
    a_bar, b_bar = dt_a.exp(), (dt_a.exp() - 1) / a
    x = torch.zeros(u.shape[0], *a.shape, dtype=a.dtype)
    ys = []
    for t in range(u.shape[1]):
        x = a_bar * x + b_bar * u[:, t, :, None]
        ys.append(2 * (p["c"] * x).sum(-1).real)
    return torch.stack(ys, dim=1)


def test_vandermonde_kernel_is_the_impulse_response_of_the_recurrence():
    rows, modes, length = 5, 3, 40
    p = random_parameters(rows, modes)
    k = s4d_vandermonde_kernel(p["log_dt"], p["a_real"], p["a_imag"], p["c"], length)
    assert k.shape == (rows, length) and k.dtype == torch.float64
    impulse = torch.zeros(1, length, rows, dtype=torch.float64)
    impulse[:, 0] = 1
    torch.testing.assert_close(k, recurrence(p, impulse)[0].T, rtol=1e-10, atol=1e-12)
    # [H, M, 2] real input means the same complex C
    again = s4d_vandermonde_kernel(
        p["log_dt"], p["a_real"], p["a_imag"], torch.view_as_real(p["c"]), length
    )
    torch.testing.assert_close(again, k)


def test_causal_filter_matches_the_recurrence_plus_d():
    torch.manual_seed(0)
    filt = S4DFilter(6, 8, trunc_len=32).double()
    with torch.no_grad():
        filt.log_dt.uniform_(math.log(0.05), math.log(0.5))  # decays visibly within 32 steps
    u = torch.randn(2, 32, 6, dtype=torch.float64)
    p = {
        "log_dt": filt.log_dt.detach(),
        "a_real": -filt.log_a_real.detach().exp(),
        "a_imag": filt.a_imag.detach(),
        "c": torch.view_as_complex(filt.c.detach().contiguous()),
    }
    want = recurrence(p, u) + filt.d.detach() * u
    torch.testing.assert_close(filt(u), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [7, 16])
def test_bidirectional_filter_matches_a_direct_sum(length):
    torch.manual_seed(1)
    channels = 4
    filt = S4DFilter(channels, 4, bidirectional=True)
    u = torch.randn(3, length, channels)
    k = filt.kernel(length).double()  # [2C, L], D at lag 0 of the causal rows
    kc, ka = k[:channels], k[channels:]
    x = u.double()
    want = torch.zeros_like(x)
    for t in range(length):
        for s in range(t + 1):  # causal: k_c[s] u[t - s]
            want[:, t] += kc[:, s] * x[:, t - s]
        for j in range(length - 1 - t):  # anti-causal: k_a[j] u[t + 1 + j]
            want[:, t] += ka[:, j] * x[:, t + 1 + j]
    torch.testing.assert_close(filt(u).double(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        filt.kernel(length)[:channels, 1:], filt.ssm_kernel(length)[:channels, 1:]
    )
    torch.testing.assert_close(
        filt.kernel(length)[:channels, 0] - filt.ssm_kernel(length)[:channels, 0], filt.d.detach()
    )


def test_init_is_s4d_lin_and_bad_arguments_are_refused():
    filt = S4DFilter(3, 8, bidirectional=True)
    assert filt.a_imag.shape == (6, 4) and filt.d.shape == (3,)
    torch.testing.assert_close(filt.a_imag[0], math.pi * torch.arange(4.0))
    torch.testing.assert_close(-filt.log_a_real.exp(), torch.full((6, 4), -0.5))
    assert (filt.log_dt.exp() >= 1e-3).all() and (filt.log_dt.exp() <= 1e-1).all()
    with pytest.raises(ValueError, match="state_size"):
        S4DFilter(3, 5)
    with pytest.raises(ValueError, match="trunc_len"):
        S4DFilter(3, 4, trunc_len=8)(torch.randn(1, 9, 3))


def test_swapped_into_an_rtf_classifier_it_trains():
    config = RtfConfig.tiny(
        vocab_size=17, bidirectional=True, channel_mixer="none", use_cache=False, num_labels=3
    )
    model = RtfForSequenceClassification(config)
    for layer in model.model.layers:
        layer.mixer.filter = S4DFilter(config.hidden_size, 4, config.trunc_len, True)
    ids, labels = torch.randint(0, 17, (4, 20)), torch.tensor([0, 1, 2, 0])
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    grads = [layer.mixer.filter.log_dt.grad for layer in model.model.layers]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
