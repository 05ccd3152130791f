"""Convert a released BASED checkpoint (HazyResearch/based format) to a hazyzoo checkpoint.

The source directory holds the reference ``config.json`` (GPT-2 keys plus the nested mixer
dicts ``mixer``, ``alt_mixer``, ``alt_mixer_2``) and ``pytorch_model.bin`` or ``*.safetensors``
with reference parameter names (``transformer.layers.{i}.mixer.*``, ...), as in
``hazyresearch/based-360m``. Reference quirks handled here:

* the sliding window ``window_size`` w lets each query see itself and ``w // 2`` previous tokens,
  so hazyzoo's ``sliding_window`` is ``w // 2 + 1``;
* the vocabulary is padded to a multiple of ``pad_vocab_size_multiple`` and the logits keep all
  padded columns;
* ``lm_head`` is tied to the word embedding (both keys may be stored; they must agree);
* keys may carry a leading ``model.`` and ``*metrics*`` entries, which are not parameters;
* the sliding-window layers have ``n_head`` heads whatever their dict says (the reference
  overwrites it), and the MLP width ``n_inner`` is rounded up to a multiple of 256;
* ``BaseConv`` reads ``kernel_size``; the released configs' ``kernel_sizes`` is ignored by it.

Every key of the reference config is checked against :data:`REFERENCE_KEYS` and
:data:`MIXER_KEYS`. An absent key means what it means to the reference (GPT2Config's default
or the reference code's), so e.g. a config without ``rms_norm`` describes LayerNorm blocks and
is refused rather than converted as BASED. Pickled checkpoints are read with
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hazyzoo import BasedConfig, BasedForCausalLM
from hazyzoo.conversion.common import REQUIRED, ConfigKey, check_output_directory
from hazyzoo.conversion.common import check_reference_keys as _check
from hazyzoo.validation import check_json_file, check_safetensors_file

_WEIGHT_FILE = re.compile(r"(model|pytorch_model|weights)(-\d+-of-\d+)?\.safetensors")
_KINDS = {
    "BaseConv": "base_conv",
    "LinearAttention": "linear_attention",
    "SlidingAttention": "sliding_window_attention",
    "PrefixLinearAttention": "prefix_linear_attention",
}
# The mixer kinds the BASED converter accepts (JRT's adds prefix linear attention).
BASED_KINDS = ("base_conv", "linear_attention", "sliding_window_attention")
# The reference's GatedMlp rounds its hidden width up to a multiple of this.
_MLP_MULTIPLE = 256
_GPT2_SPECIAL_TOKEN = 50256  # GPT2Config's default bos/eos id

_C, _H, _F = "converted", "harmless", "fixed"
_DROPOUT = "dropout: training only"
_KERNEL = "a kernel choice: same maths"
_INIT = "initialisation only"
_HF = "transformers metadata or a runtime flag"
_SWA = "sliding-window attention setting"

# Every key a HazyResearch/based GPT2MixerConfig ``config.json`` may carry. ``default`` is what
# the reference uses when the key is absent: GPT2Config's default, or the default of the
# reference's ``getattr(config, key, default)``.
REFERENCE_KEYS: dict[str, ConfigKey] = {
    # converted
    "vocab_size": ConfigKey(_C, "int", REQUIRED),
    "n_embd": ConfigKey(_C, "int", REQUIRED),
    "n_layer": ConfigKey(_C, "int", REQUIRED),
    "n_head": ConfigKey(_C, "int", 12, why="heads of the sliding-window layers"),
    "n_inner": ConfigKey(_C, "int?", None, why="MLP width (None: 8/3 n_embd), rounded up to 256"),
    "mixer": ConfigKey(_C, "dict", REQUIRED),
    "alt_mixer": ConfigKey(_C, "dict?"),
    "alt_mixer_2": ConfigKey(_C, "dict?"),
    "alt_mixer_layers": ConfigKey(_C, "int list?"),
    "alt_mixer_2_layers": ConfigKey(_C, "int list?"),
    "layer_norm_epsilon": ConfigKey(_C, "number", 1e-5),
    "residual_in_fp32": ConfigKey(_C, "bool", False),
    "pad_vocab_size_multiple": ConfigKey(_C, "int", 1),
    "_padded_vocab_size": ConfigKey(_C, "int?", None, why="must match the padded vocabulary"),
    "tie_word_embeddings": ConfigKey(_C, "bool", True),
    "rotary_emb_base": ConfigKey(_C, "number", 10000.0),
    "bos_token_id": ConfigKey(_C, "int?", _GPT2_SPECIAL_TOKEN),
    "eos_token_id": ConfigKey(_C, "int?", _GPT2_SPECIAL_TOKEN),
    "pad_token_id": ConfigKey(_C, "int?", None),
    # fixed: the converter implements exactly these values
    "activation_function": ConfigKey(_F, "str", "gelu_new", ("swiglu",), "the gated SwiGLU MLP"),
    "rms_norm": ConfigKey(_F, "bool", False, (True,), "RMSNorm; false means LayerNorm"),
    "prenorm": ConfigKey(_F, "bool", True, (True,), "pre-norm blocks"),
    "parallel_block": ConfigKey(_F, "bool", False, (False,), "sequential mixer then MLP"),
    "fused_mlp": ConfigKey(_F, "bool", False, (False,), "the fused MLP is not gated"),
    "fused_dense_sqrelu_dense": ConfigKey(_F, "bool", False, (False,), "squared-ReLU MLP"),
    "mlp_type": ConfigKey(_F, "str", "base", ("base",), "the other type has a third matrix"),
    "mlp_fc1_bias": ConfigKey(_F, "bool", True, (False,), "the MLP has no biases"),
    "mlp_fc2_bias": ConfigKey(_F, "bool", True, (False,), "the MLP has no biases"),
    "word_embed_proj_dim": ConfigKey(_F, "int?", None, (None,), "no embedding projection"),
    "lm_head_bias": ConfigKey(_F, "bool", False, (False,), "the head has no bias"),
    "fixed_decay": ConfigKey(_F, "bool", False, (False,), "no fixed decay mask"),
    "max_position_embeddings": ConfigKey(
        _F, "int", None, (0,), "no absolute position embedding; when absent, n_positions counts"
    ),
    "rotary_emb_fraction": ConfigKey(_F, "number", 0.0, (1,), "rotary over the whole head"),
    "rotary_emb_scale_base": ConfigKey(_F, "number?", None, (None,), "no xPos scaling"),
    "rotary_emb_interleaved": ConfigKey(_F, "bool", False, (False,), "non-interleaved rotary"),
    "scale_attn_weights": ConfigKey(_F, "bool", True, (True,), "softmax scale head_dim**-0.5"),
    "scale_attn_by_inverse_layer_idx": ConfigKey(_F, "bool", False, (False,), _SWA),
    "qkv_proj_bias": ConfigKey(_F, "bool", True, (False,), "the attention has no biases"),
    "out_proj_bias": ConfigKey(_F, "bool", True, (False,), "the attention has no biases"),
    # (checked below: null, or the value the reference derives anyway)
    "n_head_kv": ConfigKey(_C, "int?", None, why="null or n_head: no grouped-query attention"),
    "head_dim": ConfigKey(_C, "int?", None, why="null or n_embd // n_head"),
    # harmless: no effect on the converted model's outputs
    "n_positions": ConfigKey(_H, "int", 1024, why="overridden by max_position_embeddings"),
    "n_ctx": ConfigKey(_H, "int", why="unused legacy GPT-2 key"),
    "attn_pdrop": ConfigKey(_H, "number", why=_DROPOUT),
    "embd_pdrop": ConfigKey(_H, "number", why=_DROPOUT),
    "resid_pdrop": ConfigKey(_H, "number", why=_DROPOUT),
    "summary_first_dropout": ConfigKey(_H, "number", why=_DROPOUT),
    "fused_bias_fc": ConfigKey(_H, "bool", why=_KERNEL),
    "fused_dropout_add_ln": ConfigKey(_H, "bool", why=_KERNEL),
    "use_flash_attn": ConfigKey(_H, "bool", why=_KERNEL),
    "sequence_parallel": ConfigKey(_H, "bool", why=_KERNEL),
    "mlp_checkpoint_lvl": ConfigKey(_H, "int", why="activation checkpointing: training only"),
    "special_initializer": ConfigKey(_H, "bool", why=_INIT),
    "initializer_range": ConfigKey(_H, "number", why=_INIT),
    "use_weight_init": ConfigKey(_H, "bool", why=_INIT),
    "reorder_and_upcast_attn": ConfigKey(_H, "bool", why="transformers' GPT-2 attention only"),
    "attn_dwconv": ConfigKey(_H, "bool", why="softmax-attention layers only (none here)"),
    "parallel_block_tied_norm": ConfigKey(_H, "bool", why="parallel blocks only"),
    "decay_const": ConfigKey(_H, "number", why="fixed_decay only"),
    "decay_denom": ConfigKey(_H, "bool", why="fixed_decay only"),
    "ff_mult": ConfigKey(_H, "number", why="mlp_type other than base only"),
    "summary_type": ConfigKey(_H, "any", why="GPT-2 classification head only"),
    "summary_use_proj": ConfigKey(_H, "any", why="GPT-2 classification head only"),
    "summary_activation": ConfigKey(_H, "any", why="GPT-2 classification head only"),
    "summary_proj_to_labels": ConfigKey(_H, "any", why="GPT-2 classification head only"),
    **{
        key: ConfigKey(_H, "any", why=_HF)
        for key in (
            "architectures",
            "model_type",
            "transformers_version",
            "torch_dtype",
            "dtype",
            "_name_or_path",
            "_target_",
            "_recursive_",
            "_commit_hash",
            "use_cache",
            "return_dict",
            "output_attentions",
            "output_hidden_states",
            "torchscript",
        )
    },
}
# Keys that only matter when the model has sliding-window (softmax attention) layers.
_ATTENTION_KEYS = (
    "rotary_emb_fraction",
    "rotary_emb_scale_base",
    "rotary_emb_interleaved",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "qkv_proj_bias",
    "out_proj_bias",
    "n_head_kv",
    "head_dim",
)
_FEATURE_MAP_KEYS = {
    "_target_": ConfigKey(_C, "str", REQUIRED),
    "input_dim": ConfigKey(_C, "int", REQUIRED),
}
# The keys of each mixer dict, by kind (the arguments of the reference class).
MIXER_KEYS: dict[str, dict[str, ConfigKey]] = {
    "base_conv": {
        "_target_": ConfigKey(_C, "str", REQUIRED),
        "kernel_size": ConfigKey(_C, "int", 3),
        "expand_proj": ConfigKey(_C, "int", 2),
        "use_bias": ConfigKey(_C, "bool", True),
        "l_max": ConfigKey(_H, "int?", why="unused by BaseConv"),
        "kernel_sizes": ConfigKey(
            _H, "any", why="ignored by the reference's BaseConv, whose argument is kernel_size"
        ),
        "use_cuda": ConfigKey(_H, "bool", why=_KERNEL),
    },
    "linear_attention": {
        "_target_": ConfigKey(_C, "str", REQUIRED),
        "feature_map": ConfigKey(_C, "dict", REQUIRED),
        "feature_dim": ConfigKey(_C, "int", 16),
        "num_heads": ConfigKey(_C, "int", 16),
        "eps": ConfigKey(_C, "number", 1e-12),
        "parallel_implementation": ConfigKey(
            _F,
            "str",
            "quadratic",
            ("quadratic", "linear", "fla_parallel", "fla_chunk"),
            "'tk' adds an output norm",
        ),
        "head_dim": ConfigKey(_C, "int?", None, why="null or n_embd // num_heads"),
        "l_max": ConfigKey(_H, "int?", why="unused by LinearAttention"),
    },
    "sliding_window_attention": {
        "_target_": ConfigKey(_C, "str", REQUIRED),
        "window_size": ConfigKey(_C, "int", 128),
        "cross_attn": ConfigKey(_F, "bool", False, (False,), "self-attention only"),
        "return_residual": ConfigKey(_F, "bool", False, (False,), "returns the output only"),
        "checkpointing": ConfigKey(_H, "bool", why="training only"),
        "use_mask": ConfigKey(
            _H, "bool", why="the reference's SlidingAttention never applies a padding mask"
        ),
        **{
            key: ConfigKey(_H, "any", why="replaced by the reference from the top-level config")
            for key in (
                "num_heads",
                "num_heads_kv",
                "qkv_proj_bias",
                "out_proj_bias",
                "dropout",
                "softmax_scale",
                "causal",
                "layer_idx",
                "rotary_emb_dim",
                "rotary_emb_base",
                "rotary_emb_scale_base",
                "rotary_emb_interleaved",
                "use_flash_attn",
                "fused_bias_fc",
            )
        },
    },
    "prefix_linear_attention": {
        "_target_": ConfigKey(_C, "str", REQUIRED),
        "feature_dim": ConfigKey(_C, "int", 16),
        "num_heads": ConfigKey(_C, "int", 16),
        "num_key_value_heads": ConfigKey(_C, "int?", None, why="null or num_heads: no GQA"),
        "enc_length": ConfigKey(_C, "int", REQUIRED),
        "eps": ConfigKey(_C, "number", 1e-12),
        "feature_name": ConfigKey(
            _F, "str", "taylor_exp", ("taylor_exp",), "the Taylor feature map BASED uses"
        ),
        "implementation": ConfigKey(
            _F, "str", "default", ("default",), "the parity-tested PyTorch path"
        ),
        "use_mask": ConfigKey(_F, "bool", True, (True,), "the reference's padding handling"),
        "dec_length": ConfigKey(_H, "int", why="the training decoder length; unused by forward"),
        "l_max": ConfigKey(_H, "int?", why="unused by PrefixLinearAttention"),
    },
}


def _mixer_kind(
    mixer: dict[str, Any] | None, key: str, allowed: tuple[str, ...], family: str
) -> str | None:
    if not mixer:
        return None
    target = mixer.get("_target_")
    if not isinstance(target, str):
        raise ValueError(f"config.json {key} needs a _target_ string naming the mixer class")
    names = sorted(name for name, kind in _KINDS.items() if kind in allowed)
    for name in names:
        if target.rsplit(".", 1)[-1] == name:
            return _KINDS[name]
    raise ValueError(
        f"config.json {key}._target_ = {target!r} is not a {family} mixer (expected one of {names})"
    )


def _layer_kinds(ref: dict[str, Any], kinds: dict[str, str | None], n_layer: int) -> list[str]:
    """The mixer of each layer, chosen as the reference does (alt_mixer_2 wins over alt_mixer)."""
    lists = {
        "alt_mixer": ref["alt_mixer_layers"] or [],
        "alt_mixer_2": ref["alt_mixer_2_layers"] or [],
    }
    for key, layers in lists.items():
        bad = [i for i in layers if not 0 <= i < n_layer]
        if bad:
            raise ValueError(f"config.json {key}_layers {bad} are not layers of n_layer={n_layer}")
        if layers and kinds[key] is None:
            raise ValueError(
                f"config.json lists {key}_layers but has no {key}: those layers would be "
                "softmax attention, which BASED does not have"
            )
    out = []
    for i in range(n_layer):
        key = (
            "alt_mixer_2"
            if i in lists["alt_mixer_2"]
            else "alt_mixer"
            if i in lists["alt_mixer"]
            else "mixer"
        )
        out.append(kinds[key])
    return out


def based_config_from_reference(ref: dict[str, Any]) -> BasedConfig:
    """Translate a reference ``config.json`` dict into a :class:`BasedConfig`.

    Every key is checked (see :data:`REFERENCE_KEYS` and :data:`MIXER_KEYS`): a wrong type, a
    value the converter does not implement, or an unknown key raises ``TypeError``/``ValueError``
    naming it, rather than being converted as if it had its default.
    """
    kwargs, _ = reference_config_kwargs(ref, REFERENCE_KEYS, BASED_KINDS, "BASED")
    return BasedConfig(**kwargs)


def reference_config_kwargs(
    ref: dict[str, Any],
    keys: dict[str, ConfigKey],
    allowed_kinds: tuple[str, ...],
    family: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The :class:`BasedConfig` keyword arguments of a reference ``config.json`` (BASED's
    GPT2MixerConfig layout, which JRT shares), checked against ``keys`` and
    :data:`MIXER_KEYS`; and the checked values (top-level keys, plus the checked
    ``prefix_linear_attention`` mixer dict) for the family's own fields."""
    if not isinstance(ref, dict):
        raise TypeError(f"config.json must hold a JSON object, got {type(ref).__name__}")
    values = _check(
        ref, keys, "config.json", skip_fixed=[*_ATTENTION_KEYS, "max_position_embeddings"]
    )
    n_layer, n_embd, n_head = values["n_layer"], values["n_embd"], values["n_head"]
    for name in ("vocab_size", "n_embd", "n_layer", "n_head", "pad_vocab_size_multiple", "n_inner"):
        if values[name] is not None and values[name] < 1:
            raise ValueError(f"config.json {name} = {values[name]} must be >= 1")
    positions = ref.get("max_position_embeddings", values["n_positions"])
    if positions != 0:
        source = "max_position_embeddings" if "max_position_embeddings" in ref else "n_positions"
        raise ValueError(
            f"config.json {source} = {positions} gives the reference learned absolute position "
            f"embeddings, which {family} does not have: allowed max_position_embeddings 0"
        )

    slots = ("mixer", "alt_mixer", "alt_mixer_2")
    kinds = {key: _mixer_kind(values[key], key, allowed_kinds, family) for key in slots}
    if kinds["mixer"] != "base_conv":
        raise ValueError(f"config.json mixer must be BaseConv for {family}, got {kinds['mixer']}")
    layer_kinds = _layer_kinds(values, kinds, n_layer)
    used = set(layer_kinds)
    mixers: dict[str, dict[str, Any]] = {}
    for key in slots:
        kind = kinds[key]
        if kind is None:
            continue
        if kind in mixers:
            raise ValueError(f"config.json has two {kind} mixers; the converter supports one")
        mixers[kind] = _check(values[key], MIXER_KEYS[kind], f"config.json {key}")

    if "sliding_window_attention" in used:
        _check(
            {k: ref[k] for k in _ATTENTION_KEYS if k in ref},
            {k: REFERENCE_KEYS[k] for k in _ATTENTION_KEYS},
            "config.json",
        )
        for key, expected in (("n_head_kv", n_head), ("head_dim", n_embd // n_head)):
            if values[key] not in (None, expected):
                raise ValueError(
                    f"config.json {key} = {values[key]} is not supported: allowed null or "
                    f"{expected}"
                )
        if n_embd % n_head:
            raise ValueError(
                f"config.json n_embd = {n_embd} must be divisible by n_head = {n_head}"
            )

    conv = mixers.get("base_conv", {})
    kernel = conv.get("kernel_size", 3)
    expand = conv.get("expand_proj", 2)
    if expand < 2 or expand % 2:
        raise ValueError(
            f"config.json mixer expand_proj = {expand} must be even and >= 2 "
            "(conv half + gate half)"
        )

    lin = mixers.get("linear_attention", {})
    feature_dim, num_heads = lin.get("feature_dim", 16), lin.get("num_heads", 16)
    impl = lin.get("parallel_implementation", "quadratic")
    prefix = mixers.get("prefix_linear_attention", {})
    if prefix:
        feature_dim, num_heads = prefix.get("feature_dim", 16), prefix.get("num_heads", 16)
        where = f"config.json {next(k for k in slots if kinds[k] == 'prefix_linear_attention')}"
        if n_embd % num_heads:
            raise ValueError(f"{where} num_heads = {num_heads} must divide n_embd = {n_embd}")
        kv_heads = prefix.get("num_key_value_heads")
        if kv_heads not in (None, num_heads):
            raise ValueError(
                f"{where} num_key_value_heads = {kv_heads} is not supported: the reference "
                "PrefixLinearAttention never reads it and always uses num_heads key/value "
                f"heads, so only null or num_heads ({num_heads}) describe its weights"
            )
    if lin:
        where = f"config.json {next(k for k in slots if kinds[k] == 'linear_attention')}"
        fmap = _check(lin["feature_map"], _FEATURE_MAP_KEYS, f"{where} feature_map")
        if fmap["_target_"].rsplit(".", 1)[-1] != "TaylorExp":
            raise ValueError(
                f"{where} feature_map._target_ = {fmap['_target_']!r} is not supported: "
                "allowed TaylorExp"
            )
        if fmap["input_dim"] != feature_dim:
            raise ValueError(
                f"{where} feature_map.input_dim = {fmap['input_dim']} changes the feature map's "
                f"scaling and is not supported: allowed feature_dim ({feature_dim})"
            )
        if lin.get("head_dim") not in (None, n_embd // num_heads):
            raise ValueError(
                f"{where} head_dim = {lin['head_dim']} is not supported: allowed null or "
                f"n_embd // num_heads = {n_embd // num_heads}"
            )
        if n_embd % num_heads:
            raise ValueError(f"{where} num_heads = {num_heads} must divide n_embd = {n_embd}")
    # fla's kernels use their own epsilon; the PyTorch paths use the eps argument.
    eps = 1e-6 if impl.startswith("fla") else lin.get("eps", 1e-12)
    if prefix:
        eps = prefix.get("eps", 1e-12)
    window = mixers.get("sliding_window_attention", {}).get("window_size", 128)
    if window < 0:
        raise ValueError(f"config.json window_size = {window} must be >= 0")

    multiple = values["pad_vocab_size_multiple"]
    vocab_size = values["vocab_size"]
    padded = int(math.ceil(vocab_size / multiple) * multiple)
    if values["_padded_vocab_size"] not in (None, padded):
        raise ValueError(
            f"config.json _padded_vocab_size = {values['_padded_vocab_size']} does not match "
            f"vocab_size {vocab_size} padded to a multiple of {multiple} = {padded}"
        )
    hidden = values["n_inner"] if values["n_inner"] is not None else int(8 * n_embd / 3)
    intermediate = (hidden + _MLP_MULTIPLE - 1) // _MLP_MULTIPLE * _MLP_MULTIPLE

    def token(name: str) -> int | None:
        value = values[name]
        return value if value is not None and 0 <= value < vocab_size else None

    kwargs = dict(
        vocab_size=padded,
        hidden_size=n_embd,
        num_hidden_layers=n_layer,
        intermediate_size=intermediate,
        num_attention_heads=num_heads,
        feature_dim=feature_dim,
        linear_attention_eps=float(eps),
        linear_attention_layers=[
            i
            for i, k in enumerate(layer_kinds)
            if k in ("linear_attention", "prefix_linear_attention")
        ],
        sliding_window_layers=[
            i for i, k in enumerate(layer_kinds) if k == "sliding_window_attention"
        ],
        sliding_window=window // 2 + 1,
        sliding_window_num_heads=n_head,
        rope_theta=float(values["rotary_emb_base"]),
        conv_kernel_size=kernel,
        conv_expansion=expand // 2,
        conv_bias=conv.get("use_bias", True),
        rms_norm_eps=float(values["layer_norm_epsilon"]),
        residual_in_fp32=values["residual_in_fp32"],
        tie_word_embeddings=values["tie_word_embeddings"],
        bos_token_id=token("bos_token_id"),
        eos_token_id=token("eos_token_id"),
        pad_token_id=token("pad_token_id"),
    )
    return kwargs, {**values, "prefix_linear_attention": prefix}


def load_reference_state_dict(src: str | Path) -> dict[str, torch.Tensor]:
    """Read the reference weights from ``src`` (safetensors preferred, else ``pytorch_model.bin``)."""
    src = Path(src)
    files = sorted(src.glob("*.safetensors"))
    named = [f for f in files if _WEIGHT_FILE.fullmatch(f.name)]
    if named:
        files = named
    elif len(files) > 1:
        raise ValueError(
            f"{src} has several safetensors files {[f.name for f in files]}; name the weights "
            "model.safetensors, pytorch_model.safetensors or weights.safetensors"
        )
    state: dict[str, Any] = {}
    if files:
        for f in files:
            check_safetensors_file(f)  # a damaged file is an error naming it, before reading
            state.update(load_file(str(f)))
    elif (src / "pytorch_model.bin").is_file():
        path = src / "pytorch_model.bin"
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or corrupt zip/pickle, or a non-tensor pickle
            raise ValueError(
                f"{path} cannot be read as a PyTorch checkpoint (read with weights_only=True): "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
            ) from err
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    else:
        raise FileNotFoundError(f"{src} has neither *.safetensors nor pytorch_model.bin")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"reference weights in {src} have non-tensor entries {bad[:5]}")
    return state


def convert_based_state_dict(
    state: dict[str, torch.Tensor], config: BasedConfig
) -> dict[str, torch.Tensor]:
    """Map reference parameter names and layouts to :class:`BasedForCausalLM` names (and
    JRT's, whose prefix layers add ``proj_k_enc``/``proj_v_enc``).

    Raises ``ValueError`` for unknown keys (nothing is dropped silently, except ``*metrics*``
    entries and rotary ``inv_freq`` buffers, which are not parameters).
    """
    mixer_types = config.mixer_types
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for raw_key, tensor in state.items():
        key = raw_key[len("model.") :] if raw_key.startswith("model.") else raw_key
        if "metrics" in key or key.endswith("inv_freq"):
            continue
        if key == "transformer.embeddings.word_embeddings.weight":
            out["model.embed_tokens.weight"] = tensor
            continue
        if key == "transformer.ln_f.weight":
            out["model.norm.weight"] = tensor
            continue
        if key == "lm_head.weight":
            out["lm_head.weight"] = tensor
            continue
        m = re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)", key)
        if m is None:
            unknown.append(raw_key)
            continue
        i, rest = int(m.group(1)), m.group(2)
        prefix = f"model.layers.{i}."
        if rest == "norm1.weight":
            out[prefix + "input_layernorm.weight"] = tensor
        elif rest == "norm2.weight":
            out[prefix + "post_mixer_layernorm.weight"] = tensor
        elif rest == "mlp.fc1.weight":
            value, gate = tensor.chunk(2, dim=0)
            out[prefix + "mlp.up_proj.weight"] = value
            out[prefix + "mlp.gate_proj.weight"] = gate
        elif rest == "mlp.fc2.weight":
            out[prefix + "mlp.down_proj.weight"] = tensor
        elif rest.startswith("mixer."):
            name = rest[len("mixer.") :]
            kind = mixer_types[i] if i < len(mixer_types) else None
            mapped = _map_mixer_key(kind, name, tensor, config)
            if mapped is None:
                unknown.append(raw_key)
            else:
                for sub, value in mapped.items():
                    out[prefix + "mixer." + sub] = value
        else:
            unknown.append(raw_key)
    if unknown:
        raise ValueError(
            f"reference checkpoint has keys this converter does not know: {unknown[:10]}"
        )
    if "lm_head.weight" in out and config.tie_word_embeddings:
        if not torch.equal(out["lm_head.weight"], out["model.embed_tokens.weight"]):
            raise ValueError(
                "lm_head.weight differs from the word embedding but tie_word_embeddings is true"
            )
        del out["lm_head.weight"]
    return out


def _map_mixer_key(
    kind: str | None, name: str, tensor: torch.Tensor, config: BasedConfig
) -> dict[str, torch.Tensor] | None:
    if kind == "base_conv":
        if name == "conv.conv.weight":
            return {"conv.weight": tensor}
        if name in ("in_proj.weight", "in_proj.bias", "out_proj.weight", "out_proj.bias"):
            return {name: tensor}
    elif kind in ("linear_attention", "prefix_linear_attention"):
        table = {"proj_q": "q_proj", "proj_k": "k_proj", "proj_v": "v_proj", "out_proj": "o_proj"}
        if kind == "prefix_linear_attention":
            table.update(proj_k_enc="k_enc_proj", proj_v_enc="v_enc_proj")
        module, _, param = name.partition(".")
        if module in table and param in ("weight", "bias"):
            return {f"{table[module]}.{param}": tensor}
    elif kind == "sliding_window_attention":
        if name in ("Wqkv.weight", "Wqkv.bias"):
            param = name.split(".")[1]
            q, k, v = tensor.split(config.hidden_size, dim=0)
            return {f"q_proj.{param}": q, f"k_proj.{param}": k, f"v_proj.{param}": v}
        if name in ("out_proj.weight", "out_proj.bias"):
            return {"o_proj." + name.split(".")[1]: tensor}
    return None


def read_reference_config(src: str | Path) -> dict[str, Any]:
    """The reference ``config.json`` of ``src`` as a dict, with one-line errors naming it."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"SRC {src} is not a directory")
    config_path = src / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: SRC must hold the reference config.json")
    return check_json_file(config_path)


def convert_based(
    src: str | Path, out: str | Path | None = None, *, overwrite: bool = False
) -> BasedForCausalLM:
    """Convert the reference checkpoint in ``src``; save it to ``out`` when given.

    Returns the loaded :class:`BasedForCausalLM` (float32, eval mode). Every converted tensor must
    match a model parameter by name and shape, and every parameter must be filled. ``out`` may
    not be ``src`` and must be empty or absent unless ``overwrite`` (nothing is written before
    the conversion has succeeded).
    """
    src = Path(src)
    if out is not None:
        check_output_directory(src, out, overwrite=overwrite)
    config = based_config_from_reference(read_reference_config(src))
    return build_converted_model(src, out, config, BasedForCausalLM)


def build_converted_model(
    src: str | Path, out: str | Path | None, config: BasedConfig, model_class: type
) -> Any:
    """Load ``src``'s reference weights into a fresh ``model_class(config)`` (every tensor
    checked by name and shape), in eval mode; save it to ``out`` when given."""
    state = convert_based_state_dict(load_reference_state_dict(src), config)
    if "lm_head.weight" in state:
        config.tie_word_embeddings = False
    model = model_class(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"converted weights do not fit the model: missing {missing[:8]}, extra {extra[:8]}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k])]
    if wrong:
        raise ValueError(
            "converted weights have wrong shapes: "
            + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(expected[k])}" for k in wrong[:5])
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    model.tie_weights()
    model.eval()
    if out is not None:
        model.save_pretrained(out)
    return model
