"""MAD's Hyena operators: golden parity with athms/mad-lab (the RTF long filter, which MAD never
registers and hazyzoo trains and saves), causality, each operator against a direct evaluation of
its formula, and decoding through the cache equal to the parallel forward."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hazyzoo import MadConfig
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.layers import HyenaExpertsOperator, HyenaOperator, MultiHeadHyenaOperator
from hazyzoo.modeling.layers.mad_moe import mad_topk_gate
from tests.conftest import golden_dir


def operator(name: str, dim: int = 8, length: int = 16, **settings) -> torch.nn.Module:
    """Layer 0 of a MAD config holding ``name`` with ``settings``, randomly initialised."""
    config = MadConfig(
        layers=[name], hidden_size=dim, max_position_embeddings=length, layer_configs=[settings]
    )
    torch.manual_seed(0)
    layer = {"hyena": HyenaOperator, "hyena-rtf": HyenaOperator}.get(name)
    cls = layer or {"mh-hyena": MultiHeadHyenaOperator, "hyena-experts": HyenaExpertsOperator}[name]
    mixer = cls.from_config(config, 0).eval()
    with torch.no_grad():  # biases and the skip away from their init constants
        for p in mixer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return mixer


def test_golden_mad_hyena_rtf_layer():
    path = golden_dir("mad_hyena_rtf_layer")
    layer = operator("hyena-rtf", 32, 24, hyena_state_size=4)
    layer.load_state_dict(load_file(path / "weights.safetensors"), strict=True)
    want = load_file(path / "outputs.safetensors")
    with torch.no_grad():
        y = layer(load_file(path / "inputs.safetensors")["x"])
        kernel = layer.long_conv.filter.kernel(24)
    torch.testing.assert_close(y, want["y"], atol=1e-6, rtol=0)
    torch.testing.assert_close(kernel, want["rtf_kernel"], atol=1e-6, rtol=0)
    names = {n for n, _ in layer.named_parameters()}
    assert {"long_conv.filter.ab", "long_conv.filter.h_0"} <= names  # trained, unlike MAD's


def _direct_conv(g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(g)
    for t in range(g.shape[-1]):
        for s in range(t + 1):
            out[..., t] += k[..., s] * g[..., t - s]
    return out


def _short(layer, x):
    p = layer.in_proj(x).transpose(1, 2).repeat(1, layer.proj_groups, 1)
    return layer.short_filter(p)[..., : x.shape[1]]


@pytest.mark.parametrize("name", ["hyena", "hyena-rtf"])
def test_hyena_is_causal_and_equals_a_direct_evaluation(name):
    layer = operator(name, hyena_filter_order=8)
    x = torch.randn(2, 12, 8)
    with torch.no_grad():
        y = layer(x)
        changed = x.clone()
        changed[:, 7:] += 1.0
        # no position sees the future (up to the FFT's rounding, which mixes all positions)
        torch.testing.assert_close(layer(changed)[:, :7], y[:, :7], atol=1e-6, rtol=0)
        assert (layer(changed)[:, 7:] - y[:, 7:]).abs().max() > 1e-3
        x0, x1, v = _short(layer, x).split(layer.inner, dim=1)
        g = v * x1
        conv = _direct_conv(g, layer.long_conv.kernel(12))
        want = layer.out_proj(((conv + g * layer.long_conv.bias[:, None]) * x0).transpose(1, 2))
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


def test_multi_head_hyena_equals_its_outer_product_formula():
    layer = operator("mh-hyena", hyena_num_heads=4, hyena_inner_factor=1)  # 2 heads of 4
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        y = layer(x)
        q, v, k = _short(layer, x).split(layer.inner, dim=1)  # [B, 8, L] each
        f = layer.long_conv.kernel(10)  # one filter per head
        d = layer.long_conv.bias
        out = torch.zeros(2, 8, 10)
        for g in range(2):
            hs = slice(4 * g, 4 * g + 4)
            kv = k[:, hs, None, :] * v[:, None, hs, :]  # [B, i, j, L]
            s = _direct_conv(kv, f[g]) + d[g] * kv
            out[:, hs] = (q[:, hs, None, :] * s).sum(1)
        want = layer.out_proj(out.transpose(1, 2))
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


def test_hyena_experts_mix_the_operator_over_experts_with_mads_gate():
    layer = operator("hyena-experts", hyena_expert_size=4, num_experts=2, num_experts_per_tok=1)
    x = torch.randn(2, 10, 8)
    with torch.no_grad():
        y = layer(x)
        x0, x1, v = _short(layer, x).split(layer.inner, dim=1)
        g = v * x1
        z = (_direct_conv(g, layer.long_conv.kernel(10)) + g * layer.long_conv.bias[:, None]) * x0
        z = z.transpose(1, 2).reshape(2, 10, 4, 2)  # channel 2 i + e: inner i of expert e
        gate = mad_topk_gate(layer.router(x), 1)
        want = layer.out_proj((z * gate[..., None, :]).sum(-1))
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


def test_mads_gate_keeps_unselected_experts_at_exp_zero():
    scores = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    gate = mad_topk_gate(scores, 2)
    want = torch.tensor([[2.0, 0.0, 0.0, 3.0]]).softmax(-1)  # below the 2nd largest -> 0, not -inf
    torch.testing.assert_close(gate, want)
    with pytest.raises(ValueError, match="between 1 and"):
        mad_topk_gate(scores, 5)


@pytest.mark.parametrize("name", ["hyena", "hyena-rtf", "mh-hyena", "hyena-experts"])
def test_prefill_then_steps_equal_the_parallel_forward(name):
    settings = {"mh-hyena": {"hyena_num_heads": 4}, "hyena-experts": {"hyena_expert_size": 4}}
    layer = operator(name, **settings.get(name, {}))
    x = torch.randn(3, 16, 8)
    cache = HazyCache([layer.make_cache_layer()])
    with torch.no_grad():
        full = layer(x)
        pieces = [layer(x[:, :5], cache_layer=cache.layers[0])]
        cache.advance(5)
        size = cache.layers[0].nbytes()
        for t in range(5, 9):  # single steps
            pieces.append(layer(x[:, t : t + 1], cache_layer=cache.layers[0]))
            cache.advance(1)
        pieces.append(layer(x[:, 9:], cache_layer=cache.layers[0]))  # a chunk after steps
        cache.advance(7)
        with pytest.raises(ValueError, match="at most 16 positions"):
            layer(x[:, :1], cache_layer=cache.layers[0])
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.layers[0].nbytes() == size > 0  # a fixed-size ring: no growth after 16 tokens


def test_bad_settings():
    with pytest.raises(ValueError, match="hyena_filter_cls"):
        MadConfig(layers=["hyena"], hidden_size=8, layer_configs=[{"hyena_filter_cls": "fft"}])
    with pytest.raises(ValueError, match="hyena_proj_groups"):
        MadConfig(layers=["hyena"], hidden_size=8, layer_configs=[{"hyena_proj_groups": 5}])
    with pytest.raises(ValueError, match="hyena_num_heads"):
        MadConfig(layers=["mh-hyena"], hidden_size=8, layer_configs=[{"hyena_num_heads": 3}])
    with pytest.raises(ValueError, match="hyena_order 2"):
        MadConfig(layers=["hyena"], hidden_size=8, layer_configs=[{"hyena_order": 3}])
