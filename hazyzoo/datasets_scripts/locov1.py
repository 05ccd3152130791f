"""LoCoV1, the long-context retrieval benchmark of Saad-Falcon et al. (2024), as a ``datasets``
builder.

LoCoV1 is 12 retrieval tasks whose documents are long (legal opinions, government reports,
meeting transcripts, papers, ...), published as two Hub datasets with one split, ``test``:

* ``hazyresearch/LoCoV1-Queries``: ``qid``, ``query``, ``answer_pids`` (the relevant
  documents' ``pid`` values), ``dataset`` (the task);
* ``hazyresearch/LoCoV1-Documents``: ``pid``, ``passage``, ``dataset``.

Relevance is binary: a document is relevant to a query iff its ``pid`` is in the query's
``answer_pids``. One builder config per task (:data:`TASKS`) plus ``"all"``; the field
``subset`` picks what a build yields (split ``test``):

* ``"corpus"``: ``pid``, ``passage``, ``dataset``;
* ``"queries"`` (default): ``qid``, ``query``, ``answer_pids``, ``dataset``;
* ``"qrels"``: ``qid``, ``pid``, ``score`` (1), ``dataset``: one row per relevant pair.

A task's config keeps the rows whose ``dataset`` is that task (the Hub files hold all 12);
``"all"`` keeps every row. Rows of a ``dataset`` that is not one of the 12 tasks are an error,
as are missing columns, repeated ids, a query naming a pid its task lacks, and a task without
queries or documents: nothing is dropped silently.

Sources (``queries_source`` / ``documents_source``): a Hub dataset id (read with
``datasets.load_dataset(id, split="test")``) or a local copy: a parquet, JSON-lines or JSON
file, a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (split
``test``), or a folder holding such files (read in sorted order). A local source's size and
modification time are part of the config, so an edited file is re-read rather than served from
the cache.

    from hazyzoo.datasets_scripts import load
    corpus = load("locov1", "gov_report", subset="corpus")["test"]
    task = load_task("gov_report")  # corpus, queries and relevance judgements at once
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from hazyzoo.datasets_scripts.locov1_names import DOCUMENTS_HUB_ID, QUERIES_HUB_ID, TASKS

__all__ = [
    "DOCUMENTS_HUB_ID",
    "QUERIES_HUB_ID",
    "SUBSETS",
    "TASKS",
    "LoCoV1",
    "LoCoV1Config",
    "RetrievalTask",
    "load_task",
    "load_tasks",
]

SUBSETS = ("queries", "corpus", "qrels")
_QUERY_COLUMNS = ("qid", "query", "answer_pids", "dataset")
_DOCUMENT_COLUMNS = ("pid", "passage", "dataset")
_FILE_SUFFIXES = (".parquet", ".jsonl", ".json")

_CITATION = """\
@article{saadfalcon2024benchmarking,
  title={Benchmarking and Building Long-Context Retrieval Models with LoCo and M2-BERT},
  author={Saad-Falcon, Jon and Fu, Daniel Y. and Arora, Simran and Guha, Neel and R{\\'e},
          Christopher},
  journal={arXiv:2402.07440}, year={2024}
}
"""

_FEATURES = {
    "corpus": datasets.Features(
        {
            "pid": datasets.Value("string"),
            "passage": datasets.Value("string"),
            "dataset": datasets.Value("string"),
        }
    ),
    "queries": datasets.Features(
        {
            "qid": datasets.Value("string"),
            "query": datasets.Value("string"),
            "answer_pids": datasets.Sequence(datasets.Value("string")),
            "dataset": datasets.Value("string"),
        }
    ),
    "qrels": datasets.Features(
        {
            "qid": datasets.Value("string"),
            "pid": datasets.Value("string"),
            "score": datasets.Value("int32"),
            "dataset": datasets.Value("string"),
        }
    ),
}


def _fingerprint(source: str | os.PathLike | None) -> str | None:
    """Size and modification time of every file of a local source (None for a Hub id)."""
    if source is None or not Path(source).exists():
        return None
    path = Path(source)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return ";".join(
        f"{p.relative_to(path.parent)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files
    )


@dataclass
class LoCoV1Config(datasets.BuilderConfig):
    """One LoCoV1 task (or ``"all"``), the subset a build yields, and where the data is."""

    subset: str = "queries"
    queries_source: str | None = None
    documents_source: str | None = None
    source_fingerprint: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is wrong (run again by the
        builder: datasets sets keyword overrides on a copy without ``__post_init__``)."""
        if self.name not in (*TASKS, "all"):
            raise ValueError(f"unknown LoCoV1 task {self.name!r}; valid: {[*TASKS, 'all']}")
        if self.subset not in SUBSETS:
            raise ValueError(f"LoCoV1Config.subset must be one of {SUBSETS}, got {self.subset!r}")
        for field in ("queries_source", "documents_source"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ValueError(f"LoCoV1Config.{field} must be a path or a Hub id, got {value!r}")
            if value is not None:
                setattr(self, field, os.fspath(value))


def _read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {number} is not JSON: {err}") from err
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} must hold JSON objects (one row each)")
    return rows


def _read_source(source: str, what: str) -> list[dict[str, Any]]:
    """The rows of a LoCoV1 source (see the module docstring)."""
    path = Path(source)
    if path.is_file():
        if path.suffix not in _FILE_SUFFIXES:
            raise ValueError(
                f"{what} {source}: unknown file type {path.suffix!r}; expected {_FILE_SUFFIXES}"
            )
        return _read_file(path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if "test" not in loaded:
                    raise ValueError(f"{what} {source} has splits {list(loaded)}, not 'test'")
                loaded = loaded["test"]
            return loaded.to_list()
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _FILE_SUFFIXES)
        if not files:
            raise ValueError(f"{what} {source} holds no {_FILE_SUFFIXES} files")
        return [row for f in files for row in _read_file(f)]
    if path.is_absolute() or source.startswith((".", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"{what} {source} does not exist (and is not a Hub id)")
    return datasets.load_dataset(source, split="test").to_list()


def _check_columns(rows: list[dict[str, Any]], columns: tuple[str, ...], what: str) -> None:
    if not rows:
        raise ValueError(f"{what} has no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(
            f"{what} lacks the columns {missing} (it has {sorted(rows[0])}); LoCoV1's schema "
            f"is {list(_QUERY_COLUMNS)} for queries and {list(_DOCUMENT_COLUMNS)} for documents"
        )


def _select(rows: list[dict[str, Any]], task: str, what: str) -> list[dict[str, Any]]:
    """The rows of ``task`` (all rows for ``"all"``), after checking every row's task."""
    unknown = sorted({str(r["dataset"]) for r in rows} - set(TASKS))
    if unknown:
        raise ValueError(f"{what} has rows of unknown tasks {unknown[:5]}; LoCoV1's are {TASKS}")
    return rows if task == "all" else [r for r in rows if r["dataset"] == task]


def _load_rows(config: LoCoV1Config) -> tuple[list[dict], list[dict]]:
    """(queries, documents) of the config's task, validated."""
    queries_source = config.queries_source or QUERIES_HUB_ID
    documents_source = config.documents_source or DOCUMENTS_HUB_ID
    queries = _read_source(queries_source, "queries_source")
    documents = _read_source(documents_source, "documents_source")
    _check_columns(queries, _QUERY_COLUMNS, f"queries_source {queries_source}")
    _check_columns(documents, _DOCUMENT_COLUMNS, f"documents_source {documents_source}")
    queries = _select(queries, config.name, f"queries_source {queries_source}")
    documents = _select(documents, config.name, f"documents_source {documents_source}")
    if config.name == "all":  # the tasks the sources hold (a local copy may hold some)
        tasks = tuple(t for t in TASKS if t in {r["dataset"] for r in queries + documents})
    else:
        tasks = (config.name,)
    pids: dict[str, set[str]] = {t: set() for t in tasks}
    for row in documents:
        if row["pid"] in pids[row["dataset"]]:
            raise ValueError(f"documents_source repeats pid {row['pid']!r} in {row['dataset']}")
        pids[row["dataset"]].add(row["pid"])
    qids: dict[str, set[str]] = {t: set() for t in tasks}
    for row in queries:
        task, qid = row["dataset"], row["qid"]
        if qid in qids[task]:
            raise ValueError(f"queries_source repeats qid {qid!r} in {task}")
        qids[task].add(qid)
        answers = row["answer_pids"]
        if isinstance(answers, str) or not answers:
            raise ValueError(
                f"query {qid!r} ({task}): answer_pids must be a non-empty list of pids, "
                f"got {answers!r}"
            )
        absent = [p for p in answers if p not in pids[task]]
        if absent:
            raise ValueError(
                f"query {qid!r} ({task}) names pids {absent[:5]} that are not documents of "
                f"{task} in documents_source"
            )
    for task in tasks:
        if not qids[task] or not pids[task]:
            lacking = "queries" if not qids[task] else "documents"
            raise ValueError(
                f"task {task} has no {lacking} in the sources (a local copy may hold only "
                "some tasks: ask for those)"
            )
    return queries, documents


class LoCoV1(datasets.GeneratorBasedBuilder):
    """LoCoV1's 12 tasks (and ``"all"``), as corpus, queries or relevance judgements."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = LoCoV1Config
    BUILDER_CONFIGS = [LoCoV1Config(name=task) for task in (*TASKS, "all")]
    DEFAULT_CONFIG_NAME = "all"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A local source's files are part of the config, so the cache follows edits to them.
        for field in ("queries_source", "documents_source"):
            if kwargs.get(field) is not None:
                kwargs[field] = os.fspath(kwargs[field])
        fingerprint = "|".join(
            str(_fingerprint(kwargs.get(f))) for f in ("queries_source", "documents_source")
        )
        if fingerprint != "None|None":
            kwargs["source_fingerprint"] = fingerprint
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()  # _info runs inside datasets' __init__, before ours resumes
        return datasets.DatasetInfo(
            description="LoCoV1 long-context retrieval: " + self.config.subset,
            features=_FEATURES[self.config.subset],
            citation=_CITATION,
            homepage="https://hazyresearch.stanford.edu/blog/2024-01-11-m2-bert-retrieval",
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        # Read and check the sources here: an error raised while generating would reach the
        # caller wrapped in datasets' DatasetGenerationError.
        self._rows = _load_rows(self.config)
        return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={})]

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        queries, documents = self._rows
        subset = self.config.subset
        if subset == "corpus":
            for i, row in enumerate(documents):
                yield i, {k: row[k] for k in _DOCUMENT_COLUMNS}
        elif subset == "queries":
            for i, row in enumerate(queries):
                yield (
                    i,
                    {
                        **{k: row[k] for k in _QUERY_COLUMNS},
                        "answer_pids": list(row["answer_pids"]),
                    },
                )
        else:
            i = 0
            for row in queries:
                for pid in row["answer_pids"]:
                    yield i, {"qid": row["qid"], "pid": pid, "score": 1, "dataset": row["dataset"]}
                    i += 1


@dataclass(frozen=True)
class RetrievalTask:
    """One LoCoV1 task, ready for retrieval: documents and queries in source order, and the
    relevance judgements (binary)."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _build(task: str, subset: str, **kwargs: Any) -> datasets.Dataset:
    cache_dir = kwargs.pop("cache_dir", None)
    builder = LoCoV1(
        config_name=task,
        subset=subset,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        **{k: v for k, v in kwargs.items() if v is not None},
    )
    builder.download_and_prepare()
    return builder.as_dataset(split="test")


def _tasks_from(
    queries: datasets.Dataset, corpus: datasets.Dataset, names: Sequence[str] | None
) -> dict[str, RetrievalTask]:
    present = [t for t in TASKS if t in set(queries["dataset"])]
    if names is None:
        names = present
    absent = [t for t in names if t not in present]
    if absent:
        raise ValueError(f"the sources hold no rows of the tasks {absent}; they hold {present}")
    out: dict[str, RetrievalTask] = {}
    for name in names:
        docs = {r["pid"]: r["passage"] for r in corpus if r["dataset"] == name}
        rows = [r for r in queries if r["dataset"] == name]
        out[name] = RetrievalTask(
            name=name,
            corpus=docs,
            queries={r["qid"]: r["query"] for r in rows},
            qrels={r["qid"]: dict.fromkeys(r["answer_pids"], 1) for r in rows},
        )
    return out


def load_task(
    task: str,
    *,
    queries_source: str | os.PathLike | None = None,
    documents_source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> RetrievalTask:
    """One task's corpus, queries and relevance judgements, built (and cached) by
    :class:`LoCoV1`; sources default to the Hub datasets."""
    if task not in TASKS:
        raise ValueError(f"unknown LoCoV1 task {task!r}; valid: {list(TASKS)}")
    sources = dict(
        queries_source=queries_source, documents_source=documents_source, cache_dir=cache_dir
    )
    queries = _build(task, "queries", **sources)
    corpus = _build(task, "corpus", **sources)
    return _tasks_from(queries, corpus, [task])[task]


def load_tasks(
    tasks: Sequence[str] | None = None,
    *,
    queries_source: str | os.PathLike | None = None,
    documents_source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, RetrievalTask]:
    """Several tasks from one read of the sources (the ``"all"`` config); None: every task the
    sources hold (all 12 on the Hub)."""
    names = None if tasks is None else list(tasks)
    unknown = [t for t in names or () if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown LoCoV1 tasks {unknown}; valid: {list(TASKS)}")
    sources = dict(
        queries_source=queries_source, documents_source=documents_source, cache_dir=cache_dir
    )
    queries = _build("all", "queries", **sources)
    corpus = _build("all", "corpus", **sources)
    return _tasks_from(queries, corpus, names)
