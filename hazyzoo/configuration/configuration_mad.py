"""Configuration of MAD hybrids: a model is a list of layers, each a registered primitive.

"Mechanistic design and scaling of hybrid architectures" (Poli et al., ICML 2024; released as
athms/mad-lab) builds striped hybrids from a list of layers, each applied as
``x = x + layer(norm(x))``: a sequence mixer (attention, Hyena, Mamba, ...) or a channel mixer
(MLP, SwiGLU, MoE). :class:`MadConfig` takes that list in MAD's names (``"mh-hyena"``), its
shorthands (``"mH-Sg-mA-Sg"``) or any sequence/channel mixer registered in the zoo (``"rtf"``,
``"base_conv"``, ...); ``"a+b"`` makes one block of a sequence mixer and a channel mixer (BASED's
block shape). Each layer's settings start from MAD's layer config (``configs/layers/*.yml``, with
``dim`` and ``max_length`` taken from the model) and can be overridden per layer with
``layer_configs``; the resolved settings are stored, so a saved config rebuilds the same model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hazyzoo.configuration.base import HazyConfig
from hazyzoo.validation import (
    check_bool,
    check_choice,
    check_float,
    check_positive,
    check_token_id,
)

__all__ = [
    "MAD_LAYERS",
    "MAD_SHORTHANDS",
    "MadConfig",
    "MadLayerSpec",
    "parse_layers",
]

MAD_BACKBONES = ("language-model", "autoencoder")
MAD_NORMS = ("layer_norm", "rms_norm")


@dataclass(frozen=True)
class MadLayerSpec:
    """One MAD layer name: whether it mixes positions (``"sequence"``) or channels
    (``"channel"``), the registered mixer that implements it, MAD's shorthand and MAD's default
    settings (the attribute names the mixer's ``from_config`` reads)."""

    name: str
    kind: str
    mixer: str
    shorthand: str | None
    defaults: Mapping[str, Any]


def _spec(name: str, kind: str, mixer: str, shorthand: str | None, **defaults: Any) -> MadLayerSpec:
    return MadLayerSpec(name, kind, mixer, shorthand, defaults)


_HYENA = dict(
    hyena_order=2,
    hyena_num_heads=1,
    hyena_inner_factor=4,
    hyena_proj_groups=4,
    hyena_short_filter_order=3,
    hyena_filter_cls="implicit",
    hyena_filter_order=4,
    hyena_filter_emb_dim=3,
    hyena_state_size=4,
    hyena_rtf_init="xavier",
)

_LINEAR_ATTENTION = dict(
    feature_map="elementwise_product",
    expand_k=1,
    expand_v=1,
    tie_feature_map_qk=False,
    norm_q=False,
    norm_k=False,
)
_GATED_LINEAR_ATTENTION = dict(
    expand_k=1,
    expand_v=1,
    gate_fn="swish",
    gate_logit_normalizer=16,
    gate_low_rank_dim=16,
    gla_norm_eps=1e-5,
)

# MAD's layer registry (mad/registry.py) with the defaults of configs/layers/*.yml. rwkv5/6 are
# not included (CUDA-only kernels in the reference). "hyena-rtf" is MAD's Hyena with its RTF
# long filter (hazyzoo's name and shorthand; MAD builds it but never registers the filter).
MAD_LAYERS: dict[str, MadLayerSpec] = {
    s.name: s
    for s in (
        _spec(
            "mlp",
            "channel",
            "mlp",
            "M",
            intermediate_size=None,
            hidden_act="gelu_pytorch_tanh",
            mlp_bias=False,
        ),
        _spec(
            "moe-mlp",
            "channel",
            "mad_moe_mlp",
            "MoE",
            intermediate_size=16,
            num_experts=8,
            num_experts_per_tok=2,
            mlp_bias=False,
        ),
        _spec("swiglu", "channel", "swiglu", "Sg", intermediate_size=None, mlp_bias=False),
        _spec("attention", "sequence", "attention", "A", num_attention_heads=1, rope_theta=1e4),
        _spec(
            "sliding-attention",
            "sequence",
            "sliding_window_attention",
            "As",
            sliding_window_num_heads=1,
            sliding_window=33,
            rope_theta=1e4,
        ),
        _spec(
            "linear-attention",
            "sequence",
            "mad_linear_attention",
            "Al",
            num_attention_heads=1,
            **_LINEAR_ATTENTION,
        ),
        _spec(
            "gated-linear-attention",
            "sequence",
            "gated_linear_attention",
            "Alg",
            num_attention_heads=1,
            **_GATED_LINEAR_ATTENTION,
        ),
        _spec("hyena", "sequence", "hyena", "H", **_HYENA),
        _spec("hyena-rtf", "sequence", "hyena", "Hr", **{**_HYENA, "hyena_filter_cls": "rtf"}),
        _spec(
            "hyena-experts",
            "sequence",
            "hyena_experts",
            "He",
            **{
                **_HYENA,
                "hyena_inner_factor": 1,
                "hyena_filter_order": 16,
                "hyena_expert_size": 16,
                "num_experts": 8,
                "num_experts_per_tok": 2,
            },
        ),
        _spec(
            "mamba",
            "sequence",
            "mamba",
            "Mb",
            mamba_d_state=4,
            mamba_d_conv=4,
            mamba_expand=2,
            mamba_dt_rank="auto",
            mamba_dt_min=0.001,
            mamba_dt_max=0.1,
            mamba_dt_init="random",
            mamba_dt_scale=1.0,
            mamba_dt_init_floor=1e-4,
            mamba_conv_bias=True,
            mamba_bias=False,
        ),
        _spec(
            "mh-attention", "sequence", "attention", "mA", num_attention_heads=16, rope_theta=1e4
        ),
        _spec(
            "mh-sliding-attention",
            "sequence",
            "sliding_window_attention",
            "mAs",
            sliding_window_num_heads=16,
            sliding_window=33,
            rope_theta=1e4,
        ),
        _spec(
            "mh-linear-attention",
            "sequence",
            "mad_linear_attention",
            "mAl",
            num_attention_heads=16,
            **_LINEAR_ATTENTION,
        ),
        _spec(
            "mh-gated-linear-attention",
            "sequence",
            "gated_linear_attention",
            "mAlg",
            num_attention_heads=8,
            **_GATED_LINEAR_ATTENTION,
        ),
        _spec(
            "mh-hyena",
            "sequence",
            "mh_hyena",
            "mH",
            **{**_HYENA, "hyena_num_heads": 16, "hyena_inner_factor": 1, "hyena_filter_order": 2},
        ),
    )
}
MAD_SHORTHANDS: dict[str, str] = {s.shorthand: s.name for s in MAD_LAYERS.values() if s.shorthand}

# Settings of zoo mixers used directly by their registered names (a layer named "rtf" is the
# RTF mixer); the defaults are small, MAD-sized choices.
_ZOO_DEFAULTS: dict[str, dict[str, Any]] = {
    "rtf": dict(
        state_size=16,
        trunc_len=None,  # the model's max_position_embeddings
        num_a=None,
        bidirectional=False,
        init="montel",
        constraint="l1_montel",
        convention="rtf",
        reference_recurrence=False,
        activation="gelu",
        output_glu=True,
        dropout=0.0,
        kernel_dropout=0.0,
    ),
    "base_conv": dict(conv_expansion=1, conv_kernel_size=3, conv_bias=True),
    "linear_attention": dict(num_attention_heads=4, feature_dim=16, linear_attention_eps=1e-12),
    "prefix_linear_attention": dict(
        num_attention_heads=4,
        feature_dim=16,
        linear_attention_eps=1e-12,
        enc_length=32,
        mask_semantics="tokens",
    ),
    "sliding_window_attention": dict(sliding_window_num_heads=4, sliding_window=33, rope_theta=1e4),
    "attention": dict(num_attention_heads=4, rope_theta=1e4),
    "moe": dict(
        intermediate_size=None,
        moe_intermediate_size=None,
        num_experts=4,
        num_experts_per_tok=2,
        router_aux_loss_coef=0.01,
        mlp_bias=False,
    ),
}


def _registries() -> tuple[dict, dict]:
    from hazyzoo.modeling.layers import CHANNEL_MIXERS, SEQUENCE_MIXERS  # registers every mixer

    return SEQUENCE_MIXERS, CHANNEL_MIXERS


def parse_layers(layers: str | Sequence[str]) -> list[str]:
    """MAD layer names from a list of names/shorthands or one shorthand string
    (``"mH-Sg-mA-Sg"``); ``"a+b"`` entries are kept as pairs of resolved names."""
    if isinstance(layers, str):
        tokens = layers.split("-")
        unknown = [t for t in tokens if t not in MAD_SHORTHANDS and "+" not in t]
        if unknown:
            raise ValueError(
                f"layers={layers!r}: a string is a '-'-separated list of MAD shorthands; "
                f"unknown: {unknown}; shorthands: {MAD_SHORTHANDS}"
            )
    else:
        if not isinstance(layers, Sequence) or not all(isinstance(t, str) for t in layers):
            raise TypeError(f"layers must be a list of layer names or a string, got {layers!r}")
        tokens = list(layers)
    out = []
    for token in tokens:
        parts = [_resolve_name(p.strip()) for p in token.split("+")]
        out.append("+".join(parts))
    return out


def _resolve_name(name: str) -> str:
    if name in MAD_LAYERS:
        return name
    if name in MAD_SHORTHANDS:
        return MAD_SHORTHANDS[name]
    sequence, channel = _registries()
    if name in sequence or name in channel:
        return name
    raise ValueError(
        f"unknown layer {name!r}: use a MAD layer name {sorted(MAD_LAYERS)}, a MAD shorthand "
        f"{sorted(MAD_SHORTHANDS)} or a registered zoo mixer "
        f"{sorted(set(sequence) | set(channel))}"
    )


def _kind(name: str) -> str:
    if name in MAD_LAYERS:
        return MAD_LAYERS[name].kind
    sequence, _ = _registries()
    return "sequence" if name in sequence else "channel"


def _mixer_name(name: str) -> str:
    return MAD_LAYERS[name].mixer if name in MAD_LAYERS else name


def _defaults(name: str) -> dict[str, Any]:
    if name in MAD_LAYERS:
        return dict(MAD_LAYERS[name].defaults)
    return dict(_ZOO_DEFAULTS.get(name, {}))


class _LayerView:
    """The config one layer's mixers are built from: the layer's settings, then the model's
    config (read-only; what ``from_config`` of a mixer sees for a MAD layer)."""

    def __init__(self, config: MadConfig, settings: Mapping[str, Any], layer_idx: int) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_settings", dict(settings))
        object.__setattr__(self, "layer_idx", layer_idx)

    def __getattr__(self, name: str) -> Any:
        settings = object.__getattribute__(self, "_settings")
        if name in settings:
            return settings[name]
        return getattr(object.__getattribute__(self, "_config"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a layer's config view is read-only")

    def __repr__(self) -> str:
        return f"MadLayerView(layer={self.layer_idx}, {self._settings})"


class MadConfig(HazyConfig):
    r"""Configuration of :class:`~hazyzoo.MadForCausalLM` and :class:`~hazyzoo.MadAutoEncoder`.

    Args:
        layers: The layers in order: MAD names (``"hyena"``, ``"mh-attention"``, ``"swiglu"``,
            ...; see ``MAD_LAYERS``), their shorthands, registered zoo mixers, or ``"a+b"`` for a
            block holding a sequence mixer and a channel mixer. A string is parsed as MAD's
            shorthand notation (``"mH-Sg-mA-Sg"``). Stored as resolved names.
        layer_configs: Per-layer setting overrides (a list as long as ``layers``, entries dicts
            or None), applied over MAD's defaults for that layer; stored fully resolved. Keys are
            the attribute names the layer's mixer reads (see ``MAD_LAYERS[name].defaults``); an
            unknown key is an error. ``"dim"`` may be given only equal to ``hidden_size``.
        vocab_size: Vocabulary size (MAD's tasks use 16 to 256).
        hidden_size: Width of every layer (MAD's ``dim``).
        max_position_embeddings: Longest sequence (MAD's ``max_length``): the implicit filters'
            length, the RTF kernel length and the autoencoder's output length.
        backbone: ``"language-model"`` (:class:`~hazyzoo.MadForCausalLM`) or ``"autoencoder"``
            (:class:`~hazyzoo.MadAutoEncoder`, MAD's compression-task model).
        norm_type: ``"layer_norm"`` (MAD's default) or ``"rms_norm"``.
        norm_eps: Epsilon of every norm.
        lm_head_bias: Whether the output projection has a bias (MAD's ``unembed`` has one).
        residual_in_fp32: Keep the residual stream in float32 whatever the parameter dtype.
        initializer_range: Standard deviation of the normal init of linear layers/embeddings.
        use_cache: Whether ``forward`` returns the cache by default (eval mode).
        tie_word_embeddings: Tie the LM head to the input embedding (MAD does not).
    """

    model_type = "hazyzoo_mad"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    layers: Any = None
    layer_configs: list | None = None
    vocab_size: int = 16
    hidden_size: int = 128
    max_position_embeddings: int = 1280
    backbone: str = "language-model"
    norm_type: str = "layer_norm"
    norm_eps: float = 1e-5
    lm_head_bias: bool = True
    residual_in_fp32: bool = True
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if self.layers is None:
            self.layers = ["mh-attention", "swiglu", "mh-attention", "swiglu"]  # MAD's default
        super().__post_init__(**kwargs)
        for name in ("vocab_size", "hidden_size", "max_position_embeddings"):
            check_positive(self, name)  # the layer settings below are computed from them
        self.layers = parse_layers(self.layers)
        self.layer_configs = self._resolve_settings(self.layer_configs)
        self.check_architecture()

    # --- layer settings ----------------------------------------------------------------------
    def _resolve_settings(self, given: Any) -> list[dict[str, Any]]:
        n = len(self.layers)
        if given is None:
            given = [None] * n
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or len(given) != n:
            raise ValueError(
                f"layer_configs must be a list with one entry (dict or None) per layer "
                f"({n} layers), got {given!r}"
            )
        resolved = []
        for idx, (name, overrides) in enumerate(zip(self.layers, given)):
            if overrides is not None and not isinstance(overrides, Mapping):
                raise ValueError(f"layer_configs[{idx}] must be a dict or None, got {overrides!r}")
            overrides = dict(overrides or {})
            dim = overrides.pop("dim", self.hidden_size)
            if dim != self.hidden_size:
                raise ValueError(
                    f"layer_configs[{idx}] ({name}) sets dim={dim}, but every layer of a MAD "
                    f"model has the model's width hidden_size={self.hidden_size}"
                )
            settings: dict[str, Any] = {}
            for part in name.split("+"):
                settings.update(_defaults(part))
            unknown = sorted(set(overrides) - set(settings))
            if unknown:
                raise ValueError(
                    f"layer_configs[{idx}] ({name}): unknown setting(s) {unknown}; this layer "
                    f"reads {sorted(settings)}"
                )
            settings.update(overrides)
            resolved.append(self._fill(name, settings))
        return resolved

    def _fill(self, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Settings that depend on the model's width or length, made explicit."""
        dim = self.hidden_size
        for part in name.split("+"):
            if part in ("mlp",) and settings.get("intermediate_size") is None:
                settings["intermediate_size"] = 4 * dim
            if part in ("swiglu",) and settings.get("intermediate_size") is None:
                # MAD's SwiGLU: 16 * ceil(int(2 * dim * 4 / 3) / 16)
                settings["intermediate_size"] = 16 * math.ceil(int(2 * dim * 4 / 3) / 16)
            if part == "moe" and settings.get("intermediate_size") is None:
                settings["intermediate_size"] = 2 * dim
            if part == "rtf" and settings.get("trunc_len") is None:
                settings["trunc_len"] = self.max_position_embeddings
            if part == "mamba" and settings.get("mamba_dt_rank") == "auto":
                settings["mamba_dt_rank"] = math.ceil(dim / 16)
        return settings

    def layer_config(self, layer_idx: int) -> _LayerView:
        """The config layer ``layer_idx``'s mixers are built from: its settings over this one."""
        return _LayerView(self, self.layer_configs[layer_idx], layer_idx)

    def layer_settings(self, layer_idx: int) -> dict[str, Any]:
        """A copy of layer ``layer_idx``'s resolved settings."""
        return copy.deepcopy(self.layer_configs[layer_idx])

    # --- the stack's view --------------------------------------------------------------------
    @property
    def num_hidden_layers(self) -> int:
        """One block per entry of ``layers``."""
        return len(self.layers)

    @num_hidden_layers.setter
    def num_hidden_layers(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"num_hidden_layers must be an integer, got {value!r}")
        if value != len(self.layers):
            raise ValueError(
                f"num_hidden_layers is len(layers) ({len(self.layers)}) for a MAD model; "
                "change layers instead"
            )

    def _parts(self, idx: int) -> tuple[str, str]:
        parts = self.layers[idx].split("+")
        sequence = [p for p in parts if _kind(p) == "sequence"]
        channel = [p for p in parts if _kind(p) == "channel"]
        return (
            _mixer_name(sequence[0]) if sequence else "none",
            _mixer_name(channel[0]) if channel else "none",
        )

    @property
    def mixer_types(self) -> list[str]:
        """The registered sequence mixer of each block (``"none"`` for channel-mixer blocks)."""
        return [self._parts(i)[0] for i in range(len(self.layers))]

    @property
    def channel_mixer_types(self) -> list[str]:
        """The registered channel mixer of each block (``"none"`` for sequence-mixer blocks)."""
        return [self._parts(i)[1] for i in range(len(self.layers))]

    @property
    def shorthand(self) -> str:
        """The layers in MAD's shorthand (zoo names written out)."""
        return "-".join(
            "+".join(MAD_LAYERS[p].shorthand if p in MAD_LAYERS else p for p in n.split("+"))
            for n in self.layers
        )

    # --- checks ------------------------------------------------------------------------------
    def check_architecture(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the field when a value is wrong."""
        for name in ("vocab_size", "hidden_size", "max_position_embeddings"):
            check_positive(self, name)
        check_choice(self, "backbone", MAD_BACKBONES)
        check_choice(self, "norm_type", MAD_NORMS)
        check_float(self, "norm_eps", gt=0)
        check_float(self, "initializer_range", ge=0)
        for name in ("lm_head_bias", "residual_in_fp32", "use_cache", "tie_word_embeddings"):
            check_bool(self, name)
        for name in ("pad_token_id", "bos_token_id"):
            check_token_id(self, name, self.vocab_size)
        check_token_id(self, "eos_token_id", self.vocab_size, allow_list=True)
        if not self.layers:
            raise ValueError("layers is empty: a MAD model needs at least one layer")
        for idx, name in enumerate(self.layers):
            parts = name.split("+")
            kinds = [_kind(p) for p in parts]
            if len(parts) > 2 or (len(parts) == 2 and sorted(kinds) != ["channel", "sequence"]):
                raise ValueError(
                    f"layers[{idx}] = {name!r}: a '+' block is one sequence mixer and one "
                    f"channel mixer, got {dict(zip(parts, kinds))}"
                )
        if all(k == "none" for k in self.mixer_types):
            raise ValueError(
                f"layers {self.layers} hold only channel mixers: a MAD model needs at least one "
                "sequence mixer to mix information across positions"
            )
        if self.tie_word_embeddings and self.lm_head_bias:
            pass  # a tied head may still have its own bias
        for idx in range(len(self.layers)):
            self._check_layer(idx)

    def _check_layer(self, idx: int) -> None:
        s, dim, name = self.layer_configs[idx], self.hidden_size, self.layers[idx]
        where = f"layers[{idx}] ({name})"

        def divides(value: int, by: int, what: str) -> None:
            if not isinstance(by, int) or isinstance(by, bool) or by < 1:
                raise ValueError(f"{where}: {what} must be a positive integer, got {by!r}")
            if value % by:
                raise ValueError(f"{where}: {value} is not divisible by {what} = {by}")

        for key in ("num_attention_heads", "sliding_window_num_heads"):
            if key in s:
                divides(dim, s[key], key)
        if "hyena_num_heads" in s:
            inner = s["hyena_inner_factor"] * dim
            divides(inner, s["hyena_num_heads"], "hyena_num_heads")
            if s["hyena_order"] != 2:
                raise ValueError(
                    f"{where}: only hyena_order 2 is implemented, got {s['hyena_order']}"
                )
            if self._parts(idx)[0] == "hyena":
                divides(3 * inner, s["hyena_proj_groups"], "hyena_proj_groups")
            if self._parts(idx)[0] == "mh_hyena":
                divides(3 * inner, s["hyena_proj_groups"], "hyena_proj_groups")
            check_choice_value(
                where, "hyena_filter_cls", s["hyena_filter_cls"], ("implicit", "rtf")
            )
        if "expand_k" in s:  # linear and gated linear attention: heads split the q/k/v widths
            heads = s["num_attention_heads"]
            for key in ("expand_k", "expand_v"):
                width = dim * s[key]
                if width != int(width) or int(width) % heads:
                    raise ValueError(
                        f"{where}: hidden_size * {key} = {width} is not divisible into "
                        f"num_attention_heads = {heads} heads"
                    )
        if "feature_map" in s:
            from hazyzoo.modeling.layers.mad_linear_attention import FEATURE_MAPS

            check_choice_value(where, "feature_map", s["feature_map"], sorted(FEATURE_MAPS))
        if "gate_fn" in s:
            from transformers.activations import ACT2FN

            check_choice_value(where, "gate_fn", s["gate_fn"], sorted(ACT2FN))
        if "num_experts" in s and "num_experts_per_tok" in s:
            if not 1 <= s["num_experts_per_tok"] <= s["num_experts"]:
                raise ValueError(
                    f"{where}: num_experts_per_tok ({s['num_experts_per_tok']}) must be between 1 "
                    f"and num_experts ({s['num_experts']})"
                )
        if "trunc_len" in s and s["trunc_len"] is not None and s["trunc_len"] < 2:
            raise ValueError(f"{where}: trunc_len must be >= 2, got {s['trunc_len']}")

    @classmethod
    def tiny(cls, **overrides: Any) -> MadConfig:
        """A small hybrid for CPU tests: Hyena, SwiGLU, Mamba, attention, MLP and RTF blocks at
        width 32, length 128 (override ``layers`` to test one primitive)."""
        defaults: dict[str, Any] = dict(
            # a hybrid of every kind of causal state: Hyena (input history), Mamba (SSM state),
            # attention (growing key/value cache), RTF (companion state), with MLP blocks
            layers=["hyena", "swiglu", "mamba", "mh-attention", "mlp", "rtf"],
            vocab_size=61,
            hidden_size=32,
            max_position_embeddings=128,
        )
        defaults.update(overrides)
        depth = defaults.pop("num_hidden_layers", None)
        layers = parse_layers(defaults["layers"])
        if depth is not None:  # the default list, cycled or cut to that depth
            layers = [layers[i % len(layers)] for i in range(depth)]
            defaults["layers"] = layers
        if "layer_configs" not in overrides:
            # MAD's default head counts need width 128; scale them to the tiny width.
            configs = []
            for name in layers:
                c: dict[str, Any] = {}
                for part in name.split("+"):
                    d = _defaults(part)
                    for key in ("num_attention_heads", "sliding_window_num_heads"):
                        if key in d:
                            c[key] = min(d[key], 4)
                    if part == "mh-hyena":
                        c["hyena_num_heads"] = 4
                    if part == "hyena-experts":
                        c.update(hyena_expert_size=8, num_experts=4)
                    if "sliding_window" in d:
                        c["sliding_window"] = 9
                    if part in ("prefix_linear_attention",):
                        c["enc_length"] = 8
                configs.append(c or None)
            defaults["layer_configs"] = configs
        return cls(**defaults)


def check_choice_value(where: str, key: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ``ValueError`` when a layer setting is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{where}: {key} must be one of {list(choices)}, got {value!r}")
