"""LoCoV1: long-document retrieval, nDCG@10 per task and the unweighted average over tasks.

LoCoV1 (Saad-Falcon et al. 2024, the M2-BERT retrieval paper) is 12 retrieval tasks over long
documents; each is a corpus, queries and binary relevance judgements, loaded by
:mod:`hazyzoo.datasets_scripts.locov1` (which needs ``datasets``, so it is imported only when a
task is loaded by name). :func:`evaluate_locov1` encodes each task with a
:class:`~hazyzoo.evaluation.retrieval.TextEncoder`, retrieves by cosine similarity and scores
nDCG@10 with ``pytrec_eval`` (:mod:`hazyzoo.evaluation.retrieval` states the conventions);
the benchmark score is the plain mean over tasks, as in the paper.

``hazyzoo eval locov1 --model DIR`` (:func:`add_arguments`, :func:`run_from_args`) loads a
model with transformers' Auto classes after ``import hazyzoo``, prints the table and writes
``locov1_results.json`` and a bar chart ``locov1_results.png`` (the chart needs matplotlib).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hazyzoo.datasets_scripts.locov1_names import TASKS
from hazyzoo.evaluation.retrieval import (
    DTYPES,
    PADDING,
    HFTextEncoder,
    RetrievalResult,
    TextEncoder,
    check_task,
    evaluate_retrieval,
)

logger = logging.getLogger(__name__)

LOCOV1_TASKS = TASKS  # the published task names, in the paper's order
RESULTS_JSON = "locov1_results.json"
RESULTS_PNG = "locov1_results.png"


@dataclass
class LoCoV1Results:
    """Per-task :class:`RetrievalResult` and their unweighted mean (the LoCoV1 score)."""

    results: dict[str, RetrievalResult]
    average: float
    k: int = 10
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: metric, average, per-task results, settings."""
        return {
            "benchmark": "LoCoV1",
            "metric": f"ndcg@{self.k}",
            "average": self.average,
            "tasks": {name: r.to_dict() for name, r in self.results.items()},
            "settings": dict(self.settings),
        }


# --- tasks --------------------------------------------------------------------------------


def resolve_task_names(tasks: str | Sequence[str] | None) -> list[str]:
    """Task names from ``None``/``"all"`` (every task), ``"a,b"`` or a list; unknown names and
    repeats are ValueErrors."""
    if tasks is None or (isinstance(tasks, str) and tasks.strip() == "all"):
        return list(LOCOV1_TASKS)
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    if not names or any(not n for n in names):
        raise ValueError(f"tasks {tasks!r} holds an empty name; give names separated by commas")
    for name in names:
        if name not in LOCOV1_TASKS:
            raise ValueError(f"unknown LoCoV1 task {name!r}; choose from {list(LOCOV1_TASKS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"tasks {names} name a task more than once")
    return names


def _load_task(name: str, **kwargs: Any) -> Any:
    """One task from the data module (imported here: it needs ``datasets``)."""
    try:
        from hazyzoo.datasets_scripts.locov1 import load_task
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"loading the LoCoV1 task {name!r} needs hazyzoo.datasets_scripts.locov1 and the "
            f"'datasets' package (pip install 'hazyzoo[data]'): {err}"
        ) from err
    return load_task(name, **kwargs)


def limit_queries_of(task: Any, limit: int | None) -> Any:
    """``task`` with only its first ``limit`` queries (and their qrels); the corpus is kept
    whole, so the retrieval problem per query is unchanged."""
    if limit is None:
        return task
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit_queries must be an int >= 1 or None, got {limit!r}")
    if len(task.queries) <= limit:
        return task
    qids = list(task.queries)[:limit]
    queries = {q: task.queries[q] for q in qids}
    qrels = {q: task.qrels[q] for q in qids if q in task.qrels}
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return dataclasses.replace(task, queries=queries, qrels=qrels)
    return SimpleNamespace(name=task.name, corpus=task.corpus, queries=queries, qrels=qrels)


def load_locov1_tasks(
    tasks: str | Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    queries_source: Any = None,
    documents_source: Any = None,
    cache_dir: Any = None,
    limit_queries: int | None = None,
) -> list[Any]:
    """The tasks to evaluate, checked: names (or ``"all"``/``None``) are loaded with
    :func:`hazyzoo.datasets_scripts.locov1.load_task`; task objects (``name``, ``corpus``,
    ``queries``, ``qrels``) are taken as given. Everything is loaded before anything is
    encoded, so bad data fails early."""
    if isinstance(tasks, Mapping):
        tasks = list(tasks.values())
    if tasks is None or isinstance(tasks, str):
        items: list[Any] = resolve_task_names(tasks)
    else:
        items = list(tasks)
        if not items:
            raise ValueError("tasks is empty; give task names, task objects or None for all")
        named = [t for t in items if isinstance(t, str)]
        if named:
            resolve_task_names(named)
    loaded = []
    for item in items:
        if isinstance(item, str):
            item = _load_task(
                item,
                queries_source=queries_source,
                documents_source=documents_source,
                cache_dir=cache_dir,
            )
        task = limit_queries_of(item, limit_queries)
        check_task(task)
        loaded.append(task)
    names = [t.name for t in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks {names} name a task more than once")
    return loaded


# --- the runner ---------------------------------------------------------------------------


def evaluate_locov1(
    encoder: TextEncoder,
    tasks: str | Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    queries_source: Any = None,
    documents_source: Any = None,
    cache_dir: Any = None,
    batch_size: int = 8,
    k: int = 10,
    top_k: int = 100,
    limit_queries: int | None = None,
    query_encoder: TextEncoder | None = None,
    show_progress: bool = False,
) -> LoCoV1Results:
    """nDCG@k of ``encoder`` on LoCoV1 tasks and their unweighted average.

    ``tasks``: ``None`` or ``"all"`` (the 12 tasks), names, or task objects (see
    :func:`load_locov1_tasks`); the sources and ``cache_dir`` go to the data module's
    ``load_task``. ``limit_queries`` keeps each task's first N queries (a quick run).
    """
    loaded = load_locov1_tasks(
        tasks,
        queries_source=queries_source,
        documents_source=documents_source,
        cache_dir=cache_dir,
        limit_queries=limit_queries,
    )
    results: dict[str, RetrievalResult] = {}
    for task in loaded:
        result = evaluate_retrieval(
            encoder,
            task,
            batch_size=batch_size,
            top_k=top_k,
            k=k,
            query_encoder=query_encoder,
            show_progress=show_progress,
        )
        logger.info("LoCoV1 %s: nDCG@%d = %.4f", task.name, k, result.ndcg)
        results[task.name] = result
    average = sum(r.ndcg for r in results.values()) / len(results)
    settings = {
        "batch_size": batch_size,
        "k": k,
        "top_k": top_k,
        "limit_queries": limit_queries,
        "queries_source": None if queries_source is None else str(queries_source),
        "documents_source": None if documents_source is None else str(documents_source),
    }
    return LoCoV1Results(results=results, average=average, k=k, settings=settings)


def format_table(results: LoCoV1Results) -> str:
    """A text table: one row per task (queries, documents, documents the encoder truncated,
    nDCG@k) and the Average row (the unweighted mean over tasks)."""
    width = max([len("Average"), *(len(name) for name in results.results)])
    metric = f"nDCG@{results.k}"
    lines = [f"{'task':<{width}} {'queries':>8} {'documents':>10} {'truncated':>10} {metric:>8}"]
    for name, r in results.results.items():
        cut = "-" if r.truncated_documents is None else str(r.truncated_documents)
        lines.append(
            f"{name:<{width}} {r.num_queries:>8} {r.num_documents:>10} {cut:>10} {r.ndcg:>8.4f}"
        )
    lines.append(f"{'Average':<{width}} {'':>8} {'':>10} {'':>10} {results.average:>8.4f}")
    return "\n".join(lines)


def plot_results(results: LoCoV1Results, path: str | Path) -> bool:
    """A bar chart of nDCG@k per task and the average; False (nothing written) without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return False
    names = [*results.results, "Average"]
    values = [r.ndcg for r in results.results.values()] + [results.average]
    colors = ["tab:blue"] * len(results.results) + ["tab:orange"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1.5), 4.0))
    bars = ax.bar(range(len(names)), values, color=colors)
    for bar, value in zip(bars, values):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            value + 0.01,
            f"{value:.3f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"nDCG@{results.k}")
    model = results.settings.get("model")
    ax.set_title(f"LoCoV1 nDCG@{results.k}" + (f": {Path(str(model)).name}" if model else ""))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_results(
    results: LoCoV1Results, out_dir: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """Write ``locov1_results.json`` and ``locov1_results.png`` into ``out_dir``; returns the
    paths written. Without matplotlib the PNG is skipped with a warning. Existing result files
    are replaced only with ``overwrite=True``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output directory {out} exists and is not a directory")
    json_path, png_path = out / RESULTS_JSON, out / RESULTS_PNG
    if not overwrite:
        for path in (json_path, png_path):
            if path.exists():
                raise FileExistsError(f"{path} exists (pass overwrite=True / --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results.to_dict(), indent=2) + "\n", encoding="utf-8")
    written = [json_path]
    if plot_results(results, png_path):
        written.append(png_path)
    else:
        warnings.warn(
            f"matplotlib is not installed, so {png_path} was not drawn "
            "(pip install 'hazyzoo[demo]')",
            RuntimeWarning,
            stacklevel=2,
        )
    return written


# --- the command --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo eval locov1``."""
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="a saved model (e.g. hazyzoo M2-BERT)"
    )
    parser.add_argument(
        "--tokenizer", default=None, metavar="DIR", help="tokenizer (default: the model's)"
    )
    parser.add_argument(
        "--tasks", default="all", help=f"'all' or comma-separated: {','.join(LOCOV1_TASKS)}"
    )
    parser.add_argument("--queries-source", default=None, metavar="PATH_OR_ID")
    parser.add_argument("--documents-source", default=None, metavar="PATH_OR_ID")
    parser.add_argument("--cache-dir", default=None, metavar="DIR", help="datasets cache")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per text (default: the model's/tokenizer's maximum)",
    )
    parser.add_argument(
        "--padding",
        choices=list(PADDING),
        default=None,
        help="max_length (what the released M2-BERT retrievers expect) or longest (default: "
        "longest for a padding-invariant model, else max_length)",
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--limit-queries", type=int, default=None, help="the first N queries per task"
    )
    parser.add_argument("--output-dir", default="locov1_results", metavar="DIR")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace result files in --output-dir"
    )


def load_encoder_model(
    model_dir: str | Path, *, dtype: str = "float32", device: str | None = None
) -> tuple[Any, str]:
    """The model of ``model_dir`` and the Auto class that loaded it: after ``import hazyzoo``
    (which registers the zoo), ``AutoModelForTextEncoding`` when the config type is
    registered there, else ``AutoModel``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding

    import hazyzoo  # noqa: F401  (registers the zoo models with the Auto classes)

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {list(DTYPES)}")
    try:
        config = AutoConfig.from_pretrained(model_dir)
        auto = AutoModelForTextEncoding
        if type(config) not in AutoModelForTextEncoding._model_mapping:
            auto = AutoModel
        model = auto.from_pretrained(model_dir, dtype=DTYPES[dtype])
    except (OSError, ValueError) as err:
        raise OSError(f"--model {model_dir}: cannot load a model: {err}") from err
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), auto.__name__


def run_from_args(args: argparse.Namespace) -> int:
    """``hazyzoo eval locov1``: evaluate, print the table, write JSON and PNG; returns 0."""
    from transformers import AutoTokenizer

    for name in ("batch_size", "max_length", "limit_queries"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.padding is not None and args.padding not in PADDING:
        raise ValueError(f"unknown --padding {args.padding!r}; choose from {list(PADDING)}")
    if args.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"unknown --dtype {args.dtype!r}; choose float32 or bfloat16")
    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model} is not a directory")
    if args.tokenizer is not None and not Path(args.tokenizer).exists():
        raise FileNotFoundError(f"--tokenizer {args.tokenizer} does not exist")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} exists and is not a directory")
    if not args.overwrite:
        for name in (RESULTS_JSON, RESULTS_PNG):
            if (out / name).exists():
                raise FileExistsError(f"{out / name} exists (pass --overwrite to replace it)")
    names = resolve_task_names(args.tasks)
    # The data first: a bad source fails before the (slow) model load.
    tasks = load_locov1_tasks(
        names,
        queries_source=args.queries_source,
        documents_source=args.documents_source,
        cache_dir=args.cache_dir,
        limit_queries=args.limit_queries,
    )
    model, auto_class = load_encoder_model(args.model, dtype=args.dtype, device=args.device)
    tokenizer_dir = args.tokenizer or args.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError) as err:
        raise OSError(f"tokenizer {tokenizer_dir}: cannot load it: {err}") from err
    padding = args.padding
    if padding is None:  # pads cost time; only a padding-invariant model can skip them
        padding = "longest" if getattr(model.config, "padding_invariant", False) else "max_length"
    encoder = HFTextEncoder(model, tokenizer, max_length=args.max_length, padding=padding)
    results = evaluate_locov1(encoder, tasks, batch_size=args.batch_size, k=10, show_progress=True)
    results.settings.update(
        {
            "model": str(args.model),
            "tokenizer": str(tokenizer_dir),
            "auto_class": auto_class,
            "pooling": encoder.pooling,
            "padding": encoder.padding,
            "max_length": encoder.max_length,
            "device": str(encoder.device),
            "dtype": args.dtype,
            "limit_queries": args.limit_queries,
            "queries_source": args.queries_source,
            "documents_source": args.documents_source,
        }
    )
    print(
        f"LoCoV1: model {args.model} ({auto_class}, embedding from {encoder.pooling}, "
        f"padding {encoder.padding}, max_length {encoder.max_length})"
    )
    print(format_table(results))
    for path in write_results(results, out, overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0


__all__ = [
    "LOCOV1_TASKS",
    "RESULTS_JSON",
    "RESULTS_PNG",
    "LoCoV1Results",
    "add_arguments",
    "evaluate_locov1",
    "format_table",
    "limit_queries_of",
    "load_encoder_model",
    "load_locov1_tasks",
    "plot_results",
    "resolve_task_names",
    "run_from_args",
    "write_results",
]
