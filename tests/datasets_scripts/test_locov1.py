"""The LoCoV1 builder and ``load_task``/``load_tasks`` on the committed fixture
(tests/data/locov1, the published schema): each subset equals the fixture files, ``"all"`` is
the union of the task configs, every source form gives the same data, the Hub path calls
``datasets.load_dataset(id, split="test")``, and each bad source is a ValueError naming the
problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from hazyzoo.datasets_scripts import BUILDERS, load  # noqa: E402
from hazyzoo.datasets_scripts import locov1 as locov1_module  # noqa: E402
from hazyzoo.datasets_scripts.locov1 import (  # noqa: E402
    TASKS,
    LoCoV1,
    LoCoV1Config,
    RetrievalTask,
    load_task,
    load_tasks,
)

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "locov1"
QUERIES = FIXTURE / "queries.jsonl"
DOCUMENTS = FIXTURE / "documents.jsonl"
FIXTURE_TASKS = ["gov_report", "2wikimqa", "courtlistener_Plain_Text"]  # in TASKS order
SOURCES = {"queries_source": QUERIES, "documents_source": DOCUMENTS}
STRING = datasets.Value("string")
EXPECTED_FEATURES = {
    "corpus": datasets.Features({"pid": STRING, "passage": STRING, "dataset": STRING}),
    "queries": datasets.Features(
        {"qid": STRING, "query": STRING, "answer_pids": datasets.List(STRING), "dataset": STRING}
    ),
    "qrels": datasets.Features(
        {"qid": STRING, "pid": STRING, "score": datasets.Value("int32"), "dataset": STRING}
    ),
}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def of_task(items: list[dict], task: str) -> list[dict]:
    return items if task == "all" else [r for r in items if r["dataset"] == task]


def expected(subset: str, task: str) -> list[dict]:
    """What a build should yield, computed from the fixture files directly."""
    if subset == "corpus":
        return of_task(rows(DOCUMENTS), task)
    queries = of_task(rows(QUERIES), task)
    if subset == "queries":
        return queries
    return [
        {"qid": q["qid"], "pid": p, "score": 1, "dataset": q["dataset"]}
        for q in queries
        for p in q["answer_pids"]
    ]


def build(task: str, subset: str, cache: Path, **sources) -> datasets.Dataset:
    ds = load("locov1", task, subset=subset, cache_dir=cache, **{**SOURCES, **sources})
    assert list(ds) == ["test"]
    return ds["test"]


def test_fixture_is_what_its_generator_writes(tmp_path):
    """The committed files are reproducible and as documented (ids, sizes, two-pid queries)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for name in ("queries.jsonl", "documents.jsonl"):
        assert (tmp_path / name).read_bytes() == (FIXTURE / name).read_bytes(), name
    queries, documents = rows(QUERIES), rows(DOCUMENTS)
    assert [t for t in TASKS if t in {r["dataset"] for r in queries}] == FIXTURE_TASKS
    for task in FIXTURE_TASKS:
        docs = of_task(documents, task)
        asked = of_task(queries, task)
        assert 4 <= len(docs) <= 8 and 3 <= len(asked) <= 5
        assert all(d["pid"].startswith(f"{task}_Passage_") for d in docs)
        assert any(len(q["answer_pids"]) == 2 for q in asked)
    lengths = [len(d["passage"].split()) for d in documents]
    assert min(lengths) < 60 and max(lengths) > 300
    assert sum(p.stat().st_size for p in FIXTURE.iterdir()) < 60_000


def test_registry_configs_and_version():
    assert BUILDERS["locov1"] is LoCoV1
    assert TASKS == (
        "summ_screen_fd",
        "gov_report",
        "qmsum",
        "qasper_title",
        "qasper_abstract",
        "multifieldqa",
        "2wikimqa",
        "passage_retrieval",
        "courtlistener_HTML",
        "courtlistener_Plain_Text",
        "legal_case_reports",
        "stackoverflow",
    )
    assert [c.name for c in LoCoV1.BUILDER_CONFIGS] == [*TASKS, "all"]
    assert isinstance(LoCoV1.VERSION, datasets.Version)
    assert all(c.version == LoCoV1.VERSION for c in LoCoV1.BUILDER_CONFIGS)
    assert all(c.subset == "queries" for c in LoCoV1.BUILDER_CONFIGS)
    assert "2402.07440" in LoCoV1(config_name="gov_report").info.citation


@pytest.mark.parametrize("task", [*FIXTURE_TASKS, "all"])
def test_each_subset_equals_the_fixture(task, tmp_path):
    for subset in ("corpus", "queries", "qrels"):
        ds = build(task, subset, tmp_path)
        assert ds.features == EXPECTED_FEATURES[subset], subset
        assert ds.to_list() == expected(subset, task), subset


def test_all_is_the_union_of_the_task_configs(tmp_path):
    for subset in ("corpus", "queries", "qrels"):
        union = [r for t in FIXTURE_TASKS for r in build(t, subset, tmp_path).to_list()]
        assert build("all", subset, tmp_path).to_list() == union, subset


def test_default_subset_and_cache_dirs_per_subset_and_source(tmp_path, monkeypatch):
    default = load("locov1", "gov_report", cache_dir=tmp_path, **SOURCES)["test"]
    assert default.to_list() == expected("queries", "gov_report")
    dirs = {
        s: LoCoV1(config_name="gov_report", subset=s, cache_dir=str(tmp_path), **SOURCES).cache_dir
        for s in ("corpus", "queries", "qrels")
    }
    assert len(set(dirs.values())) == 3
    copy = tmp_path / "copy.jsonl"
    shutil.copy(QUERIES, copy)
    other = LoCoV1(
        config_name="gov_report",
        subset="corpus",
        cache_dir=str(tmp_path),
        **SOURCES | {"queries_source": copy},
    )
    assert other.cache_dir != dirs["corpus"]
    # a second identical build is served from the cache, without reading the sources
    build("gov_report", "qrels", tmp_path)

    def no_reading(*args, **kwargs):
        raise AssertionError("the sources were read again")

    monkeypatch.setattr(locov1_module, "_read_source", no_reading)
    assert build("gov_report", "qrels", tmp_path).to_list() == expected("qrels", "gov_report")


def test_an_edited_local_source_is_read_again(tmp_path):
    copy = tmp_path / "queries.jsonl"
    shutil.copy(QUERIES, copy)
    first = build("gov_report", "queries", tmp_path / "cache", queries_source=copy).to_list()
    edited = [dict(r, query="changed words") for r in rows(QUERIES)]
    copy.write_text("".join(json.dumps(r) + "\n" for r in edited))
    second = build("gov_report", "queries", tmp_path / "cache", queries_source=copy).to_list()
    assert first == expected("queries", "gov_report")
    assert {r["query"] for r in second} == {"changed words"}


def test_load_task_and_load_tasks(tmp_path, monkeypatch):
    task = load_task("2wikimqa", **SOURCES, cache_dir=tmp_path)
    assert isinstance(task, RetrievalTask) and task.name == "2wikimqa"
    docs, queries = expected("corpus", "2wikimqa"), expected("queries", "2wikimqa")
    assert list(task.corpus.items()) == [(d["pid"], d["passage"]) for d in docs]
    assert list(task.queries.items()) == [(q["qid"], q["query"]) for q in queries]
    assert task.qrels == {q["qid"]: dict.fromkeys(q["answer_pids"], 1) for q in queries}
    assert any(len(pids) == 2 for pids in task.qrels.values())
    assert "passage" not in repr(task) and "documents=7" in repr(task)

    everything = load_tasks(**SOURCES, cache_dir=tmp_path)
    assert list(everything) == FIXTURE_TASKS and everything["2wikimqa"] == task
    for name, item in everything.items():
        pairs = [(q["qid"], p) for q in expected("queries", name) for p in q["answer_pids"]]
        assert [(q, p) for q, ps in item.qrels.items() for p in ps] == pairs
        assert set(item.corpus) == {d["pid"] for d in expected("corpus", name)}

    # Several tasks by name: in the order given, each source file read once.
    reads = []
    original = locov1_module._json_table
    monkeypatch.setattr(
        locov1_module,
        "_json_table",
        lambda path, where: reads.append(path) or original(path, where),
    )
    some = load_tasks(
        ["courtlistener_Plain_Text", "gov_report"], **SOURCES, cache_dir=tmp_path / "b"
    )
    assert list(some) == ["courtlistener_Plain_Text", "gov_report"]
    assert some["gov_report"] == everything["gov_report"]
    assert sorted(p.name for p in reads) == ["documents.jsonl", "queries.jsonl"]


def test_load_task_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown LoCoV1 task 'all'"):
        load_task("all", **SOURCES, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="task 'qmsum' has no queries in queries_source="):
        load_task("qmsum", **SOURCES, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown LoCoV1 task 'gov'"):
        load_tasks(["gov_report", "gov"], **SOURCES, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="name 'qmsum' twice"):
        load_tasks(["qmsum", "qmsum"], **SOURCES, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="a list of task names or None"):
        load_tasks("gov_report", **SOURCES, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="queries_source='/no/such/file.jsonl'"):
        load_task("gov_report", queries_source="/no/such/file.jsonl", documents_source=DOCUMENTS)


# --- source forms ----------------------------------------------------------------------------


def write_form(form: str, root: Path) -> dict[str, Path]:
    """Write the fixture in one local form; returns the two sources."""
    root.mkdir(parents=True)
    out = {}
    for role, path in (("queries", QUERIES), ("documents", DOCUMENTS)):
        items = rows(path)
        field = f"{role}_source"
        if form == "json-array":
            out[field] = root / f"{role}.json"
            out[field].write_text(json.dumps(items, indent=1))
        elif form == "parquet-datasets":  # as datasets writes it (features in the metadata)
            out[field] = root / f"{role}.parquet"
            datasets.Dataset.from_list(items).to_parquet(str(out[field]))
        elif form == "hub-parquet-folder":  # refs/convert/parquet: default/test/0.parquet
            (root / role / "default" / "test").mkdir(parents=True)
            table = pa.Table.from_pylist(items)  # ids as large_string, as some writers do
            table = table.set_column(0, table.field(0).name, table[0].cast(pa.large_string()))
            pq.write_table(table, root / role / "default" / "test" / "0.parquet")
            out[field] = root / role
        elif form in ("save-dataset", "save-dataset-dict"):
            ds = datasets.Dataset.from_list(items)
            saved = datasets.DatasetDict({"test": ds}) if form == "save-dataset-dict" else ds
            saved.save_to_disk(str(root / role))
            out[field] = root / role
        elif form in ("mirror-root", "mirror-role-folder"):  # <role>/<task>_test.jsonl
            (root / role).mkdir()
            for task in FIXTURE_TASKS:
                lines = "".join(json.dumps(r) + "\n" for r in of_task(items, task))
                (root / role / f"{task}_test.jsonl").write_text(lines)
            out[field] = root if form == "mirror-root" else root / role
        else:
            raise AssertionError(form)
    return out


FORMS = [
    "json-array",
    "parquet-datasets",
    "hub-parquet-folder",
    "save-dataset",
    "save-dataset-dict",
    "mirror-root",
    "mirror-role-folder",
]


@pytest.mark.parametrize("form", FORMS)
def test_every_source_form_gives_the_same_data(form, tmp_path):
    sources = write_form(form, tmp_path / "src")
    tasks = load_tasks(**sources, cache_dir=tmp_path / "cache")
    want = load_tasks(**SOURCES, cache_dir=tmp_path / "cache")
    assert list(tasks) == list(want)
    for name, task in tasks.items():
        assert task == want[name]
        assert list(task.corpus) == list(want[name].corpus)
        assert list(task.queries) == list(want[name].queries)
    qrels = build("gov_report", "qrels", tmp_path / "cache", **sources)
    assert qrels.to_list() == expected("qrels", "gov_report")


def test_hub_ids_are_read_with_load_dataset(tmp_path, monkeypatch):
    """No network here: the Hub call is replaced, its arguments checked, its rows used."""
    calls = []
    fixture = {"hazyresearch/LoCoV1-Queries": QUERIES, "hazyresearch/LoCoV1-Documents": DOCUMENTS}

    def fake_load_dataset(path, split=None, **kwargs):
        calls.append((path, split, kwargs))
        return datasets.Dataset.from_list(rows(fixture[path]))

    monkeypatch.setattr(locov1_module.datasets, "load_dataset", fake_load_dataset)
    task = load_task("gov_report", cache_dir=tmp_path)
    assert sorted(calls) == [
        ("hazyresearch/LoCoV1-Documents", "test", {}),
        ("hazyresearch/LoCoV1-Queries", "test", {}),
    ]
    assert task == load_task("gov_report", **SOURCES, cache_dir=tmp_path)


# --- bad sources -----------------------------------------------------------------------------


def _drop(key):
    return lambda items: [{k: v for k, v in r.items() if k != key} for r in items]


def _first(**change):
    return lambda items: [dict(items[0], **change), *items[1:]]


BAD = {
    # id: (which source, edit of its rows, config, message pattern)
    "unknown-task-row": (
        "documents",
        _first(dataset="trec"),
        "gov_report",
        r"not a LoCoV1 task: \['trec'\]",
    ),
    "missing-column": (
        "queries",
        _drop("answer_pids"),
        "gov_report",
        r"lacks the columns \['answer_pids'\].*answer_pids: list of str",
    ),
    "renamed-column": (
        "documents",
        lambda it: [{"text" if k == "passage" else k: v for k, v in r.items()} for r in it],
        "all",
        r"lacks the columns \['passage'\]",
    ),
    "row-without-a-key": (
        "queries",
        lambda it: [*it[:2], {k: v for k, v in it[2].items() if k != "query"}, *it[3:]],
        "all",
        r"column 'query' has 1 missing or null value\(s\) \(first at row 2, qid 'gov_report_Query_2'\)",
    ),
    "null-passage": (
        "documents",
        _first(passage=None),
        "gov_report",
        r"column 'passage' has 1 missing or null",
    ),
    "int-ids": (
        "queries",
        lambda it: [dict(r, qid=i) for i, r in enumerate(it)],
        "gov_report",
        r"column 'qid' has type int64, not string",
    ),
    "mixed-types": ("queries", _first(qid=7), "gov_report", r"column 'qid' mixes value types"),
    "answer-pids-a-string": (
        "queries",
        lambda it: [dict(r, answer_pids=r["answer_pids"][0]) for r in it],
        "gov_report",
        r"column 'answer_pids' has type string, not a list of strings",
    ),
    "null-inside-answer-pids": (
        "queries",
        _first(answer_pids=["gov_report_Passage_0", None]),
        "gov_report",
        r"column 'answer_pids' holds nulls inside its lists",
    ),
    "repeated-pid": (
        "documents",
        lambda it: [*it, it[0]],
        "gov_report",
        r"repeats pid 'gov_report_Passage_0' in task 'gov_report'",
    ),
    "repeated-qid": (
        "queries",
        lambda it: [*it, it[0]],
        "all",
        r"repeats qid 'gov_report_Query_0' in task 'gov_report'",
    ),
    "absent-pid": (
        "queries",
        _first(answer_pids=["gov_report_Passage_0", "nope"]),
        "gov_report",
        r"query 'gov_report_Query_0' \(gov_report\) names pid\(s\) \['nope'\]",
    ),
    "pid-of-another-task": (
        "queries",
        _first(answer_pids=["2wikimqa_Passage_0"]),
        "all",
        r"names pid\(s\) \['2wikimqa_Passage_0'\] in answer_pids that are not documents of task 'gov_report'",
    ),
    "empty-answers": (
        "queries",
        _first(answer_pids=[]),
        "gov_report",
        r"query 'gov_report_Query_0' \(gov_report\) has an empty answer_pids",
    ),
    "repeated-answer": (
        "queries",
        _first(answer_pids=["gov_report_Passage_0"] * 2),
        "gov_report",
        r"lists pid 'gov_report_Passage_0' twice",
    ),
    "task-without-queries": (
        "queries",
        lambda it: [r for r in it if r["dataset"] != "gov_report"],
        "gov_report",
        r"task 'gov_report' has no queries in queries_source=",
    ),
    "task-without-documents": (
        "documents",
        lambda it: [r for r in it if r["dataset"] != "2wikimqa"],
        "all",
        r"task '2wikimqa' has no documents in documents_source=",
    ),
    "empty-file": (
        "documents",
        lambda it: [],
        "all",
        r"lacks the columns \['pid', 'passage', 'dataset'\]",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sources_are_value_errors_naming_the_problem(case, tmp_path):
    role, edit, config, match = BAD[case]
    path = tmp_path / f"{role}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(rows(SOURCES[f"{role}_source"]))))
    sources = {**SOURCES, f"{role}_source": path}
    with pytest.raises(ValueError, match=match) as raised:
        build(config, "queries", tmp_path / "cache", **sources)
    assert f"{role}_source=" in str(raised.value) or "task '" in str(raised.value)


def test_bad_files_and_folders(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(QUERIES.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken.jsonl line 2 is not JSON"):
        build("gov_report", "queries", tmp_path / "c", queries_source=broken)
    not_rows = tmp_path / "scalars.json"
    not_rows.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"row 1 is int, not a JSON object"):
        build("gov_report", "queries", tmp_path / "c", queries_source=not_rows)
    csv = tmp_path / "queries.csv"
    csv.write_text("qid,query\n")
    with pytest.raises(ValueError, match=r"queries_source=.*unknown file type '.csv'"):
        build("gov_report", "queries", tmp_path / "c", queries_source=csv)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(QUERIES, mixed / "q.jsonl")
    datasets.Dataset.from_list(rows(QUERIES)).to_parquet(str(mixed / "q.parquet"))
    with pytest.raises(ValueError, match=r"mixes \['.jsonl', '.parquet'\] files"):
        build("gov_report", "queries", tmp_path / "c", queries_source=mixed)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"documents_source=.*holds no"):
        build("gov_report", "queries", tmp_path / "c", documents_source=empty)
    train_only = tmp_path / "train_only"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows(QUERIES))}).save_to_disk(
        str(train_only)
    )
    with pytest.raises(ValueError, match=r"splits \['train'\], no 'test'"):
        build("gov_report", "queries", tmp_path / "c", queries_source=train_only)


def test_bad_configs_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="unknown config 'gov'"):
        load("locov1", "gov", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="LoCoV1Config.subset must be one of"):
        load("locov1", "gov_report", subset="train", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="LoCoV1Config.name: unknown LoCoV1 task 'nope'"):
        LoCoV1Config(name="nope")
    with pytest.raises(ValueError, match="LoCoV1Config.queries_source must be"):
        LoCoV1(config_name="gov_report", queries_source=3, cache_dir=str(tmp_path))
