"""MAD's Hyena operator: golden parity with athms/mad-lab (the RTF long filter, which MAD never
registers and hazyzoo trains and saves), causality, and the implicit-filter variant against a
direct evaluation."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hazyzoo.modeling.layers.hyena import HyenaOperator
from tests.conftest import golden_dir


def test_golden_mad_hyena_rtf_layer():
    path = golden_dir("mad_hyena_rtf_layer")
    layer = HyenaOperator(32, 24, filter_cls="rtf", state_size=4).eval()
    layer.load_state_dict(load_file(path / "weights.safetensors"), strict=True)
    want = load_file(path / "outputs.safetensors")
    with torch.no_grad():
        y = layer(load_file(path / "inputs.safetensors")["x"])
        kernel = layer.long_conv.filter.kernel(24)
    torch.testing.assert_close(y, want["y"], atol=1e-6, rtol=0)
    torch.testing.assert_close(kernel, want["rtf_kernel"], atol=1e-6, rtol=0)
    names = {n for n, _ in layer.named_parameters()}
    assert {"long_conv.filter.ab", "long_conv.filter.h_0"} <= names  # trained, unlike MAD's


@pytest.mark.parametrize("filter_cls", ["rtf", "implicit"])
def test_causal_and_equal_to_a_direct_evaluation(filter_cls):
    torch.manual_seed(0)
    layer = HyenaOperator(8, 16, filter_cls=filter_cls, filter_order=8).eval()
    x = torch.randn(2, 12, 8)
    with torch.no_grad():
        y = layer(x)
        changed = x.clone()
        changed[:, 7:] += 1.0
        # no position sees the future (up to the FFT's rounding, which mixes all positions)
        torch.testing.assert_close(layer(changed)[:, :7], y[:, :7], atol=1e-6, rtol=0)
        assert (layer(changed)[:, 7:] - y[:, 7:]).abs().max() > 1e-3
        p = layer.in_proj(x).transpose(1, 2).repeat(1, layer.proj_groups, 1)
        x0, x1, v = layer.short_filter(p)[..., :12].split(layer.inner, dim=1)
        if filter_cls == "rtf":
            k = layer.long_conv.filter.kernel(12)
        else:
            k = layer.long_conv.filter.kernels(12)[0]
        g = v * x1
        conv = torch.zeros_like(g)
        for t in range(12):
            for s in range(t + 1):
                conv[..., t] += k[:, s] * g[..., t - s]
        want = layer.out_proj(((conv + g * layer.long_conv.bias[:, None]) * x0).transpose(1, 2))
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


def test_bad_settings():
    with pytest.raises(ValueError, match="filter_cls"):
        HyenaOperator(8, 16, filter_cls="fft")
    with pytest.raises(ValueError, match="divisible by proj_groups"):
        HyenaOperator(8, 16, proj_groups=5)
