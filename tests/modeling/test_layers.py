"""Mixers and cache layers on their own: exactness against naive loops, padding, the ring buffer."""

from __future__ import annotations

import math

import pytest
import torch

from hazyzoo.kernels.dispatch import kernel_mode, use_triton
from hazyzoo.modeling.cache import HazyCache, SlidingWindowLayer
from hazyzoo.modeling.layers import (
    BaseConv,
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


@pytest.mark.parametrize(
    "mixer",
    [
        lambda: BaseConv(16, 24, kernel_size=3),
        lambda: TaylorLinearAttention(16, 2, feature_dim=4),
        lambda: SlidingWindowAttention(16, 2, window=3),
    ],
    ids=["base_conv", "linear_attention", "sliding_window"],
)
def test_left_padding_does_not_change_real_tokens(mixer):
    torch.manual_seed(0)
    layer = mixer().eval()
    x = torch.randn(1, 6, 16)
    junk = 5 * torch.randn(1, 4, 16)
    padded = torch.cat([junk, x], dim=1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 6)], dim=1)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = layer(x, position_ids=torch.arange(6)[None])
        out = layer(padded, attention_mask=mask, position_ids=positions)[:, 4:]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


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
