"""The LoCoV1 builder on the local fixture (tests/data/locov1, the published schema): each
subset equals the fixture files, every source form reads the same rows, bad sources are errors
naming the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from hazyzoo.datasets_scripts import load  # noqa: E402
from hazyzoo.datasets_scripts.locov1 import TASKS, load_task, load_tasks  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "locov1"
QUERIES = FIXTURE / "queries.jsonl"
DOCUMENTS = FIXTURE / "documents.jsonl"
FIXTURE_TASKS = ["gov_report", "2wikimqa", "courtlistener_Plain_Text"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build(task: str, subset: str, cache: Path, **sources) -> list[dict]:
    sources = {"queries_source": QUERIES, "documents_source": DOCUMENTS, **sources}
    return load("locov1", task, subset=subset, cache_dir=cache, **sources)["test"].to_list()


@pytest.mark.parametrize("task", FIXTURE_TASKS)
def test_subsets_equal_the_fixture(task, tmp_path):
    queries = [r for r in rows(QUERIES) if r["dataset"] == task]
    documents = [r for r in rows(DOCUMENTS) if r["dataset"] == task]
    assert build(task, "queries", tmp_path) == queries
    assert build(task, "corpus", tmp_path) == documents
    qrels = build(task, "qrels", tmp_path)
    want = [(q["qid"], p) for q in queries for p in q["answer_pids"]]
    assert [(r["qid"], r["pid"]) for r in qrels] == want
    assert {r["score"] for r in qrels} == {1} and {r["dataset"] for r in qrels} == {task}
    features = load(
        "locov1",
        task,
        subset="queries",
        cache_dir=tmp_path,
        queries_source=QUERIES,
        documents_source=DOCUMENTS,
    )["test"].features
    assert features["answer_pids"].feature.dtype == "string"


def test_all_is_the_union_of_the_tasks_and_load_task_agrees(tmp_path):
    everything = build("all", "corpus", tmp_path)
    per_task = [r for t in FIXTURE_TASKS for r in build(t, "corpus", tmp_path)]
    assert sorted(everything, key=lambda r: r["pid"]) == sorted(per_task, key=lambda r: r["pid"])
    task = load_task(
        "gov_report", queries_source=QUERIES, documents_source=DOCUMENTS, cache_dir=tmp_path
    )
    queries = [r for r in rows(QUERIES) if r["dataset"] == "gov_report"]
    assert list(task.queries) == [q["qid"] for q in queries]
    assert task.qrels == {q["qid"]: dict.fromkeys(q["answer_pids"], 1) for q in queries}
    assert list(task.corpus) == [d["pid"] for d in rows(DOCUMENTS) if d["dataset"] == "gov_report"]
    several = load_tasks(queries_source=QUERIES, documents_source=DOCUMENTS, cache_dir=tmp_path)
    assert sorted(several) == sorted(FIXTURE_TASKS) and several["gov_report"] == task
    with pytest.raises(ValueError, match="no rows of the tasks \\['qmsum'\\]"):
        load_tasks(
            ["qmsum"], queries_source=QUERIES, documents_source=DOCUMENTS, cache_dir=tmp_path
        )


def test_every_source_form_reads_the_same_rows(tmp_path):
    want = build("2wikimqa", "queries", tmp_path / "c0")
    parquet = tmp_path / "queries.parquet"
    datasets.Dataset.from_list(rows(QUERIES)).to_parquet(str(parquet))
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows(QUERIES))}).save_to_disk(
        str(saved)
    )
    folder = tmp_path / "folder" / "documents"
    folder.mkdir(parents=True)
    shutil.copy(QUERIES, folder / "all_test.jsonl")
    as_json = tmp_path / "queries.json"
    as_json.write_text(json.dumps(rows(QUERIES)))
    for i, source in enumerate((parquet, saved, tmp_path / "folder", as_json)):
        assert build("2wikimqa", "queries", tmp_path / f"c{i + 1}", queries_source=source) == want


def test_an_edited_local_source_is_read_again(tmp_path):
    copy = tmp_path / "queries.jsonl"
    shutil.copy(QUERIES, copy)
    first = build("gov_report", "queries", tmp_path / "cache", queries_source=copy)
    edited = [
        dict(r, query="changed words") if r["dataset"] == "gov_report" else r for r in rows(QUERIES)
    ]
    copy.write_text("".join(json.dumps(r) + "\n" for r in edited))
    second = build("gov_report", "queries", tmp_path / "cache", queries_source=copy)
    assert first != second and {r["query"] for r in second} == {"changed words"}


def _write(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda q, d: (q, [dict(r, dataset="trec") for r in d]), "unknown tasks \\['trec'\\]"),
        (
            lambda q, d: ([{k: v for k, v in r.items() if k != "answer_pids"} for r in q], d),
            "lacks the columns \\['answer_pids'\\]",
        ),
        (lambda q, d: (q, d + d[:1]), "repeats pid 'gov_report_Passage_0'"),
        (lambda q, d: (q + q[:1], d), "repeats qid 'gov_report_Query_0'"),
        (lambda q, d: ([dict(r, answer_pids=["nope"]) for r in q], d), "names pids \\['nope'\\]"),
        (lambda q, d: ([dict(r, answer_pids=[]) for r in q], d), "non-empty list"),
        (
            lambda q, d: ([r for r in q if r["dataset"] != "gov_report"], d),
            "task gov_report has no queries",
        ),
    ],
    ids=[
        "unknown-task",
        "missing-column",
        "repeated-pid",
        "repeated-qid",
        "absent-pid",
        "empty-answers",
        "no-queries",
    ],
)
def test_bad_sources_are_refused_by_name(tmp_path, edit, match):
    queries, documents = edit(rows(QUERIES), rows(DOCUMENTS))
    q = _write(tmp_path / "q.jsonl", queries)
    d = _write(tmp_path / "d.jsonl", documents)
    with pytest.raises(ValueError, match=match):
        build("gov_report", "queries", tmp_path / "cache", queries_source=q, documents_source=d)


def test_bad_names_and_paths():
    assert len(TASKS) == 12 and TASKS[6] == "2wikimqa"
    with pytest.raises(ValueError, match="unknown config 'gov'"):
        load("locov1", "gov")
    with pytest.raises(ValueError, match="subset must be one of"):
        load("locov1", "gov_report", subset="train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task("gov_report", queries_source="/no/such/file.jsonl", documents_source=DOCUMENTS)
    with pytest.raises(ValueError, match="unknown LoCoV1 task"):
        load_task("all")
