"""``hazyzoo.evaluation.gpt4all``: lm-eval's Python API on a tiny zoo model, offline.

Two local tasks (tests/data/lm_eval_tasks: ARC-style multiple choice, BoolQ-style yes/no, 12
documents each) run end to end on a random tiny BASED with a word-level tokenizer: lm-eval's
accuracies are the ones the model's own log-likelihoods give, the average is the documented
mean, runs repeat exactly, a saved checkpoint directory gives the same numbers, the CLI writes
JSON and prints the table. The GPT4All metric mapping is checked against lm-eval's own YAMLs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import hazyzoo
from hazyzoo.evaluation import gpt4all
from hazyzoo.evaluation.gpt4all import (
    AVERAGE_METRIC,
    GPT4ALL_TASKS,
    UnknownTaskError,
    average_metric,
    evaluate_gpt4all,
)
from tests.conftest import REPO_ROOT

pytest.importorskip("lm_eval", reason="lm-eval is optional (pip install 'hazyzoo[eval]')")
import lm_eval
import lm_eval.evaluator
from lm_eval.tasks import TaskManager

TASKS_DIR = REPO_ROOT / "tests" / "data" / "lm_eval_tasks"
ARC, BOOLQ = "hazyzoo_tiny_arc", "hazyzoo_tiny_boolq"
TEMPLATE_WORDS = ["Question", "Answer", ":", "?", "no", "yes"]


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS_DIR / name).read_text().splitlines()]


ARC_DOCS, BOOLQ_DOCS = _rows("tiny_arc.jsonl"), _rows("tiny_boolq.jsonl")


def _prompts() -> dict[str, list[tuple[str, list[str], int]]]:
    """(context, choices, gold) per document, as the YAMLs build them."""
    arc = [
        (
            f"Question: {d['question']}\nAnswer:",
            d["choices"]["text"],
            d["choices"]["label"].index(d["answerKey"]),
        )
        for d in ARC_DOCS
    ]
    boolq = [
        (f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:", ["no", "yes"], d["label"])
        for d in BOOLQ_DOCS
    ]
    return {ARC: arc, BOOLQ: boolq}


def tiny_tokenizer():
    """A word-level tokenizer over every word of the two tasks (pad 0, eos/bos 1, unk 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    words = set(TEMPLATE_WORDS)
    for docs in _prompts().values():
        for context, choices, _ in docs:
            words |= {w for w, _ in split.pre_tokenize_str(context)} | set(choices)
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate(sorted(words))})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = split
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<eos>",
    )


def tiny_model() -> hazyzoo.BasedForCausalLM:
    torch.manual_seed(0)
    config = hazyzoo.BasedConfig.tiny(bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return hazyzoo.BasedForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    """The task folder copied, with absolute data paths (datasets resolves a relative
    ``data_files`` against the current directory) and a private datasets cache."""
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    shutil.copytree(TASKS_DIR, root, dirs_exist_ok=True)
    for path in root.glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        files = config["dataset_kwargs"]["data_files"]
        config["dataset_kwargs"]["data_files"] = {k: str(root / v) for k, v in files.items()}
        config["dataset_kwargs"]["cache_dir"] = str(root / "datasets_cache")
        path.write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def task_manager(tasks_dir):
    # Only the local tasks: indexing lm-eval's ~15k built-in YAMLs takes seconds.
    return gpt4all.build_task_manager(tasks_dir, include_defaults=False)


@pytest.fixture(autouse=True)
def _quiet_lm_eval(monkeypatch):
    """simple_evaluate records `git describe` of the current directory and torch's environment
    report (subprocesses, seconds); neither is part of our results."""
    monkeypatch.setattr(lm_eval.evaluator, "get_git_commit_hash", lambda: None)
    monkeypatch.setattr(lm_eval.evaluator, "add_env_info", lambda storage: None)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    tiny_model().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@torch.no_grad()
def _expected_accuracies(model, tokenizer) -> dict[str, dict[str, float]]:
    """acc / acc_norm from the model's own log-likelihoods of `` choice`` after the prompt."""
    expected = {}
    for task, docs in _prompts().items():
        acc = acc_norm = 0
        for context, choices, gold in docs:
            ctx = tokenizer(context).input_ids
            lls = []
            for choice in choices:
                whole = tokenizer(f"{context} {choice}").input_ids
                logprobs = model(torch.tensor([whole])).logits.log_softmax(-1)[0]
                lls.append(
                    float(sum(logprobs[i - 1, whole[i]] for i in range(len(ctx), len(whole))))
                )
            acc += max(range(len(lls)), key=lls.__getitem__) == gold
            normed = [ll / len(c) for ll, c in zip(lls, choices)]
            acc_norm += max(range(len(lls)), key=normed.__getitem__) == gold
        expected[task] = {"acc": acc / len(docs), "acc_norm": acc_norm / len(docs)}
    return expected


def test_tokenizer_fits_the_tiny_model(tokenizer):
    assert len(tokenizer) <= hazyzoo.BasedConfig.tiny().vocab_size
    assert tokenizer.unk_token_id not in tokenizer(_prompts()[ARC][0][0]).input_ids


def test_local_tasks_end_to_end_in_memory(tokenizer, task_manager):
    model = tiny_model()
    report = evaluate_gpt4all(
        model, tokenizer, tasks=[ARC, BOOLQ], batch_size=4, task_manager=task_manager
    )
    tasks = report["tasks"]
    assert set(tasks) == {ARC, BOOLQ}
    arc, boolq = tasks[ARC], tasks[BOOLQ]
    assert arc["num_samples"] == len(ARC_DOCS) == 12
    assert boolq["num_samples"] == len(BOOLQ_DOCS) == 12
    for row in (arc, boolq):
        assert 0.0 <= row["acc"] <= 1.0 and row["acc_stderr"] > 0
        assert row["num_fewshot"] == 0 and row["version"] == 1.0
    assert "acc_norm" not in boolq and 0.0 <= arc["acc_norm"] <= 1.0
    # lm-eval scored our model: its accuracies are those of our own log-likelihoods.
    expected = _expected_accuracies(model, tokenizer)
    assert arc["acc"] == pytest.approx(expected[ARC]["acc"])
    assert arc["acc_norm"] == pytest.approx(expected[ARC]["acc_norm"])
    assert boolq["acc"] == pytest.approx(expected[BOOLQ]["acc"])
    # The average: acc_norm where the task reports it, else acc.
    assert arc["average_metric"] == "acc_norm" and boolq["average_metric"] == "acc"
    average = report["average"]
    assert average["metrics"] == {ARC: "acc_norm", BOOLQ: "acc"}
    assert average["value"] == pytest.approx((arc["acc_norm"] + boolq["acc"]) / 2)
    assert average["excluded"] == []
    assert report["versions"]["lm_eval"] == importlib.metadata.version("lm_eval")
    assert report["versions"]["tasks"] == {ARC: 1.0, BOOLQ: 1.0}
    assert report["config"]["tasks"] == [ARC, BOOLQ]
    json.dumps(report)  # serialisable as is

    # Deterministic: the same numbers again, also with per-document records and a limit.
    again = evaluate_gpt4all(
        model, tokenizer, tasks=[ARC, BOOLQ], batch_size=3, task_manager=task_manager
    )
    assert again["tasks"] == tasks and again["average"] == average
    limited = evaluate_gpt4all(
        model, tokenizer, tasks=[BOOLQ], limit=5, log_samples=True, task_manager=task_manager
    )
    assert limited["tasks"][BOOLQ]["num_samples"] == 5
    assert len(limited["samples"][BOOLQ]) == 5


def test_checkpoint_directory_gives_the_same_numbers(checkpoint, tokenizer, task_manager):
    from_dir = evaluate_gpt4all(
        str(checkpoint), tasks=[ARC, BOOLQ], device="cpu", batch_size=4, task_manager=task_manager
    )
    in_memory = evaluate_gpt4all(
        tiny_model(), tokenizer, tasks=[ARC, BOOLQ], batch_size=4, task_manager=task_manager
    )
    for task in (ARC, BOOLQ):
        for key, value in in_memory["tasks"][task].items():
            assert from_dir["tasks"][task][key] == pytest.approx(value), (task, key)
    assert from_dir["average"]["value"] == pytest.approx(in_memory["average"]["value"])
    assert from_dir["config"]["model"] == str(checkpoint)


def test_cli_writes_json_and_prints_the_table(checkpoint, tasks_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        gpt4all,
        "build_task_manager",
        lambda include_path=None: TaskManager(include_path=include_path, include_defaults=False),
    )
    parser = argparse.ArgumentParser()
    gpt4all.add_arguments(parser)
    defaults = parser.parse_args(["--model", "x"])
    assert defaults.tasks == list(GPT4ALL_TASKS) and defaults.num_fewshot == 0
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            "--model",
            str(checkpoint),
            "--tasks",
            f"{ARC},{BOOLQ}",
            "--include-path",
            str(tasks_dir),
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert gpt4all.run_from_args(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / gpt4all.RESULTS_JSON).read_text())
    assert set(report["tasks"]) == {ARC, BOOLQ}
    lines = printed.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["task", "metric", "value", "stderr"]
    arc = report["tasks"][ARC]
    assert any(
        line.startswith(ARC) and "acc_norm*" in line and f"{arc['acc_norm']:.4f}" in line
        for line in lines
    )
    assert f"average (2 tasks, * metrics): {report['average']['value']:.4f}" in printed
    assert str(out / gpt4all.RESULTS_JSON) in printed


def test_unknown_task_lists_close_matches(tokenizer, task_manager):
    with pytest.raises(UnknownTaskError) as info:
        evaluate_gpt4all(
            tiny_model(), tokenizer, tasks=[ARC, "hazyzoo_tiny_ark"], task_manager=task_manager
        )
    message = str(info.value)
    assert "'hazyzoo_tiny_ark'" in message and ARC in message and "--include-path" in message
    assert isinstance(info.value, ValueError)  # `hazyzoo eval` reports it in one line


def test_model_that_cannot_be_loaded(tmp_path, tokenizer, task_manager):
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(OSError, match="cannot load model"):
            evaluate_gpt4all(str(bad), tasks=[ARC], device="cpu", task_manager=task_manager)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "no_such_model"}')
    with pytest.raises(OSError, match="cannot load model"):
        evaluate_gpt4all(
            str(tmp_path / "broken"), tasks=[ARC], device="cpu", task_manager=task_manager
        )
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate_gpt4all(tiny_model(), tasks=[ARC], task_manager=task_manager)


def test_missing_lm_eval_is_an_import_error_with_the_hint(monkeypatch):
    real = gpt4all.importlib.util.find_spec
    monkeypatch.setattr(
        gpt4all.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lm_eval" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install 'hazyzoo\[eval\]'"):
        evaluate_gpt4all("unused", tasks=[ARC])


def test_gpt4all_metric_mapping():
    assert tuple(AVERAGE_METRIC) == GPT4ALL_TASKS
    normed = {"arc_challenge", "arc_easy", "hellaswag", "openbookqa", "piqa"}
    assert {t for t, m in AVERAGE_METRIC.items() if m == "acc_norm"} == normed
    assert {t for t, m in AVERAGE_METRIC.items() if m == "acc"} == {"boolq", "winogrande"}
    both, acc_only = {"acc": 0.5, "acc_norm": 0.6}, {"acc": 0.5}
    for task in normed:
        assert average_metric(task, both) == "acc_norm"
        assert average_metric(task, acc_only) is None  # a GPT4All task missing its metric
    assert (
        average_metric("boolq", both) == "acc" and average_metric("winogrande", acc_only) == "acc"
    )
    assert average_metric("my_task", both) == "acc_norm"
    assert average_metric("my_task", acc_only) == "acc"
    assert average_metric("my_task", {"exact_match": 1.0}) is None


def test_mapping_matches_lm_evals_own_task_yamls():
    """Each GPT4All task of the installed lm-eval reports acc_norm exactly where the average
    uses it (index only those tasks' folders: offline, no data loaded)."""
    root = Path(lm_eval.__file__).parent / "tasks"
    folders = ["arc", "super_glue/boolq", "hellaswag", "openbookqa", "piqa", "winogrande"]
    if not all((root / f).is_dir() for f in folders):
        pytest.skip("this lm-eval lays its task folders out differently")
    manager = TaskManager(include_path=[str(root / f) for f in folders], include_defaults=False)
    for task in GPT4ALL_TASKS:
        config = manager.task_index[task].cfg
        assert config["output_type"] == "multiple_choice", task
        reported = {m["metric"] for m in config["metric_list"]}
        assert "acc" in reported, task
        assert ("acc_norm" in reported) == (AVERAGE_METRIC[task] == "acc_norm"), task
