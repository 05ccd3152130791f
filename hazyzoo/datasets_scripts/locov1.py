"""LoCoV1, the long-context retrieval benchmark of Saad-Falcon et al. (2024), as a ``datasets``
builder, and :func:`load_task` / :func:`load_tasks` for retrieval code.

LoCoV1 is 12 retrieval tasks (:data:`TASKS`) over long documents (legal opinions, government
reports, meeting transcripts, papers, ...), published as two Hub datasets with one split,
``test``:

* ``hazyresearch/LoCoV1-Queries``: ``qid``, ``query``, ``answer_pids`` (the relevant
  documents' ``pid`` values), ``dataset`` (the task);
* ``hazyresearch/LoCoV1-Documents``: ``pid``, ``passage``, ``dataset``.

Relevance is binary: a document is relevant to a query iff its ``pid`` is in the query's
``answer_pids``. The builder has one config per task plus ``"all"``; the config field
``subset`` picks what a build yields (split ``test``):

* ``"corpus"``: ``pid``, ``passage``, ``dataset``;
* ``"queries"`` (default): ``qid``, ``query``, ``answer_pids``, ``dataset``;
* ``"qrels"``: ``qid``, ``pid``, ``score`` (int32, always 1), ``dataset``: one row per
  relevant (query, document) pair, in query order.

Selection, by design: the sources hold every task's rows, and a task's config keeps the rows
whose ``dataset`` is that task; ``"all"`` keeps every row (a local copy may hold only some
tasks: ``"all"`` then holds those). Everything else that is wrong is a ``ValueError`` naming the
source and the problem, never a silent drop: a ``dataset`` value that is not one of the 12
tasks, missing columns or nulls, values of the wrong type, repeated ``qid``/``pid`` within a
task, an empty or repeating ``answer_pids``, a pid that is not a document of the query's task,
a task with queries but no documents (or the reverse), a requested task absent from a source.
Extra columns are ignored.

Sources (config fields ``queries_source`` / ``documents_source``; None means the Hub ids
above): a Hub dataset id (read with ``datasets.load_dataset(id, split="test")``, which needs the
network the first time), or a local copy: a ``.parquet``, ``.jsonl`` or ``.json`` file (JSON
lines, or one JSON array of rows), a folder written by ``Dataset.save_to_disk`` or
``DatasetDict.save_to_disk`` (split ``test``), or a folder holding such files, read recursively
in sorted order (e.g. the Hub's ``default/test/0.parquet`` or a mirror's
``documents/<task>_test.jsonl``); an existing local path wins over a Hub id spelled the
same. A folder with a ``queries/`` (resp. ``documents/``) sub-folder reads only that
sub-folder, so one mirror folder can serve as both sources. A local source's file sizes and modification times are part of the config (field
``source_fingerprint``, set by the builder), so an edited copy gets a new cache entry; a Hub
source is cached by its id.

    from hazyzoo.datasets_scripts import load
    corpus = load("locov1", "gov_report", subset="corpus")["test"]
    task = load_task("gov_report", queries_source="copy/queries.jsonl",
                     documents_source="copy/documents.parquet")
    task.corpus, task.queries, task.qrels  # pid -> passage, qid -> query, qid -> {pid: 1}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hazyzoo.datasets_scripts.locov1_names import DOCUMENTS_HUB_ID, QUERIES_HUB_ID, TASKS

# Note: instantiating a builder makes datasets patch this module's ``Path``, ``open`` and
# ``pq.read_table`` with its streaming-aware versions; on local paths they act as the originals.

__all__ = [
    "CONFIG_NAMES",
    "DOCUMENTS_HUB_ID",
    "FEATURES",
    "QUERIES_HUB_ID",
    "SUBSETS",
    "TASKS",
    "LoCoV1",
    "LoCoV1Config",
    "RetrievalTask",
    "load_task",
    "load_tasks",
]

SUBSETS: tuple[str, ...] = ("corpus", "queries", "qrels")
"""What a build yields: documents, queries, or one row per relevant (query, document) pair."""

CONFIG_NAMES: tuple[str, ...] = (*TASKS, "all")
_FILE_SUFFIXES = (".parquet", ".jsonl", ".json")
_VERSION = datasets.Version("1.0.0")  # bump when what a build yields changes
_GENERATE_BATCH = 1024  # rows converted to Python per step while writing the Arrow cache
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

_CITATION = """\
@article{saadfalcon2024benchmarking,
  title={Benchmarking and Building Long-Context Retrieval Models with LoCo and M2-BERT},
  author={Saad-Falcon, Jon and Fu, Daniel Y. and Arora, Simran and Guha, Neel and
          R{\\'e}, Christopher},
  journal={arXiv:2402.07440}, year={2024}
}
"""

_STRING = datasets.Value("string")
FEATURES: dict[str, datasets.Features] = {
    "corpus": datasets.Features({"pid": _STRING, "passage": _STRING, "dataset": _STRING}),
    "queries": datasets.Features(
        {
            "qid": _STRING,
            "query": _STRING,
            "answer_pids": datasets.Sequence(_STRING),
            "dataset": _STRING,
        }
    ),
    "qrels": datasets.Features(
        {"qid": _STRING, "pid": _STRING, "score": datasets.Value("int32"), "dataset": _STRING}
    ),
}
"""The typed features of each subset (``answer_pids`` is a list of strings)."""

# The published schemas of the two sources, as the builder reads them.
_SOURCE_SCHEMAS = {
    "queries": FEATURES["queries"].arrow_schema.remove_metadata(),
    "documents": FEATURES["corpus"].arrow_schema.remove_metadata(),
}
_SOURCE_FIELDS = {"queries": "queries_source", "documents": "documents_source"}
_ID_COLUMNS = {"queries": "qid", "documents": "pid"}


def _schema_text(role: str) -> str:
    names = {"string": "str", "list<item: string>": "list of str"}
    columns = ", ".join(f"{f.name}: {names[str(f.type)]}" for f in _SOURCE_SCHEMAS[role])
    hub_id = QUERIES_HUB_ID if role == "queries" else DOCUMENTS_HUB_ID
    return f"LoCoV1 {role} have the columns {{{columns}}} (as {hub_id})"


@dataclass
class LoCoV1Config(datasets.BuilderConfig):
    """One LoCoV1 task (or ``"all"``), the subset a build yields and where the data comes from.

    ``queries_source`` / ``documents_source``: a Hub dataset id or a local path (see the module
    docstring); None reads the published Hub datasets. ``source_fingerprint`` is set by
    :class:`LoCoV1` from the local files so that edited copies are not served from the cache.
    """

    subset: str = "queries"
    queries_source: str | None = None
    documents_source: str | None = None
    source_fingerprint: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot be used (run again by the
        builder: datasets sets keyword overrides on a copy without ``__post_init__``)."""
        if self.name not in CONFIG_NAMES:
            raise ValueError(
                f"LoCoV1Config.name: unknown LoCoV1 task {self.name!r}; valid: {list(CONFIG_NAMES)}"
            )
        if self.subset not in SUBSETS:
            raise ValueError(f"LoCoV1Config.subset must be one of {SUBSETS}, got {self.subset!r}")
        for field in ("queries_source", "documents_source"):
            value = getattr(self, field)
            if value is None:
                continue
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                raise ValueError(
                    f"LoCoV1Config.{field} must be a Hub dataset id or a local path, got {value!r}"
                )
            setattr(self, field, os.fspath(value))


# --- reading and checking the sources -------------------------------------------------------


def _fingerprint(source: str | os.PathLike | None) -> str | None:
    """Size and modification time of every file of a local source (None for a Hub id)."""
    if not isinstance(source, (str, os.PathLike)):
        return None  # None (the Hub default) or a bad value that validate() reports
    path = Path(source).expanduser()
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return ";".join(
        f"{p.relative_to(path.parent)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files
    )


# Within load_task/load_tasks one read of each source serves every build (see _reading_once).
_MEMO: dict[tuple[str, str, str | None], pa.Table] | None = None


@contextlib.contextmanager
def _reading_once() -> Iterator[None]:
    """Keep the sources read inside this block in memory, so several builds read them once."""
    global _MEMO
    outer = _MEMO
    if outer is None:
        _MEMO = {}
    try:
        yield
    finally:
        if outer is None:
            _MEMO = None


def _read_source(source: str, role: str) -> pa.Table:
    """The rows of one source as a table in the published schema (checked, extra columns off)."""
    key = (role, source, _fingerprint(source))
    if _MEMO is not None and key in _MEMO:
        return _MEMO[key]
    field = _SOURCE_FIELDS[role]
    where = f"{field}={source!r}"
    path = Path(source).expanduser()
    if path.is_file():
        table = _read_file(path, role, where)
    elif path.is_dir():
        table = _read_folder(path, role, where)
    elif _HUB_ID.match(source) and not source.endswith(_FILE_SUFFIXES):
        # Real data: needs the network (or the datasets cache); never reached in tests.
        dataset = datasets.load_dataset(source, split="test")
        table = _checked(dataset.with_format("arrow")[:], role, where)
    else:
        raise FileNotFoundError(
            f"{where}: no such file or folder, and not a Hub dataset id ('owner/name')"
        )
    if _MEMO is not None:
        _MEMO[key] = table
    return table


def _read_file(path: Path, role: str, where: str) -> pa.Table:
    if path.suffix not in _FILE_SUFFIXES:
        raise ValueError(f"{where}: unknown file type {path.suffix!r}; expected {_FILE_SUFFIXES}")
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except pa.ArrowException as err:
            raise ValueError(f"{where}: {path} is not a readable parquet file: {err}") from err
        return _checked(table, role, where)
    return _checked(_json_table(path, where), role, where)


def _json_table(path: Path, where: str) -> pa.Table:
    """A JSON-lines file, or a JSON file holding one array of rows, as a table (columns: the
    union of the rows' keys; a key a row lacks becomes a null, which the checks report)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: {path} is not valid JSON: {err}") from err
        numbered = list(enumerate(rows, 1))
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where}: {path} line {number} is not JSON: {err}") from err
    for number, row in numbered:
        if not isinstance(row, dict):
            raise ValueError(
                f"{where}: {path} row {number} is {type(row).__name__}, not a JSON object"
            )
    keys = list(dict.fromkeys(k for _, row in numbered for k in row))
    columns = {}
    for key in keys:
        try:
            columns[key] = pa.array([row.get(key) for _, row in numbered])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"{where}: {path} column {key!r} mixes value types: {err}") from err
    return pa.table(columns)


def _read_folder(path: Path, role: str, where: str) -> pa.Table:
    """A ``save_to_disk`` folder, or a folder of parquet/JSON files (one role sub-folder, if
    there is one, e.g. ``documents/`` for the documents)."""
    if (path / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if "test" not in loaded:
            raise ValueError(
                f"{where} is a saved DatasetDict with splits {list(loaded)}, no 'test'"
            )
        return _checked(loaded["test"].with_format("arrow")[:], role, where)
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return _checked(loaded.with_format("arrow")[:], role, where)
    if (path / role).is_dir():
        return _read_folder(path / role, role, where)
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix in _FILE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise ValueError(f"{where}: the folder holds no {_FILE_SUFFIXES} files")
    kinds = sorted({p.suffix for p in files})
    if len(kinds) > 1:
        raise ValueError(
            f"{where}: the folder mixes {kinds} files (copies of the same rows?); point the "
            "source at one file or at a folder of one kind"
        )
    return pa.concat_tables(
        [_read_file(p, role, f"{where} ({p.relative_to(path)})") for p in files]
    )


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _checked(table: pa.Table, role: str, where: str) -> pa.Table:
    """``table`` cut to the published columns, cast to their canonical types, after checking
    that each is present, of the right type and free of nulls."""
    schema = _SOURCE_SCHEMAS[role]
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ValueError(
            f"{where} lacks the columns {missing} (it has {table.column_names}); "
            f"{_schema_text(role)}"
        )
    for spec in schema:
        kind = table.schema.field(spec.name).type
        if pa.types.is_null(kind):  # only nulls (e.g. a JSON key that is always null)
            good = True  # the null check below reports it
        elif pa.types.is_list(spec.type):
            good = (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
                _is_string(kind.value_type) or pa.types.is_null(kind.value_type)
            )
        else:
            good = _is_string(kind)
        if not good:
            raise ValueError(
                f"{where}: column {spec.name!r} has type {kind}, not "
                f"{'a list of strings' if pa.types.is_list(spec.type) else 'string'}; "
                f"{_schema_text(role)}"
            )
    table = table.select(schema.names).cast(schema)
    id_column = _ID_COLUMNS[role]
    for spec in schema:
        column = table.column(spec.name)
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            ident = table.column(id_column)[row].as_py()
            raise ValueError(
                f"{where}: column {spec.name!r} has {column.null_count} missing or null "
                f"value(s) (first at row {row}, {id_column} {ident!r}); {_schema_text(role)}"
            )
        if pa.types.is_list(spec.type) and pc.list_flatten(column).null_count:
            raise ValueError(f"{where}: column {spec.name!r} holds nulls inside its lists")
    return table


def _only(table: pa.Table, task: str, where: str) -> pa.Table:
    """The rows of ``task`` (every row for ``"all"``), after checking every row's task."""
    names = pc.unique(table.column("dataset")).to_pylist()
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        count = pc.sum(pc.invert(pc.is_in(table.column("dataset"), pa.array(TASKS)))).as_py()
        raise ValueError(
            f"{where} has {count} row(s) whose dataset is not a LoCoV1 task: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}; LoCoV1's tasks are {list(TASKS)}"
        )
    if task == "all":
        return table
    return table.filter(pc.equal(table.column("dataset"), task))


def _first_repeat(values: list[str]) -> str | None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _load_tables(config: LoCoV1Config) -> tuple[pa.Table, pa.Table]:
    """(queries, documents) of the config's task, or of every task for ``"all"``, checked."""
    queries_source = config.queries_source or QUERIES_HUB_ID
    documents_source = config.documents_source or DOCUMENTS_HUB_ID
    where_q = f"queries_source={queries_source!r}"
    where_d = f"documents_source={documents_source!r}"
    queries = _only(_read_source(queries_source, "queries"), config.name, where_q)
    documents = _only(_read_source(documents_source, "documents"), config.name, where_d)

    q_tasks = queries.column("dataset").to_pylist()
    d_tasks = documents.column("dataset").to_pylist()
    if config.name == "all":
        tasks = [t for t in TASKS if t in set(q_tasks) | set(d_tasks)]
        if not tasks:
            raise ValueError(f"{where_q} and {where_d} hold no rows")
    else:
        tasks = [config.name]
    pids_of: dict[str, list[str]] = {t: [] for t in tasks}
    for task, pid in zip(d_tasks, documents.column("pid").to_pylist()):
        pids_of[task].append(pid)
    rows_of: dict[str, list[tuple[str, list[str]]]] = {t: [] for t in tasks}
    columns = zip(q_tasks, queries.column("qid").to_pylist(), queries["answer_pids"].to_pylist())
    for task, qid, answers in columns:
        rows_of[task].append((qid, answers))

    for task in tasks:
        if not rows_of[task] or not pids_of[task]:
            role, where = ("queries", where_q) if not rows_of[task] else ("documents", where_d)
            raise ValueError(
                f"task {task!r} has no {role} in {where} (a local copy may hold only some "
                "tasks: ask for those, or use the 'all' config)"
            )
        repeated = _first_repeat(pids_of[task])
        if repeated is not None:
            raise ValueError(f"{where_d} repeats pid {repeated!r} in task {task!r}")
        repeated = _first_repeat([qid for qid, _ in rows_of[task]])
        if repeated is not None:
            raise ValueError(f"{where_q} repeats qid {repeated!r} in task {task!r}")
        pids = set(pids_of[task])
        for qid, answers in rows_of[task]:
            if not answers:
                raise ValueError(
                    f"{where_q}: query {qid!r} ({task}) has an empty answer_pids; every LoCoV1 "
                    "query names at least one relevant pid"
                )
            repeated = _first_repeat(answers)
            if repeated is not None:
                raise ValueError(
                    f"{where_q}: query {qid!r} ({task}) lists pid {repeated!r} twice in answer_pids"
                )
            absent = [p for p in answers if p not in pids]
            if absent:
                raise ValueError(
                    f"{where_q}: query {qid!r} ({task}) names pid(s) {absent[:5]} in answer_pids "
                    f"that are not documents of task {task!r} in {where_d}"
                )
    return queries, documents


# --- the builder ---------------------------------------------------------------------------


class LoCoV1(datasets.GeneratorBasedBuilder):
    """LoCoV1's 12 tasks and ``"all"``, as corpus, queries or relevance judgements (split
    ``test``). Overrides: ``LoCoV1(config_name="gov_report", subset="corpus",
    queries_source=..., documents_source=...)``; each subset and source has its own cache."""

    VERSION = _VERSION
    BUILDER_CONFIG_CLASS = LoCoV1Config
    BUILDER_CONFIGS = [
        LoCoV1Config(
            name=name,
            version=_VERSION,
            description=(
                "every LoCoV1 task the sources hold" if name == "all" else f"the LoCoV1 task {name}"
            ),
        )
        for name in CONFIG_NAMES
    ]
    DEFAULT_CONFIG_NAME = "all"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A local source's files are part of the config, so the cache follows edits to them.
        for field in ("queries_source", "documents_source"):
            if isinstance(kwargs.get(field), os.PathLike):
                kwargs[field] = os.fspath(kwargs[field])
        prints = [_fingerprint(kwargs.get(f)) for f in ("queries_source", "documents_source")]
        if any(p is not None for p in prints):
            kwargs["source_fingerprint"] = "|".join(str(p) for p in prints)
        super().__init__(*args, **kwargs)
        self.config.validate()

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()  # _info runs inside datasets' __init__, before ours resumes
        return datasets.DatasetInfo(
            description=f"LoCoV1 long-document retrieval ({self.config.name}): "
            f"{self.config.subset}. " + (__doc__ or "").split("\n\n")[0],
            features=FEATURES[self.config.subset],
            citation=_CITATION,
            homepage="https://arxiv.org/abs/2402.07440",
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        # Read and check the sources here: an error raised while generating would reach the
        # caller wrapped in datasets' DatasetGenerationError.
        queries, documents = _load_tables(self.config)
        return [
            datasets.SplitGenerator(
                name=datasets.Split.TEST,
                gen_kwargs={"queries": queries, "documents": documents},
            )
        ]

    def _generate_examples(
        self, queries: pa.Table, documents: pa.Table
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        subset = self.config.subset
        table = documents if subset == "corpus" else queries
        key = 0
        for batch in table.to_batches(max_chunksize=_GENERATE_BATCH):
            for row in batch.to_pylist():
                if subset != "qrels":
                    yield key, row
                    key += 1
                    continue
                for pid in row["answer_pids"]:
                    yield (
                        key,
                        {"qid": row["qid"], "pid": pid, "score": 1, "dataset": row["dataset"]},
                    )
                    key += 1


# --- plain-Python tasks for retrieval code --------------------------------------------------


@dataclass(frozen=True)
class RetrievalTask:
    """One LoCoV1 task ready for retrieval: documents and queries in source order, and binary
    relevance judgements (``qrels[qid][pid] == 1`` for each relevant pid)."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def __repr__(self) -> str:  # the corpus can be gigabytes: never print it
        return (
            f"RetrievalTask(name={self.name!r}, documents={len(self.corpus)}, "
            f"queries={len(self.queries)}, judgements={sum(map(len, self.qrels.values()))})"
        )


def _check_task_name(task: Any) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown LoCoV1 task {task!r}; valid: {list(TASKS)}")


def _build(
    config_name: str,
    subset: str,
    queries_source: str | os.PathLike | None,
    documents_source: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
) -> datasets.Dataset:
    sources = {"queries_source": queries_source, "documents_source": documents_source}
    builder = LoCoV1(
        config_name=config_name,
        subset=subset,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        **{k: v for k, v in sources.items() if v is not None},
    )
    builder.download_and_prepare()
    return builder.as_dataset(split="test")


def _tasks_from(queries: datasets.Dataset, corpus: datasets.Dataset) -> dict[str, RetrievalTask]:
    """Group built queries and corpus by task (one pass each), in :data:`TASKS` order."""
    docs: dict[str, dict[str, str]] = {}
    for task, pid, passage in zip(corpus["dataset"], corpus["pid"], corpus["passage"]):
        docs.setdefault(task, {})[pid] = passage
    texts: dict[str, dict[str, str]] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    columns = zip(queries["dataset"], queries["qid"], queries["query"], queries["answer_pids"])
    for task, qid, query, answers in columns:
        texts.setdefault(task, {})[qid] = query
        qrels.setdefault(task, {})[qid] = dict.fromkeys(answers, 1)
    return {
        name: RetrievalTask(name=name, corpus=docs[name], queries=texts[name], qrels=qrels[name])
        for name in TASKS
        if name in texts
    }


def load_task(
    task: str,
    *,
    queries_source: str | os.PathLike | None = None,
    documents_source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> RetrievalTask:
    """One task's corpus, queries and relevance judgements, built and cached by :class:`LoCoV1`
    (so its checks apply); the sources default to the Hub datasets and are read once."""
    _check_task_name(task)
    with _reading_once():
        queries = _build(task, "queries", queries_source, documents_source, cache_dir)
        corpus = _build(task, "corpus", queries_source, documents_source, cache_dir)
    return _tasks_from(queries, corpus)[task]


def load_tasks(
    tasks: Sequence[str] | None = None,
    *,
    queries_source: str | os.PathLike | None = None,
    documents_source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, RetrievalTask]:
    """Several tasks by name, in the order given, reading each source once. ``None``: every
    task, built through the ``"all"`` config (all 12 from the Hub; a local copy gives the tasks
    it holds)."""
    sources = {
        "queries_source": queries_source,
        "documents_source": documents_source,
        "cache_dir": cache_dir,
    }
    if tasks is None:
        with _reading_once():
            queries = _build("all", "queries", queries_source, documents_source, cache_dir)
            corpus = _build("all", "corpus", queries_source, documents_source, cache_dir)
        return _tasks_from(queries, corpus)
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a list of task names or None, got the string {tasks!r}")
    names = list(tasks)
    for name in names:
        _check_task_name(name)
    repeated = _first_repeat(names)
    if repeated is not None:
        raise ValueError(f"tasks {names} name {repeated!r} twice")
    with _reading_once():
        return {name: load_task(name, **sources) for name in names}
