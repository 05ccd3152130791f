"""BasedConfig: presets, serialisation and validation errors that name the field."""

from __future__ import annotations

import pytest

from hazyzoo import BasedConfig


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(hidden_size=30, num_attention_heads=4), "num_attention_heads"),
        (dict(sliding_window_num_heads=3), "sliding_window_num_heads"),
        (dict(hidden_size=24, num_attention_heads=2, sliding_window_num_heads=8), "even"),
        (dict(feature_dim=0), "feature_dim"),
        (dict(num_attention_heads=-2), "num_attention_heads"),
        (dict(linear_attention_layers=[4]), "linear_attention_layers"),
        (dict(sliding_window_layers=[-1]), "sliding_window_layers"),
        (dict(linear_attention_layers=[1, 1]), "linear_attention_layers"),
        (dict(linear_attention_layers=[1], sliding_window_layers=[1]), "sliding_window_layers"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(sliding_window=-3), "sliding_window"),
        (dict(conv_kernel_size=0), "conv_kernel_size"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(rms_norm_eps=0.0), "rms_norm_eps"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        BasedConfig.tiny(**overrides)


def test_presets_match_the_released_sizes():
    small = BasedConfig.from_preset("based-360m")
    assert (small.hidden_size, small.num_hidden_layers, small.vocab_size) == (1024, 27, 50264)
    assert small.mixer_types.count("base_conv") == 17
    assert small.feature_map_dim == 273
    large = BasedConfig.from_preset("based-1.3b")
    assert (large.hidden_size, large.num_hidden_layers) == (1792, 36)
    assert large.mixer_types.count("base_conv") == 22
    assert large.hidden_size // large.num_attention_heads == 112
    assert BasedConfig.from_preset("based-360m", sliding_window=65).sliding_window == 65
    with pytest.raises(ValueError, match="based-2b"):
        BasedConfig.from_preset("based-2b")


def test_config_round_trip(tmp_path):
    config = BasedConfig.tiny(sliding_window=7)
    config.save_pretrained(tmp_path)
    loaded = BasedConfig.from_pretrained(tmp_path)
    assert loaded.mixer_types == config.mixer_types
    assert loaded.sliding_window == 7 and loaded.model_type == "hazyzoo_based"


def test_sliding_window_may_be_unset_without_sliding_layers():
    config = BasedConfig.tiny(sliding_window_layers=[], sliding_window=0)
    assert "sliding_window_attention" not in config.mixer_types


@pytest.mark.parametrize(
    ("overrides", "field"),
    [(dict(rope_theta=0.0), "rope_theta"), (dict(initializer_range=-0.1), "initializer_range")],
)
def test_bad_float_fields(overrides, field):
    with pytest.raises(ValueError, match=field):
        BasedConfig.tiny(**overrides)
