"""``hazyzoo-lm-eval``: EleutherAI's lm-evaluation-harness, with the hazyzoo models known.

``lm_eval --model hf --model_args pretrained=DIR`` builds the model with transformers' Auto
classes, which know a hazyzoo ``model_type`` only once hazyzoo has been imported; lm-eval never
imports it. This entry point imports hazyzoo (registering its configs and models) and then runs
lm-eval's own command line with the arguments unchanged::

    hazyzoo-lm-eval --model hf --model_args pretrained=path/to/checkpoint --tasks hellaswag
    python -m hazyzoo.lm_eval run --model hf ...   # the same

lm-eval is optional: ``pip install 'hazyzoo[eval]'`` (or ``pip install lm-eval``). A checkpoint
exported with remote code (``hazyzoo convert ... --remote-code``) also runs under plain
``lm_eval`` with ``--model_args pretrained=DIR,trust_remote_code=True``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Sequence

PROG = "hazyzoo-lm-eval"
_INSTALL_HINT = "install it with: pip install 'hazyzoo[eval]' (or: pip install lm-eval)"


def _lm_eval_cli() -> Callable[[], object]:
    """lm-eval's console-script function (its ``lm_eval`` entry point, else ``__main__``)."""
    for entry in importlib.metadata.entry_points(group="console_scripts"):
        if entry.name in ("lm_eval", "lm-eval") and entry.value.startswith("lm_eval"):
            return entry.load()
    return importlib.import_module("lm_eval.__main__").cli_evaluate


def main(argv: Sequence[str] | None = None) -> int:
    """Import hazyzoo, then run lm-eval's CLI on ``argv`` (default: ``sys.argv[1:]``).

    Returns lm-eval's exit status; 1 with a one-line message when lm-eval is not installed.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if importlib.util.find_spec("lm_eval") is None:
        print(f"{PROG}: error: lm-eval is not installed; {_INSTALL_HINT}", file=sys.stderr)
        return 1
    import hazyzoo  # noqa: F401  (registers the hazyzoo model types with the Auto classes)

    try:
        cli = _lm_eval_cli()
    except ImportError as err:
        print(f"{PROG}: error: lm-eval cannot be imported: {err}", file=sys.stderr)
        return 1
    saved = sys.argv
    sys.argv = [PROG, *args]  # lm-eval's CLI reads sys.argv itself
    try:
        result = cli()
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
