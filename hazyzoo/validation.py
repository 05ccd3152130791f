"""One validation layer for every hazyzoo model, converter and command.

Each check raises ``TypeError`` for a value of the wrong type (a float where an int is meant, a
float tensor of token ids) and ``ValueError`` for a value of the right type that is not allowed
(an index out of range, right padding, a truncated file). Every message names the argument,
field or file, shows the value given and says what is allowed. Nothing is cast, truncated or
padded: a check either passes the value through unchanged or raises.

Where to call what
------------------
Configs (in ``__post_init__``, or a method it calls; not in a ``validate_*`` method, whose
errors huggingface_hub's ``strict`` re-raises as ``StrictDataclassClassValidationError``, which
is neither a ``ValueError`` nor a ``TypeError``):
    * ``reject_unknown_config_kwargs(type(self), kwargs)`` first, on the extra keyword arguments
      ``__post_init__`` receives (before ``super().__post_init__(**kwargs)`` stores them);
    * ``check_int`` / ``check_positive`` / ``check_float`` / ``check_bool`` / ``check_choice``
      per field, ``check_layer_indices`` for layer lists (instead of ``int(i)`` casts),
      ``check_divides`` for head splits, ``check_token_id`` for ``pad``/``bos``/``eos``
      (``allow_list=True`` for ``eos_token_id``).
Model ``forward`` (cheap: shape/dtype checks plus at most one host sync per tensor):
    * ``check_exactly_one(input_ids=..., inputs_embeds=...)``;
    * ``check_input_ids(input_ids, self.get_input_embeddings().num_embeddings)`` or
      ``check_inputs_embeds(inputs_embeds, config.hidden_size)``;
    * ``check_cache_compatible(cache, expected_layers, batch)`` when a cache is passed in;
    * ``left = check_attention_mask(mask, batch, length, past, require_left_padding=...)``
      (True to continue a cache; the result says whether the mask is left-padded);
    * ``check_position_ids``, ``check_labels``, ``check_logits_to_keep`` when given.
``generate`` override:
    * ``check_generation_lengths(**kwargs)`` on the call's keyword arguments and
      ``check_generation_config(generation_config)`` on the effective generation config.
``from_pretrained`` / converters / commands:
    * ``check_json_file(path)`` then ``check_model_type(config_dict, expected, path)`` and
      ``reject_unknown_config_kwargs(ConfigClass, config_dict, source=path)``;
    * ``check_safetensors_file(path)`` before loading weights, ``check_state_dtypes(...)`` on a
      converted state dict or a written file;
    * ``check_loading_info(info, model_class=cls, path=path)`` on the dict that
      ``from_pretrained(..., output_loading_info=True)`` returns.

Under ``torch.compile`` (and ``torch.export``, ``torch.jit``/``torch.fx`` tracing, meta or fake
tensors and CUDA-graph capture) the tensor checks skip everything that reads tensor values
(id ranges, 0/1 masks, padding side, signs): that would need a host sync or break the graph.
Type, dtype, rank and shape checks always run; with ``fullgraph=True`` a failing one surfaces
as dynamo's ``Unsupported: Observed exception`` carrying the ``ValueError``'s message (torch's
behaviour for any exception raised in a traced region).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import math
import os
import re
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.fx._symbolic_trace as _fx_trace

try:
    from torch._subclasses.fake_tensor import FakeTensor as _FakeTensor
except ImportError:  # pragma: no cover - every supported torch has it
    _FakeTensor = None

__all__ = [
    "FLOAT_DTYPES",
    "CacheLayerSpec",
    "check_attention_mask",
    "check_bool",
    "check_cache_compatible",
    "check_choice",
    "check_divides",
    "check_exactly_one",
    "check_float",
    "check_generation_config",
    "check_generation_lengths",
    "check_input_ids",
    "check_inputs_embeds",
    "check_int",
    "check_json_file",
    "check_labels",
    "check_layer_indices",
    "check_loading_info",
    "check_logits_to_keep",
    "check_model_type",
    "check_position_ids",
    "check_positive",
    "check_safetensors_file",
    "check_state_dtypes",
    "check_token_id",
    "is_int",
    "is_number",
    "known_config_names",
    "reject_unknown_config_kwargs",
    "values_checkable",
]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _read(obj: Any, name: str) -> Any:
    """``obj[name]`` for a mapping (a missing key reads as None), else ``getattr(obj, name)``."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    """``repr`` of a value with its type, e.g. ``'10' (str)``."""
    return f"{_short_repr(value)} ({type(value).__name__})"


def is_int(value: Any) -> bool:
    """An int that is not a bool (``True`` is not a layer index; ``2.0`` is not an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool (NaN and inf included: bounds are checked apart)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds_text(low: Any, high: Any, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _int_value(
    value: Any,
    label: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    allowed = " ".join(filter(None, ["an integer", _bounds_text(minimum, maximum)]))
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{label} must be {allowed}, got None")
    if not is_int(value):
        hint = ""
        if isinstance(value, float) and value.is_integer():
            hint = f"; write {int(value)} without the decimal point"
        raise TypeError(f"{label} must be {allowed}, got {_shown(value)}{hint}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{label} must be {allowed}, got {value}")
    return value


def _float_value(
    value: Any,
    label: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    allow_none: bool = False,
) -> float | int | None:
    low, low_open = (gt, True) if gt is not None else (ge, False)
    high, high_open = (lt, True) if lt is not None else (le, False)
    bounds = _bounds_text(low, high, low_open, high_open)
    allowed = " ".join(filter(None, ["a finite number", bounds]))
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{label} must be {allowed}, got None")
    if not is_number(value):
        raise TypeError(f"{label} must be {allowed}, got {_shown(value)}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{label} must be {allowed}, got {value}")
    if (
        (gt is not None and not value > gt)
        or (ge is not None and not value >= ge)
        or (lt is not None and not value < lt)
        or (le is not None and not value <= le)
    ):
        raise ValueError(f"{label} must be {allowed}, got {value}")
    return value


# --------------------------------------------------------------------------------------------
# Config fields
# --------------------------------------------------------------------------------------------
def check_int(
    obj: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Require ``obj.<name>`` (or ``obj[name]`` for a mapping) to be an int in
    ``[minimum, maximum]``; bools and integral floats such as ``2.0`` are not ints."""
    return _int_value(
        _read(obj, name), name, minimum=minimum, maximum=maximum, allow_none=allow_none
    )


def check_positive(obj: Any, name: str) -> int:
    """Require ``obj.<name>`` to be an integer >= 1."""
    return _int_value(_read(obj, name), name, minimum=1)


def check_float(
    obj: Any,
    name: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    allow_none: bool = False,
) -> float | int | None:
    """Require ``obj.<name>`` to be a finite number (int or float, not bool, str, NaN or inf)
    within the given bounds (``gt``/``lt`` exclusive, ``ge``/``le`` inclusive)."""
    return _float_value(_read(obj, name), name, gt=gt, ge=ge, lt=lt, le=le, allow_none=allow_none)


def check_bool(obj: Any, name: str, *, allow_none: bool = False) -> bool | None:
    """Require ``obj.<name>`` to be ``True`` or ``False`` (not 0/1, not ``'true'``)."""
    value = _read(obj, name)
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        allowed = "True or False" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {allowed}, got {_shown(value)}")
    return value


def check_choice(obj: Any, name: str, choices: Collection[Any]) -> Any:
    """Require ``obj.<name>`` to be one of ``choices`` (compared with its type: ``True`` is not
    ``1``). ``TypeError`` when no choice has the value's type, else ``ValueError``."""
    value = _read(obj, name)
    options = list(choices)
    same_type = [c for c in options if type(c) is type(value)]
    if value in same_type:
        return value
    shown = ", ".join(repr(c) for c in options)
    if not same_type:
        raise TypeError(f"{name} must be one of {shown}, got {_shown(value)}")
    close = difflib.get_close_matches(str(value), [str(c) for c in same_type], n=1)
    hint = f"; did you mean {close[0]!r}?" if close and isinstance(value, str) else ""
    raise ValueError(f"{name} must be one of {shown}, got {value!r}{hint}")


def check_layer_indices(obj: Any, name: str, num_layers: int) -> list[int]:
    """Require ``obj.<name>`` to be a list (or tuple) of distinct int layer indices in
    ``[0, num_layers)``; ``1.7``, ``'1'``, ``True`` and ``None`` entries are ``TypeError``."""
    indices = _read(obj, name)
    if not isinstance(indices, (list, tuple)):
        raise TypeError(f"{name} must be a list of layer indices, got {_shown(indices)}")
    for position, index in enumerate(indices):
        if not is_int(index):
            raise TypeError(
                f"{name}[{position}] must be an integer layer index in [0, {num_layers}), "
                f"got {_shown(index)}"
            )
    out = [i for i in indices if not 0 <= i < num_layers]
    if out:
        raise ValueError(
            f"{name} has indices {out} out of range for num_hidden_layers={num_layers} "
            f"(allowed 0..{num_layers - 1})"
        )
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(f"{name} repeats layer indices {repeated}: {list(indices)}")
    return list(indices)


def check_token_id(
    obj: Any, name: str, vocab_size: int, *, allow_list: bool = False
) -> int | list[int] | None:
    """Require ``obj.<name>`` to be None or a token id in ``[0, vocab_size)``; with
    ``allow_list=True`` (for ``eos_token_id``) also a non-empty list of such ids."""
    value = _read(obj, name)
    if value is None:
        return None
    allowed = f"None or a token id in [0, {vocab_size})" + (
        " or a non-empty list of such ids" if allow_list else ""
    )
    if isinstance(value, (list, tuple)) and allow_list:
        if not value:
            raise ValueError(f"{name} must be {allowed}, got an empty list")
        for position, item in enumerate(value):
            if not is_int(item):
                raise TypeError(f"{name}[{position}] must be a token id, got {_shown(item)}")
        bad = [i for i in value if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(f"{name} must be {allowed}, got {list(value)} ({bad} out of range)")
        return list(value)
    if not is_int(value):
        raise TypeError(f"{name} must be {allowed}, got {_shown(value)}")
    if not 0 <= value < vocab_size:
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_divides(obj: Any, numerator: str, denominator: str) -> None:
    """Require ``obj.<numerator>`` to be divisible by ``obj.<denominator>`` (both ints, the
    denominator >= 1)."""
    num = _int_value(_read(obj, numerator), numerator)
    den = _int_value(_read(obj, denominator), denominator, minimum=1)
    if num % den:
        raise ValueError(
            f"{numerator} ({num}) must be divisible by {denominator} ({den}); "
            f"the remainder is {num % den}"
        )


# Keyword arguments ``PreTrainedConfig.__post_init__`` / ``from_dict`` consume, and the
# bookkeeping keys a saved config.json carries, beyond the attributes of a default config.
_CONFIG_BOOKKEEPING = frozenset(
    {
        "transformers_version",
        "architectures",
        "auto_map",
        "custom_pipelines",
        "_name_or_path",
        "name_or_path",
        "_commit_hash",
        "dtype",
        "torch_dtype",
        "model_type",
        "num_labels",
        "attn_implementation",
        "experts_implementation",
        "output_attentions",
        "per_layer_config",
        "quantization_config",
        "_attn_implementation_internal",
        "_experts_implementation_internal",
    }
)


@functools.lru_cache(maxsize=1)
def _base_config_names() -> frozenset[str]:
    from transformers import PreTrainedConfig

    base = PreTrainedConfig()
    return frozenset(vars(base)) | frozenset(base.to_dict()) | _CONFIG_BOOKKEEPING


@functools.lru_cache(maxsize=1)
def _generation_names() -> frozenset[str]:
    from transformers import GenerationConfig

    names = set(GenerationConfig().to_dict())
    defaults = getattr(GenerationConfig, "_get_default_generation_params", None)
    if defaults is not None:
        names |= set(defaults())
    return frozenset(names)


def _class_fields(config_class: type) -> list[str]:
    if dataclasses.is_dataclass(config_class):
        return [f.name for f in dataclasses.fields(config_class)]
    return list(inspect.signature(config_class.__init__).parameters)[1:]


@functools.lru_cache(maxsize=64)
def known_config_names(config_class: type) -> frozenset[str]:
    """Names a ``config_class(**kwargs)`` call or its config.json may carry: the class's
    dataclass fields, its ``attribute_map`` keys, settable properties (``rope_scaling`` only
    with a ``rope_parameters`` field), the attributes of a default
    ``transformers.PreTrainedConfig`` and the bookkeeping keys transformers writes."""
    names = set(_class_fields(config_class)) | set(getattr(config_class, "attribute_map", {}))
    for klass in config_class.__mro__:
        for attr, member in vars(klass).items():
            if isinstance(member, property) and member.fset is not None:
                names.add(attr)
    if "rope_parameters" not in names:
        # transformers' legacy ``rope_scaling`` setter feeds ``rope_parameters``; a config
        # without that field would silently drop it.
        names.discard("rope_scaling")
    return frozenset(names) | _base_config_names()


def reject_unknown_config_kwargs(
    config_class: type, kwargs_or_config: Any, *, source: str | os.PathLike | None = None
) -> None:
    """Raise ``TypeError`` for names that ``config_class`` does not know, with a ``did you
    mean ...?`` suggestion.

    ``kwargs_or_config`` is a mapping (the extra kwargs of ``__post_init__``, or a config.json
    dict), an iterable of names, or a config instance (its public attributes are checked;
    names starting with ``_`` are transformers' runtime bookkeeping and are skipped).
    Generation settings (``max_length``, ``temperature``, ...) get their own hint: they belong
    in the generation config. ``source`` (a file) is named in the message when given.
    """
    if isinstance(kwargs_or_config, Mapping):
        items = dict(kwargs_or_config)
    elif isinstance(kwargs_or_config, (list, tuple, set, frozenset)):
        items = {name: None for name in kwargs_or_config}
    else:
        items = {k: v for k, v in vars(kwargs_or_config).items() if not k.startswith("_")}
    known = known_config_names(config_class)
    unknown = [name for name in items if name not in known]
    if not unknown:
        return
    own = _class_fields(config_class)
    own_public = [n for n in own if n not in _base_config_names() and not n.startswith("_")]
    candidates = sorted(set(own) | set(getattr(config_class, "attribute_map", {})))
    where = f" in {source}" if source is not None else ""
    problems = []
    for name in unknown:
        value = items[name]
        shown = f"{name!r}" + (f" (value {_short_repr(value)})" if value is not None else "")
        if name in _generation_names():
            problems.append(
                f"{shown} is a generation setting, not a model config field: set it on "
                "model.generation_config or pass it to generate()"
            )
            continue
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        problems.append(f"{shown}{hint}")
    raise TypeError(
        f"{config_class.__name__} got unknown config field(s){where}: "
        + "; ".join(problems)
        + f" ({config_class.__name__}'s own fields: {', '.join(own_public)})"
    )


def check_model_type(
    config_dict: Mapping[str, Any], expected: str | Collection[str], path: str | os.PathLike
) -> str:
    """Require the config.json dict read from ``path`` to have ``model_type`` ``expected`` (or
    one of several); returns it. Names the file, the type found and the type expected."""
    wanted = [expected] if isinstance(expected, str) else sorted(expected)
    found = config_dict.get("model_type")
    if found in wanted:
        return found
    shown = " or ".join(repr(w) for w in wanted)
    if found is None:
        raise ValueError(f"{path} has no model_type; a {shown} checkpoint is expected")
    hint = ""
    if isinstance(found, str) and any(w.endswith(f"_{found}") for w in wanted):
        hint = (
            f" ({found!r} is another package's or the original release's model type: convert it "
            "with `hazyzoo convert`)"
        )
    raise ValueError(
        f"{path} holds a model_type {found!r} checkpoint, but {shown} is expected{hint}; "
        "load it with the matching model class"
    )


# --------------------------------------------------------------------------------------------
# Forward inputs
# --------------------------------------------------------------------------------------------
def _is_fake(tensor: torch.Tensor) -> bool:
    return _FakeTensor is not None and isinstance(tensor, _FakeTensor)


def _is_fx_tracing() -> bool:
    """fx symbolic tracing (without the warning ``is_fx_tracing`` logs on newer torch)."""
    traced = getattr(_fx_trace, "is_fx_symbolic_tracing", None)
    if traced is not None:
        return traced()
    return bool(getattr(_fx_trace, "_is_fx_tracing_flag", False))


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()  # pragma: no cover - torch < 2.3


def values_checkable(*tensors: torch.Tensor) -> bool:
    """Whether checks may read the values of ``tensors``: False under ``torch.compile`` /
    export, ``torch.jit`` or ``torch.fx`` tracing, for meta or fake tensors and while a CUDA
    graph is being captured (reading a value there needs a host sync or breaks the graph)."""
    if _is_compiling():
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if _is_fx_tracing():
        return False
    for tensor in tensors:
        if tensor.device.type == "meta" or _is_fake(tensor):
            return False
        if tensor.is_cuda and torch.cuda.is_current_stream_capturing():
            return False
    return True


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _require_tensor(value: Any, name: str, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({what}), got {type(value).__name__}")
    return value


def _require_integer_tensor(value: Any, name: str, what: str) -> torch.Tensor:
    tensor = _require_tensor(value, name, what)
    if not _is_integer_dtype(tensor.dtype):
        raise TypeError(
            f"{name} must have an integer dtype (e.g. torch.long) ({what}), got {tensor.dtype}; "
            "convert it explicitly if the values are whole numbers"
        )
    return tensor


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(mask.nonzero()[0].tolist())


def _index_text(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(str(i) for i in index)}]"


def check_exactly_one(**named: Any) -> str:
    """Require exactly one of the keyword arguments to be given (not None); returns its name.
    E.g. ``check_exactly_one(input_ids=input_ids, inputs_embeds=inputs_embeds)``."""
    given = [name for name, value in named.items() if value is not None]
    if len(given) != 1:
        names = " and ".join(named)
        got = f"got {' and '.join(given)}" if given else "got neither"
        raise ValueError(f"give exactly one of {names}, {got}")
    return given[0]


def check_input_ids(input_ids: Any, vocab_size: int, *, name: str = "input_ids") -> None:
    """Require a ``[batch, seq]`` integer tensor (batch, seq >= 1) of ids in ``[0, vocab_size)``.

    Float or bool ids are a ``TypeError``. The id range (one ``aminmax`` reduction) is skipped
    while values cannot be read (see :func:`values_checkable`).
    """
    what = "[batch, seq] token ids"
    ids = _require_integer_tensor(input_ids, name, what)
    if ids.dim() != 2:
        hint = f"; add a batch dimension with {name}[None]" if ids.dim() == 1 else ""
        raise ValueError(f"{name} must be {what}, got shape {tuple(ids.shape)}{hint}")
    if ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(
            f"{name} must hold at least one sequence of at least one token, "
            f"got shape {tuple(ids.shape)}"
        )
    if not values_checkable(ids):
        return
    low, high = torch.stack(list(torch.aminmax(ids))).tolist()
    if low < 0 or high >= vocab_size:
        where = _first_index((ids < 0) | (ids >= vocab_size))
        raise ValueError(
            f"{name} must be token ids in [0, {vocab_size}) (the vocabulary size is "
            f"{vocab_size}), got values from {low} to {high} "
            f"(first bad one: {_index_text(name, where)} = {ids[where].item()})"
        )


def check_inputs_embeds(
    inputs_embeds: Any, hidden_size: int, *, name: str = "inputs_embeds"
) -> None:
    """Require a floating ``[batch, seq, hidden_size]`` tensor with batch, seq >= 1
    (no value checks)."""
    what = f"[batch, seq, hidden_size={hidden_size}] embeddings"
    embeds = _require_tensor(inputs_embeds, name, what)
    if not embeds.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype ({what}), got {embeds.dtype}")
    if embeds.dim() != 3 or embeds.shape[-1] != hidden_size:
        raise ValueError(f"{name} must be {what}, got shape {tuple(embeds.shape)}")
    if embeds.shape[0] < 1 or embeds.shape[1] < 1:
        raise ValueError(
            f"{name} must hold at least one sequence of at least one position, "
            f"got shape {tuple(embeds.shape)}"
        )


def _row_text(row: torch.Tensor) -> str:
    values = row.to(torch.int64).tolist()
    if len(values) <= 24:
        return str(values)
    return f"[{', '.join(map(str, values[:10]))}, ..., {', '.join(map(str, values[-10:]))}]"


def check_attention_mask(
    attention_mask: Any,
    batch: int,
    length: int,
    past: int = 0,
    *,
    require_left_padding: bool = False,
    name: str = "attention_mask",
) -> bool:
    """Require a ``[batch, length]`` or ``[batch, past + length]`` mask of 0/1 values (bool,
    integer, or float 0./1.); with ``require_left_padding`` every row must be zeros then ones.

    Returns whether every row is zeros then ones (left padding or none), so a caller that
    allows other padding, e.g. a cache that will not be continued, learns it from the same host
    sync. Pass ``require_left_padding=True`` whenever the call continues from a cache or returns
    one to be continued: recurrent states cannot skip padding that comes after real tokens.
    The 0/1 and padding-side checks (two reductions, one host sync) are skipped while values
    cannot be read (see :func:`values_checkable`); the result is then True.
    """
    # No set and no formatting on the success path: under torch.compile the cached count
    # ``past`` is symbolic, and hashing or printing it would specialise the graph on its value
    # (a recompilation at every decode step).
    widths = [length] if past == 0 else [length, past + length]

    def what() -> str:
        return " or ".join(f"[{batch}, {w}]" for w in widths)

    if not isinstance(attention_mask, torch.Tensor):
        _require_tensor(attention_mask, name, f"[batch, seq] of 0/1, here {what()}")
    mask = attention_mask
    if mask.dtype.is_complex:
        raise TypeError(f"{name} must be a bool, integer or float tensor, got {mask.dtype}")
    if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] not in widths:
        raise ValueError(
            f"{name} must have shape {what()} (batch {batch}, {length} new and {past} cached "
            f"positions), got shape {tuple(mask.shape)}"
        )
    if not values_checkable(mask) or mask.numel() == 0:
        return True
    nothing = torch.zeros((), dtype=torch.bool, device=mask.device)
    not_binary = nothing if mask.dtype == torch.bool else ((mask != 0) & (mask != 1)).any()
    drops = mask[:, 1:] < mask[:, :-1]  # a 1 followed by a 0: right or middle padding
    bad_values, not_left = torch.stack([not_binary, drops.any()]).tolist()
    if bad_values:
        where = _first_index((mask != 0) & (mask != 1))
        raise ValueError(
            f"{name} must hold only 0 and 1 (1 = token, 0 = padding), got "
            f"{_index_text(name, where)} = {mask[where].item()}"
        )
    if not_left and require_left_padding:
        row, column = _first_index(drops)
        kind = "right" if not mask[row, column + 1 :].any() else "middle"
        raise ValueError(
            f"{name} row {row} is {kind}-padded ({_row_text(mask[row])}: a 0 after a 1 at "
            f"position {column + 1}); cached and batched generation need left padding "
            "(tokenizer.padding_side = 'left') because recurrent states cannot skip trailing "
            "pads"
        )
    return not not_left


def check_position_ids(
    position_ids: Any, batch: int, length: int, *, name: str = "position_ids"
) -> None:
    """Require an integer ``[batch, length]`` (or broadcastable ``[1, length]``) tensor of
    non-negative positions; the sign check is skipped while values cannot be read."""
    what = f"[{batch}, {length}] positions"
    pos = _require_integer_tensor(position_ids, name, what)
    if pos.dim() != 2 or pos.shape[0] not in (1, batch) or pos.shape[1] != length:
        raise ValueError(
            f"{name} must have shape [{batch}, {length}] (or [1, {length}]), "
            f"got shape {tuple(pos.shape)}"
        )
    if not values_checkable(pos) or pos.numel() == 0:
        return
    low = pos.min().item()
    if low < 0:
        where = _first_index(pos < 0)
        raise ValueError(
            f"{name} must be >= 0, got {_index_text(name, where)} = {pos[where].item()}"
        )


def check_labels(
    labels: Any,
    batch: int,
    length: int,
    vocab_size: int,
    *,
    ignore_index: int = -100,
    name: str = "labels",
) -> None:
    """Require an integer ``[batch, length]`` tensor whose entries are ids in
    ``[0, vocab_size)`` or ``ignore_index``; the value check is skipped while values cannot
    be read."""
    what = f"[{batch}, {length}] target ids"
    target = _require_integer_tensor(labels, name, what)
    if target.dim() != 2 or tuple(target.shape) != (batch, length):
        raise ValueError(
            f"{name} must have the input's shape [{batch}, {length}] (the shift happens inside "
            f"the loss), got shape {tuple(target.shape)}"
        )
    if not values_checkable(target) or target.numel() == 0:
        return
    bad = ((target < 0) | (target >= vocab_size)) & (target != ignore_index)
    if bad.any().item():
        where = _first_index(bad)
        raise ValueError(
            f"{name} must be ids in [0, {vocab_size}) or {ignore_index} (ignored), got "
            f"{_index_text(name, where)} = {target[where].item()}"
        )


def check_logits_to_keep(logits_to_keep: Any, length: int, *, name: str = "logits_to_keep") -> None:
    """Require an int >= 0 (0 keeps all positions) or a 1-D integer tensor of positions in
    ``[-length, length)``; the index range is skipped while values cannot be read."""
    if isinstance(logits_to_keep, torch.Tensor):
        keep = _require_integer_tensor(logits_to_keep, name, "1-D positions")
        if keep.dim() != 1:
            raise ValueError(
                f"{name} as a tensor must be 1-D positions, got shape {tuple(keep.shape)}"
            )
        if not values_checkable(keep) or keep.numel() == 0:
            return
        low, high = torch.stack(list(torch.aminmax(keep))).tolist()
        if low < -length or high >= length:
            raise ValueError(
                f"{name} positions must be in [-{length}, {length}), got {low} to {high}"
            )
        return
    _int_value(logits_to_keep, f"{name} (or a 1-D tensor of positions)", minimum=0)


# --------------------------------------------------------------------------------------------
# Caches
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CacheLayerSpec:
    """What a model expects of one cache layer.

    ``kind``: the cache-layer class the layer's mixer makes (``mixer.make_cache_layer()``).
    ``state_shapes``: per batch-first state name, its shape after the batch dimension, with
    ``None`` for a dimension of any size (e.g. the growing time axis of a key/value cache);
    states not listed are not compared.
    """

    kind: type
    state_shapes: Mapping[str, tuple[int | None, ...]] = dataclasses.field(default_factory=dict)


def _batch_states(layer: Any) -> dict[str, torch.Tensor]:
    """The batch-first state tensors of a cache layer, by name."""
    if hasattr(layer, "batch_state_tensors"):
        return dict(layer.batch_state_tensors())
    counters = set(getattr(layer, "counters", ()))
    if hasattr(layer, "state_tensors"):
        return {k: v for k, v in layer.state_tensors().items() if k not in counters}
    names = getattr(layer, "batch_states", None)
    if names is None:
        # The layout before ``batch_states``/``counters``: every name in ``_state_names`` was a
        # batch state except the ring buffer's one-element ``write_index``.
        names = getattr(layer, "_state_names", ())
        counters.add("write_index")
    states = {n: getattr(layer, n, None) for n in names if n not in counters}
    return {k: v for k, v in states.items() if isinstance(v, torch.Tensor)}


def check_cache_compatible(
    cache: Any, expected: Sequence[type | CacheLayerSpec], batch: int, *, name: str = "cache"
) -> None:
    """Require ``cache`` to have been made for this model and this batch.

    Protocol: ``cache.layers`` is a sequence of layers; each layer exposes its batch-first
    states through ``batch_state_tensors()`` (else ``state_tensors()`` minus ``counters``,
    else the ``batch_states``/``_state_names`` attribute lists) and ``get_seq_length()``.
    ``expected`` holds, per model layer, the cache-layer class or a :class:`CacheLayerSpec`.
    Raises ``TypeError`` for something that is not a layered cache or a layer of another kind,
    ``ValueError`` for another depth, another batch size, another state width, or layers that
    disagree on how many positions they have seen. Layers without state are not compared.
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, Sequence):
        raise TypeError(
            f"{name} must be a layered cache (model.make_cache()), got {type(cache).__name__}"
        )
    specs = [s if isinstance(s, CacheLayerSpec) else CacheLayerSpec(s) for s in expected]
    if len(layers) != len(specs):
        raise ValueError(
            f"{name} has {len(layers)} layers but this model has {len(specs)}: it was made by "
            "another model; make one with model.make_cache()"
        )
    for idx, (layer, spec) in enumerate(zip(layers, specs)):
        if not isinstance(layer, spec.kind):
            raise TypeError(
                f"{name}.layers[{idx}] is a {type(layer).__name__} but this model's layer {idx} "
                f"needs a {spec.kind.__name__}: the cache was made by another model; make one "
                "with model.make_cache()"
            )
    lengths = {idx: layer.get_seq_length() for idx, layer in enumerate(layers)}
    # compared pairwise, not through a set: hashing the counts would make torch.compile
    # specialise on them and recompile at every decode step
    first = next(iter(lengths.values()), None)
    if any(n != first for n in lengths.values()):
        raise ValueError(
            f"{name} layers disagree on the positions they have seen ({lengths}); "
            "the cache is corrupt or was advanced by hand"
        )
    for idx, (layer, spec) in enumerate(zip(layers, specs)):
        for state, tensor in _batch_states(layer).items():
            if tensor.shape[0] != batch:
                raise ValueError(
                    f"{name}.layers[{idx}].{state} holds batch {tensor.shape[0]} but the input "
                    f"has batch {batch}; a cache serves one batch (start a new one, or use "
                    "cache.batch_select_indices / batch_repeat_interleave)"
                )
            want = spec.state_shapes.get(state)
            got = tuple(tensor.shape[1:])
            if want is not None and (
                len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got))
            ):
                shown = tuple("*" if w is None else w for w in want)
                raise ValueError(
                    f"{name}.layers[{idx}].{state} has shape [batch, *{got}] but this model "
                    f"needs [batch, *{shown}]: the cache was made by a model of another width"
                )


# --------------------------------------------------------------------------------------------
# Generation arguments
# --------------------------------------------------------------------------------------------
_POSITIVE_GENERATION_INTS = (
    "max_new_tokens",
    "max_length",
    "num_return_sequences",
    "num_beams",
    "prefill_chunk_size",
)
# ``top_k=0`` is transformers' way to turn top-k filtering off.
_NON_NEGATIVE_GENERATION_INTS = ("min_new_tokens", "min_length", "top_k")
_GENERATION_FLOATS: dict[str, dict[str, float]] = {
    "temperature": {"gt": 0.0},
    "top_p": {"ge": 0.0, "le": 1.0},
    "min_p": {"ge": 0.0, "le": 1.0},
    "repetition_penalty": {"gt": 0.0},
}


def _check_generation_values(values: Mapping[str, Any], prefix: str) -> None:
    for key in _POSITIVE_GENERATION_INTS:
        _int_value(values.get(key), prefix + key, minimum=1, allow_none=True)
    for key in _NON_NEGATIVE_GENERATION_INTS:
        _int_value(values.get(key), prefix + key, minimum=0, allow_none=True)
    for key, bounds in _GENERATION_FLOATS.items():
        _float_value(values.get(key), prefix + key, allow_none=True, **bounds)
    pairs = [("min_new_tokens", "max_new_tokens")]
    if values.get("max_new_tokens") is None:  # else max_new_tokens, not max_length, decides
        pairs.append(("min_length", "max_length"))
    for low, high in pairs:
        if values.get(low) is not None and values.get(high) is not None:
            if values[low] > values[high]:
                raise ValueError(
                    f"{prefix}{low} ({values[low]}) must be <= {prefix}{high} ({values[high]})"
                )


def check_generation_lengths(**kwargs: Any) -> None:
    """Check the length/count/sampling arguments among ``generate``'s keyword arguments.

    ``max_new_tokens``, ``max_length``, ``num_return_sequences``, ``num_beams`` and
    ``prefill_chunk_size`` must be ints >= 1; ``min_new_tokens``, ``min_length`` and ``top_k``
    ints >= 0 (``top_k=0`` disables top-k); ``temperature``/``repetition_penalty`` finite > 0,
    ``top_p``/``min_p`` in [0, 1]; each min <= its max. None and other keys are ignored.
    """
    _check_generation_values(kwargs, "")


def check_generation_config(generation_config: Any) -> None:
    """Apply :func:`check_generation_lengths` to a ``GenerationConfig`` (or a dict of one)."""
    names = (*_POSITIVE_GENERATION_INTS, *_NON_NEGATIVE_GENERATION_INTS, *_GENERATION_FLOATS)
    if isinstance(generation_config, Mapping):
        values = dict(generation_config)
    else:
        values = {key: getattr(generation_config, key, None) for key in names}
    _check_generation_values(values, "generation_config.")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
# Bytes per element of the safetensors dtypes (sub-byte and unknown dtypes are not size-checked).
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
_SAFETENSORS_DTYPE_NAMES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
}
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit


def check_safetensors_file(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a safetensors file from its header alone and return the parsed header.

    ``ValueError`` naming the file when it is shorter than its header says (truncated), is not
    a safetensors file, has a header that is not a JSON object, or has tensor entries whose
    dtype/shape/data_offsets are malformed, overlap, leave gaps, or point past the end of the
    file. A missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(
                f"{path} is not a safetensors file: {size} bytes, too short for the 8-byte "
                "header length"
            )
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_SAFETENSORS_HEADER:
            raise ValueError(
                f"{path} is not a safetensors file: its first 8 bytes give a header length of "
                f"{header_len} bytes (the format allows {_MAX_SAFETENSORS_HEADER})"
            )
        if 8 + header_len > size:
            raise ValueError(
                f"{path} is truncated or not a safetensors file: the header needs "
                f"{header_len} bytes after the first 8 but the file has {size} bytes in all"
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not a safetensors file: its header is not JSON ({err})"
        ) from err
    if not isinstance(header, dict):
        raise ValueError(
            f"{path} is not a safetensors file: its header is a JSON "
            f"{type(header).__name__}, not an object"
        )
    data_len = size - 8 - header_len
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{path}: __metadata__ must map strings to strings, got {metadata!r}")
    spans = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: header entry {key!r} must be an object, got {entry!r}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise ValueError(f"{path}: tensor {key!r} has no dtype string, got {dtype!r}")
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            raise ValueError(
                f"{path}: tensor {key!r} must have a shape of non-negative ints, got {shape!r}"
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ValueError(
                f"{path}: tensor {key!r} must have data_offsets [begin, end] with "
                f"0 <= begin <= end, got {offsets!r}"
            )
        begin, end = offsets
        if end > data_len:
            raise ValueError(
                f"{path} is truncated: tensor {key!r} needs data bytes {begin}..{end} but the "
                f"file holds {data_len} bytes of data after its header"
            )
        itemsize = _SAFETENSORS_ITEMSIZE.get(dtype)
        if itemsize is not None and math.prod(shape) * itemsize != end - begin:
            raise ValueError(
                f"{path}: tensor {key!r} ({dtype}, shape {shape}) needs "
                f"{math.prod(shape) * itemsize} bytes but its data_offsets span {end - begin}"
            )
        spans.append((begin, end, key))
    position = 0
    for begin, end, key in sorted(spans):
        if begin != position:
            raise ValueError(
                f"{path}: tensor {key!r} starts at data byte {begin} but the previous tensor "
                f"ends at {position} (overlapping or missing data)"
            )
        position = end
    if position != data_len:
        raise ValueError(
            f"{path}: the tensors cover {position} data bytes but the file holds {data_len} "
            "after its header (trailing bytes or a damaged header)"
        )
    return header


def check_json_file(path: str | os.PathLike, *, require_object: bool = True) -> Any:
    """Read and parse a JSON file; ``ValueError`` naming the file (and the line and column of
    a syntax error) when it is not UTF-8, not valid JSON or, with ``require_object``, not a
    JSON object. A missing file raises ``FileNotFoundError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text, so not JSON ({err})") from err
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from err
    if require_object and not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got a JSON {type(value).__name__}")
    return value


def _key_text(entry: Any) -> str:
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        key, checkpoint, model = entry
        return f"{key} (checkpoint {tuple(checkpoint)} vs model {tuple(model)})"
    return str(entry)


def check_loading_info(
    loading_info: Mapping[str, Any],
    *,
    model_class: type | str,
    path: str | os.PathLike,
    ignore_missing: Iterable[str] = (),
    ignore_unexpected: Iterable[str] = (),
    limit: int = 5,
) -> None:
    """Raise ``ValueError`` when ``from_pretrained(..., output_loading_info=True)`` reported
    missing, unexpected or mismatched keys or error messages (the first ``limit`` of each are
    listed), instead of transformers' logged warning and randomly initialised weights.

    ``ignore_missing`` / ``ignore_unexpected`` are regular expressions (``re.fullmatch``) for
    keys a model recomputes or knowingly drops.
    """
    ignored = {
        "missing_keys": [re.compile(p) for p in ignore_missing],
        "unexpected_keys": [re.compile(p) for p in ignore_unexpected],
    }
    sections = []
    for field in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        entries = loading_info.get(field) or ()
        names = sorted(_key_text(e) for e in entries)
        patterns = ignored.get(field, [])
        names = [n for n in names if not any(p.fullmatch(n) for p in patterns)]
        if names:
            more = f" and {len(names) - limit} more" if len(names) > limit else ""
            sections.append(f"{field} ({len(names)}): {', '.join(names[:limit])}{more}")
    if sections:
        cls_name = model_class if isinstance(model_class, str) else model_class.__name__
        raise ValueError(
            f"{path} does not fit {cls_name}: " + "; ".join(sections) + ". The checkpoint was "
            "saved by another architecture or size, or is damaged (convert reference "
            "checkpoints with `hazyzoo convert`)"
        )


def check_state_dtypes(
    state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike,
    allowed: Collection[torch.dtype] = FLOAT_DTYPES,
    *,
    exempt: Iterable[str] = (),
) -> None:
    """Raise ``TypeError`` for tensors whose dtype is not in ``allowed`` (by default floating
    point: integer or bool tensors where weights are meant).

    Takes a state dict or a safetensors path (then only the header is read, via
    :func:`check_safetensors_file`). ``exempt``: regular expressions (``re.fullmatch``) for
    keys that may hold other dtypes, e.g. integer buffers.
    """
    patterns = [re.compile(p) for p in exempt]
    if isinstance(state_dict_or_path, Mapping):
        source = "state dict"
        dtypes = {}
        for key, tensor in state_dict_or_path.items():
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"state dict entry {key!r} must be a tensor, got {_shown(tensor)}")
            dtypes[key] = tensor.dtype
        allowed_names = {str(d).removeprefix("torch.") for d in allowed}
        shown = {k: str(d).removeprefix("torch.") for k, d in dtypes.items()}
    else:
        source = str(state_dict_or_path)
        header = check_safetensors_file(state_dict_or_path)
        shown = {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}
        allowed_names = {_SAFETENSORS_DTYPE_NAMES.get(d, str(d)) for d in allowed}
    bad = sorted(
        (k, d)
        for k, d in shown.items()
        if d not in allowed_names and not any(p.fullmatch(k) for p in patterns)
    )
    if bad:
        listed = ", ".join(f"{k} ({d})" for k, d in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise TypeError(
            f"{source}: {len(bad)} tensor(s) have a dtype outside {sorted(allowed_names)}: "
            f"{listed}{more}"
        )
