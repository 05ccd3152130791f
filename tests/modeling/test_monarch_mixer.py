"""Monarch Mixer blocks (M2-BERT's mixer and GLU MLP), the implicit Hyena filter and the
block-diagonal linear layer: golden parity with HazyResearch/m2 on layer 0 of the tiny golden
model (both ``hyena_w_mod`` cases), references on random inputs, padding, bad inputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hazyzoo.conversion.based import read_reference_config
from hazyzoo.conversion.m2bert import convert_m2bert_state_dict, m2bert_config_from_reference
from hazyzoo.modeling.layers.blockdiag import BlockDiagonalLinear, block_diagonal_linear
from hazyzoo.modeling.layers.hyena_filter import (
    ImplicitHyenaFilter,
    hyena_positional_features,
    reference_filter_key,
)
from hazyzoo.modeling.layers.monarch_mixer import MonarchGluMlp, MonarchMixerSequenceMixing
from tests.conftest import golden_dir


def golden_layer0(w_mod: float) -> tuple[MonarchMixerSequenceMixing, MonarchGluMlp, dict]:
    """Layer 0 of the golden model, its weights mapped by the converter's key mapping."""
    path = golden_dir("m2_bert_tiny")
    config = m2bert_config_from_reference(read_reference_config(path))
    state = convert_m2bert_state_dict(load_file(path / "weights.safetensors"), config)[0]
    outputs = load_file(path / "outputs.safetensors")
    mixer = MonarchMixerSequenceMixing(32, 64, filter_order=16, emb_dim=5, w=10, w_mod=w_mod)
    mlp = MonarchGluMlp(32, 64, nblocks=4, eps=1e-12)
    for module, prefix in (
        (mixer, "bert.encoder.layer.0.sequence_mixer."),
        (mlp, "bert.encoder.layer.0.mlp."),
    ):
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(own, strict=True)
    return mixer.eval(), mlp.eval(), outputs


@pytest.mark.parametrize(("w_mod", "prefix"), [(1, ""), (2, "wmod2_")])
def test_golden_layer0_mixer_and_mlp(w_mod, prefix):
    """Layer 0 of the released M2-BERT code on its embeddings output (fp32, <= 1e-5)."""
    mixer, mlp, out = golden_layer0(w_mod)
    with torch.no_grad():
        mixed = mixer(out["embeddings_output"])
        layer = mlp(mixed)
    torch.testing.assert_close(
        mixed, out[prefix + "layer0_sequence_mixer_output"], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(layer, out[prefix + "layer0_output"], atol=1e-5, rtol=0)


def test_positional_features_are_hyenas_initial_value():
    z, t = hyena_positional_features(8, 5)
    assert z.shape == (1, 8, 5) and torch.equal(z[..., 0], t[..., 0])
    w = 2 * torch.pi * torch.arange(8) / 8
    torch.testing.assert_close(z[0, :, 1], torch.cos(1e-4 * w))
    torch.testing.assert_close(z[0, :, 4], -torch.sin(1.0 * w))
    with pytest.raises(ValueError, match="emb_dim must be odd"):
        hyena_positional_features(8, 4)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_filter_convolution_equals_a_direct_sum(bidirectional):
    torch.manual_seed(0)
    filt = ImplicitHyenaFilter(
        6, order=8, emb_dim=3, max_length=20, w=3.0, bidirectional=bidirectional
    )
    u = torch.randn(2, 11, 6)
    with torch.no_grad():
        y = filt(u)
        k_fwd, k_rev = filt.kernels(11)
    want = torch.zeros_like(u)
    for t in range(11):
        for s in range(t + 1):
            want[:, t] += k_fwd[:, s] * u[:, t - s]
        if bidirectional:
            for j in range(11 - t - 1):
                want[:, t] += k_rev[:, j] * u[:, t + 1 + j]
    want += u * filt.bias.detach()
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at most 20"):
        filt(torch.randn(1, 21, 6))


def test_masked_right_padding_gives_the_unpadded_outputs():
    """With the mask, right padding is invisible to the real positions (the padding-invariant
    mode); without it, pads act as tokens, as in the released models."""
    torch.manual_seed(1)
    mixer = MonarchMixerSequenceMixing(8, 32, filter_order=8, emb_dim=3).eval()
    x = torch.randn(1, 9, 8)
    padded = torch.cat([x, 3 * torch.randn(1, 5, 8)], dim=1)
    mask = torch.tensor([[1] * 9 + [0] * 5])
    with torch.no_grad():
        alone = mixer(x)
        masked = mixer(padded, attention_mask=mask)[:, :9]
        unmasked = mixer(padded)[:, :9]
    torch.testing.assert_close(masked, alone, atol=1e-5, rtol=0)
    assert (unmasked - alone).abs().max() > 1e-3


@pytest.mark.parametrize(("nblocks", "n_in", "n_out"), [(1, 6, 4), (4, 32, 64), (3, 9, 6)])
def test_block_diagonal_linear_equals_the_dense_block_matrix(nblocks, n_in, n_out):
    torch.manual_seed(nblocks)
    layer = BlockDiagonalLinear(n_in, n_out, nblocks)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 5, n_in)
    dense = torch.block_diag(*layer.weight.detach())
    torch.testing.assert_close(layer(x), x @ dense.T + layer.bias, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible by nblocks"):
        BlockDiagonalLinear(10, 8, 4)
    with pytest.raises(ValueError, match="last dim"):
        block_diagonal_linear(torch.randn(2, n_in + nblocks), layer.weight)


def test_reference_filter_keys():
    assert reference_filter_key("implicit_filter.4.weight") == "implicit_filter.2.weight"
    assert reference_filter_key("implicit_filter_rev.6.weight") == "implicit_filter_rev.3.weight"
    assert reference_filter_key("implicit_filter.1.freq") == "freq"
    assert reference_filter_key("implicit_filter_rev.3.freq") is None
    assert reference_filter_key("pos_emb.z") == "pos_emb.z"
    assert reference_filter_key("pos_emb.t") is None
    assert reference_filter_key("modulation.deltas") is None
