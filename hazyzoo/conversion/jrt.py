"""Convert a released JRT-RNN checkpoint (HazyResearch/prefix-linear-attention format).

The reference config is BASED's GPT2MixerConfig layout (see :mod:`hazyzoo.conversion.based`,
whose checks and quirks hold here too) with ``PrefixLinearAttention`` as the linear-attention
mixer and top-level ``enc_length`` / ``dec_length``; the prefix layers add the encoder
projections ``mixer.proj_k_enc`` / ``mixer.proj_v_enc``. Conversion sets
``mask_semantics="reference"``, which reproduces the released code's padding handling exactly
(switch it to ``"exact"`` for padding-invariant batched generation). The reference layer
ignores ``num_key_value_heads`` (it always has ``num_heads`` key/value heads), so a config with
another value is refused rather than converted as something it is not. The mask token of the
released models (50263) is set when the vocabulary is GPT-2's padded one (50264 ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hazyzoo.configuration.configuration_jrt import JRT_PRESETS, JrtConfig
from hazyzoo.conversion.based import (
    BASED_KINDS,
    REFERENCE_KEYS,
    build_converted_model,
    read_reference_config,
    reference_config_kwargs,
)
from hazyzoo.conversion.common import REQUIRED, ConfigKey, check_output_directory
from hazyzoo.modeling.modeling_jrt import JrtForCausalLM

JRT_KINDS = (*BASED_KINDS, "prefix_linear_attention")
_RELEASED_VOCAB = 50264
# Top-level keys of the JRT reference config, beyond BASED's.
JRT_REFERENCE_KEYS: dict[str, ConfigKey] = {
    **REFERENCE_KEYS,
    "enc_length": ConfigKey("converted", "int", REQUIRED, why="the non-causal prefix length"),
    "dec_length": ConfigKey("harmless", "int", why="the training decoder length"),
    "data_type": ConfigKey("harmless", "any", why="training data option"),
}


def jrt_config_from_reference(ref: dict[str, Any]) -> JrtConfig:
    """Translate a reference ``config.json`` dict into a :class:`JrtConfig` (every key checked;
    errors name the key)."""
    kwargs, values = reference_config_kwargs(ref, JRT_REFERENCE_KEYS, JRT_KINDS, "JRT")
    prefix = values["prefix_linear_attention"]
    if not prefix:
        raise ValueError(
            "config.json has no PrefixLinearAttention mixer: this is not a JRT-RNN checkpoint "
            "(convert BASED checkpoints with `hazyzoo convert based`)"
        )
    targets = [
        str((values[k] or {}).get("_target_", "")) for k in ("mixer", "alt_mixer", "alt_mixer_2")
    ]
    if any(t.rsplit(".", 1)[-1] == "LinearAttention" for t in targets):
        raise ValueError(
            "config.json mixes LinearAttention and PrefixLinearAttention layers; a JRT model "
            "has prefix linear attention only"
        )
    enc_length = values["enc_length"]
    if enc_length < 1:
        raise ValueError(f"config.json enc_length = {enc_length} must be >= 1")
    if prefix["enc_length"] != enc_length:
        raise ValueError(
            f"config.json alt_mixer enc_length = {prefix['enc_length']} differs from the "
            f"top-level enc_length = {enc_length}"
        )
    mask_id = JRT_PRESETS["jrt-360m"]["mask_token_id"]
    return JrtConfig(
        **kwargs,
        enc_length=enc_length,
        mask_semantics="reference",
        mask_token_id=mask_id if kwargs["vocab_size"] == _RELEASED_VOCAB else None,
    )


def convert_jrt(
    src: str | Path, out: str | Path | None = None, *, overwrite: bool = False
) -> JrtForCausalLM:
    """Convert the reference checkpoint in ``src`` (config.json + weights); save it to ``out``
    when given. Returns the :class:`JrtForCausalLM` (float32, eval mode, reference mask
    semantics). ``out`` may not be ``src`` and must be empty or absent unless ``overwrite``."""
    src = Path(src)
    if out is not None:
        check_output_directory(src, out, overwrite=overwrite)
    config = jrt_config_from_reference(read_reference_config(src))
    return build_converted_model(src, out, config, JrtForCausalLM)
