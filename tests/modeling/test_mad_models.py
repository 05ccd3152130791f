"""MAD models: BASED as a MAD layer list (same weights, same logits), the autoencoder, MAD's
MoE MLP against its formula, and the length limit Hyena's filters set."""

from __future__ import annotations

import pytest
import torch

import hazyzoo
from hazyzoo import MadAutoEncoder, MadConfig, MadForCausalLM
from hazyzoo.modeling.layers import MadMoeMlp
from tests.modeling.zoo_models import make_model, random_ids


def test_based_is_a_mad_layer_list_with_the_same_weights_and_logits():
    based = make_model("hazyzoo_based")
    c = based.config
    settings = dict(intermediate_size=c.intermediate_size, mlp_bias=False)
    per_mixer = {
        "base_conv": dict(
            conv_expansion=c.conv_expansion, conv_kernel_size=c.conv_kernel_size, conv_bias=True
        ),
        "linear_attention": dict(
            num_attention_heads=c.num_attention_heads,
            feature_dim=c.feature_dim,
            linear_attention_eps=c.linear_attention_eps,
        ),
        "sliding_window_attention": dict(
            sliding_window_num_heads=c.sliding_window_num_heads or c.num_attention_heads,
            sliding_window=c.sliding_window,
            rope_theta=c.rope_theta,
        ),
    }
    mad = MadForCausalLM(
        MadConfig(
            layers=[f"{m}+swiglu" for m in c.mixer_types],
            layer_configs=[{**per_mixer[m], **settings} for m in c.mixer_types],
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            norm_type="rms_norm",
            norm_eps=c.rms_norm_eps,
            lm_head_bias=False,
            tie_word_embeddings=True,
        )
    ).eval()
    assert set(mad.state_dict()) == set(based.state_dict())  # the same names: no conversion
    mad.load_state_dict(based.state_dict())
    ids = random_ids(based, 2, 12)
    with torch.no_grad():
        torch.testing.assert_close(mad(ids).logits, based(ids).logits, atol=1e-6, rtol=0)


def test_autoencoder_reconstructs_max_length_positions_and_trains():
    config = MadConfig.tiny(backbone="autoencoder", layers="H-Sg-H-Sg", max_position_embeddings=16)
    model = MadAutoEncoder(config)
    ids = torch.randint(0, config.vocab_size, (3, 10))
    out = model(ids, labels=torch.randint(0, config.vocab_size, (3, 16)))
    assert out.logits.shape == (3, 16, config.vocab_size) and out.encoding.shape == (3, 32)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # the code is the last position's residual: earlier tokens reach it, later ones do not exist
    with torch.no_grad():
        a, b = model.encode(ids)[0], model.encode(torch.cat([ids[:, :1] + 1, ids[:, 1:]], 1))[0]
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="at most max_position_embeddings=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="backbone='language-model'"):
        MadForCausalLM(config)
    with pytest.raises(ValueError, match="backbone='autoencoder'"):
        MadAutoEncoder(MadConfig.tiny())


def test_mad_moe_mlp_equals_its_formula():
    config = MadConfig(layers=["hyena", "moe-mlp"], hidden_size=8)
    torch.manual_seed(0)
    moe = MadMoeMlp.from_config(config, 1)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        h = moe.up1(x) * torch.nn.functional.gelu(moe.up2(x), approximate="tanh")
        z = moe.down1(h)  # output channel o of expert e at 8 * o + e
        s = moe.router(x)
        m = s.topk(2, -1).values[..., -1:]
        p = torch.where(s >= m, s, torch.zeros_like(s)).softmax(-1)
        want = torch.stack([(z[..., 8 * o : 8 * o + 8] * p).sum(-1) for o in range(8)], -1)
        torch.testing.assert_close(moe(x), want, atol=1e-6, rtol=0)


def test_generation_stops_with_a_clear_error_at_hyenas_filter_length():
    model = MadForCausalLM(MadConfig.tiny(layers="H-Sg", max_position_embeddings=16)).eval()
    ids = torch.randint(1, 61, (1, 10))
    # the last new token is sampled from position 16's logits and never fed back
    assert model.generate(ids, max_new_tokens=7, do_sample=False).shape == (1, 17)
    with pytest.raises(ValueError, match="at most 16 positions"):
        model.generate(ids, max_new_tokens=8, do_sample=False)


def test_auto_classes_and_registry():
    from transformers import AutoConfig, AutoModelForCausalLM

    assert hazyzoo.CAUSAL_LM_REGISTRY["hazyzoo_mad"] is MadForCausalLM
    config = AutoConfig.for_model("hazyzoo_mad", layers="mA-Sg")
    assert isinstance(AutoModelForCausalLM.from_config(config), MadForCausalLM)
