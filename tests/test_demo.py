"""The demo end to end at quick size: train both models, measure, save and reload BASED."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("datasets")

from hazyzoo.demo import recall_accuracy, run_demo


def test_recall_accuracy_uses_causal_alignment() -> None:
    labels = np.array([[-100, -100, 7, -100, 9]])
    # Predictions at t-1 = 1 and 3 must equal labels at 2 and 4.
    assert recall_accuracy(np.array([[0, 7, 0, 9, 0]]), labels) == 1.0
    assert recall_accuracy(np.array([[0, 7, 0, 1, 0]]), labels) == 0.5
    assert recall_accuracy(np.array([[0, 0, 7, 0, 9]]), labels) == 0.0
    with pytest.raises(ValueError, match="answer"):
        recall_accuracy(np.zeros((1, 5)), np.full((1, 5), -100))


def test_run_demo_quick(tmp_path) -> None:
    result = run_demo(tmp_path, quick=True)
    vocab_size = result["dataset"]["vocab_size"]
    assert set(result["models"]) == {"BASED", "Llama"}
    for name, row in result["models"].items():
        assert row["params"] > 0
        for key in ("train_tokens_per_s", "generate_tokens_per_s", "eval_loss"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key, row[key])
        assert 2 / vocab_size < row["recall_accuracy"] <= 1.0, (name, row)
    params = [row["params"] for row in result["models"].values()]
    assert max(params) / min(params) < 1.5  # same-size comparison
    assert result["reload_generation_identical"] is True
    saved = tmp_path / "based-mqar"
    assert result["saved_path"] == str(saved)
    for filename in ("config.json", "model.safetensors", "generation_config.json"):
        assert (saved / filename).is_file(), filename
    assert json.loads((saved / "config.json").read_text())["model_type"] == "hazyzoo_based"
    written = json.loads((tmp_path / "demo_results.json").read_text())
    assert written["reload_generation_identical"] is True


def test_run_demo_rejects_bad_settings(tmp_path) -> None:
    with pytest.raises(TypeError, match="no_such_setting"):
        run_demo(tmp_path, quick=True, no_such_setting=1)
    with pytest.raises(ValueError, match="max_steps"):
        run_demo(tmp_path, quick=True, max_steps=0)
