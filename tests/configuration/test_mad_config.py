"""MadConfig: MAD's layer names and shorthands, per-layer settings, round trips and errors."""

from __future__ import annotations

import pytest

from hazyzoo import MAD_LAYERS, MadConfig
from hazyzoo.configuration.configuration_mad import MAD_SHORTHANDS, parse_layers


def test_names_shorthands_and_zoo_mixers_resolve_to_registered_blocks():
    config = MadConfig(layers="mH-Sg-mA-Sg")
    assert config.layers == ["mh-hyena", "swiglu", "mh-attention", "swiglu"]
    assert config.mixer_types == ["mh_hyena", "none", "attention", "none"]
    assert config.channel_mixer_types == ["none", "swiglu", "none", "swiglu"]
    assert config.num_hidden_layers == 4 and config.shorthand == "mH-Sg-mA-Sg"
    mixed = MadConfig(layers=["Mb", "rtf", "base_conv+swiglu", "moe-mlp"])
    assert mixed.mixer_types == ["mamba", "rtf", "base_conv", "none"]
    assert mixed.channel_mixer_types == ["none", "none", "swiglu", "mad_moe_mlp"]
    assert set(MAD_SHORTHANDS.values()) <= set(MAD_LAYERS)
    assert parse_layers(["H", "hyena"]) == ["hyena", "hyena"]


def test_layer_settings_are_mads_defaults_made_explicit_and_overridable():
    config = MadConfig(layers=["swiglu", "mlp", "hyena", "mh-hyena"], hidden_size=32)
    assert config.layer_configs[0]["intermediate_size"] == 96  # 16 * ceil(int(2*32*4/3) / 16)
    assert config.layer_configs[1] == {
        "intermediate_size": 128,
        "hidden_act": "gelu_pytorch_tanh",
        "mlp_bias": False,
    }
    assert config.layer_config(2).hyena_proj_groups == 4
    assert config.layer_config(3).hyena_num_heads == 16
    assert config.layer_config(3).hidden_size == 32  # the model's fields show through
    tuned = MadConfig(layers=["mh-attention"], layer_configs=[{"num_attention_heads": 8}])
    assert tuned.layer_config(0).num_attention_heads == 8
    with pytest.raises(AttributeError, match="read-only"):
        tuned.layer_config(0).num_attention_heads = 2


def test_save_and_load_keep_the_layers_and_their_settings(tmp_path):
    config = MadConfig.tiny(
        layers="H-Sg-Mb-mA", layer_configs=[None, None, {"mamba_d_state": 8}, None]
    )
    config.save_pretrained(tmp_path)
    loaded = MadConfig.from_pretrained(tmp_path)
    assert loaded.layers == config.layers and loaded.layer_configs == config.layer_configs
    assert loaded.layer_config(2).mamba_d_state == 8


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(layers=["hyenna"]), ValueError, "unknown layer 'hyenna'"),
        (dict(layers="mH-Xx"), ValueError, "unknown: \\['Xx'\\]"),
        (dict(layers=["swiglu", "mlp"]), ValueError, "only channel mixers"),
        (dict(layers=["swiglu+mlp"]), ValueError, "one sequence mixer and one channel mixer"),
        (dict(layers=[]), ValueError, "at least one layer"),
        (dict(layers=[3]), TypeError, "list of layer names"),
        (dict(layers=["hyena"], layer_configs=[{"dim": 64}]), ValueError, "dim=64"),
        (dict(layers=["hyena"], layer_configs=[{"bogus": 1}]), ValueError, "bogus"),
        (dict(layers=["hyena"], layer_configs=[None, None]), ValueError, "one entry"),
        (
            dict(layers=["mh-attention"], layer_configs=[{"num_attention_heads": 5}]),
            ValueError,
            "5",
        ),
        (
            dict(layers=["moe-mlp", "hyena"], layer_configs=[{"num_experts_per_tok": 9}, None]),
            ValueError,
            "num_experts_per_tok",
        ),
        (dict(layers=["hyena"], norm_type="batch_norm"), ValueError, "norm_type"),
        (dict(layers=["Al"], layer_configs=[{"feature_map": "cosine"}]), ValueError, "feature_map"),
        (dict(layers=["mAl"], hidden_size=24), ValueError, "num_attention_heads = 16"),
        (dict(layers=["Alg"], layer_configs=[{"gate_fn": "swoosh"}]), ValueError, "gate_fn"),
        (dict(layers=["hyena"], backbone="encoder"), ValueError, "backbone"),
    ],
)
def test_bad_layer_lists_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        MadConfig(**kwargs)


def test_num_hidden_layers_follows_the_layer_list():
    config = MadConfig(layers="H-Sg")
    with pytest.raises(ValueError, match="change layers instead"):
        config.num_hidden_layers = 3
    assert MadConfig.tiny(num_hidden_layers=8).layers[6:] == ["hyena", "swiglu"]
