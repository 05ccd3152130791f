"""The ``pass_at_k`` evaluate module: loads offline by path and gives the numbers of
``coverage_curve`` and of the closed form, one call or batch by batch."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hazyzoo.evaluation import metric_path
from hazyzoo.evaluation.coverage_metrics import coverage_curve
from hazyzoo.evaluation.metrics import METRICS

evaluate = pytest.importorskip("evaluate")


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(metric_path("pass_at_k"))


def test_the_module_is_registered_and_complete():
    assert "pass_at_k" in METRICS and list(METRICS) == sorted(METRICS)
    path = Path(metric_path("pass_at_k"))
    assert (path / "pass_at_k.py").is_file() and (path / "README.md").is_file()
    # evaluate's import scanner wants one import per line
    for line in (path / "pass_at_k.py").read_text().splitlines():
        if line.startswith(("import ", "from ")):
            assert "," not in line, line


def test_pass_at_k_matches_the_closed_form(metric):
    rng = np.random.default_rng(0)
    num_samples = [10000, 10000, 200, 50, 10000]
    num_correct = [0, 3, 17, 50, int(rng.integers(0, 10000))]
    ks = [1, 10, 50]
    out = metric.compute(num_correct=num_correct, num_samples=num_samples, k=ks)
    assert list(out) == ["pass@1", "pass@10", "pass@50"]
    for k in ks:
        exact = sum(
            1 - Fraction(math.comb(n - c, k), math.comb(n, k))
            for n, c in zip(num_samples, num_correct)
        ) / len(num_samples)
        assert out[f"pass@{k}"] == pytest.approx(float(exact), rel=1e-11)
    assert list(out.values()) == pytest.approx(coverage_curve(num_samples, num_correct, ks))


def test_documented_example_single_k_and_batches(metric):
    out = metric.compute(num_correct=[0, 5], num_samples=[10, 10], k=[1, 10])
    assert out == pytest.approx({"pass@1": 0.25, "pass@10": 0.5}, rel=1e-14)
    default_k = metric.compute(num_correct=[1], num_samples=[4])
    assert default_k == pytest.approx({"pass@1": 0.25}, rel=1e-14)
    for c, n in [(1, 4), (2, 4)]:
        metric.add(num_correct=c, num_samples=n)
    assert metric.compute(k=2) == pytest.approx({"pass@2": (0.5 + 5 / 6) / 2})


def test_bad_inputs_are_errors(metric):
    with pytest.raises(ValueError, match=r"ks\[1\]=20 is larger than the smallest num_samples"):
        metric.compute(num_correct=[1, 2], num_samples=[10, 30], k=[1, 20])
    with pytest.raises(ValueError, match=r"num_correct\[0\]=11 is larger than num_samples\[0\]"):
        metric.compute(num_correct=[11], num_samples=[10], k=[1])
    with pytest.raises(ValueError, match="k lists the same value more than once"):
        metric.compute(num_correct=[1], num_samples=[10], k=[2, 2])
    with pytest.raises(ValueError, match="num_correct must be >= 0"):
        metric.compute(num_correct=[-1], num_samples=[10], k=[1])
