"""``hazyzoo demo rtf`` (hazyzoo.demo_rtf): RTF vs S4D classifiers on scikit-learn's digits."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")

from hazyzoo.cli import main
from hazyzoo.demo_rtf import (
    FILTERS,
    TASKS,
    build_classifier,
    load_digit_sequences,
    run_rtf_demo,
)


def test_digit_sequences_are_17_grey_levels_and_the_permuted_task_reorders_pixels():
    seq = load_digit_sequences("sequential", seed=0)
    perm = load_digit_sequences("permuted", seed=0)
    assert seq["x_train"].shape == (1437, 64) and seq["x_test"].shape == (360, 64)
    assert seq["x_train"].min() == 0 and seq["x_train"].max() == 16
    assert set(np.unique(seq["y_test"])) == set(range(10))
    np.testing.assert_array_equal(seq["y_train"], perm["y_train"])  # one split
    assert not np.array_equal(seq["x_train"], perm["x_train"])
    np.testing.assert_array_equal(np.sort(seq["x_train"], 1), np.sort(perm["x_train"], 1))
    with pytest.raises(ValueError, match="task"):
        load_digit_sequences("spiral")


def test_the_two_classifiers_differ_only_in_their_filters():
    rtf, s4d = build_classifier("rtf", seed=3), build_classifier("s4d", seed=3)
    rtf_state, s4d_state = rtf.state_dict(), s4d.state_dict()
    shared = {k for k in rtf_state if ".filter." not in k}
    assert shared == {k for k in s4d_state if ".filter." not in k}
    assert all(rtf_state[k].equal(s4d_state[k]) for k in shared)
    assert type(s4d.model.layers[0].mixer.filter).__name__ == "S4DFilter"
    with pytest.raises(ValueError, match="kind"):
        build_classifier("mamba")


def test_quick_run_through_the_cli_writes_its_results(tmp_path, capsys):
    out = tmp_path / "rtf"
    assert main(["demo", "rtf", "--quick", "--output-dir", str(out)]) == 0
    assert "| sequential | RTF |" in capsys.readouterr().out
    result = json.loads((out / "rtf_demo.json").read_text())
    assert result["settings"]["quick"] and result["settings"]["epochs"] == 1
    for task in TASKS:
        for kind in FILTERS:
            row = result["results"][task][kind]
            assert isinstance(row["test_accuracy"], float)
            assert 0.0 <= row["test_accuracy"] <= 1.0
            assert row["seconds_per_epoch"] > 0 and row["params"] > 0
            assert len(row["accuracy_per_epoch"]) == 1
            assert all(math.isfinite(x) for x in row["runs"][0]["train_loss_per_epoch"])
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (out / "rtf_demo.png").is_file() == has_matplotlib
    assert result["plot"] == ("rtf_demo.png" if has_matplotlib else None)


def test_runs_are_deterministic_in_the_seed(tmp_path):
    small = dict(train_examples=64, num_seeds=1, hidden_size=16)
    first = run_rtf_demo(tmp_path / "a", seed=1, quick=True, **small)
    again = run_rtf_demo(tmp_path / "b", seed=1, quick=True, **small)
    for task in TASKS:
        for kind in FILTERS:
            a, b = first["results"][task][kind]["runs"][0], again["results"][task][kind]["runs"][0]
            assert a["train_loss_per_epoch"] == b["train_loss_per_epoch"]
            assert a["accuracy_per_epoch"] == b["accuracy_per_epoch"]
    with pytest.raises(TypeError, match="bogus"):
        run_rtf_demo(tmp_path / "c", bogus=1)
