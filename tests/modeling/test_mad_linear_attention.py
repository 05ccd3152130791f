"""MAD's linear attention (every feature map) and gated linear attention (GLA).

The reference formulas are written out here independently (direct loops over positions) and
compared with the mixers; the parallel forms are compared with step-by-step decoding through the
cache; padding must leave outputs and states unchanged. Maps with signed features
(``elementwise_product``, ``identity``, ``dpfp``) can make MAD's denominator small, which
amplifies rounding: those comparisons run in float64. The generic mixer contract
(tests/modeling/test_mixer_contract.py) runs both mixers in float32 as well.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from hazyzoo.configuration.configuration_mad import MadConfig
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.layers import GatedLinearAttention, MadLinearAttention
from hazyzoo.modeling.layers.gated_linear_attention import (
    gla_chunked,
    gla_recurrent,
    gla_step,
)
from hazyzoo.modeling.layers.mad_linear_attention import (
    FEATURE_MAPS,
    TaylorFeatureMap,
    causal_linear_attention,
)
from hazyzoo.modeling.layers.protocol import MixerOutput

HIDDEN, HEADS = 16, 2  # head dim 8: taylor has 45 features, dpfp 64
F64 = dict(atol=1e-9, rtol=1e-9)


def perturbed(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """``module`` in eval mode with random non-trivial weights (biases nonzero too)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module.eval()


def mad_la(feature_map: str, dtype: torch.dtype = torch.float64, **kwargs) -> MadLinearAttention:
    torch.manual_seed(1)
    m = MadLinearAttention(HIDDEN, HEADS, feature_map, layer_idx=0, **kwargs)
    return perturbed(m).to(dtype)


def inputs(batch: int, length: int, dtype=torch.float64, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, HIDDEN, generator=g).to(dtype)


def call(mixer, x, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        out = mixer(x, **kwargs)
    return out.hidden_states if isinstance(out, MixerOutput) else out


def feed(mixer, x, cuts, mask=None) -> tuple[torch.Tensor, HazyCache]:
    """``x`` through a fresh cache in the pieces ``cuts``."""
    cache = HazyCache([mixer.make_cache_layer()])
    outs = []
    for lo, hi in itertools.pairwise(cuts):
        piece = None if mask is None else mask[:, lo:hi]
        outs.append(call(mixer, x[:, lo:hi], attention_mask=piece, cache_layer=cache.layers[0]))
        cache.advance(hi - lo)
    return torch.cat(outs, dim=1), cache


# --------------------------------------------------------------------------------------------
# MAD linear attention: the reference written out
# --------------------------------------------------------------------------------------------


def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def features_by_hand(name: str, fm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MAD's feature maps (featurization/feature_map.py), one formula each."""
    d = x.shape[-1]
    if name == "elementwise_product":
        return linear(fm.layer1, x) * linear(fm.layer2, x)
    if name == "taylor":
        parts = [torch.ones_like(x[..., :1]), x / d**0.25]
        parts += [x[..., i : i + 1] ** 2 / (math.sqrt(2) * math.sqrt(d)) for i in range(d)]
        pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
        parts += [x[..., i : i + 1] * x[..., j : j + 1] / math.sqrt(d) for i, j in pairs]
        return torch.cat(parts, dim=-1)
    if name == "hedgehog":
        h = linear(fm.layer, x)
        e = torch.cat([torch.exp(2 * h), torch.exp(-2 * h)], dim=-1)
        return e / e.sum(-1, keepdim=True)
    if name == "t2r":
        return torch.clamp(linear(fm.layer, x), min=0)
    if name == "dpfp":  # r = [relu(x), -relu(x)]; block j holds r_i * r_{(i - j) mod 2d}
        r = torch.cat([torch.clamp(x, min=0), -torch.clamp(x, min=0)], dim=-1)
        n = r.shape[-1]
        blocks = [
            torch.stack([r[..., i] * r[..., (i - j) % n] for i in range(n)], dim=-1)
            for j in range(1, 5)
        ]
        return torch.cat(blocks, dim=-1)
    if name == "elu":
        return torch.where(x > 0, x + 1, torch.exp(x))
    if name == "relu":
        return torch.clamp(x, min=0)
    assert name == "identity"
    return x


def mad_la_by_hand(mixer: MadLinearAttention, x: torch.Tensor, norm_q=False, norm_k=False):
    """MAD's LinearAttention.forward with its quadratic parallel_forward, position by position:
    ``y_t = sum_{s<=t} (q_t.k_s) v_s * 1 / (q_t . sum_{s<=t} k_s + 1e-12)``."""
    b, length, _ = x.shape
    h, dk, dv = mixer.num_heads, mixer.head_qk_dim, mixer.head_v_dim
    q = (x @ mixer.proj_q.weight.T).view(b, length, h, dk).transpose(1, 2)
    k = (x @ mixer.proj_k.weight.T).view(b, length, h, dk).transpose(1, 2)
    v = (x @ mixer.proj_v.weight.T).view(b, length, h, dv).transpose(1, 2)
    name = mixer.feature_map_name
    q = features_by_hand(name, mixer.feature_map_q, q)
    k = features_by_hand(name, mixer.feature_map_k, k)
    if norm_q:
        q = q / (q.sum(-1, keepdim=True) + 1e-4)
    if norm_k:
        k = k / (k.sum(-1, keepdim=True) + 1e-4)
    y = torch.zeros(b, h, length, dv, dtype=x.dtype)
    for t in range(length):
        num = sum(
            (q[:, :, t] * k[:, :, s]).sum(-1, keepdim=True) * v[:, :, s] for s in range(t + 1)
        )
        den = (q[:, :, t] * k[:, :, : t + 1].sum(2)).sum(-1, keepdim=True) + 1e-12
        y[:, :, t] = num * (1 / den)
    return y.transpose(1, 2).reshape(b, length, h * dv) @ mixer.out_proj.weight.T


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
def test_matches_the_reference_formula(feature_map):
    mixer = mad_la(feature_map)
    x = inputs(2, 9)
    torch.testing.assert_close(call(mixer, x), mad_la_by_hand(mixer, x), **F64)


@pytest.mark.parametrize(
    ("feature_map", "norm_q", "norm_k"),
    [("elu", True, False), ("hedgehog", False, True), ("taylor", True, True)],
)
def test_feature_normalisation_matches_the_reference(feature_map, norm_q, norm_k):
    mixer = mad_la(feature_map, norm_q=norm_q, norm_k=norm_k)
    x = inputs(2, 7)
    want = mad_la_by_hand(mixer, x, norm_q=norm_q, norm_k=norm_k)
    torch.testing.assert_close(call(mixer, x), want, **F64)


def test_taylor_map_is_the_second_order_expansion_of_exp():
    """``phi(q).phi(k) = 1 + s + s^2 / 2`` with ``s = q.k / sqrt(d)``: BASED's kernel, with the
    outer product's upper triangle (1 + d + d(d+1)/2 features)."""
    fm = TaylorFeatureMap(8)
    q, k = torch.randn(2, 5, 8, dtype=torch.float64).unbind(0)
    s = (q * k).sum(-1) / math.sqrt(8)
    got = (fm(q) * fm(k)).sum(-1)
    torch.testing.assert_close(got, 1 + s + s * s / 2, **F64)
    assert fm.feature_dim == fm(q).shape[-1] == 1 + 8 + 36


# --------------------------------------------------------------------------------------------
# MAD linear attention: parallel == recurrent, padding, cache
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
def test_parallel_equals_recurrent(feature_map):
    mixer = mad_la(feature_map)
    x = inputs(2, 21)
    full = call(mixer, x)
    for cuts in ([0, 21], [0, 1, 2, 21], [0, 6, 13, 14, 21], [0, 4, *range(5, 22)]):
        stepped, cache = feed(mixer, x, cuts)
        torch.testing.assert_close(stepped, full, **F64, msg=str(cuts))
        layer = cache.layers[0]
        assert layer.kv_state.shape == (2, HEADS, mixer.feature_dim, mixer.head_v_dim)
        assert layer.k_state.shape == (2, HEADS, mixer.feature_dim)


@pytest.mark.parametrize("feature_map", ["taylor", "hedgehog", "elu"])
def test_parallel_equals_recurrent_in_float32(feature_map):
    """Maps with positive kernels keep the denominator away from zero: float32 agrees too, and
    the cache holds float32 states."""
    mixer = mad_la(feature_map, torch.float32)
    x = inputs(2, 19, torch.float32)
    stepped, cache = feed(mixer, x, [0, 3, *range(4, 20)])
    torch.testing.assert_close(stepped, call(mixer, x), atol=1e-5, rtol=1e-5)
    assert cache.layers[0].kv_state.dtype == torch.float32


def test_chunked_op_equals_the_quadratic_form_and_the_recurrence():
    """:func:`causal_linear_attention` in any chunk size, from a state, equals the quadratic
    form and the token-by-token recurrence ``S += phi_k^T v``, ``z += phi_k``."""
    g = torch.Generator().manual_seed(3)
    phi_q, phi_k = torch.randn(2, 2, 3, 29, 6, generator=g, dtype=torch.float64).unbind(0)
    v = torch.randn(2, 3, 29, 5, generator=g, dtype=torch.float64)
    s0 = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    z0 = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    kv, ks, outs_o, outs_z = s0.clone(), z0.clone(), [], []
    for t in range(29):
        kv = kv + phi_k[:, :, t, :, None] * v[:, :, t, None, :]
        ks = ks + phi_k[:, :, t]
        outs_o.append(torch.einsum("bhf,bhfv->bhv", phi_q[:, :, t], kv))
        outs_z.append((phi_q[:, :, t] * ks).sum(-1))
    want_o, want_z = torch.stack(outs_o, 2), torch.stack(outs_z, 2)
    for chunk in (None, 1, 4, 7, 29, 64):
        o, z, (kv_f, ks_f) = causal_linear_attention(phi_q, phi_k, v, (s0, z0), True, chunk)
        torch.testing.assert_close(o, want_o, **F64)
        torch.testing.assert_close(z, want_z, **F64)
        torch.testing.assert_close(kv_f, kv, **F64)
        torch.testing.assert_close(ks_f, ks, **F64)


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
def test_left_padding_is_invisible(feature_map):
    """Padding keys join no sum: outputs on the real tokens and the cached states equal those
    of the unpadded sequence (prefill and token-by-token decoding alike)."""
    mixer = mad_la(feature_map)
    x = inputs(1, 8)
    junk = 3 * inputs(1, 3, seed=9)
    padded = torch.cat([junk, x], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1).long()
    want, clean = feed(mixer, x, [0, 8])
    got = call(mixer, padded, attention_mask=mask)[:, 3:]
    torch.testing.assert_close(got, want, **F64)
    for cuts in ([0, 11], [0, 2, 3, 4, 5, 11], [0, *range(1, 12)]):
        stepped, cache = feed(mixer, padded, cuts, mask=mask)
        torch.testing.assert_close(stepped[:, 3:], want, **F64)
        for name in ("kv_state", "k_state"):
            got_state = getattr(cache.layers[0], name)
            torch.testing.assert_close(got_state, getattr(clean.layers[0], name), **F64)


def test_attention_weights_reproduce_the_output():
    mixer = mad_la("hedgehog")
    x = inputs(2, 6)
    with torch.no_grad():
        out = mixer(x, output_attentions=True)
        _, _, v = mixer.features(x)
        mixed = (out.attentions @ v).transpose(1, 2).reshape(2, 6, -1)
    assert out.attentions.shape == (2, HEADS, 6, 6)
    assert torch.all(out.attentions.triu(1) == 0)
    torch.testing.assert_close(out.hidden_states, mixer.out_proj(mixed), **F64)


@pytest.mark.parametrize(
    ("feature_map", "names"),
    [
        ("elementwise_product", {"layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"}),
        ("hedgehog", {"layer.weight", "layer.bias"}),
        ("t2r", {"layer.weight", "layer.bias"}),
        ("taylor", set()),
        ("dpfp", set()),
    ],
)
def test_parameter_names_are_the_reference_ones(feature_map, names):
    for tie in (False, True):
        mixer = MadLinearAttention(HIDDEN, HEADS, feature_map, tie_feature_map_qk=tie)
        keys = set(mixer.state_dict())
        maps = ("feature_map_q",) if tie else ("feature_map_q", "feature_map_k")
        expected = {f"{m}.{n}" for m in maps for n in names}
        assert keys == expected | {
            f"{p}.weight" for p in ("proj_q", "proj_k", "proj_v", "out_proj")
        }
        assert (mixer.feature_map_k is mixer.feature_map_q) == tie


def test_hedgehog_starts_as_the_identity_and_tied_maps_share_weights():
    mixer = MadLinearAttention(HIDDEN, HEADS, "hedgehog", tie_feature_map_qk=True)
    torch.testing.assert_close(mixer.feature_map_q.layer.weight, torch.eye(HIDDEN // HEADS))
    assert torch.all(mixer.feature_map_q.layer.bias == 0)
    mixer.double()
    assert mixer.feature_map_k.layer.weight.dtype == torch.float64


def test_built_from_mad_layer_settings():
    config = MadConfig.tiny(
        layers=["linear-attention", "swiglu", "mh-linear-attention"],
        layer_configs=[{"feature_map": "taylor", "expand_v": 2}, None, {"num_attention_heads": 4}],
    )
    single = MadLinearAttention.from_config(config, 0)
    multi = MadLinearAttention.from_config(config, 2)
    assert (single.num_heads, single.feature_map_name, single.value_dim) == (1, "taylor", 64)
    assert (multi.num_heads, multi.head_qk_dim, multi.feature_map_name) == (
        4,
        8,
        "elementwise_product",
    )
    assert single.layer_idx == 0 and multi.layer_idx == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"feature_map": "softmax"}, ValueError, "feature_map"),
        ({"num_heads": 3}, ValueError, "num_attention_heads"),
        ({"num_heads": 0}, ValueError, "num_attention_heads"),
        ({"expand_k": 0.5, "num_heads": 16}, ValueError, "num_attention_heads"),
        ({"expand_v": 0.75, "num_heads": 8}, ValueError, "num_attention_heads"),
        ({"expand_k": 0.01}, ValueError, "expand_k"),
        ({"expand_v": -1}, ValueError, "expand_v"),
        ({"norm_q": "yes"}, TypeError, "norm_q"),
        ({"tie_feature_map_qk": 1}, TypeError, "tie_feature_map_qk"),
    ],
)
def test_bad_linear_attention_settings_are_refused(kwargs, error, names):
    kwargs = {"num_heads": 2, **kwargs}
    with pytest.raises(error, match=names):
        MadLinearAttention(HIDDEN, **kwargs)


def test_bad_setting_in_a_mad_config_is_refused_when_building():
    # already by the config, naming the layer
    with pytest.raises(ValueError, match=r"layers\[0\] \(linear-attention\): feature_map"):
        MadConfig.tiny(layers=["linear-attention"], layer_configs=[{"feature_map": "x"}])


# --------------------------------------------------------------------------------------------
# Gated linear attention
# --------------------------------------------------------------------------------------------


def gla_inputs(length: int, dtype=torch.float64, strength: float = 1.0, seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 2, 3, length, 5, generator=g).unbind(0)
    v = torch.randn(2, 3, length, 4, generator=g)
    gate = F.logsigmoid(strength * torch.randn(2, 3, length, 5, generator=g))
    return tuple(t.to(dtype) for t in (q, k, v, gate))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gla_chunked_equals_the_recurrence(dtype):
    q, k, v, g = gla_inputs(27, dtype)
    s0 = torch.randn(2, 3, 5, 4, dtype=dtype)
    want_o, want_s = gla_recurrent(q, k, v, g, s0)
    tol = F64 if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    for chunk in (1, 4, 8, 27, 32):
        o, s = gla_chunked(q, k, v, g, s0, chunk_size=chunk)
        torch.testing.assert_close(o, want_o, **tol)
        torch.testing.assert_close(s, want_s, **tol)
    state, outs = s0.clone(), []
    for t in range(27):
        outs.append(gla_step(q[:, :, t], k[:, :, t], v[:, :, t], g[:, :, t], state))
    torch.testing.assert_close(torch.stack(outs, 2), want_o, **tol)
    torch.testing.assert_close(state, want_s, **tol)


def test_gla_chunked_survives_strong_gates():
    """Log gates of about -20 per step: the chunked form forms every decay as ``exp`` of a
    non-positive number, so nothing overflows and it still equals the recurrence."""
    q, k, v, g = gla_inputs(24, torch.float32)
    g = g - 20
    o, s = gla_chunked(q, k, v, g, chunk_size=16)
    want_o, want_s = gla_recurrent(q, k, v, g)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    torch.testing.assert_close(o, want_o, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, want_s, atol=1e-5, rtol=1e-5)


def test_gla_by_hand_uses_the_naive_reference_semantics():
    """MAD's naive_recurrent_gla: ``h = h * exp(g_t) + k_t^T v_t``, ``o_t = (q_t * dk^-0.5) h``,
    written here with explicit loops over the channels."""
    q, k, v, g = (t[:1, :1, :4] for t in gla_inputs(4))
    o, _ = gla_recurrent(q, k, v, g)
    h = [[0.0] * 4 for _ in range(5)]
    for t in range(4):
        for i in range(5):
            for j in range(4):
                h[i][j] = h[i][j] * math.exp(g[0, 0, t, i]) + float(k[0, 0, t, i] * v[0, 0, t, j])
        for j in range(4):
            want = sum(float(q[0, 0, t, i]) / math.sqrt(5) * h[i][j] for i in range(5))
            assert abs(float(o[0, 0, t, j]) - want) < 1e-10


def gla_module(num_heads: int = 2, **kwargs) -> GatedLinearAttention:
    torch.manual_seed(5)
    return perturbed(GatedLinearAttention(HIDDEN, num_heads, layer_idx=0, **kwargs), 0.2)


def gla_module_by_hand(m: GatedLinearAttention, x: torch.Tensor) -> torch.Tensor:
    """MAD's GatedLinearAttention.forward (fuse_norm False), position by position."""
    b, length, _ = x.shape
    h, dk, dv = m.num_heads, m.head_qk_dim, m.head_v_dim
    q = (x @ m.q_proj.weight.T).view(b, length, h, dk)
    k = (x @ m.k_proj.weight.T).view(b, length, h, dk)
    v = (x @ m.v_proj.weight.T).view(b, length, h, dv)
    low, up = m.gk_proj
    gk = ((x @ low.weight.T) @ up.weight.T + up.bias).view(b, length, h, dk)
    gk = -torch.log1p(torch.exp(-gk)) / m.gate_logit_normalizer  # logsigmoid
    state = torch.zeros(b, h, dk, dv)
    out = torch.zeros(b, length, h, dv)
    for t in range(length):
        state = state * gk[:, t].exp()[..., None] + k[:, t, :, :, None] * v[:, t, :, None, :]
        out[:, t] = torch.einsum("bhk,bhkv->bhv", q[:, t] / math.sqrt(dk), state)
    out = out / torch.sqrt(out.pow(2).mean(-1, keepdim=True) + m.norm_eps) * m.g_norm.weight
    gate = x @ m.g_proj.weight.T
    out = out.reshape(b, length, h * dv) * (gate * torch.sigmoid(gate))
    return out @ m.o_proj.weight.T


@pytest.mark.parametrize("num_heads", [1, 4])
def test_gla_module_matches_the_reference_formula(num_heads):
    m = gla_module(num_heads)
    x = inputs(2, 11, torch.float32)
    torch.testing.assert_close(call(m, x), gla_module_by_hand(m, x), atol=1e-5, rtol=1e-5)


def test_gla_module_parallel_equals_recurrent():
    m = gla_module(chunk_size=4)  # several chunks in the parallel path
    x = inputs(2, 19, torch.float32)
    full = call(m, x)
    for cuts in ([0, 19], [0, 1, 2, 19], [0, 5, 6, 13, 19], [0, 3, *range(4, 20)]):
        stepped, cache = feed(m, x, cuts)
        torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5, msg=str(cuts))
        state = cache.layers[0].kv_state
        assert state.shape == (2, 2, 8, 8) and state.dtype == torch.float32


def test_gla_padding_leaves_the_state_unchanged():
    m = gla_module(chunk_size=4)
    x = inputs(1, 9, torch.float32)
    padded = torch.cat([5 * inputs(1, 4, torch.float32, seed=8), x], dim=1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 9)], dim=1).long()
    want, clean = feed(m, x, [0, 9])
    torch.testing.assert_close(call(m, padded, attention_mask=mask)[:, 4:], want, atol=1e-5, rtol=0)
    for cuts in ([0, 13], [0, 2, 3, 4, 5, 13], [0, *range(1, 14)]):
        stepped, cache = feed(m, padded, cuts, mask=mask)
        torch.testing.assert_close(stepped[:, 4:], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(cache.layers[0].kv_state, clean.layers[0].kv_state)
    # pads before any token keep the zero state exactly
    _, cache = feed(m, padded[:, :4], [0, 4], mask=mask[:, :4])
    assert torch.all(cache.layers[0].kv_state == 0)


def test_gla_parameter_names_and_init_are_the_reference_ones():
    m = GatedLinearAttention(HIDDEN, 2)
    assert set(m.state_dict()) == {
        "q_proj.weight",
        "k_proj.weight",
        "v_proj.weight",
        "g_proj.weight",
        "gk_proj.0.weight",
        "gk_proj.1.weight",
        "gk_proj.1.bias",
        "o_proj.weight",
        "g_norm.weight",
    }
    bound = 2**-2.5 * math.sqrt(6 / (2 * HIDDEN))  # xavier_uniform, gain 2^-2.5
    assert m.q_proj.weight.abs().max() <= bound
    assert torch.all(m.gk_proj[1].bias == 0) and torch.all(m.g_norm.weight == 1)


def test_gla_built_from_mad_layer_settings():
    config = MadConfig.tiny(layers=["gated-linear-attention", "mh-gated-linear-attention"])
    single, multi = (GatedLinearAttention.from_config(config, i) for i in (0, 1))
    assert (single.num_heads, multi.num_heads, multi.head_qk_dim) == (1, 4, 8)
    assert single.gk_proj[0].out_features == 16 and single.gate_logit_normalizer == 16
    assert single.g_norm.eps == 1e-5


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"num_heads": 3}, ValueError, "num_attention_heads"),
        ({"expand_k": 0.5, "num_heads": 16}, ValueError, "num_attention_heads"),
        ({"expand_v": 0.01}, ValueError, "expand_v"),
        ({"gate_fn": "nope"}, ValueError, "gate_fn"),
        ({"gate_logit_normalizer": 0}, ValueError, "gate_logit_normalizer"),
        ({"gate_low_rank_dim": 0}, ValueError, "gate_low_rank_dim"),
        ({"gate_low_rank_dim": 2.5}, TypeError, "gate_low_rank_dim"),
        ({"norm_eps": -1.0}, ValueError, "gla_norm_eps"),
    ],
)
def test_bad_gla_settings_are_refused(kwargs, error, names):
    kwargs = {"num_heads": 2, **kwargs}
    with pytest.raises(error, match=names):
        GatedLinearAttention(HIDDEN, **kwargs)
