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
* keys may carry a leading ``model.`` and ``*metrics*`` entries, which are not parameters.

Pickled checkpoints are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.modeling.modeling_based import BasedForCausalLM

_WEIGHT_FILE = re.compile(r"(model|pytorch_model|weights)(-\d+-of-\d+)?\.safetensors")
_KINDS = {
    "BaseConv": "base_conv",
    "LinearAttention": "linear_attention",
    "SlidingAttention": "sliding_window_attention",
}


def _mixer_kind(mixer: dict[str, Any] | None, key: str) -> str | None:
    if not mixer:
        return None
    target = str(mixer.get("_target_", ""))
    for name, kind in _KINDS.items():
        if target.rsplit(".", 1)[-1] == name:
            return kind
    raise ValueError(
        f"config.json {key}._target_ = {target!r} is not a BASED mixer "
        f"(expected one of {sorted(_KINDS)})"
    )


def based_config_from_reference(ref: dict[str, Any]) -> BasedConfig:
    """Translate a reference ``config.json`` dict into a :class:`BasedConfig`."""
    missing = [key for key in ("vocab_size", "n_embd", "n_layer", "mixer") if key not in ref]
    if missing:
        raise ValueError(f"reference config.json lacks required keys {missing}")
    mixers = {key: ref.get(key) for key in ("mixer", "alt_mixer", "alt_mixer_2")}
    kinds = {key: _mixer_kind(value, key) for key, value in mixers.items()}
    if kinds["mixer"] != "base_conv":
        raise ValueError(f"config.json mixer must be BaseConv for BASED, got {kinds['mixer']}")
    n_layer = int(ref["n_layer"])
    layer_lists = {
        "alt_mixer": ref.get("alt_mixer_layers") or [],
        "alt_mixer_2": ref.get("alt_mixer_2_layers") or [],
    }
    linear, sliding = [], []
    for key, layers in layer_lists.items():
        if layers and kinds[key] is None:
            raise ValueError(f"config.json lists {key}_layers but has no {key}")
        target = {"linear_attention": linear, "sliding_window_attention": sliding}.get(kinds[key])
        if layers and target is None:
            raise ValueError(f"config.json {key} must be LinearAttention or SlidingAttention")
        if target is not None:
            target.extend(int(i) for i in layers)

    def mixer_of(kind: str) -> dict[str, Any]:
        for key, value in mixers.items():
            if kinds[key] == kind:
                return value
        return {}

    conv, lin, swa = (
        mixer_of("base_conv"),
        mixer_of("linear_attention"),
        mixer_of("sliding_window_attention"),
    )
    kernel = conv.get("kernel_sizes", 3)
    if isinstance(kernel, (list, tuple)):
        if len(set(kernel)) != 1:
            raise ValueError(f"BaseConv kernel_sizes {kernel}: only one kernel size is supported")
        kernel = kernel[0]
    expand = int(conv.get("expand_proj", 2))
    if expand % 2:
        raise ValueError(f"BaseConv expand_proj must be even (conv half + gate half), got {expand}")
    if float(ref.get("rotary_emb_fraction", 1.0)) != 1.0 and sliding:
        raise ValueError(
            f"rotary_emb_fraction {ref['rotary_emb_fraction']} is not supported (only 1: full rotary)"
        )
    if ref.get("activation_function", "swiglu") != "swiglu":
        raise ValueError(
            f"activation_function {ref['activation_function']!r}: only swiglu is supported"
        )
    multiple = int(ref.get("pad_vocab_size_multiple", 1))
    vocab = int(math.ceil(int(ref["vocab_size"]) / multiple) * multiple)
    impl = lin.get("parallel_implementation", "quadratic")
    eps = float(lin.get("eps", 1e-12 if impl == "quadratic" else 1e-6))
    n_embd = int(ref["n_embd"])
    num_heads = int(lin.get("num_heads", ref.get("n_head", 16)))
    feature_dim = int(lin.get("feature_dim", 16))
    window = int(swa.get("window_size", 256))
    special = 50256 if vocab > 50256 else None
    return BasedConfig(
        vocab_size=vocab,
        hidden_size=n_embd,
        num_hidden_layers=n_layer,
        intermediate_size=int(ref.get("n_inner") or 4 * n_embd),
        num_attention_heads=num_heads,
        feature_dim=feature_dim,
        linear_attention_eps=eps,
        linear_attention_layers=sorted(linear),
        sliding_window_layers=sorted(sliding),
        sliding_window=window // 2 + 1,
        sliding_window_num_heads=int(swa.get("num_heads", num_heads)),
        rope_theta=float(ref.get("rotary_emb_base", 10000.0)),
        conv_kernel_size=int(kernel),
        conv_expansion=expand // 2,
        conv_bias=bool(conv.get("use_bias", True)),
        rms_norm_eps=float(ref.get("layer_norm_epsilon", 1e-5)),
        residual_in_fp32=bool(ref.get("residual_in_fp32", True)),
        tie_word_embeddings=bool(ref.get("tie_word_embeddings", True)),
        bos_token_id=special,
        eos_token_id=special,
    )


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
    state: dict[str, torch.Tensor] = {}
    if files:
        for f in files:
            state.update(load_file(str(f)))
    elif (src / "pytorch_model.bin").is_file():
        loaded = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    else:
        raise FileNotFoundError(f"{src} has neither *.safetensors nor pytorch_model.bin")
    return state


def convert_based_state_dict(
    state: dict[str, torch.Tensor], config: BasedConfig
) -> dict[str, torch.Tensor]:
    """Map reference parameter names and layouts to :class:`BasedForCausalLM` names.

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
    elif kind == "linear_attention":
        table = {"proj_q": "q_proj", "proj_k": "k_proj", "proj_v": "v_proj", "out_proj": "o_proj"}
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


def convert_based(src: str | Path, out: str | Path | None = None) -> BasedForCausalLM:
    """Convert the reference checkpoint in ``src``; save it to ``out`` when given.

    Returns the loaded :class:`BasedForCausalLM` (float32, eval mode). Every converted tensor must
    match a model parameter by name and shape, and every parameter must be filled.
    """
    src = Path(src)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: SRC must hold the reference config.json")
    config = based_config_from_reference(json.loads(config_path.read_text()))
    state = convert_based_state_dict(load_reference_state_dict(src), config)
    if "lm_head.weight" in state:
        config.tie_word_embeddings = False
    model = BasedForCausalLM(config)
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
