"""The MAD protocol runner: data paths, loss alignment, accuracy, aggregation, CLI and outputs."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hazyzoo.cli import main
from hazyzoo.datasets_scripts import mad_tasks
from hazyzoo.evaluation import mad
from hazyzoo.evaluation.mad import (
    MadData,
    RunOutcome,
    TrainSettings,
    evaluate_accuracy,
    generate_instances,
    load_setting_data,
    mad_loss,
    mad_settings,
    make_mad_model,
    parse_architectures,
    resolve_settings,
    run_mad,
    summarize_runs,
    train_and_evaluate,
)

MulticlassAccuracy = pytest.importorskip("torchmetrics.classification").MulticlassAccuracy

BASELINES = list(mad_tasks.MAD_TASKS)


def setting(name: str) -> mad.MadSetting:
    return next(s for s in mad_settings() if s.name == name)


# --- task settings and data ------------------------------------------------------------------


def test_the_settings_are_the_builders_configs():
    pytest.importorskip("datasets")
    from hazyzoo.datasets_scripts.mad import Mad, mad_config_names

    assert [s.name for s in mad_settings()] == mad_config_names()
    for config, ours in zip(Mad.BUILDER_CONFIGS, mad_settings()):
        for key, value in ours.fields.items():
            assert getattr(config, key) == value, (config.name, key)


@pytest.mark.parametrize(
    "name", [*BASELINES, "noisy-in-context-recall-frac_noise-0.6", "selective-copying-seq_len-512"]
)
def test_numpy_and_datasets_paths_give_identical_instances(name, tmp_path):
    pytest.importorskip("datasets")
    s = setting(name)
    kwargs = dict(num_train_examples=7, num_test_examples=3)
    via_datasets = load_setting_data(s, source="datasets", cache_dir=tmp_path, **kwargs)
    via_numpy = load_setting_data(s, source="numpy", **kwargs)
    assert (via_datasets.source, via_numpy.source) == ("datasets", "numpy")
    for key in ("train_inputs", "train_labels", "test_inputs", "test_labels"):
        a, b = getattr(via_datasets, key), getattr(via_numpy, key)
        assert a.dtype == b.dtype == np.int64 and a.shape == b.shape and np.array_equal(a, b), key
    assert len(via_numpy.train_inputs) == 7 and len(via_numpy.test_inputs) == 3
    # a data seed reaches both paths the same way
    other = load_setting_data(s, source="numpy", seed=7, **kwargs)
    again = load_setting_data(s, source="datasets", cache_dir=tmp_path / "s", seed=7, **kwargs)
    assert np.array_equal(other.train_inputs, again.train_inputs)


def test_without_datasets_the_numpy_path_is_used_and_cached(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    assert not mad._has_datasets()
    assert [s.name for s in resolve_settings(["memorization"], all_settings=True)][:2] == [
        "memorization",
        "memorization-vocab_size-512",
    ]
    s = setting("in-context-recall")
    data = load_setting_data(s, num_train_examples=5, num_test_examples=2, cache_dir=tmp_path)
    assert data.source == "numpy"
    x, y, _, ty = generate_instances(s, 5, 2)
    assert np.array_equal(data.train_inputs, x) and np.array_equal(data.test_labels, ty)
    # training position t is scored against the next token; test scores only recalled values
    assert np.array_equal(y[:, :-1], x[:, 1:])
    assert (ty != -100).sum() < (y != -100).sum()
    cached = list(tmp_path.glob("in-context-recall-*.npz"))
    assert len(cached) == 1
    again = load_setting_data(s, num_train_examples=5, num_test_examples=2, cache_dir=tmp_path)
    assert np.array_equal(again.train_inputs, x)


def test_train_sizes_scale_with_the_baseline_and_tests_are_replaced():
    sizes = mad._split_sizes
    assert sizes(setting("in-context-recall"), None, None) == (12800, 1280)
    assert sizes(setting("in-context-recall"), 1280, 64) == (1280, 64)
    assert sizes(setting("in-context-recall-num_train_examples-800"), 1280, None) == (80, 1280)
    assert sizes(setting("memorization"), 512, None) == (256, 1280)  # already smaller: kept
    assert sizes(setting("memorization"), 64, None) == (64, 1280)


def test_resolve_settings_and_architectures():
    assert [s.name for s in resolve_settings(None)] == BASELINES
    assert [s.name for s in resolve_settings("compression,in-context-recall-vocab_size-32")] == [
        "compression",
        "in-context-recall-vocab_size-32",
    ]
    assert len(resolve_settings(["compression"], all_settings=True)) == 11
    archs = parse_architectures(["mA-Sg-mA-Sg", "h=hyena,swiglu"])
    assert archs == {
        "mA-Sg-mA-Sg": ["mh-attention", "swiglu", "mh-attention", "swiglu"],
        "h": ["hyena", "swiglu"],
    }
    assert parse_architectures({"x": ["mh-hyena", "swiglu"]}) == {"x": ["mh-hyena", "swiglu"]}


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown MAD task or setting 'recall'"):
        resolve_settings(["recall"])
    with pytest.raises(ValueError, match="no MAD task"):
        resolve_settings([])
    with pytest.raises(ValueError, match="unknown"):
        parse_architectures(["mA-Sg-Zz"])
    with pytest.raises(ValueError, match="no architecture"):
        parse_architectures([])
    kwargs = dict(progress=False, data_source="numpy")
    with pytest.raises(ValueError, match="lrs: the grid is empty"):
        run_mad(["mA-Sg"], ["compression"], lrs=[], **kwargs)
    with pytest.raises(ValueError, match="wds: the grid is empty"):
        run_mad(["mA-Sg"], ["compression"], wds=[], **kwargs)
    with pytest.raises(ValueError, match="wds: every value"):
        run_mad(["mA-Sg"], ["compression"], wds=[-0.1], **kwargs)
    with pytest.raises(ValueError, match="epochs must be"):
        run_mad(["mA-Sg"], ["compression"], epochs=0, **kwargs)
    with pytest.raises(ValueError, match="unknown preset"):
        run_mad(["mA-Sg"], ["compression"], preset="paper", **kwargs)


# --- loss, accuracy, schedule ----------------------------------------------------------------


def test_the_loss_scores_position_t_against_target_t():
    torch.manual_seed(0)
    logits = torch.randn(3, 9, 11)
    labels = torch.randint(0, 11, (3, 9))
    labels[:, :4] = -100
    loss = mad_loss(type("Out", (), {"logits": logits})(), labels)
    unshifted = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    shifted = F.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(loss, unshifted) and not torch.allclose(loss, shifted)
    with pytest.raises(ValueError, match="do not line up"):
        mad_loss(logits[:, :-1], labels)


def tiny_lm(vocab_size: int, seq_len: int, layers=("mh-attention", "swiglu")):
    torch.manual_seed(0)
    return make_mad_model(
        list(layers), task="x", vocab_size=vocab_size, seq_len=seq_len, hidden_size=32
    )


def test_training_through_trainer_learns_an_unshifted_target():
    """Target t = input t: trivial for a causal model scored without a shift, chance (1/V) for
    one whose loss or accuracy shifted the targets by a position."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, size=(192, 12))
    s = mad.MadSetting("identity", "identity", {"vocab_size": 8, "seq_len": 12}, 192)
    data = MadData(s, x, x.copy(), x[:32], x[:32].copy())
    model = tiny_lm(8, 12)
    out = train_and_evaluate(
        model, data, TrainSettings(lr=1e-2, weight_decay=0.0, epochs=3, batch_size=32)
    )
    assert out.accuracy > 0.95, out.history
    assert out.epochs_run <= 3 and out.steps == 6 * out.epochs_run
    assert [h["epoch"] for h in out.history] == list(range(1, out.epochs_run + 1))
    assert all("loss" in h for h in out.history)
    if out.epochs_run < 3:  # stopped early: the reference's 0.999 threshold
        assert out.history[-1]["accuracy"] > 0.999


@pytest.mark.parametrize("task", ["in-context-recall", "compression"])
def test_accuracy_equals_torchmetrics_on_the_models_predictions(task):
    s = setting(task)
    data = load_setting_data(s, num_train_examples=1, num_test_examples=13, source="numpy")
    torch.manual_seed(1)
    model = make_mad_model(
        ["hyena", "swiglu"], task=task, vocab_size=s.vocab_size, seq_len=s.seq_len, hidden_size=32
    ).eval()
    got = evaluate_accuracy(
        model, data.test_inputs, data.test_labels, vocab_size=s.vocab_size, batch_size=4
    )
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(data.test_inputs)).logits
    preds, target = logits.argmax(-1).reshape(-1), torch.as_tensor(data.test_labels).reshape(-1)
    metric = MulticlassAccuracy(num_classes=s.vocab_size, average="macro", ignore_index=-100)
    assert got == pytest.approx(float(metric(preds, target)), abs=1e-6)
    # macro, not the plain fraction of correct positions
    keep = target != -100
    micro = float((preds[keep] == target[keep]).float().mean())
    assert got != pytest.approx(micro, abs=1e-6)


def test_the_schedule_is_the_references_cosine_stepped_per_epoch():
    epochs, steps_per_epoch, lr, min_lr = 5, 3, 1e-3, 1e-6
    factor = mad._epoch_cosine(epochs, steps_per_epoch, lr, min_lr)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=min_lr)
    for epoch in range(epochs):
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            assert lr * factor(step) == pytest.approx(ref.get_last_lr()[0], rel=1e-9)
        opt.step()
        ref.step()


# --- aggregation -----------------------------------------------------------------------------

# accuracy of each (architecture, setting, lr, wd): architecture "b" is better on compression
TABLE = {
    ("a", "compression"): {
        (1e-3, 0.0): 0.30,
        (1e-3, 0.1): 0.50,
        (1e-2, 0.0): 0.40,
        (1e-2, 0.1): 0.1,
    },
    ("a", "memorization"): {(1e-3, 0.0): 0.9, (1e-3, 0.1): 0.2, (1e-2, 0.0): 0.3, (1e-2, 0.1): 0.6},
    ("a", "memorization-vocab_size-512"): {
        (1e-3, 0.0): 0.1,
        (1e-3, 0.1): 0.2,
        (1e-2, 0.0): 0.7,
        (1e-2, 0.1): 0.3,
    },
    ("b", "compression"): {(1e-3, 0.0): 0.8, (1e-3, 0.1): 0.95, (1e-2, 0.0): 0.2, (1e-2, 0.1): 0.4},
    ("b", "memorization"): {(1e-3, 0.0): 0.1, (1e-3, 0.1): 0.1, (1e-2, 0.0): 0.1, (1e-2, 0.1): 0.2},
    ("b", "memorization-vocab_size-512"): {
        (1e-3, 0.0): 0.05,
        (1e-3, 0.1): 0.0,
        (1e-2, 0.0): 0.4,
        (1e-2, 0.1): 0.1,
    },
}
LAYERS = {"a": ["mh-attention", "swiglu"], "b": ["hyena", "swiglu"]}


def fake_factory(layers, *, task, vocab_size, seq_len, hidden_size):
    module = torch.nn.Linear(2, 2)
    module.arch = next(k for k, v in LAYERS.items() if v == layers)
    return module


def fake_train(model, data, settings):
    acc = TABLE[(model.arch, data.setting.name)][(settings.lr, settings.weight_decay)]
    return RunOutcome(acc, acc + 0.01, 2, 10, 0.5, [{"epoch": 1, "accuracy": acc}])


def test_mad_score_is_the_mean_over_tasks_of_the_per_setting_best_over_the_grid(tmp_path):
    results = run_mad(
        LAYERS,
        ["compression", "memorization", "memorization-vocab_size-512"],
        lrs=[1e-3, 1e-2],
        wds=[0.0, 0.1],
        num_train_examples=2,
        num_test_examples=1,
        data_source="numpy",
        model_factory=fake_factory,
        train_fn=fake_train,
        progress=False,
        output_dir=tmp_path,
    )
    assert len(results.runs) == 2 * 3 * 4
    for arch in LAYERS:
        for name in ("compression", "memorization", "memorization-vocab_size-512"):
            grid = TABLE[(arch, name)]
            best_point = max(grid, key=grid.get)
            got = results.best[arch][name]
            assert got["accuracy"] == grid[best_point]
            assert (got["lr"], got["weight_decay"]) == best_point and got["num_runs"] == 4
    assert results.task_scores["a"] == pytest.approx({"compression": 0.5, "memorization": 0.8})
    assert results.task_scores["b"] == pytest.approx({"compression": 0.95, "memorization": 0.3})
    # the mean over tasks (each task's settings averaged first), not over settings
    assert results.mad_scores == pytest.approx({"a": 0.65, "b": 0.625})
    assert results.mean_over_settings == pytest.approx(
        {"a": (0.5 + 0.9 + 0.7) / 3, "b": (0.95 + 0.2 + 0.4) / 3}
    )
    # selecting by the best epoch instead: every run's best_epoch_accuracy is acc + 0.01
    alt = summarize_runs(
        results.runs, list(LAYERS), results.settings, score_from="best_epoch_accuracy"
    )
    assert alt["mad_scores"] == pytest.approx({"a": 0.66, "b": 0.635})
    saved = json.loads((tmp_path / "mad_results.json").read_text())
    assert saved["mad_scores"] == pytest.approx(results.mad_scores)
    assert saved["protocol"]["split_sizes"]["memorization"] == {"train": 2, "test": 1}
    table = results.table().splitlines()
    assert table[0].split() == ["setting", "a", "b"]
    assert table[-1].split() == ["MAD", "score", "0.650", "0.625"]
    assert "memorization (mean)" in results.table()


# --- command line ----------------------------------------------------------------------------


def test_cli_writes_json_table_and_heatmap(tmp_path, capsys):
    out = tmp_path / "mad"
    argv = [
        "eval",
        "mad",
        "--layers",
        "mA-Sg",
        "hyena=H-Sg",
        "--tasks",
        "compression",
        "memorization",
        "--epochs",
        "1",
        "--num-train-examples",
        "32",
        "--num-test-examples",
        "16",
        "--hidden-size",
        "32",
        "--batch-size",
        "16",
        "--data-source",
        "numpy",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "MAD score" in printed and "mA-Sg" in printed and "hyena" in printed
    files = {p.name for p in out.iterdir()}
    assert files == {"mad_results.json", "mad_results.txt", "mad_results.png"}
    assert (out / "mad_results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "mad_results.txt").read_text().strip() in printed
    data = json.loads((out / "mad_results.json").read_text())
    assert data["benchmark"] == "MAD"
    assert data["architectures"] == {
        "mA-Sg": ["mh-attention", "swiglu"],
        "hyena": ["hyena", "swiglu"],
    }
    assert [s["name"] for s in data["settings"]] == ["compression", "memorization"]
    assert data["protocol"]["lrs"] == [3e-3] and data["protocol"]["epochs"] == 1
    assert data["protocol"]["split_sizes"]["memorization"] == {"train": 32, "test": 16}
    assert len(data["runs"]) == 4
    for run in data["runs"]:
        assert set(run) >= {
            "architecture",
            "setting",
            "task",
            "lr",
            "weight_decay",
            "accuracy",
            "best_epoch_accuracy",
            "train_time_s",
            "steps",
            "epochs_run",
            "history",
        }
        assert 0.0 <= run["accuracy"] <= 1.0 and run["steps"] == 2 and run["epochs_run"] == 1
    for arch in ("mA-Sg", "hyena"):
        bests = [data["best"][arch][t]["accuracy"] for t in ("compression", "memorization")]
        assert data["mad_scores"][arch] == pytest.approx(sum(bests) / 2)
    # no silent overwrite
    assert main(argv) == 1
    assert "exists (pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tasks", "recall"], "unknown MAD task or setting 'recall'"),
        (["--layers", "mA-Qq"], "unknown"),
        (["--layers", "Sg-Sg"], "architecture 'Sg-Sg': layers ['swiglu', 'swiglu'] hold only"),
        (["--hidden-size", "40"], "40 is not divisible by num_attention_heads = 16"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--wds", "-1"], "wds: every value"),
    ],
)
def test_cli_bad_input(flags, message, tmp_path, capsys):
    assert main(["eval", "mad", "--output-dir", str(tmp_path), "--no-progress", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hazyzoo eval: error:") and message in err


def test_cli_empty_grid_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "mad", "--output-dir", str(tmp_path), "--lrs"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_the_default_quick_run(tmp_path):
    """`hazyzoo eval mad` with no flags (a few minutes on 2 CPU cores)."""
    assert main(["eval", "mad", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    data = json.loads((tmp_path / "mad_results.json").read_text())
    assert len(data["runs"]) == 3 * 6 and set(data["mad_scores"]) == {
        "attention",
        "hyena",
        "hybrid",
    }
    assert all(math.isfinite(v) for v in data["mad_scores"].values())


@pytest.mark.slow
def test_the_gpu_script_dry_run_and_resume(tmp_path):
    """benchmarks/mad_scores.py on the CPU: worker processes, runs.jsonl, resume, summary."""
    import subprocess

    from tests.conftest import REPO_ROOT

    out = tmp_path / "out"

    def script(*flags: str) -> None:
        cmd = [sys.executable, "benchmarks/mad_scores.py", "--dry-run", "--output-dir", str(out)]
        subprocess.run([*cmd, *flags], cwd=REPO_ROOT, check=True, capture_output=True)

    script("--tasks", "compression")
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2
    script("--resume", "--tasks", "compression", "memorization")
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4
    data = json.loads((out / "mad_results.json").read_text())
    assert len(data["runs"]) == 4 and set(data["mad_scores"]) == {"mA-Sg", "H-Sg"}
