"""``hazyzoo eval vq``: both estimators trained and compared, results and PNG written, the
saved models reload with the Auto classes and ``--model DIR`` evaluates one; the metrics."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel

from hazyzoo.cli import main
from hazyzoo.evaluation.vq import digits_images, evaluate_vq


def test_cli_trains_both_estimators_and_reloads_them(tmp_path, capsys):
    out = tmp_path / "vq"
    argv = ["eval", "vq", "--epochs", "1", "--codebook-size", "16", "--output-dir", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "ste" in table and "rotation" in table
    report = json.loads((out / "vq_results.json").read_text())
    assert set(report["results"]) == {"ste", "rotation"}
    for r in report["results"].values():
        assert 0 < r["codebook_usage"] <= 1 and 1 <= r["perplexity"] <= 16
        assert r["reconstruction_mse"] > 0 and r["num_images"] == 360
    assert (out / "vq_results.png").stat().st_size > 1000
    model = AutoModel.from_pretrained(out / "rotation")
    assert model.config.gradient_estimator == "rotation"
    _, test = digits_images(16)
    direct = evaluate_vq(model, test)
    for key, value in direct.items():  # the reloaded model measures what the trained one did
        assert value == pytest.approx(report["results"]["rotation"][key], rel=1e-6), key
    again = tmp_path / "again"
    assert main(["eval", "vq", "--model", str(out / "rotation"), "--output-dir", str(again)]) == 0
    reloaded = json.loads((again / "vq_results.json").read_text())["results"]
    (only,) = reloaded.values()
    assert only["reconstruction_mse"] == pytest.approx(direct["reconstruction_mse"], rel=1e-6)
    assert main(["card", str(out / "ste")]) == 0
    assert "rotation trick" in (out / "ste" / "README.md").read_text().lower()


def test_usage_is_the_fraction_of_codes_per_256_images():
    class Fixed(torch.nn.Module):  # codes 0..3 for the first 256 images, 0..1 afterwards
        config = type("C", (), {"codebook_size": 8})()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode(self, x):
            return torch.zeros(len(x), 1, 1, 1)

        def forward(self, x):
            first = int(x[0, 0, 0, 0]) == 0
            idx = torch.arange(len(x)) % (4 if first else 2)
            out = type("O", (), {})()
            out.reconstruction, out.quantized = x, torch.zeros(len(x), 1, 1, 1)
            out.indices = idx[:, None, None]
            return out

    images = torch.zeros(512, 1, 1, 1)
    images[256:] = 1.0
    metrics = evaluate_vq(Fixed(), images)
    assert metrics["codebook_usage"] == pytest.approx((4 / 8 + 2 / 8) / 2)
    assert metrics["codes_used"] == 4


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError, match="multiple of 8"):
        digits_images(12)
    argv = ["eval", "vq", "--estimators", "gumbel", "--output-dir", str(tmp_path)]
    assert main(argv) != 0
    assert "estimators must be from" in capsys.readouterr().err
