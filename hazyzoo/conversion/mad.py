"""Convert athms/mad-lab models (``LanguageModel``, ``AutoEncoder``) to hazyzoo MAD models.

The source is a directory with ``config.json`` (MAD's model configuration: ``layers`` (MAD
layer names), ``layer_cfgs`` (each layer's yml settings, as ``MADModelConfig`` builds them),
``dim``, ``vocab_size``, ``max_length``, optionally ``backbone`` (``"language-model"`` /
``"autoencoder"``, a leading word is enough) and ``layer_norm_eps``) and the weights
(``weights.safetensors``, ``model.safetensors`` or a torch/Lightning checkpoint ``*.ckpt`` /
``*.pt``; a Lightning wrapper's ``model.`` prefix is removed).

State-dict names: MAD's block ``i`` is ``model.i.0`` (its norm) and ``model.i.1`` (the layer);
hazyzoo's is ``model.layers.i.input_layernorm`` / ``.mixer`` for a sequence mixer and
``.post_mixer_layernorm`` / ``.mlp`` for a channel mixer. Renamed inside layers: SwiGLU
``w1, w2, w3`` -> ``gate_proj, up_proj, down_proj``; MLP ``fc, proj`` -> ``up_proj,
down_proj``; Hyena's filter MLP ``implicit_filter.{0,2,4,6}`` -> ``implicit_filter.{0,1,2,3}``
and its one shared ``freq`` (stored by MAD under ``implicit_filter.{1,3,5}.freq``) -> ``freq``.
Dropped after a check: ``pos_emb.t`` (must equal ``linspace(0, 1, max_length)``), the extra
``freq`` copies (must equal the first) and MoE's ``gates`` (never used by MAD's forward).
Every other key must be consumed and every hazyzoo key filled: a mismatch is an error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from hazyzoo.configuration.configuration_mad import MAD_LAYERS, MadConfig
from hazyzoo.conversion.common import check_output_directory
from hazyzoo.conversion.rtf import load_checkpoint

__all__ = ["convert_mad", "convert_mad_state_dict", "mad_config_from_reference"]

_WEIGHT_FILES = ("weights.safetensors", "model.safetensors")
_HYENA_NAMES = ("hyena", "mh-hyena", "hyena-experts")


def _need(cfg: dict[str, Any], key: str, allowed: tuple, where: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value not in allowed:
        raise ValueError(
            f"{where}: {key} = {value!r} changes the layer's maths in a way hazyzoo does not "
            f"implement; supported: {list(allowed)}"
        )
    return value


def _layer_settings(name: str, cfg: dict[str, Any], dim: int, where: str) -> dict[str, Any]:
    """hazyzoo settings of one MAD layer from its yml config (unsupported values refused)."""
    if cfg.get("dim", dim) != dim:
        raise ValueError(f"{where}: dim = {cfg['dim']} differs from the model's dim {dim}")
    if name in _HYENA_NAMES:
        for key, allowed, default in (
            ("num_blocks", (1,), 1),
            ("fused_bias_fc", (False,), False),
            ("outer_mixing", (False,), False),
            ("post_order_ffn", (False,), False),
            ("activation", ("id",), "id"),
            ("dropout", (0, 0.0), 0),
            ("order", (2,), 2),
        ):
            _need(cfg, key, allowed, where, default)
        long_conv = dict(cfg.get("long_conv_cfg") or {})
        _need(long_conv, "bias", (True,), where + " long_conv_cfg", True)
        kind = _need(long_conv, "filter_cls", ("implicit", "rtf"), where + " long_conv_cfg")
        filt = dict(long_conv.get("filter_cfg") or {})
        s: dict[str, Any] = {
            "hyena_num_heads": cfg.get("num_heads", 1),
            "hyena_inner_factor": cfg.get("inner_factor", 1),
            "hyena_short_filter_order": cfg.get("short_filter_order", 3),
            "hyena_filter_cls": kind,
        }
        if name != "hyena-experts":
            s["hyena_proj_groups"] = cfg.get("proj_groups", 4)  # HyenaOperator's default
        if kind == "implicit":
            s["hyena_filter_order"] = filt.get("order", 64)
            s["hyena_filter_emb_dim"] = filt.get("emb_dim", 3)
        else:
            s["hyena_state_size"] = filt.get("state_size", 4)
            s["hyena_rtf_init"] = filt.get("init", "xavier")
        if name == "hyena-experts":
            s.update(
                hyena_expert_size=cfg["dim_inner"],
                num_experts=cfg["num_experts"],
                num_experts_per_tok=cfg["active_experts"],
            )
        return s
    if name in ("mlp", "swiglu"):
        _need(cfg, "drop_rate", (0, 0.0), where, 0)
        inner = cfg.get("dim_inner") if name == "mlp" else None  # MAD's SwiGLU ignores it
        return {"intermediate_size": inner, "mlp_bias": bool(cfg.get("bias", False))}
    if name == "moe-mlp":
        return {
            "intermediate_size": cfg["dim_inner"],
            "num_experts": cfg["num_experts"],
            "num_experts_per_tok": cfg["active_experts"],
            "mlp_bias": bool(cfg.get("bias", False)),
        }
    if name == "mamba":
        keys = ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init")
        keys += ("dt_scale", "dt_init_floor", "conv_bias", "bias")
        return {f"mamba_{k}": cfg[k] for k in keys if k in cfg}
    if name in ("attention", "mh-attention", "sliding-attention", "mh-sliding-attention"):
        _need(cfg, "dropout", (0, 0.0), where, 0)
        _need(cfg, "causal", (True,), where, True)
        heads = cfg.get("n_heads", 1)
        if cfg.get("rotary_emb_dim", dim // heads) != dim // heads:
            raise ValueError(
                f"{where}: rotary_emb_dim = {cfg['rotary_emb_dim']}; hazyzoo's attention rotates "
                f"the whole head ({dim // heads} channels)"
            )
        window = cfg.get("window_size", [-1, -1])
        if "sliding" in name:
            return {
                "sliding_window_num_heads": heads,
                "sliding_window": int(window[0]) + 1,  # MAD counts the keys before the query
            }
        return {"num_attention_heads": heads}
    raise ValueError(f"{where}: converting MAD layer {name!r} is not supported")


def mad_config_from_reference(ref: dict[str, Any]) -> MadConfig:
    """A :class:`~hazyzoo.MadConfig` for MAD's model configuration ``ref``."""
    for key in ("layers", "dim", "vocab_size", "max_length"):
        if key not in ref:
            raise ValueError(f"config.json lacks the required key {key!r}")
    layers, dim = list(ref["layers"]), int(ref["dim"])
    unknown = [n for n in layers if n not in MAD_LAYERS]
    if unknown:
        raise ValueError(
            f"config.json layers {unknown} are not MAD layer names {sorted(MAD_LAYERS)}"
        )
    cfgs = ref.get("layer_cfgs") or [{} for _ in layers]
    if len(cfgs) != len(layers):
        raise ValueError(f"config.json has {len(layers)} layers but {len(cfgs)} layer_cfgs")
    settings = [
        _layer_settings(n, dict(c), dim, f"config.json layer_cfgs[{i}] ({n})")
        for i, (n, c) in enumerate(zip(layers, cfgs))
    ]
    for s in settings:
        for key in [k for k, v in s.items() if v is None]:
            del s[key]  # the default for the model's width
    backbone = str(ref.get("backbone", "language-model")).split()[0]
    if backbone not in ("language-model", "autoencoder"):
        raise ValueError(
            f"config.json backbone {ref['backbone']!r}: expected language-model or autoencoder"
        )
    norm = str(ref.get("norm", "LayerNorm"))
    if "LayerNorm" not in norm and "layer_norm" not in norm:
        raise ValueError(f"config.json norm {norm!r}: only torch.nn.LayerNorm models are converted")
    return MadConfig(
        layers=layers,
        layer_configs=settings,
        hidden_size=dim,
        vocab_size=int(ref["vocab_size"]),
        max_position_embeddings=int(ref["max_length"]),
        backbone=backbone,
        norm_type="layer_norm",
        norm_eps=float(ref.get("layer_norm_eps", 1e-5)),
        lm_head_bias=True,
        tie_word_embeddings=False,
    )


_INNER = {
    "swiglu": {"w1": "gate_proj", "w2": "up_proj", "w3": "down_proj"},
    "mlp": {"fc": "up_proj", "proj": "down_proj"},
}


def _filter_key(rest: str, state: dict[str, torch.Tensor], prefix: str, length: int) -> str | None:
    """hazyzoo's name of a key of MAD's implicit filter (None: checked and dropped)."""
    if rest == "pos_emb.t":
        t = state[prefix + rest].float().flatten()
        if not torch.allclose(t, torch.linspace(0, 1, length), atol=1e-6):
            raise ValueError(f"{prefix}pos_emb.t is not linspace(0, 1, max_length)")
        return None
    match = re.fullmatch(r"implicit_filter\.(\d+)\.(.+)", rest)
    if match is None:
        return rest  # pos_emb.z, modulation.deltas, RTF's ab / h_0
    index, leaf = int(match.group(1)), match.group(2)
    if leaf == "freq":
        first = state[prefix + "implicit_filter.1.freq"]
        if not torch.equal(state[prefix + rest], first):
            raise ValueError(f"{prefix}{rest} differs from implicit_filter.1.freq (one shared Sin)")
        return "freq" if index == 1 else None
    return f"implicit_filter.{index // 2}.{leaf}"


def convert_mad_state_dict(
    state: dict[str, torch.Tensor], config: MadConfig
) -> dict[str, torch.Tensor]:
    """MAD's state dict under hazyzoo's names (see the module docstring)."""
    autoencoder = config.backbone == "autoencoder"
    blocks = "encoder" if autoencoder else "model"
    base = "" if autoencoder else "model."
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = None
        match = re.fullmatch(rf"{blocks}\.(\d+)\.([01])\.(.+)", key)
        if match:
            idx, part, rest = int(match.group(1)), match.group(2), match.group(3)
            if idx >= len(config.layers):
                raise ValueError(f"{key}: the config has only {len(config.layers)} layers")
            name = config.layers[idx]
            sequence = config.mixer_types[idx] != "none"
            if part == "0":
                norm = "input_layernorm" if sequence else "post_mixer_layernorm"
                new = f"{base}layers.{idx}.{norm}.{rest}"
            else:
                owner = "mixer" if sequence else "mlp"
                if name == "moe-mlp" and rest == "gates":
                    new = None
                elif rest.startswith("long_conv.filter."):
                    prefix = f"{blocks}.{idx}.1.long_conv.filter."
                    leaf = _filter_key(
                        rest[len("long_conv.filter.") :],
                        state,
                        prefix,
                        config.max_position_embeddings,
                    )
                    new = (
                        None
                        if leaf is None
                        else f"{base}layers.{idx}.{owner}.long_conv.filter.{leaf}"
                    )
                    if leaf == "freq":
                        value = value.reshape(-1)
                else:
                    head, _, tail = rest.partition(".")
                    head = _INNER.get(name, {}).get(head, head)
                    new = f"{base}layers.{idx}.{owner}.{head}" + (f".{tail}" if tail else "")
        elif key == "token_embeds.weight":
            new = f"{base}embed_tokens.weight"
        elif key.startswith("unembed.0."):
            new = f"{base}norm." + key[len("unembed.0.") :]
        elif key.startswith("unembed.1."):
            new = "lm_head." + key[len("unembed.1.") :]
        elif autoencoder and key.startswith("decoder."):
            new = key
        else:
            raise ValueError(f"unexpected key {key!r} in the MAD state dict")
        if new is not None:
            out[new] = value.float()
    return out


def _read_weights(src: Path) -> dict[str, torch.Tensor]:
    for name in _WEIGHT_FILES:
        if (src / name).is_file():
            return load_checkpoint(src / name)
    checkpoints = sorted([*src.glob("*.ckpt"), *src.glob("*.pt"), *src.glob("*.pth")])
    if len(checkpoints) == 1:
        state = load_checkpoint(checkpoints[0])
        # a Lightning wrapper (pl_model_wrapper) keeps the model under ``model.``
        if all(k.startswith("model.") for k in state) and any(
            k.startswith("model.model.") or k.startswith("model.token_embeds") for k in state
        ):
            state = {k[len("model.") :]: v for k, v in state.items()}
        return state
    raise FileNotFoundError(
        f"{src}: no weights ({', '.join(_WEIGHT_FILES)}, or one .ckpt/.pt file); found "
        f"{[p.name for p in checkpoints]}"
    )


def convert_mad(
    src: str | Path, out: str | Path | None = None, *, overwrite: bool = False
) -> torch.nn.Module:
    """Convert the MAD model in ``src`` (config.json + weights) to a
    :class:`~hazyzoo.MadForCausalLM` or :class:`~hazyzoo.MadAutoEncoder` (float32, eval mode);
    save it to ``out`` when given."""
    from hazyzoo.modeling.modeling_mad import MadAutoEncoder, MadForCausalLM

    src = Path(src)
    if out is not None:
        check_output_directory(src, out, overwrite=overwrite)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: SRC must hold MAD's config.json")
    config = mad_config_from_reference(json.loads(config_path.read_text()))
    state = convert_mad_state_dict(_read_weights(src), config)
    cls = MadAutoEncoder if config.backbone == "autoencoder" else MadForCausalLM
    model = cls(config).eval()
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{src}: the converted weights do not fit the model: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    for key, value in state.items():
        if model.state_dict()[key].shape != value.shape:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} in the checkpoint, "
                f"{tuple(model.state_dict()[key].shape)} in the model"
            )
    model.load_state_dict(state, strict=True)
    if out is not None:
        model.save_pretrained(out)
    return model
