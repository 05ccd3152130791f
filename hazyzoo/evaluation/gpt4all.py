"""``hazyzoo eval gpt4all``: a causal LM on the GPT4All task list, through lm-eval's Python API.

The GPT4All suite (as in the GPT4All technical report and the papers that reuse its table) is
seven zero-shot multiple-choice tasks of EleutherAI's lm-evaluation-harness, scored by
log-likelihood of each answer choice: :data:`GPT4ALL_TASKS`. lm-eval reports ``acc`` (the
choice with the highest log-likelihood) for all of them and also ``acc_norm`` (log-likelihood
divided by the choice's length in characters) for the ones with answers of varying length.

The **average** is the mean over tasks of one metric per task (:data:`AVERAGE_METRIC`, the way
the GPT4All average is usually computed):

===============  ==========
task             metric
===============  ==========
arc_challenge    acc_norm
arc_easy         acc_norm
boolq            acc
hellaswag        acc_norm
openbookqa       acc_norm
piqa             acc_norm
winogrande       acc
===============  ==========

boolq and winogrande report ``acc`` only. Any other task (``--tasks``/``include_path`` tasks)
counts with ``acc_norm`` when it reports it, else ``acc`` (:func:`average_metric`).

The model is either an object already built (a ``transformers`` causal LM, a zoo model such as
``hazyzoo.BasedForCausalLM``, with its tokenizer), wrapped in lm-eval's ``HFLM``, or a
checkpoint directory / Hub id, which ``HFLM`` loads with ``AutoModelForCausalLM`` once hazyzoo is
imported (this module imports it, so zoo checkpoints load; plain ``lm_eval --model hf`` does not
know them). lm-eval is optional: ``pip install 'hazyzoo[eval]'``.

Datasets come from the Hub the first time (lm-eval downloads them through ``datasets``); local
YAML task folders (``include_path``) run offline. In such a YAML, a relative
``dataset_kwargs.data_files`` path is resolved by ``datasets`` against the current directory,
not against the YAML's folder: use absolute paths.

``hazyzoo eval gpt4all --model DIR`` prints a table (task | metric | value | stderr, then the
average) and, with ``--out DIR``, writes ``DIR/gpt4all_results.json``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import importlib.util
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AVERAGE_METRIC",
    "GPT4ALL_TASKS",
    "RESULTS_JSON",
    "UnknownTaskError",
    "add_arguments",
    "average_metric",
    "build_task_manager",
    "evaluate_gpt4all",
    "format_table",
    "run_from_args",
]

GPT4ALL_TASKS = (
    "arc_challenge",
    "arc_easy",
    "boolq",
    "hellaswag",
    "openbookqa",
    "piqa",
    "winogrande",
)
# The metric each GPT4All task contributes to the average (see the module docstring).
AVERAGE_METRIC = {
    "arc_challenge": "acc_norm",
    "arc_easy": "acc_norm",
    "boolq": "acc",
    "hellaswag": "acc_norm",
    "openbookqa": "acc_norm",
    "piqa": "acc_norm",
    "winogrande": "acc",
}
METRICS = ("acc", "acc_norm")
RESULTS_JSON = "gpt4all_results.json"
DEFAULT_BATCH_SIZE = 8
_INSTALL_HINT = "install it with: pip install 'hazyzoo[eval]' (or: pip install lm-eval)"


class UnknownTaskError(ValueError):
    """A task name that lm-eval's task index (built-in tasks plus ``include_path``) lacks."""


def _require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise ImportError(f"lm-eval is not installed; {_INSTALL_HINT}")


def average_metric(task: str, reported: Sequence[str] | dict) -> str | None:
    """The metric ``task`` contributes to the average: :data:`AVERAGE_METRIC` for the GPT4All
    tasks, else ``acc_norm`` when ``reported`` has it, else ``acc``; ``None`` when the task
    reports neither (or lacks its mapped metric)."""
    preferred = AVERAGE_METRIC.get(task)
    if preferred is not None:
        return preferred if preferred in reported else None
    for metric in ("acc_norm", "acc"):
        if metric in reported:
            return metric
    return None


def build_task_manager(
    include_path: str | Path | Sequence[str | Path] | None = None,
    include_defaults: bool = True,
) -> Any:
    """lm-eval's ``TaskManager`` over its built-in tasks (``include_defaults``; indexing the
    ~15k built-in YAMLs takes several seconds) plus the YAML folders of ``include_path``."""
    _require_lm_eval()
    from lm_eval.tasks import TaskManager

    if isinstance(include_path, (str, Path)):
        include_path = [include_path]
    paths = [str(Path(p)) for p in include_path or ()]
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"include path {p} does not exist")
    return TaskManager(include_path=paths or None, include_defaults=include_defaults)


def _check_tasks(tasks: Sequence[str], task_manager: Any) -> list[str]:
    names = list(tasks)
    if not names:
        raise ValueError("no tasks given")
    known = set(task_manager.all_tasks)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"task names must be strings, got {name!r}")
        if name in known or (name.endswith((".yaml", ".yml")) and Path(name).is_file()):
            continue
        close = difflib.get_close_matches(name, task_manager.all_tasks, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise UnknownTaskError(
            f"unknown lm-eval task {name!r} ({hint}a task of your own needs its YAML folder "
            "passed with --include-path / include_path=)"
        )
    return names


def _resolve_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _make_lm(model: Any, tokenizer: Any, batch_size: int | str, device: str | None) -> Any:
    """An lm-eval ``LM`` for ``model``: an ``LM`` as is, a model object or a path/Hub id
    wrapped in ``HFLM`` (causal backend)."""
    from lm_eval.api.model import LM
    from lm_eval.models.huggingface import HFLM

    import hazyzoo  # noqa: F401  (registers the zoo model types with the Auto classes)

    if isinstance(model, LM):
        return model
    if isinstance(model, (str, Path)):
        where = str(model)
        local = Path(where).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise FileNotFoundError(f"cannot load model {where}: no config.json in it")
        if not local.exists() and (local.is_absolute() or where.startswith((".", "~"))):
            raise FileNotFoundError(f"cannot load model {where}: no such directory")
        try:
            return HFLM(
                pretrained=str(local) if local.exists() else where,
                tokenizer=str(tokenizer) if isinstance(tokenizer, Path) else tokenizer,
                backend="causal",
                device=_resolve_device(device),
                batch_size=batch_size,
            )
        except (OSError, ValueError, KeyError) as err:
            text = " ".join(str(err).split()) or type(err).__name__
            raise OSError(f"cannot load model {where!r} as a causal LM: {text}") from err
    import torch

    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            "model must be a checkpoint directory or Hub id, a transformers causal LM or an "
            f"lm-eval LM, got {type(model).__name__}"
        )
    if tokenizer is None and not getattr(model, "name_or_path", ""):
        raise ValueError("an in-memory model needs its tokenizer: pass tokenizer=")
    if device:
        model = model.to(device)
    return HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size)


def _number(value: Any) -> float | None:
    """A metric or stderr as a float; ``None`` for lm-eval's ``"N/A"`` and NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _task_metrics(row: dict) -> dict[str, float | None]:
    """``acc``/``acc_norm`` and their stderrs from one task's row of lm-eval's results (its
    keys are ``"<metric>,<filter>"``; the ``none`` filter first)."""
    out: dict[str, float | None] = {}
    for metric in METRICS:
        keys = [k for k in row if k.split(",")[0] == metric]
        keys.sort(key=lambda k: (k != f"{metric},none", k))
        if keys:
            key = keys[0]
            out[metric] = _number(row[key])
            out[f"{metric}_stderr"] = _number(row.get(key.replace(metric, f"{metric}_stderr", 1)))
    return out


def evaluate_gpt4all(
    model: Any,
    tokenizer: Any = None,
    tasks: Sequence[str] = GPT4ALL_TASKS,
    num_fewshot: int = 0,
    limit: int | float | None = None,
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    include_path: str | Path | Sequence[str | Path] | None = None,
    log_samples: bool = False,
    *,
    task_manager: Any = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks`` with ``lm_eval.simple_evaluate``.

    Args:
        model: a checkpoint directory or Hub id (loaded by lm-eval's ``HFLM`` with
            ``AutoModelForCausalLM``, zoo models included), a causal LM object (wrapped in
            ``HFLM``; put on ``device`` when given) or an lm-eval ``LM``.
        tokenizer: the tokenizer (object, or directory/id); default: the model's own
            (required for an in-memory model that was never saved).
        tasks: lm-eval task names (default :data:`GPT4ALL_TASKS`) or YAML file paths.
        num_fewshot: few-shot examples per prompt (GPT4All: 0).
        limit: at most this many documents per task (a float < 1: that fraction).
        batch_size: an int, or lm-eval's ``"auto"``.
        device: e.g. ``"cpu"``, ``"cuda:0"`` (default: cuda when available for a path; where
            the model already is for an object).
        include_path: YAML task folder(s) added to lm-eval's task index.
        log_samples: keep lm-eval's per-document records under ``"samples"``.
        task_manager: an lm-eval ``TaskManager`` to use instead of building one (the built-in
            index takes seconds to build; see :func:`build_task_manager`).

    Returns:
        ``{"tasks": {task: {"acc", "acc_stderr", ["acc_norm", "acc_norm_stderr"],
        "average_metric", "num_samples", "num_fewshot", "version"}}, "average": {"value",
        "metrics": {task: metric}, "excluded": [...]}, "versions": {"lm_eval", "transformers",
        "hazyzoo", "tasks"}, "config": {...}, "seconds"}`` and ``"samples"`` with
        ``log_samples``. Metrics are fractions in [0, 1]; a stderr lm-eval could not compute is
        ``None``.

    Raises:
        UnknownTaskError: a task lm-eval's index lacks (close matches in the message).
        OSError: the model cannot be loaded.
        ImportError: lm-eval is not installed.
    """
    _require_lm_eval()
    import lm_eval

    if num_fewshot < 0:
        raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    if task_manager is None:
        task_manager = build_task_manager(include_path)
    names = _check_tasks(tasks, task_manager)
    start = time.perf_counter()
    lm = _make_lm(model, tokenizer, batch_size, device)
    raw = lm_eval.simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=task_manager,
        log_samples=log_samples,
    )
    if raw is None:  # a non-zero rank under a distributed launch
        return {}
    per_task: dict[str, dict[str, Any]] = {}
    for task, row in raw["results"].items():
        if task not in raw.get("n-samples", {}):  # a group's aggregate row
            continue
        metrics = _task_metrics(row)
        n = raw["n-samples"][task]
        per_task[task] = {
            **metrics,
            "average_metric": average_metric(task, metrics),
            "num_samples": int(n.get("effective", n.get("original", 0))),
            "num_fewshot": raw.get("n-shot", {}).get(task),
            "version": raw.get("versions", {}).get(task),
        }
    used = {
        t: r["average_metric"]
        for t, r in per_task.items()
        if r["average_metric"] and r.get(r["average_metric"]) is not None
    }
    values = [per_task[t][m] for t, m in used.items()]
    report: dict[str, Any] = {
        "tasks": per_task,
        "average": {
            "value": sum(values) / len(values) if values else None,
            "metrics": used,
            "excluded": sorted(set(per_task) - set(used)),
            "definition": "mean over tasks of acc_norm for arc_challenge, arc_easy, hellaswag, "
            "openbookqa, piqa and acc for boolq, winogrande (other tasks: acc_norm when "
            "reported, else acc)",
        },
        "versions": {
            "lm_eval": _version("lm_eval"),
            "transformers": _version("transformers"),
            "hazyzoo": _hazyzoo_version(),
            "tasks": {t: r["version"] for t, r in per_task.items()},
        },
        "config": {
            "model": _model_name(model),
            "tasks": names,
            "num_fewshot": num_fewshot,
            "limit": limit,
            "batch_size": batch_size,
            "device": str(getattr(lm, "device", device)),
            "include_path": _paths(include_path),
        },
        "seconds": time.perf_counter() - start,
    }
    if log_samples:
        report["samples"] = raw.get("samples", {})
    return report


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _hazyzoo_version() -> str:
    import hazyzoo

    return hazyzoo.__version__


def _model_name(model: Any) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    config = getattr(model, "config", None)
    name = getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")
    return name or type(model).__name__


def _paths(include_path: Any) -> list[str]:
    if include_path is None:
        return []
    if isinstance(include_path, (str, Path)):
        return [str(include_path)]
    return [str(p) for p in include_path]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(report: dict[str, Any]) -> str:
    """task | metric | value | stderr, one row per metric (``*``: the metric averaged), then the
    average."""
    rows = [("task", "metric", "value", "stderr")]
    for task, r in report["tasks"].items():
        for metric in METRICS:
            if metric in r:
                mark = "*" if r["average_metric"] == metric else " "
                rows.append(
                    (task, f"{metric}{mark}", _fmt(r[metric]), _fmt(r.get(f"{metric}_stderr")))
                )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return " | ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        )

    out = [line(rows[0]), "-+-".join("-" * w for w in widths)]
    out += [line(row) for row in rows[1:]]
    average = report["average"]
    n = len(average["metrics"])
    out.append(f"average ({n} task{'s' if n != 1 else ''}, * metrics): {_fmt(average['value'])}")
    if average["excluded"]:
        out.append(f"not averaged (no acc/acc_norm): {', '.join(average['excluded'])}")
    return "\n".join(out)


def _batch_size(text: str) -> int | str:
    if text.startswith("auto"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _limit(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value if value < 1 else int(value)


def _tasks(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo eval gpt4all``."""
    parser.add_argument(
        "--model", required=True, metavar="DIR_OR_ID", help="checkpoint directory or Hub id"
    )
    parser.add_argument(
        "--tasks",
        type=_tasks,
        default=list(GPT4ALL_TASKS),
        metavar="T1,T2",
        help=f"comma-separated lm-eval tasks (default: {','.join(GPT4ALL_TASKS)})",
    )
    parser.add_argument(
        "--include-path",
        action="append",
        default=None,
        metavar="DIR",
        help="folder of lm-eval task YAMLs to add (repeatable)",
    )
    parser.add_argument(
        "--limit", type=_limit, default=None, help="documents per task (< 1: a fraction)"
    )
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument(
        "--batch-size", type=_batch_size, default=DEFAULT_BATCH_SIZE, help="an integer or auto"
    )
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument(
        "--out", default=None, metavar="DIR", help=f"write DIR/{RESULTS_JSON} there"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``hazyzoo eval gpt4all``: print the table, write the JSON with ``--out``."""
    if args.num_fewshot < 0:
        raise ValueError("--num-fewshot must be >= 0")
    out = None if args.out is None else Path(args.out)
    if out is not None and out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    task_manager = build_task_manager(args.include_path)
    report = evaluate_gpt4all(
        args.model,
        tasks=args.tasks,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        include_path=args.include_path,
        task_manager=task_manager,
    )
    print(format_table(report))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULTS_JSON).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {out / RESULTS_JSON}")
    return 0
