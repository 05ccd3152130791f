"""Mamba's mixer (MAD's layer) and the selective-scan reference: golden parity with
athms/mad-lab's slow path, stepwise decoding == the parallel forward, the scan against a
direct evaluation of its definition on random inputs."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from hazyzoo.kernels.selective_scan import selective_scan_reference
from hazyzoo.modeling.layers.mamba import MambaMixer
from tests.conftest import golden_dir


def test_golden_mad_mamba_layer():
    path = golden_dir("mad_mamba_layer")
    layer = MambaMixer(32, d_state=4, d_conv=4, expand=2).eval()
    layer.load_state_dict(load_file(path / "weights.safetensors"), strict=True)
    x = load_file(path / "inputs.safetensors")["x"]
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, load_file(path / "outputs.safetensors")["y"], atol=1e-5, rtol=0)


def test_steps_equal_the_parallel_forward_and_continue_its_state():
    torch.manual_seed(0)
    layer = MambaMixer(16, d_state=4, d_conv=3, expand=2).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, 13, 16)
        full = layer(x)
        head, (conv_state, ssm_state) = layer(x[:, :5], return_state=True)
        steps = [layer.step(x[:, t], conv_state, ssm_state) for t in range(5, 13)]
    torch.testing.assert_close(head, full[:, :5], atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 5:], atol=1e-5, rtol=1e-5)


def test_scan_matches_its_definition():
    """h_t = exp(dt A) h_{t-1} + dt B_t u_t, y_t = C_t h_t + D u_t, gated by silu(z)."""
    g = torch.Generator().manual_seed(3)
    b, d, n, length = 2, 3, 4, 6
    u, delta, z = (torch.randn(b, d, length, generator=g) for _ in range(3))
    a = -torch.rand(d, n, generator=g) - 0.1
    bb, cc = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    dd, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
    y, last = selective_scan_reference(
        u,
        delta,
        a,
        bb,
        cc,
        D=dd,
        z=z,
        delta_bias=bias,
        delta_softplus=True,
        return_last_state=True,
    )
    want = torch.zeros(b, d, length)
    for i in range(b):
        for c in range(d):
            h = torch.zeros(n)
            for t in range(length):
                dt = F.softplus(delta[i, c, t] + bias[c])
                h = torch.exp(dt * a[c]) * h + dt * bb[i, :, t] * u[i, c, t]
                want[i, c, t] = (cc[i, :, t] * h).sum() + dd[c] * u[i, c, t]
            if (i, c) == (b - 1, d - 1):
                torch.testing.assert_close(last[i, c], h)
    torch.testing.assert_close(y, want * F.silu(z), atol=1e-5, rtol=1e-5)


def test_init_follows_the_reference():
    """S4D-real A, unit D, dt in [dt_min, dt_max]; dt_proj carries its own init hook, so a
    hazyzoo model's _init_weights (which calls a module's hook instead of the Linear rule)
    keeps Mamba's dt init."""
    torch.manual_seed(0)
    layer = MambaMixer(32, d_state=4)
    assert torch.equal(layer.A_log, torch.log(torch.arange(1.0, 5.0)).repeat(64, 1))
    assert torch.equal(layer.D, torch.ones(64))
    for _ in range(2):  # at construction, and re-drawn by the hook
        dt = F.softplus(layer.dt_proj.bias.detach())
        assert (dt >= 1e-3 * (1 - 1e-5)).all() and (dt <= 1e-1 * (1 + 1e-5)).all()
        assert dt.std() > 0 and layer.dt_proj.weight.abs().max() <= 2**-0.5
        layer.dt_proj._init_hazy_weights(None)
