"""hazyzoo-lm-eval: lm-eval's command line with the hazyzoo model types registered."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys

import pytest
import torch

import hazyzoo.lm_eval as entry
from tests.conftest import REPO_ROOT
from tests.test_remote_code import save_tiny_checkpoint, subprocess_env, tiny_tokenizer

# A two-choice task over a local JSON-lines file (lm-eval reads it offline through `datasets`).
DOCS = [
    {"question": "the cat sat on the", "choices": ["mat", "dog"], "answer": 0},
    {"question": "the dog is", "choices": ["big", "red"], "answer": 1},
    {"question": "a cat ran to the", "choices": ["mat", "blue"], "answer": 0},
    {"question": "the mat is", "choices": ["green", "small"], "answer": 1},
]
TASK_YAML = """task: hazyzoo_tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
# Runs `python -m hazyzoo.lm_eval ARGS`, except that lm-eval does not index its ~15k built-in
# tasks (12 s here; the test uses only its own --include_path task).
DRIVER = """
import sys
from lm_eval.tasks import manager
init = manager.TaskManager.__init__
def without_builtin_tasks(self, *args, **kwargs):
    kwargs.setdefault("include_defaults", False)
    init(self, *args, **kwargs)
manager.TaskManager.__init__ = without_builtin_tasks
from hazyzoo.lm_eval import main
sys.exit(main(sys.argv[1:]))
"""


def test_entry_point_is_declared():
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"]
    assert "hazyzoo-lm-eval = hazyzoo.lm_eval:main" in scripts
    assert "lm-eval" in setup["options.extras_require"]["eval"]


def test_missing_lm_eval_is_a_one_line_error(monkeypatch, capsys):
    real = entry.importlib.util.find_spec
    monkeypatch.setattr(
        entry.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lm_eval" else real(name, *a),
    )
    assert entry.main(["--model", "hf"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hazyzoo-lm-eval: error: lm-eval is not installed")
    assert "pip install 'hazyzoo[eval]'" in err


def test_argv_is_handed_to_lm_eval_unchanged_after_registering(monkeypatch):
    seen = {}

    def fake_cli():
        from transformers import AutoConfig

        seen["argv"] = list(sys.argv)
        seen["registered"] = AutoConfig.for_model("hazyzoo_based").model_type
        raise SystemExit(3)

    monkeypatch.setattr(entry.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(entry, "_lm_eval_cli", lambda: fake_cli)
    before = list(sys.argv)
    args = ["--model", "hf", "--model_args", "pretrained=x,dtype=float32", "--tasks", "a,b"]
    assert entry.main(args) == 3
    assert seen["argv"] == ["hazyzoo-lm-eval", *args]
    assert seen["registered"] == "hazyzoo_based"
    assert sys.argv == before
    monkeypatch.setattr(entry, "_lm_eval_cli", lambda: lambda: None)
    assert entry.main([]) == 0


def _loglikelihoods(model, tokenizer, context: str, continuation: str) -> float:
    ctx = tokenizer(context).input_ids
    whole = tokenizer(f"{context} {continuation}").input_ids
    with torch.no_grad():
        logprobs = model(torch.tensor([whole])).logits.log_softmax(-1)[0]
    return float(sum(logprobs[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def test_lm_eval_runs_a_local_task_on_a_hazyzoo_checkpoint(tmp_path):
    pytest.importorskip("lm_eval", reason="lm-eval is optional (pip install 'hazyzoo[eval]')")
    model = save_tiny_checkpoint(tmp_path / "ckpt")
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny.yaml").write_text(TASK_YAML.format(data=data))
    env = subprocess_env(tmp_path)
    env.update(HF_DATASETS_CACHE=str(tmp_path / "datasets"), HF_HOME=str(tmp_path / "hf_home"))
    env.update(HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [
        sys.executable,
        "-c",
        DRIVER,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tmp_path / 'ckpt'},dtype=float32",
        "--tasks",
        "hazyzoo_tiny_choice",
        "--include_path",
        str(tmp_path / "tasks"),
        "--device",
        "cpu",
        "--batch_size",
        "2",
        "--output_path",
        str(tmp_path / "results"),
        "--log_samples",
    ]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hazyzoo_tiny_choice" in result.stdout  # the printed table

    (results_file,) = (tmp_path / "results").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]["hazyzoo_tiny_choice"]
    (samples_file,) = (tmp_path / "results").rglob("samples_hazyzoo_tiny_choice_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]

    # lm-eval ran our model: its log-likelihoods are ours, and so is its accuracy.
    tokenizer = tiny_tokenizer()
    correct = 0
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = DOCS[sample["doc_id"]]
        mine = [_loglikelihoods(model, tokenizer, doc["question"], c) for c in doc["choices"]]
        theirs = [float(r[0]) for r in sample["filtered_resps"]]
        assert theirs == pytest.approx(mine, abs=1e-4)
        correct += int(max(range(len(mine)), key=mine.__getitem__) == doc["answer"])
    assert len(samples) == len(DOCS)
    assert results["acc,none"] == pytest.approx(correct / len(DOCS))
