"""Mixers and cache layers on their own: exactness against naive loops, the ring buffers, the
growing key/value cache, the cache-layer API (the mixer contract itself is test_mixer_contract)."""

from __future__ import annotations

import math

import pytest
import torch

from hazyzoo.kernels.dispatch import kernel_mode, use_triton
from hazyzoo.modeling.cache import (
    FullAttentionLayer,
    HazyCache,
    InputHistoryLayer,
    LinearAttentionStateLayer,
    SlidingWindowLayer,
)
from hazyzoo.modeling.layers import (
    FullAttention,
    LayerNorm,
    RMSNorm,
    SlidingWindowAttention,
    TaylorLinearAttention,
    windowed_attention,
)


def naive_window_attention(q, k, v, window):
    """Loop over queries: softmax over the last `window` keys (itself included), float64."""
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty_like(q)
    for i in range(q.shape[2]):
        lo = max(0, i - window + 1)
        s = q[:, :, i : i + 1] @ k[:, :, lo : i + 1].transpose(-1, -2) / math.sqrt(q.shape[-1])
        out[:, :, i : i + 1] = s.softmax(-1) @ v[:, :, lo : i + 1]
    return out


@pytest.mark.parametrize(
    ("length", "window", "block"), [(13, 4, 512), (37, 5, 8), (20, 1, 3), (9, 30, 4)]
)
def test_windowed_attention_matches_naive_loop(length, window, block):
    q, k, v = (torch.randn(2, 3, length, 8) for _ in range(3))
    valid = torch.ones(2, length, dtype=torch.bool)
    out = windowed_attention(q, k, v, valid, window, query_block_size=block)
    torch.testing.assert_close(
        out.double(), naive_window_attention(q, k, v, window), atol=1e-6, rtol=0
    )


def test_sliding_window_float32_stays_float32():
    layer = SlidingWindowAttention(16, 2, window=3)
    out = layer(torch.randn(1, 7, 16))
    assert out.dtype == torch.float32


def test_ring_buffer_never_grows_and_matches_parallel():
    torch.manual_seed(0)
    layer = SlidingWindowAttention(16, 2, window=4).eval()
    x = torch.randn(2, 15, 16)
    with torch.no_grad():
        full = layer(x)
        cache = HazyCache([layer.make_cache_layer()])
        outs = [layer(x[:, :3], cache_layer=cache.layers[0])]
        cache.advance(3)
        for t in range(3, 15):
            outs.append(layer(x[:, t : t + 1], cache_layer=cache.layers[0]))
            cache.advance(1)
            assert cache.layers[0].keys.shape[2] == 4
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=0)


def test_sliding_window_layer_rejects_bad_window():
    with pytest.raises(ValueError, match="window"):
        SlidingWindowLayer(0)
    with pytest.raises(ValueError, match="window"):
        SlidingWindowAttention(16, 2, window=0)


def test_linear_attention_matches_naive_taylor_loop():
    torch.manual_seed(0)
    layer = TaylorLinearAttention(16, 2, feature_dim=4, eps=1e-12)
    x = torch.randn(2, 9, 16)
    b, length = 2, 9
    q = layer.q_proj(x).view(b, length, 2, 4).transpose(1, 2)
    k = layer.k_proj(x).view(b, length, 2, 4).transpose(1, 2)
    v = layer.v_proj(x).view(b, length, 2, 8).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / 2.0  # sqrt(feature_dim)
    a = (1 + s + s**2 / 2) * torch.ones(length, length).tril()
    y = (a @ v) / (a.sum(-1, keepdim=True) + 1e-12)
    ref = layer.o_proj(y.transpose(1, 2).reshape(b, length, 16))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=0)


def test_rmsnorm_matches_formula_and_keeps_weight_dtype():
    norm = RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    x = torch.randn(3, 8)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), ref)
    assert norm.to(torch.bfloat16)(x).dtype == torch.bfloat16


def test_kernel_dispatch_modes(monkeypatch):
    cpu = torch.randn(2)
    monkeypatch.delenv("HAZYZOO_KERNELS", raising=False)
    assert kernel_mode() == "auto" and not use_triton(cpu)
    monkeypatch.setenv("HAZYZOO_KERNELS", "torch")
    assert not use_triton(cpu)
    monkeypatch.setenv("HAZYZOO_KERNELS", "cuda")
    with pytest.raises(ValueError, match="HAZYZOO_KERNELS"):
        use_triton(cpu)
    monkeypatch.setenv("HAZYZOO_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        use_triton(cpu)


def test_full_attention_is_the_window_of_everything():
    torch.manual_seed(0)
    full = FullAttention(16, 2)
    window = SlidingWindowAttention(16, 2, window=64)
    window.load_state_dict(full.state_dict())
    x = torch.randn(2, 20, 16)
    with torch.no_grad():
        torch.testing.assert_close(full(x), window(x), atol=1e-6, rtol=0)
    q, k, v = (torch.randn(1, 2, 9, 8) for _ in range(3))
    out = windowed_attention(q, k, v, torch.ones(1, 9, dtype=torch.bool), None, query_block_size=4)
    torch.testing.assert_close(out.double(), naive_window_attention(q, k, v, 9), atol=1e-6, rtol=0)


def test_full_attention_cache_grows_and_crops():
    layer = FullAttentionLayer()
    assert not layer.constant_size and not layer.supports_graph_replay
    keys = torch.randn(2, 3, 5, 4)
    layer.append(keys, keys + 1, torch.ones(2, 5, dtype=torch.bool))
    layer.seen_tokens = 5
    layer.append(keys[:, :, :1], keys[:, :, :1], torch.ones(2, 1, dtype=torch.bool))
    layer.seen_tokens = 6
    assert layer.keys.shape == (2, 3, 6, 4) and layer.nbytes() > 0
    layer.crop(2)
    assert layer.keys.shape[2] == 4 and layer.get_seq_length() == 4
    torch.testing.assert_close(layer.values, keys[:, :, :4] + 1)


def test_input_history_ring_buffer():
    layer = InputHistoryLayer(capacity=4)
    x = torch.arange(2 * 3 * 6, dtype=torch.float32).view(2, 3, 6)
    layer.store(x[..., :2])  # shorter than the capacity: zeros first
    torch.testing.assert_close(layer.history(), torch.cat([torch.zeros(2, 3, 2), x[..., :2]], -1))
    for t in range(2, 6):
        layer.append(x[..., t])
    torch.testing.assert_close(layer.history(), x[..., 2:])
    before = layer.inputs.data_ptr()
    layer.append(x[..., 0])
    assert layer.inputs.data_ptr() == before, "decode writes must be in place (graph replay)"
    assert set(layer.state_tensors()) == {"inputs", "write_index"}
    assert set(layer.batch_state_tensors()) == {"inputs"}
    layer.batch_repeat_interleave(3)
    assert layer.batch_size == 6 and layer.write_index.shape == (1,)
    with pytest.raises(ValueError, match="capacity"):
        InputHistoryLayer(0)


def test_cache_layer_state_api_separates_counters():
    window = SlidingWindowLayer(3)
    window.store(
        torch.randn(2, 1, 5, 4), torch.randn(2, 1, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    )
    assert set(window.batch_state_tensors()) == {"keys", "values", "valid"}
    assert "write_index" in window.state_tensors()
    window.reorder_cache(torch.tensor([1, 0]))
    assert window.write_index.shape == (1,)
    state = LinearAttentionStateLayer()
    assert state.state_tensors() == {} and state.batch_size == -1
    cache = HazyCache([state, window])
    assert cache.constant_size and cache.supports_graph_replay
    assert not HazyCache([FullAttentionLayer()]).supports_graph_replay
    with pytest.raises(TypeError, match="HazyCacheLayer"):
        HazyCache([object()])


def test_layer_norm_keeps_weight_dtype_and_matches_torch():
    norm = LayerNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
        norm.bias.copy_(torch.randn(8))
    x = torch.randn(3, 8)
    ref = torch.nn.functional.layer_norm(x, (8,), norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(norm(x), ref)
    assert norm.to(torch.bfloat16)(x).dtype == torch.bfloat16
