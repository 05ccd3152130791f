"""Convert the reference RTF layer's weights (ruke1ire/RTF ``rtf.py``) to hazyzoo.

The reference ``RTF`` / ``RTF2`` classes (``RTF(d_model, state_size, trunc_len, num_a=None,
dropout=0.0, bidirectional=False, flash_fft_conv=False, init='zeros', constraint='no')``,
``RTF2`` with the same arguments) are standalone layers: what a user has is the state dict of
a model in which one or more of them sit under prefixes (``layers.0.layer.ab``,
``layers.0.layer.h_0``, ...), or of a single layer (``ab``, ``h_0``, ``scalar``). The layer's
parameters are those of :class:`~hazyzoo.modeling.layers.rtf.RtfFilter`, under the same names
and layout, so :func:`filter_from_reference` loads them as they are (bit-exact), after checking
every shape against the constructor arguments. Two layouts differ:

* the reference's ``scalar`` (``l1_montel`` only) has ``num_a`` entries for both directions,
  hazyzoo's ``directions * num_a``. A bidirectional layer with ``num_a == 1`` uses its single
  value for both directions, so it is duplicated; with ``num_a > 1`` the reference itself
  crashes on its first forward (``[2 * num_a]`` row norms plus ``[num_a]`` scalars), so such a
  state dict has no defined output and is refused;
* ``RTF`` is hazyzoo's ``convention="rtf"`` and ``RTF2`` its ``convention="rtf2"``. The
  reference's ``dropout`` (on the kernel) is ``kernel_dropout``; ``flash_fft_conv`` is a
  kernel choice and is ignored.

:func:`convert_rtf` turns such a checkpoint (``.safetensors``, or a ``.pt``/``.bin``/``.ckpt``
torch file read with ``weights_only=True``, possibly a Lightning dict with a ``state_dict``
key) into an :class:`~hazyzoo.RtfForCausalLM` or :class:`~hazyzoo.RtfForSequenceClassification`
checkpoint directory. Its RTF modules are found by their ``.ab`` key and taken in sorted
(natural) prefix order: the i-th becomes ``model.layers[i].mixer.filter``. Nothing else of a
hazyzoo model (embeddings, the mixers' output linears, norms, channel mixers, head) can be
read from standalone RTF layers, so the rest must come from somewhere, and the converter makes
the user say where:

* ``base=DIR`` (``--base``): an existing hazyzoo RTF checkpoint whose head, width and depth
  the converted model keeps; every weight but the filters is loaded from it (its tokenizer
  files are copied too). Its config's filter fields (``state_size``, ``trunc_len``,
  ``num_a``, ``bidirectional``, ``init``, ``constraint``, ``convention``, ``kernel_dropout``)
  are replaced by the reference's; ``hidden_size`` must be ``d_model`` and
  ``num_hidden_layers`` the number of RTF modules. To convert into another architecture,
  save a freshly built hazyzoo RTF model with the config you want and pass it as the base;
* ``filters_only=True`` (``--filters-only``): every other weight is freshly initialised
  (seed 0) in an :class:`~hazyzoo.RtfConfig` with the config's defaults, ``hidden_size =
  d_model``, ``intermediate_size = 4 * d_model`` and one layer per RTF module (a language
  model for causal layers, a classifier for bidirectional ones). The model card says that
  this is not a trained model.

Without either the converter refuses. Keys of the source that are not RTF parameters are not
converted (they are listed in the result). Weights are saved in float32; a source tensor that
float32 cannot hold exactly is an error. Everything is checked before anything is written, and
the output directory follows :func:`~hazyzoo.conversion.common.check_output_directory`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hazyzoo.configuration.configuration_rtf import RTF_CONSTRAINTS, RTF_INITS
from hazyzoo.conversion.common import REQUIRED, ConfigKey, check_output_directory
from hazyzoo.conversion.common import check_reference_keys as _check
from hazyzoo.modeling.layers.rtf import RtfFilter
from hazyzoo.validation import check_json_file, check_safetensors_file, is_int

RTF_CLASSES = {"RTF": "rtf", "RTF2": "rtf2"}
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# The RtfConfig fields that describe the filters (set from the reference's arguments).
FILTER_FIELDS = (
    "state_size",
    "trunc_len",
    "num_a",
    "bidirectional",
    "init",
    "constraint",
    "convention",
    "kernel_dropout",
)
_HEADS = ("RtfForCausalLM", "RtfForSequenceClassification")
_GOLDEN = "a setting of hazyzoo's golden-data generator, not a constructor argument"

# The keys of a JSON file of constructor arguments (``--reference-config``): the reference
# constructor's, plus ``class`` ("RTF" or "RTF2"), as in the golden data's config.json.
REFERENCE_KEYS: dict[str, ConfigKey] = {
    "class": ConfigKey("converted", "str", "RTF", why="RTF or RTF2"),
    "d_model": ConfigKey("converted", "int", REQUIRED),
    "state_size": ConfigKey("converted", "int", REQUIRED),
    "trunc_len": ConfigKey("converted", "int", REQUIRED),
    "num_a": ConfigKey("converted", "int?", None),
    "dropout": ConfigKey("converted", "number", 0.0, why="dropout on the kernel"),
    "bidirectional": ConfigKey("converted", "bool", False),
    "init": ConfigKey("converted", "str", "zeros"),
    "constraint": ConfigKey("converted", "str", "no", why="null means 'no'"),
    "flash_fft_conv": ConfigKey("harmless", "bool", why="a kernel choice: same maths"),
    **{
        key: ConfigKey("harmless", "any", why=_GOLDEN)
        for key in (
            "seed_init",
            "seed_input",
            "batch",
            "seq_len",
            "short_seq_len",
            "short_seq_len_even",
        )
    },
}


def reference_arguments(
    config: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`filter_from_reference` from a JSON file (or dict) of the
    reference constructor's arguments (:data:`REFERENCE_KEYS`), updated with the ``overrides``
    that are not None (same keys; the CLI's flags). Errors name the key."""
    where = "the reference arguments"
    values: dict[str, Any] = {}
    if isinstance(config, (str, Path)):
        values = check_json_file(config)
        where = str(config)
    elif config is not None:
        values = dict(config)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    checked = _check(values, REFERENCE_KEYS, where)
    return dict(
        d_model=checked["d_model"],
        state_size=checked["state_size"],
        trunc_len=checked["trunc_len"],
        num_a=checked["num_a"],
        bidirectional=checked["bidirectional"],
        init=checked["init"],
        constraint=checked["constraint"],
        rtf_class=checked["class"],
        dropout=float(checked["dropout"]),
    )


def _check_arguments(
    d_model: Any,
    state_size: Any,
    trunc_len: Any,
    num_a: Any,
    bidirectional: Any,
    init: Any,
    constraint: Any,
    rtf_class: Any,
    dropout: Any,
) -> tuple[str, str]:
    """Check the constructor arguments; return ``(constraint, convention)``."""
    for name, value in (("d_model", d_model), ("state_size", state_size), ("trunc_len", trunc_len)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if trunc_len <= state_size:
        raise ValueError(
            f"trunc_len ({trunc_len}) must be larger than state_size ({state_size}), as the "
            "reference asserts"
        )
    if num_a is not None and (not is_int(num_a) or num_a < 1 or d_model % num_a):
        raise ValueError(
            f"num_a must be None or a positive divisor of d_model ({d_model}), got {num_a!r}"
        )
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
    if init not in RTF_INITS:
        raise ValueError(f"init must be one of {RTF_INITS}, got {init!r}")
    constraint = "no" if constraint is None else constraint
    if constraint not in RTF_CONSTRAINTS:
        raise ValueError(f"constraint must be one of {RTF_CONSTRAINTS}, got {constraint!r}")
    if rtf_class not in RTF_CLASSES:
        raise ValueError(f"rtf_class must be one of {tuple(RTF_CLASSES)}, got {rtf_class!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return constraint, RTF_CLASSES[rtf_class]


def filter_from_reference(
    state_dict: Mapping[str, torch.Tensor],
    *,
    d_model: int,
    state_size: int,
    trunc_len: int,
    num_a: int | None = None,
    bidirectional: bool = False,
    init: str = "zeros",
    constraint: str = "no",
    rtf_class: str = "RTF",
    dropout: float = 0.0,
    prefix: str = "",
) -> RtfFilter:
    """An :class:`RtfFilter` holding the reference layer's ``ab``, ``h_0`` (and ``scalar``)
    from ``state_dict`` (keys without a prefix; ``prefix`` only names them in messages).

    The arguments are the reference constructor's (``rtf_class``: ``"RTF"`` or ``"RTF2"``).
    Shapes are checked (``ValueError`` naming the key and the expected shape); the tensors are
    copied bit-exactly and the filter takes their dtype.
    """
    constraint, convention = _check_arguments(
        d_model, state_size, trunc_len, num_a, bidirectional, init, constraint, rtf_class, dropout
    )
    directions = 2 if bidirectional else 1
    n_a = d_model if num_a is None else num_a
    expected = {
        "ab": (directions * (n_a + d_model), state_size),
        "h_0": (directions * d_model,),
    }
    if constraint == "l1_montel":
        expected["scalar"] = (n_a,)
    args = (
        f"d_model={d_model}, state_size={state_size}, num_a={num_a}, "
        f"bidirectional={bidirectional}, constraint={constraint!r}"
    )
    for name, shape in expected.items():
        if name not in state_dict:
            raise ValueError(
                f"the RTF state dict lacks {prefix}{name} (expected shape {shape} for {args})"
            )
    if "scalar" in state_dict and "scalar" not in expected:
        raise ValueError(
            f"the RTF state dict has {prefix}scalar, which only constraint='l1_montel' has, but "
            f"constraint is {constraint!r}"
        )
    tensors = {name: state_dict[name] for name in expected}
    for name, shape in expected.items():
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{prefix}{name} has shape {tuple(tensor.shape)} but {args} needs {shape}"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"{prefix}{name} has dtype {tensor.dtype}, not a floating type")
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:
        raise ValueError(
            f"the RTF parameters under {prefix or 'the top level'} have different dtypes "
            f"{sorted(str(d) for d in dtypes)}"
        )
    if "scalar" in tensors and bidirectional:
        if n_a > 1:
            raise ValueError(
                f"{prefix}scalar: the reference RTF with bidirectional=True, "
                f"constraint='l1_montel' and num_a={n_a} > 1 cannot run (its l1_montel "
                f"constraint adds {n_a} scalars to {2 * n_a} denominator norms and crashes), so "
                "this state dict has no defined output to convert"
            )
        # num_a == 1: the reference broadcasts its single value over both directions.
        tensors["scalar"] = tensors["scalar"].repeat(2)
    filt = RtfFilter(
        d_model,
        state_size,
        trunc_len,
        num_a=num_a,
        bidirectional=bidirectional,
        init=init,
        constraint=constraint,
        convention=convention,
        kernel_dropout=float(dropout),
    ).to(dtypes.pop())
    with torch.no_grad():
        for name, tensor in tensors.items():
            getattr(filt, name).copy_(tensor)
    return filt


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a ``.safetensors`` file, or a torch file (``.pt``, ``.pth``,
    ``.bin``, ``.ckpt``; read with ``weights_only=True``) holding a state dict or a dict with
    a ``state_dict`` key (Lightning)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SRC {path} does not exist")
    if not path.is_file():
        raise ValueError(
            f"SRC {path} is not a file: `convert rtf` reads one checkpoint file "
            f"(.safetensors or {', '.join(TORCH_SUFFIXES)})"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_safetensors_file(path)
        return dict(load_file(str(path)))
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"SRC {path}: unknown checkpoint type {path.suffix!r}; expected .safetensors or "
            f"{', '.join(TORCH_SUFFIXES)}"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or corrupt zip/pickle, or a non-tensor pickle
        text = str(err).strip()
        raise ValueError(
            f"{path} cannot be read as a PyTorch checkpoint (read with weights_only=True): "
            f"{text.splitlines()[0] if text else type(err).__name__}"
        ) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    bad = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path} is not a state dict: non-tensor entries {bad[:5]}")
    return loaded


def _natural_key(prefix: str) -> tuple:
    return tuple((t.isdigit(), int(t) if t.isdigit() else t) for t in re.split(r"(\d+)", prefix))


def find_rtf_modules(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[list[tuple[str, dict[str, torch.Tensor]]], list[str]]:
    """The RTF modules of ``state_dict``, found by their ``ab`` key, in natural prefix order:
    ``[(prefix, {"ab": ..., "h_0": ..., "scalar": ...}), ...]`` (prefix ``""`` or ending in
    ``.``; only the keys present); and the other keys, sorted."""
    prefixes = sorted(
        (k[: -len("ab")] for k in state_dict if k == "ab" or k.endswith(".ab")), key=_natural_key
    )
    used: set[str] = set()
    modules = []
    for prefix in prefixes:
        params = {}
        for name in ("ab", "h_0", "scalar"):
            if prefix + name in state_dict:
                params[name] = state_dict[prefix + name]
                used.add(prefix + name)
        modules.append((prefix, params))
    return modules, sorted(set(state_dict) - used)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


@dataclass
class RtfConversion:
    """What :func:`convert_rtf` did: the model, the source prefixes of its layers' filters,
    the source keys not converted, where the rest came from, and the base config's filter
    fields that the reference replaced (``{field: (base, converted)}``)."""

    model: Any
    source: Path
    prefixes: list[str]
    ignored: list[str]
    base: Path | None
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    out: Path | None = None
    written: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        """One line per fact, for the CLI."""
        model, config = self.model, self.model.config
        n = sum(p.numel() for p in model.parameters())
        names = ", ".join(p.rstrip(".") or "no prefix" for p in self.prefixes)
        lines = [
            f"converted {len(self.prefixes)} RTF layer(s) of {self.source} ({names}) -> "
            f"{self.out} ({type(model).__name__}, {n:,} parameters, model_type "
            f"{config.model_type})"
        ]
        if self.base is not None:
            lines.append(f"other weights: loaded from {self.base}")
        else:
            lines.append("other weights: freshly initialised (--filters-only): not a trained model")
        for name, (old, new) in self.changed.items():
            lines.append(f"config: {name} {old!r} (base) -> {new!r} (reference)")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (", ..." if len(self.ignored) > 5 else "")
            lines.append(f"not converted: {len(self.ignored)} key(s) of SRC ({shown})")
        lines.extend(self.written)
        return lines


def _filter_config(args: dict[str, Any], constraint: str, convention: str) -> dict[str, Any]:
    return dict(
        state_size=args["state_size"],
        trunc_len=args["trunc_len"],
        num_a=args["num_a"],
        bidirectional=args["bidirectional"],
        init=args["init"],
        constraint=constraint,
        convention=convention,
        kernel_dropout=float(args["dropout"]),
    )


def _model_from_base(
    base: Path, args: dict[str, Any], n_layers: int, filter_fields: dict[str, Any]
) -> tuple[Any, dict[str, tuple[Any, Any]]]:
    import hazyzoo
    from hazyzoo.configuration.configuration_rtf import RtfConfig

    if not base.is_dir() or not (base / "config.json").is_file():
        raise FileNotFoundError(f"--base {base} is not a checkpoint directory with a config.json")
    base_config = check_json_file(base / "config.json")
    if base_config.get("model_type") != RtfConfig.model_type:
        raise ValueError(
            f"--base {base} has model_type {base_config.get('model_type')!r}, not "
            f"{RtfConfig.model_type!r}: the base must be a hazyzoo RTF checkpoint"
        )
    head = (base_config.get("architectures") or [None])[0]
    if head not in _HEADS:
        raise ValueError(f"--base {base} is a {head}; expected one of {_HEADS}")
    model_class = getattr(hazyzoo, head)
    loaded = model_class.from_pretrained(str(base))
    config = copy.deepcopy(loaded.config)
    for name, expected in (("hidden_size", args["d_model"]), ("num_hidden_layers", n_layers)):
        if getattr(config, name) != expected:
            what = "d_model" if name == "hidden_size" else "the number of RTF modules in SRC"
            raise ValueError(
                f"--base {base} has {name} = {getattr(config, name)} but {what} is {expected}"
            )
    if filter_fields["bidirectional"] and head == "RtfForCausalLM":
        raise ValueError(
            f"the RTF layers are bidirectional but --base {base} is an RtfForCausalLM; use an "
            "RtfForSequenceClassification base"
        )
    changed = {
        k: (getattr(config, k), v) for k, v in filter_fields.items() if getattr(config, k) != v
    }
    for name, value in filter_fields.items():
        setattr(config, name, value)
    if config.bidirectional:
        config.use_cache = False
    config.check_architecture()
    model = model_class(config)
    state = {k: v for k, v in loaded.state_dict().items() if ".mixer.filter." not in k}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if ".mixer.filter." not in k]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"--base {base} does not fit the converted model: missing {missing[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}"
        )
    return model, changed


def _fresh_model(args: dict[str, Any], n_layers: int, filter_fields: dict[str, Any]) -> Any:
    from hazyzoo import RtfConfig, RtfForCausalLM, RtfForSequenceClassification

    config = RtfConfig(
        hidden_size=args["d_model"],
        num_hidden_layers=n_layers,
        intermediate_size=4 * args["d_model"],
        use_cache=not filter_fields["bidirectional"],
        **filter_fields,
    )
    model_class = RtfForSequenceClassification if config.bidirectional else RtfForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model_class(config)


def _float32(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} has non-finite values")
    out = tensor.float()
    if not torch.equal(out.to(tensor.dtype), tensor):
        raise ValueError(
            f"{name} ({tensor.dtype}) cannot be held exactly in float32, the dtype of the "
            "converted model"
        )
    return out


def _card_note(conversion: RtfConversion) -> str:
    prefixes = [p.rstrip(".") for p in conversion.prefixes]
    where = (
        "a single layer's state dict (`ab`, `h_0`, `scalar`)"
        if prefixes == [""]
        else "the modules " + ", ".join(f"`{p}`" for p in prefixes)
    )
    head = (
        "Converted with `hazyzoo convert rtf` from standalone reference RTF layers "
        f"(ruke1ire/RTF), {where}: they are the filters (`model.layers.*.mixer.filter`: `ab`, "
        "`h_0`, `scalar`) of layers 0, 1, ... in that order."
    )
    if conversion.base is not None:
        return f"{head} Every other weight comes from the hazyzoo checkpoint `{conversion.base}`.\n"
    return (
        f"**This is not a trained model.** {head} Everything else (the embeddings, the mixers' "
        "output linears, the norms, the channel mixers and the head) was freshly initialised "
        "(`--filters-only`, seed 0): train it before use.\n"
    )


def _write_card(conversion: RtfConversion, out: Path, base_model: str | None, overwrite: bool):
    from hazyzoo.hub import write_model_card

    tags = ["rtf-filters-only"] if conversion.base is None else None
    card = write_model_card(
        out, base_model=base_model, tags=tags, replace_handwritten=overwrite, overwrite=True
    )
    text = card.read_text(encoding="utf-8")
    note = "\n## Conversion\n\n" + _card_note(conversion)
    marker = "\n## Architecture\n"
    text = text.replace(marker, note + marker, 1) if marker in text else text + note
    card.write_text(text, encoding="utf-8")
    return card


def convert_rtf(
    src: str | Path,
    out: str | Path | None = None,
    *,
    d_model: int,
    state_size: int,
    trunc_len: int,
    num_a: int | None = None,
    bidirectional: bool = False,
    init: str = "zeros",
    constraint: str = "no",
    rtf_class: str = "RTF",
    dropout: float = 0.0,
    base: str | Path | None = None,
    filters_only: bool = False,
    overwrite: bool = False,
    base_model: str | None = None,
    tokenizer: str | Path | None = None,
    remote_code: bool = False,
) -> RtfConversion:
    """Convert the reference RTF layers in the checkpoint file ``src`` (see the module
    docstring); save the hazyzoo checkpoint to ``out`` when given.

    The other weights come from ``base`` (a hazyzoo RTF checkpoint directory) or, with
    ``filters_only``, are freshly initialised; one of the two is required. ``out`` may be
    neither ``src`` nor ``base`` and must be empty or absent unless ``overwrite``. With
    ``out``: the tokenizer of ``tokenizer`` (a directory) or else of ``base`` is saved beside
    the weights, ``remote_code`` adds the modeling code, and the card (``base_model`` its
    source's Hub id) says where every weight came from. Nothing is written before everything
    has been checked. Returns an :class:`RtfConversion` (the model in eval mode, float32).
    """
    from hazyzoo.conversion.common import (
        check_tokenizer_fits,
        copy_tokenizer_files,
        load_tokenizer,
        save_tokenizer,
    )

    src = Path(src)
    base = Path(base) if base is not None else None
    if base is not None and filters_only:
        raise ValueError("give either --base or --filters-only, not both")
    if base is None and not filters_only:
        raise ValueError(
            "standalone RTF layers hold only the filters: give --base DIR (a hazyzoo RTF "
            "checkpoint to take the embeddings, output linears, norms and head from) or "
            "--filters-only (initialise them freshly: not a trained model)"
        )
    if out is not None:
        out = check_output_directory(src, out, overwrite=overwrite)
        if base is not None:
            check_output_directory(base, out, overwrite=overwrite)
    args = dict(
        d_model=d_model,
        state_size=state_size,
        trunc_len=trunc_len,
        num_a=num_a,
        bidirectional=bidirectional,
        init=init,
        constraint=constraint,
        rtf_class=rtf_class,
        dropout=dropout,
    )
    constraint, convention = _check_arguments(**args)
    modules, ignored = find_rtf_modules(load_checkpoint(src))
    if not modules:
        raise ValueError(
            f"{src} has no RTF parameters: no key is 'ab' or ends in '.ab' (the reference RTF "
            "layer's parameters are ab, h_0 and scalar)"
        )
    filters = [filter_from_reference(params, **args, prefix=p) for p, params in modules]
    filter_fields = _filter_config(args, constraint, convention)
    if base is not None:
        model, changed = _model_from_base(base, args, len(modules), filter_fields)
    else:
        model, changed = _fresh_model(args, len(modules), filter_fields), {}
    with torch.no_grad():
        for i, ((prefix, _), filt) in enumerate(zip(modules, filters, strict=True)):
            target = model.model.layers[i].mixer.filter
            for name, value in filt.state_dict().items():
                getattr(target, name).copy_(_float32(prefix + name, value))
    model.tie_weights()
    model.eval()
    result = RtfConversion(model, src, [p for p, _ in modules], ignored, base, changed, out)
    if out is None:
        return result
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    if tok is not None:
        check_tokenizer_fits(tok, model.config.vocab_size, tokenizer)
    model.save_pretrained(out)
    if tok is not None:
        files = save_tokenizer(tok, out)
        result.written.append(f"tokenizer: saved the tokenizer of {tokenizer} ({', '.join(files)})")
    elif base is not None and (copied := copy_tokenizer_files(base, out)):
        result.written.append(f"tokenizer: copied {', '.join(copied)} from {base}")
    else:
        result.written.append("tokenizer: none (pass --tokenizer DIR to add one)")
    if remote_code:
        from hazyzoo.remote_code import write_remote_code

        write_remote_code(out, model)
        result.written.append("remote code: wrote the modeling code and config.json auto_map")
    result.written.append(f"card: wrote {_write_card(result, out, base_model, overwrite)}")
    return result
