"""What every converter shares: safe output directories, reference config checks, tokenizers.

* :func:`check_output_directory` refuses to write into the source (also through a symlink or
  another spelling of the same path) and into a non-empty directory unless told to.
* :class:`ConfigKey` and :func:`check_reference_keys` classify every key of a reference
  ``config.json``: converted, harmless (training-only or a kernel choice) or fixed (the
  converter implements one value; any other changes the model's outputs and is an error).
  Unknown keys are errors too: the converter cannot tell whether they change the maths.
* :func:`copy_tokenizer_files` and :func:`save_tokenizer` put a tokenizer beside the weights.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hazyzoo.hub import TOKENIZER_DIRS, TOKENIZER_FILES
from hazyzoo.validation import is_int, is_number

REQUIRED = object()  # the default of a key the reference cannot do without


def check_output_directory(src: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Return ``out`` as a Path after checking that writing a checkpoint there is safe.

    Raises ``ValueError`` when ``out`` is ``src`` itself (whatever the spelling), and
    ``FileExistsError`` when ``out`` is a non-empty directory and ``overwrite`` is false.
    """
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or (out.exists() and src.exists() and out.samefile(src)):
        raise ValueError(f"OUT {out} is the source directory {src}: choose another output")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"OUT {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"OUT {out} is not empty; use --overwrite (overwrite=True) to write into it anyway"
        )
    return out


# --------------------------------------------------------------------------------------------
# Reference config keys
# --------------------------------------------------------------------------------------------


_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (is_int, "an integer"),
    "int?": (lambda v: v is None or is_int(v), "an integer or null"),
    "number": (is_number, "a number"),
    "number?": (lambda v: v is None or is_number(v), "a number or null"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "int list?": (
        lambda v: v is None or (isinstance(v, list) and all(is_int(i) for i in v)),
        "a list of integers or null",
    ),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "dict?": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "any": (lambda v: True, "anything"),
}


@dataclass(frozen=True)
class ConfigKey:
    """How a converter treats one key of a reference ``config.json``.

    ``role``: ``"converted"`` (translated into the hazyzoo config), ``"harmless"`` (does not
    change the converted model's outputs) or ``"fixed"`` (only the values in ``allowed`` are
    implemented). ``kind`` names the JSON type (see ``_TYPES``); ``default`` is the value the
    reference uses when the key is absent; ``why`` says what the key does.
    """

    role: str
    kind: str
    default: Any = None
    allowed: tuple = ()
    why: str = ""

    def __post_init__(self) -> None:
        if self.role not in ("converted", "harmless", "fixed"):
            raise ValueError(f"unknown role {self.role!r}")
        if self.kind not in _TYPES:
            raise ValueError(f"unknown kind {self.kind!r}")


def check_reference_keys(
    config: Mapping[str, Any],
    keys: Mapping[str, ConfigKey],
    where: str,
    *,
    skip_fixed: Iterable[str] = (),
) -> dict[str, Any]:
    """Check ``config`` against ``keys``; return every key's value (the default if absent).

    ``where`` names the dict in messages (``"config.json"``, ``"config.json alt_mixer"``).
    ``skip_fixed`` lists fixed keys that do not matter for this model (e.g. attention settings
    of a model without attention layers); they are still type-checked when present.
    Raises ``ValueError``/``TypeError`` naming the key, its value and what is allowed.
    """
    unknown = sorted(set(config) - set(keys))
    if unknown:
        raise ValueError(
            f"{where} has keys the converter does not know: {unknown}; it cannot tell whether "
            "they change the model's outputs (remove them from config.json if they do not)"
        )
    skip = set(skip_fixed)
    values: dict[str, Any] = {}
    for name, spec in keys.items():
        present = name in config
        if not present and spec.default is REQUIRED:
            raise ValueError(f"{where} lacks the required key {name!r}")
        value = config[name] if present else spec.default
        check, expected = _TYPES[spec.kind]
        if present and not check(value):
            raise TypeError(
                f"{where} {name} = {value!r}: expected {expected}, got {type(value).__name__}"
            )
        if spec.role == "fixed" and name not in skip and value not in spec.allowed:
            origin = "" if present else " (the reference's default when the key is absent)"
            allowed = " or ".join(repr(a) for a in spec.allowed)
            raise ValueError(
                f"{where} {name} = {value!r}{origin} changes the model's maths and is not "
                f"supported by the converter: allowed {allowed}"
                + (f" ({spec.why})" if spec.why else "")
            )
        values[name] = value
    return values


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def copy_tokenizer_files(src: str | Path, out: str | Path) -> list[str]:
    """Copy the tokenizer files of ``src`` (those ``AutoTokenizer`` reads) into ``out``.

    Returns the names copied (empty when ``src`` has none).
    """
    src, out = Path(src), Path(out)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
            copied.append(name)
    for name in TOKENIZER_DIRS:
        if (src / name).is_dir():
            shutil.copytree(src / name, out / name, dirs_exist_ok=True)
            copied.append(name + "/")
    return copied


def check_source_tokenizer(src: str | Path, vocab_size: int) -> str | None:
    """Check the tokenizer files of ``src`` before anything is written.

    Returns ``None`` when they load with ``AutoTokenizer`` (or there are none), else a warning
    saying why not (the files are still worth copying); raises ``ValueError`` when the tokenizer
    makes more ids than the model has.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as staging:
        if not copy_tokenizer_files(src, staging):
            return None
        try:
            tokenizer = load_tokenizer(staging)
        except ValueError as err:
            return str(err).replace(staging, str(src))
        check_tokenizer_fits(tokenizer, vocab_size, src)
    return None


def load_tokenizer(path: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` with a one-line error naming ``path``."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} not found")
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as err:  # transformers raises many kinds here (OSError, ValueError, ...)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load a tokenizer from {path}: {message}") from err


def check_tokenizer_fits(tokenizer: Any, vocab_size: int, source: str | Path) -> None:
    """Raise ``ValueError`` when ``tokenizer`` makes ids the model's vocabulary lacks."""
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer of {source} has {len(tokenizer)} tokens but the model's vocabulary "
            f"has {vocab_size}"
        )


def save_tokenizer(tokenizer: Any, out: str | Path) -> list[str]:
    """``tokenizer.save_pretrained(out)``; returns the names of the files written."""
    return sorted(Path(p).name for p in tokenizer.save_pretrained(str(out)))
