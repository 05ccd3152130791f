"""The LoCoV1 runner: per-task nDCG@10 and the average, table, JSON/PNG, the CLI entry."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
from transformers import AutoModel, AutoTokenizer

from hazyzoo.evaluation import HFTextEncoder, LoCoV1Results, evaluate_locov1, locov1
from hazyzoo.evaluation.locov1 import (
    LOCOV1_TASKS,
    add_arguments,
    format_table,
    limit_queries_of,
    resolve_task_names,
    run_from_args,
    write_results,
)
from tests.conftest import REPO_ROOT
from tests.evaluation.test_retrieval import (
    HashingEncoder,
    ToyTask,
    cosine_matrix,
    pytrec_direct,
    save_tiny_bert,
    toy_task,
)

FIXTURE = REPO_ROOT / "tests" / "data" / "locov1"


def two_tasks() -> dict[str, ToyTask]:
    """Two hand-made tasks under real LoCoV1 names."""
    return {
        "qmsum": toy_task("qmsum", num_docs=24, num_queries=8, seed=10),
        "stackoverflow": toy_task("stackoverflow", num_docs=18, num_queries=6, seed=11),
    }


def test_evaluate_locov1_per_task_and_average_equal_pytrec_eval_directly():
    tasks, encoder = two_tasks(), HashingEncoder()
    results = evaluate_locov1(encoder, list(tasks.values()), batch_size=4)
    assert isinstance(results, LoCoV1Results) and list(results.results) == list(tasks)
    means = []
    for name, task in tasks.items():
        expected = pytrec_direct(task, *cosine_matrix(encoder, task), k=10)
        result = results.results[name]
        assert result.per_query == pytest.approx(expected, abs=1e-9)
        mean = sum(expected.values()) / len(expected)
        assert result.ndcg == pytest.approx(mean, abs=1e-9)
        assert (result.num_queries, result.num_documents) == (len(task.queries), len(task.corpus))
        means.append(mean)
    # the LoCoV1 score: the unweighted mean over tasks (not over all queries)
    assert results.average == pytest.approx(sum(means) / 2, abs=1e-9)
    assert 0.0 < results.average < 1.0
    # a mapping of tasks is accepted too
    assert evaluate_locov1(encoder, tasks).average == results.average


def test_limit_queries_keeps_the_first_queries_and_the_whole_corpus():
    task = toy_task(num_docs=10, num_queries=6)
    small = limit_queries_of(task, 2)
    assert list(small.queries) == list(task.queries)[:2] and small.corpus == task.corpus
    assert list(small.qrels) == list(small.queries)
    assert limit_queries_of(task, 100) is task and limit_queries_of(task, None) is task
    results = evaluate_locov1(HashingEncoder(), [task], limit_queries=2)
    assert results.results["toy"].num_queries == 2
    assert results.results["toy"].num_documents == 10
    with pytest.raises(ValueError, match="limit_queries must be an int >= 1 or None, got 0"):
        limit_queries_of(task, 0)


def test_task_names_resolve_and_unknown_names_fail_before_loading(monkeypatch):
    assert resolve_task_names(None) == list(LOCOV1_TASKS) == resolve_task_names("all")
    assert len(LOCOV1_TASKS) == 12
    assert resolve_task_names("qmsum, gov_report") == ["qmsum", "gov_report"]

    def no_loading(*args, **kwargs):
        raise AssertionError("must not load")

    monkeypatch.setattr(locov1, "_load_task", no_loading)
    with pytest.raises(ValueError, match="unknown LoCoV1 task 'qmsumm'; choose from"):
        evaluate_locov1(HashingEncoder(), ["qmsum", "qmsumm"])
    with pytest.raises(ValueError, match="unknown LoCoV1 task 'nope'"):
        resolve_task_names("qmsum,nope")
    with pytest.raises(ValueError, match="more than once"):
        resolve_task_names(["qmsum", "qmsum"])
    with pytest.raises(ValueError, match="empty name"):
        resolve_task_names("qmsum,")
    with pytest.raises(ValueError, match="tasks is empty"):
        evaluate_locov1(HashingEncoder(), [])


def test_names_are_loaded_with_the_data_module_and_the_sources(monkeypatch):
    calls = []
    tasks = two_tasks()

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return tasks[name]

    monkeypatch.setattr(locov1, "_load_task", fake_load)
    results = evaluate_locov1(
        HashingEncoder(), "qmsum,stackoverflow", queries_source="q.jsonl", cache_dir="c"
    )
    assert list(results.results) == ["qmsum", "stackoverflow"]
    assert calls == [
        (name, {"queries_source": "q.jsonl", "documents_source": None, "cache_dir": "c"})
        for name in ("qmsum", "stackoverflow")
    ]
    assert results.settings["queries_source"] == "q.jsonl"


def test_bad_tasks_and_arguments_are_clear_errors():
    encoder = HashingEncoder()
    empty = ToyTask("gov_report", {}, {"q": "x"}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="'gov_report' has an empty corpus"):
        evaluate_locov1(encoder, [empty])
    with pytest.raises(ValueError, match=r"top_k \(5\) must be >= k \(10\)"):
        evaluate_locov1(encoder, [toy_task()], top_k=5)
    with pytest.raises(ValueError, match="name a task more than once"):
        evaluate_locov1(encoder, [toy_task(), toy_task()])


def test_table_json_and_png(tmp_path):
    results = evaluate_locov1(HashingEncoder(), two_tasks())
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "queries", "documents", "truncated", "nDCG@10"]
    assert lines[1].split() == ["qmsum", "8", "24", "-", f"{results.results['qmsum'].ndcg:.4f}"]
    assert lines[-1].split() == ["Average", f"{results.average:.4f}"]

    paths = write_results(results, tmp_path / "out")
    assert [p.name for p in paths] == ["locov1_results.json", "locov1_results.png"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths[0].read_text())
    assert data["benchmark"] == "LoCoV1" and data["metric"] == "ndcg@10"
    assert data["average"] == results.average
    for name, r in results.results.items():
        assert data["tasks"][name]["ndcg"] == r.ndcg
        assert data["tasks"][name]["per_query"] == r.per_query
    with pytest.raises(FileExistsError, match="locov1_results.json exists"):
        write_results(results, tmp_path / "out")
    assert len(write_results(results, tmp_path / "out", overwrite=True)) == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        write_results(results, tmp_path / "file")


def test_png_is_skipped_with_a_warning_without_matplotlib(tmp_path, monkeypatch):
    results = evaluate_locov1(HashingEncoder(), [toy_task()])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.warns(RuntimeWarning, match="matplotlib is not installed"):
        paths = write_results(results, tmp_path)
    assert [p.name for p in paths] == ["locov1_results.json"]
    assert not (tmp_path / "locov1_results.png").exists()


# --- the command --------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hazyzoo eval locov1")
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def fake_data(monkeypatch):
    tasks = two_tasks()
    monkeypatch.setattr(locov1, "_load_task", lambda name, **kwargs: tasks[name])
    return tasks


def test_run_from_args_writes_the_numbers_evaluate_locov1_gives(
    bert_dir, fake_data, tmp_path, capsys
):
    out = tmp_path / "results"
    args = parse(
        [
            "--model", str(bert_dir),
            "--tasks", "qmsum,stackoverflow",
            "--batch-size", "4",
            "--max-length", "32",
            "--padding", "longest",
            "--device", "cpu",
            "--output-dir", str(out),
        ]
    )  # fmt: skip
    assert run_from_args(args) == 0
    printed = capsys.readouterr().out
    assert "AutoModelForTextEncoding" in printed and "pooler_output" in printed
    assert "Average" in printed and f"wrote {out / 'locov1_results.json'}" in printed
    data = json.loads((out / "locov1_results.json").read_text())
    assert (out / "locov1_results.png").is_file()

    import hazyzoo  # noqa: F401

    model = AutoModel.from_pretrained(bert_dir)
    encoder = HFTextEncoder(
        model, AutoTokenizer.from_pretrained(bert_dir), max_length=32, padding="longest"
    )
    expected = evaluate_locov1(encoder, list(fake_data.values()), batch_size=4)
    assert data["average"] == expected.average
    for name, r in expected.results.items():
        assert data["tasks"][name]["ndcg"] == r.ndcg
        assert data["tasks"][name]["per_query"] == r.per_query
    settings = data["settings"]
    assert settings["auto_class"] == "AutoModelForTextEncoding"
    assert settings["pooling"] == "pooler_output"
    assert (settings["padding"], settings["max_length"], settings["device"]) == (
        "longest",
        32,
        "cpu",
    )

    # again without --overwrite: refused before any work; with it: replaced
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        run_from_args(args)
    args.overwrite = True
    assert run_from_args(args) == 0


def test_run_from_args_max_length_padding_default_length(bert_dir, fake_data, tmp_path, capsys):
    args = parse(["--model", str(bert_dir), "--tasks", "qmsum", "--output-dir", str(tmp_path)])
    assert (args.padding, args.dtype, args.tasks) == (None, "float32", "qmsum")
    assert run_from_args(args) == 0  # a model that is not padding-invariant: max_length
    settings = json.loads((tmp_path / "locov1_results.json").read_text())["settings"]
    assert (settings["padding"], settings["max_length"]) == ("max_length", 64)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"tasks": "qmsum,nope"}, ValueError, "unknown LoCoV1 task 'nope'"),
        ({"padding": "max"}, ValueError, "unknown --padding 'max'"),
        ({"batch_size": 0}, ValueError, "--batch-size must be >= 1, got 0"),
        ({"limit_queries": 0}, ValueError, "--limit-queries must be >= 1"),
        ({"max_length": 65}, ValueError, "max_length 65 is longer than the model allows"),
        ({"model": "/nonexistent/model"}, FileNotFoundError, "--model /nonexistent/model"),
    ],
)
def test_run_from_args_rejects_bad_input(change, error, match, bert_dir, fake_data, tmp_path):
    args = parse(["--model", str(bert_dir), "--tasks", "qmsum", "--output-dir", str(tmp_path)])
    for key, value in change.items():
        setattr(args, key, value)
    with pytest.raises(error, match=match):
        run_from_args(args)


def test_padding_choices_are_enforced_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse(["--model", "m", "--padding", "max"])
    assert "invalid choice: 'max'" in capsys.readouterr().err


# --- the published-schema fixture (written with the data builder) -------------------------


def test_on_the_published_schema_fixture_through_load_task(tmp_path):
    pytest.importorskip("datasets")
    from hazyzoo.datasets_scripts.locov1 import load_task

    sources = {
        "queries_source": FIXTURE / "queries.jsonl",
        "documents_source": FIXTURE / "documents.jsonl",
        "cache_dir": tmp_path,
    }
    names = ["gov_report", "2wikimqa", "courtlistener_Plain_Text"]  # the fixture's tasks
    tasks = [load_task(name, **sources) for name in names]
    encoder = HashingEncoder()
    results = evaluate_locov1(encoder, names, **sources)
    for task in tasks:
        expected = pytrec_direct(task, *cosine_matrix(encoder, task), k=10)
        assert results.results[task.name].per_query == pytest.approx(expected, abs=1e-9)
    mean = sum(r.ndcg for r in results.results.values()) / len(results.results)
    assert results.average == pytest.approx(mean, abs=1e-12)
    assert 0 < results.average < 1  # bag-of-words gets some queries right, not all
