"""Convert a released M2-BERT checkpoint (HazyResearch/m2 format) to a hazyzoo checkpoint.

The source directory holds the reference ``config.json`` (the reference ``BertConfig`` keys, as
in ``togethercomputer/m2-bert-80M-{2k,8k,32k}-retrieval``) and ``pytorch_model.bin`` (read with
``torch.load(weights_only=True)`` only) or ``*.safetensors``. Reference layout handled here:

* weight names are the reference ``BertModel``'s, optionally under ``bert.`` (the
  ``BertForSequenceClassification`` / ``BertForMaskedLM`` wrappers) or ``model.bert.``
  (Composer); the wrapper's ``classifier.*`` (unused by the sentence embedding) is reported,
  not converted;
* each layer's mixer is ``encoder.layer.<i>.attention`` (hazyzoo: ``sequence_mixer``);
* each Hyena filter's MLP is an ``nn.Sequential`` with one shared ``Sin`` at the odd slots, so
  ``implicit_filter.{1,3,5}.freq`` (and the reverse MLP's) are copies of one parameter: they
  must be equal and become one ``freq``;
* the buffers ``pos_emb.t``, ``modulation.deltas`` and ``embeddings.position_ids`` are fixed
  functions of the shape: they must hold exactly those values and are not stored;
* bfloat16 storages are converted to float32 (exactly).

The converted model keeps the released padding semantics (``padding_invariant=False``): pad
inputs to ``max_position_embeddings`` as the released models expect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hazyzoo.configuration.configuration_m2bert import M2BertConfig
from hazyzoo.conversion.based import load_reference_state_dict, read_reference_config
from hazyzoo.conversion.common import ConfigKey, check_output_directory, check_reference_keys
from hazyzoo.modeling.layers.hyena_filter import (
    hyena_decay_rates,
    hyena_positional_features,
    reference_filter_key,
)
from hazyzoo.modeling.modeling_m2bert import M2BertForMaskedLM, M2BertForTextEncoding

HEADS = {"text-encoding": M2BertForTextEncoding, "masked-lm": M2BertForMaskedLM}
_GOLDEN = "a setting of hazyzoo's golden-data generator, not a model setting"


def _converted(kind: str, default: Any, why: str = "") -> ConfigKey:
    return ConfigKey("converted", kind, default, why=why)


def _harmless(kind: str, why: str) -> ConfigKey:
    return ConfigKey("harmless", kind, why=why)


def _fixed(kind: str, default: Any, allowed: tuple, why: str) -> ConfigKey:
    return ConfigKey("fixed", kind, default, allowed, why)


# Every key a released config.json may hold. Defaults are the reference's when the key is
# absent (its BertConfig's, else transformers' BertConfig's).
REFERENCE_KEYS: dict[str, ConfigKey] = {
    "vocab_size": _converted("int", 30522),
    "hidden_size": _converted("int", 768),
    "num_hidden_layers": _converted("int", 12),
    "num_attention_heads": _converted("int", 12, "unused: no attention"),
    "intermediate_size": _converted("int", 3072),
    "hidden_act": _converted("str", "gelu", "the masked-LM head's activation"),
    "hidden_dropout_prob": _converted("number", 0.1),
    "attention_probs_dropout_prob": _converted("number", 0.0, "unused: no attention"),
    "max_position_embeddings": _converted("int", 512),
    "type_vocab_size": _converted("int", 2),
    "initializer_range": _converted("number", 0.02),
    "layer_norm_eps": _converted("number", 1e-12),
    "pad_token_id": _converted("int?", 0),
    "position_embedding_type": _fixed(
        "str", "absolute", ("absolute",), "the released models use absolute positions"
    ),
    "alibi_starting_size": _converted("int", 512, "unused: no attention"),
    "monarch_mixer_sequence_mixing": _fixed(
        "bool", False, (True,), "False is the reference's attention BERT, not M2"
    ),
    "long_conv_l_max": _converted("int", None),
    "long_conv_kernel_learning_rate": _converted("number?", None),
    "hyena_lr_pos_emb": _converted("number?", 1e-5),
    "hyena_w": _converted("number", 10),
    "hyena_w_mod": _converted("number", 1),
    "hyena_wd": _converted("number", 0.1),
    "hyena_emb_dim": _converted("int", 3),
    "hyena_filter_order": _converted("int", 64),
    "hyena_filter_dropout": _converted("number", 0.2, "never applied by the reference"),
    "hyena_training_additions": _converted("bool", False),
    "bidirectional": _converted("bool", True),
    "residual_long_conv": _converted("bool", False),
    "use_glu_mlp": _converted("bool", True),
    "use_monarch_mlp": _converted("bool", False),
    "monarch_mlp_nblocks": _converted("int", 4),
    "use_positional_encodings": _converted("bool", False),
    "pool_all": _converted("bool", False),
    "use_cls_token": _converted("bool", False),
    "use_flash_mm": _converted("bool", False, "a kernel choice"),
    "use_flash_fft": _converted("bool", False, "a kernel choice"),
    "sequence_token_planting": _fixed(
        "bool", False, (False,), "a training experiment that overwrites input ids"
    ),
    "use_normalized_embeddings": _converted("bool", False, "L2-normalised sentence embeddings"),
    "expand_positional_embeddings": _fixed(
        "bool", False, (False,), "a reference training path that tiles position embeddings"
    ),
    "gather_sentence_embeddings": _harmless("bool", "the wrapper returns the embedding"),
    "tie_word_embeddings": _converted("bool", True),
    # transformers' bookkeeping and the classification wrapper's settings
    "architectures": _harmless("any", "the reference's class names"),
    "auto_map": _harmless("dict?", "the reference's remote-code classes"),
    "model_type": _harmless("str", "replaced by hazyzoo_m2bert"),
    "transformers_version": _harmless("str", "bookkeeping"),
    "torch_dtype": _harmless("any", "the stored dtype (converted to float32)"),
    "dtype": _harmless("any", "the stored dtype (converted to float32)"),
    "_name_or_path": _harmless("str", "bookkeeping"),
    "name_or_path": _harmless("str", "bookkeeping"),
    "gradient_checkpointing": _harmless("bool", "a training option"),
    "use_cache": _harmless("bool", "unused by an encoder"),
    "classifier_dropout": _harmless("number?", "the classification wrapper's head"),
    "num_labels": _harmless("int", "the classification wrapper's head"),
    "problem_type": _harmless("any", "the classification wrapper's head"),
    "id2label": _harmless("dict?", "the classification wrapper's head"),
    "label2id": _harmless("dict?", "the classification wrapper's head"),
    # hazyzoo's golden data (../shared/golden/m2_bert_tiny/config.json)
    "class": _harmless("str", _GOLDEN),
    "seed_init": _harmless("int", _GOLDEN),
    "seed_redraw": _harmless("int", _GOLDEN),
    "seed_input": _harmless("int", _GOLDEN),
    "seq_lens_unpadded": _harmless("any", _GOLDEN),
    "extra_cases": _harmless("dict", _GOLDEN),
}
_RENAMED = {"use_normalized_embeddings": "normalize_embeddings"}
_NOT_CONFIG = {k for k, v in REFERENCE_KEYS.items() if v.role == "harmless"} | {
    "position_embedding_type",
    "monarch_mixer_sequence_mixing",
    "sequence_token_planting",
    "expand_positional_embeddings",
}


def m2bert_config_from_reference(reference: dict[str, Any]) -> M2BertConfig:
    """Translate a reference ``config.json`` dict into an :class:`M2BertConfig` (every key
    checked; errors name the key)."""
    model_type = reference.get("model_type", "bert")
    if model_type not in ("m2_bert", "bert"):
        raise ValueError(
            f"config.json model_type is {model_type!r}: this is not a released M2-BERT "
            "checkpoint (expected 'm2_bert' or 'bert')"
        )
    values = check_reference_keys(reference, REFERENCE_KEYS, "config.json")
    if values["long_conv_l_max"] is None:
        raise ValueError("config.json lacks long_conv_l_max (the Hyena filters' length)")
    kwargs = {_RENAMED.get(k, k): v for k, v in values.items() if k not in _NOT_CONFIG}
    return M2BertConfig(**kwargs)


@dataclass
class M2BertConversion:
    """What :func:`convert_m2bert` did: the model, the source's key prefix, the source keys
    that were checked and folded (equal ``freq`` copies, fixed buffers) or not converted."""

    model: Any
    source: Path
    prefix: str
    folded: list[str]
    ignored: list[str]
    out: Path | None = None
    written: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        """One line per fact, for the CLI."""
        model = self.model
        n = sum(p.numel() for p in model.parameters())
        lines = [
            f"converted {self.source} -> {self.out} ({type(model).__name__}, {n:,} parameters, "
            f"model_type {model.config.model_type}, source prefix {self.prefix or 'none'!r})",
            f"checked and folded: {len(self.folded)} key(s) (copies of each filter's shared "
            "freq, and the fixed buffers pos_emb.t, modulation.deltas, embeddings.position_ids)",
            "padding: the released semantics (padding_invariant=False): pad inputs to "
            f"max_length={model.config.max_input_length} as the released models expect",
        ]
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (", ..." if len(self.ignored) > 5 else "")
            lines.append(f"not converted: {len(self.ignored)} key(s) of SRC ({shown})")
        lines.extend(self.written)
        return lines


def _source_prefix(state: dict[str, torch.Tensor]) -> str:
    for prefix in ("model.bert.", "bert.", ""):
        if any(k.startswith(prefix + "embeddings.") for k in state):
            return prefix
    raise ValueError(
        "the weights have no embeddings.* keys (nor bert.embeddings.* / model.bert.embeddings.*): "
        "this is not an M2-BERT checkpoint"
    )


def _check_fixed(name: str, value: torch.Tensor, expected: torch.Tensor) -> None:
    """A reference buffer hazyzoo recomputes must hold exactly the recomputed values (in its
    own dtype, when stored in half precision)."""
    want = (
        expected.to(value.dtype).reshape(value.shape) if value.numel() == expected.numel() else None
    )
    if want is None or not torch.equal(value, want):
        raise ValueError(
            f"{name} does not hold the values hazyzoo recomputes for it (shape "
            f"{tuple(value.shape)}, expected {tuple(expected.shape)}): hazyzoo does not store "
            "this buffer, so a checkpoint that changed it cannot be converted"
        )


def convert_m2bert_state_dict(
    state: dict[str, torch.Tensor], config: M2BertConfig, head: str = "text-encoding"
) -> tuple[dict[str, torch.Tensor], str, list[str], list[str]]:
    """Map reference names to hazyzoo's (``bert.`` prefix, the head's own keys).

    Returns ``(converted state, source prefix, folded keys, ignored keys)``. Raises
    ``ValueError`` naming any key that fits nowhere, unequal copies of a shared ``freq``, or a
    fixed buffer with other values.
    """
    prefix = _source_prefix(state)
    out: dict[str, torch.Tensor] = {}
    folded: list[str] = []
    ignored: list[str] = []
    unknown: list[str] = []
    kept_freq: dict[str, str] = {}  # hazyzoo filter prefix -> source key of its one freq
    freq_copies: dict[str, list[str]] = {}  # hazyzoo filter prefix -> source keys of copies
    layer_key = re.compile(r"encoder\.layer\.(\d+)\.(attention|mlp)\.(.+)")
    for key, value in state.items():
        if not key.startswith(prefix):
            if key.startswith(("classifier.", "model.classifier.")):
                ignored.append(key)
            elif key.startswith(("cls.", "model.cls.")) and head == "masked-lm":
                out[key.removeprefix("model.")] = value
            elif key.startswith(("cls.", "model.cls.")):
                ignored.append(key)
            else:
                unknown.append(key)
            continue
        rest = key[len(prefix) :]
        if rest == "embeddings.position_ids":
            _check_fixed(key, value, torch.arange(value.numel()))
            folded.append(key)
            continue
        if rest == "embeddings.token_type_ids":
            folded.append(key)  # a non-persistent all-zeros buffer in the reference
            continue
        match = layer_key.fullmatch(rest)
        if match is None:
            if rest.startswith(("embeddings.", "pooler.")):
                if rest.startswith("pooler.") and head == "masked-lm":
                    ignored.append(key)
                    continue
                out["bert." + rest] = value
            else:
                unknown.append(key)
            continue
        index, part, inner = match.groups()
        target = f"bert.encoder.layer.{index}." + ("mlp." if part == "mlp" else "sequence_mixer.")
        if part == "attention" and inner.startswith(("filter_fn.", "filter_fn2.")):
            filt, filter_key = inner.split(".", 1)
            mapped = reference_filter_key(filter_key)
            where = target + filt
            if filter_key == "pos_emb.t":
                t = hyena_positional_features(config.long_conv_l_max, config.hyena_emb_dim)[1]
                _check_fixed(key, value, t)
            elif filter_key == "modulation.deltas":
                _check_fixed(key, value, hyena_decay_rates(config.hidden_size))
            elif mapped is None:
                freq_copies.setdefault(where, []).append(key)
            if mapped is None:
                folded.append(key)
                continue
            if mapped == "freq":
                kept_freq[where] = key
                value = value.reshape(-1)  # the reference's [1, order]
            out[f"{where}.{mapped}"] = value
        else:
            out[target + inner] = value
    if unknown:
        raise ValueError(
            f"the weights have keys that fit no part of M2-BERT: {sorted(unknown)[:8]} (the "
            f"model's keys start with {prefix!r}embeddings., encoder.layer.<i>.attention|mlp., "
            "pooler.)"
        )
    for where, copies in freq_copies.items():
        kept = kept_freq.get(where)
        if kept is None:
            raise ValueError(f"{where}: the filter's freq (implicit_filter.1.freq) is missing")
        for name in copies:
            if not torch.equal(state[name], state[kept]):
                raise ValueError(
                    f"{name} differs from {kept}: the reference's Sin is one module shared by "
                    "every activation of a filter, so these must be equal copies"
                )
    return out, prefix, sorted(folded), sorted(ignored)


def _float32(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if not tensor.is_floating_point():
        raise TypeError(f"{name} has dtype {tensor.dtype}; weights must be floating point")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} has non-finite values")
    return tensor.float()


def _detect_head(state: dict[str, torch.Tensor]) -> str:
    if any(re.match(r"(model\.)?(bert\.)?pooler\.", k) for k in state):
        return "text-encoding"
    if any(re.match(r"(model\.)?cls\.predictions\.", k) for k in state):
        return "masked-lm"
    raise ValueError(
        "the weights have neither a pooler (pooler.dense.*: the retrieval encoders) nor a "
        "masked-LM head (cls.predictions.*); pass head='text-encoding' or 'masked-lm'"
    )


def convert_m2bert(
    src: str | Path,
    out: str | Path | None = None,
    *,
    head: str | None = None,
    overwrite: bool = False,
) -> M2BertConversion:
    """Convert the reference checkpoint in ``src`` (config.json + weights); save it to ``out``
    when given (safetensors, with the sentence-transformers files for a text encoder).

    ``head``: ``"text-encoding"`` (:class:`~hazyzoo.M2BertForTextEncoding`, the retrieval
    models) or ``"masked-lm"`` (:class:`~hazyzoo.M2BertForMaskedLM`); None picks it from the
    weights (a pooler means a text encoder). Every tensor is checked by name and shape and
    every parameter must be filled. ``out`` may not be ``src`` and must be empty or absent
    unless ``overwrite``; nothing is written before the conversion has succeeded. Returns an
    :class:`M2BertConversion` (the model in eval mode, float32).
    """
    src = Path(src)
    if out is not None:
        out = check_output_directory(src, out, overwrite=overwrite)
    config = m2bert_config_from_reference(read_reference_config(src))
    reference_state = load_reference_state_dict(src)
    if head is None:
        head = _detect_head(reference_state)
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    state, prefix, folded, ignored = convert_m2bert_state_dict(reference_state, config, head)
    model_class = HEADS[head]
    model = model_class(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    for key in tied & set(state):
        source = model._tied_weights_keys[key]
        if source in state and not torch.equal(state[key], state[source]):
            raise ValueError(f"{key} differs from {source}, but the model ties them")
        state.pop(key)
    missing = sorted(set(expected) - set(state) - tied)
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"converted weights do not fit {model_class.__name__}: missing {missing[:8]}, "
            f"unexpected {extra[:8]}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k])]
    if wrong:
        raise ValueError(
            "converted weights have wrong shapes (does config.json describe these weights?): "
            + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(expected[k])}" for k in wrong[:5])
        )
    model.load_state_dict({k: _float32(k, v) for k, v in state.items()}, strict=False)
    model.tie_weights()
    model.eval()
    result = M2BertConversion(model, src, prefix, folded, ignored, out)
    if out is not None:
        model.save_pretrained(out)
    return result
