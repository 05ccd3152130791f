"""Repeated-sampling metrics: pass@k against exact binomials and the HumanEval estimator,
coverage curves, the exponentiated power-law fit, and majority-vote / reward-model selection
against brute-force enumeration of every k-subset."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hazyzoo.evaluation.coverage_metrics import (
    PowerLawFit,
    coverage_curve,
    fit_exponentiated_power_law,
    majority_vote_curve,
    pass_at_k,
    reward_selection_curve,
    summarize,
)

MODULE = Path(__file__).resolve().parents[2] / "hazyzoo" / "evaluation" / "coverage_metrics.py"


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """``1 - C(n-c,k)/C(n,k)`` in exact rational arithmetic."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def humaneval_pass_at_k(n: int, c: int, k: int) -> float:
    """The estimator as the HumanEval paper writes it: ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``.

    Written here from the formula: the ``evaluate`` package's ``code_eval`` is a Hub module
    (not in the installed package and not in the offline cache), so it cannot be loaded here.
    """
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def random_cases(rng: np.random.Generator, count: int) -> list[tuple[int, int, int]]:
    cases = [(10000, 1, 1), (10000, 1, 10000), (10000, 5000, 3), (10000, 3, 9990), (1, 1, 1)]
    cases += [(10000, 9999, 1), (10000, 0, 7), (10000, 17, 512), (10000, 2500, 9000)]
    for _ in range(count):
        n = int(rng.choice([int(rng.integers(1, 60)), 10000]))
        c, k = int(rng.integers(0, n + 1)), int(rng.integers(1, n + 1))
        cases.append((n, c, k))
    return cases


def test_pass_at_k_matches_exact_binomials_and_the_humaneval_estimator():
    for n, c, k in random_cases(np.random.default_rng(0), 60):
        got = pass_at_k(n, c, k)
        assert isinstance(got, float)
        exact = float(exact_pass_at_k(n, c, k))
        assert got == pytest.approx(exact, rel=1e-11, abs=1e-300), (n, c, k)
        assert got == pytest.approx(humaneval_pass_at_k(n, c, k), rel=1e-9, abs=1e-12), (n, c, k)


def test_pass_at_k_is_exactly_one_when_every_subset_holds_a_correct_sample():
    assert pass_at_k(10000, 9001, 1000) == 1.0
    assert pass_at_k(10, 3, 8) == 1.0  # n - c = 7 < 8
    assert pass_at_k(10, 3, 7) < 1.0
    assert pass_at_k(10000, 0, 10000) == 0.0
    assert pass_at_k(np.int64(20), np.int32(20), 1) == 1.0


def test_pass_at_k_keeps_relative_precision_for_tiny_values():
    # pass@1 with one correct of 10,000 is 1e-4 exactly; pass@2 is 2/10000 - 0 cross term
    assert pass_at_k(10000, 1, 1) == pytest.approx(1e-4, rel=1e-14)
    assert pass_at_k(10000, 1, 2) == pytest.approx(2e-4, rel=1e-14)


def test_pass_at_k_broadcasts_arrays_of_n_and_c():
    n = np.array([10, 100, 10000])
    c = np.array([[0], [3], [10]])
    got = pass_at_k(n, c, 5)
    assert isinstance(got, np.ndarray) and got.shape == (3, 3) and got.dtype == np.float64
    for i, j in itertools.product(range(3), range(3)):
        assert got[i, j] == pytest.approx(float(exact_pass_at_k(int(n[j]), int(c[i, 0]), 5)))
    assert pass_at_k([4, 4], [1, 2], 2).tolist() == pytest.approx([0.5, 5 / 6])


@pytest.mark.parametrize(
    ("n", "c", "k", "error", "match"),
    [
        (5, 2, 6, ValueError, "k=6 is larger than the number of samples n=5"),
        ([10, 5], [1, 1], 6, ValueError, r"n=5 at index \(1,\)"),
        (5, 6, 1, ValueError, "c must be <= n"),
        (5, -1, 1, ValueError, r"c must be >= 0, got \[-1\]"),
        (-5, 0, 1, ValueError, "n must be >= 0"),
        (5.5, 2, 1, ValueError, "n must hold integers"),
        (np.array([5.0, 6.0]), 2, 1, ValueError, "n must hold integers"),
        (5, True, 1, ValueError, "c must hold integers"),
        (5, 2, 2.0, ValueError, "k must be an integer, got 2.0"),
        (5, 2, 0, ValueError, "k must be >= 1, got 0"),
        (5, 2, "3", TypeError, "k must be an int"),
        ("5", 2, 1, TypeError, "n must be integers"),
        ([3, 4, 5], [1, 2], 1, ValueError, "must broadcast together"),
    ],
)
def test_pass_at_k_rejects_bad_inputs(n, c, k, error, match):
    with pytest.raises(error, match=match):
        pass_at_k(n, c, k)


def test_coverage_curve_is_the_mean_pass_at_k_and_never_decreases():
    rng = np.random.default_rng(1)
    n = rng.integers(50, 80, size=40)
    c = np.minimum(rng.geometric(0.2, size=40) - 1, n)
    curve = coverage_curve(n, c)
    assert curve.shape == (int(n.min()),)
    assert np.all(np.diff(curve) >= 0)
    for k in (1, 2, 17, int(n.min())):
        assert curve[k - 1] == pytest.approx(float(np.mean(pass_at_k(n, c, k))), rel=1e-12)
    # chosen ks come back in the order asked; 10,000 samples per problem on a log grid
    ks = [1, 10, 100, 1000, 10000]
    big_n = np.full(30, 10000)
    big_c = rng.integers(0, 40, size=30)
    big = coverage_curve(big_n, big_c, ks)
    assert np.all(np.diff(big) >= 0)
    assert big == pytest.approx([np.mean(pass_at_k(big_n, big_c, k)) for k in ks], rel=1e-10)
    assert coverage_curve(big_n, big_c, ks[::-1]) == pytest.approx(big[::-1], rel=1e-15)


def test_coverage_curve_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"ks\[1\]=11 is larger than the smallest num_samples"):
        coverage_curve([10, 20], [1, 2], [1, 11])
    with pytest.raises(ValueError, match="got 2 num_samples but 3 num_correct"):
        coverage_curve([10, 20], [1, 2, 3])
    with pytest.raises(ValueError, match=r"num_correct\[1\]=21 is larger than num_samples\[1\]"):
        coverage_curve([10, 20], [1, 21])
    with pytest.raises(ValueError, match="no problems"):
        coverage_curve([], [])
    with pytest.raises(ValueError, match=r"num_samples\[0\] is 0"):
        coverage_curve([0, 5], [0, 1])
    with pytest.raises(TypeError, match="single int"):
        coverage_curve([10], [1], 5)
    with pytest.raises(ValueError, match="ks is empty"):
        coverage_curve([10], [1], [])


LOG_GRID = np.unique(np.round(np.logspace(0, 4, 41)).astype(int))


@pytest.mark.parametrize(("a", "b"), [(-2.0, -0.35), (-0.7, -0.2), (-4.0, -0.5)])
def test_power_law_fit_recovers_the_law_that_made_the_data(a, b):
    coverage = np.exp(a * LOG_GRID.astype(float) ** b)
    fit = fit_exponentiated_power_law(LOG_GRID, coverage)
    assert fit.a == pytest.approx(a, rel=1e-6) and fit.b == pytest.approx(b, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9) and fit.rmse < 1e-9
    assert fit.num_points == len(LOG_GRID)
    assert fit.predict(LOG_GRID) == pytest.approx(coverage, abs=1e-9)


def test_power_law_fit_with_small_noise_is_within_five_percent():
    a, b = -2.0, -0.35
    clean = np.exp(a * LOG_GRID.astype(float) ** b)
    noisy = np.clip(clean + np.random.default_rng(3).normal(0, 0.003, clean.shape), 1e-6, 0.999)
    fit = fit_exponentiated_power_law(LOG_GRID, noisy)
    assert abs(fit.a / a - 1) < 0.05 and abs(fit.b / b - 1) < 0.05
    assert 0.99 < fit.r2 < 1.0 and 0.001 < fit.rmse < 0.006
    # refining in coverage space improves on the log(-log c) line it starts from
    slope, intercept = np.polyfit(np.log(LOG_GRID), np.log(-np.log(noisy)), 1)
    start = np.exp(-np.exp(intercept) * LOG_GRID.astype(float) ** slope)
    assert fit.rmse <= math.sqrt(np.mean((start - noisy) ** 2))


def test_power_law_fit_drops_points_at_zero_and_one():
    ks = np.array([1, 2, 4, 8, 16, 32, 64])
    coverage = np.exp(-1.5 * ks.astype(float) ** -0.4)
    with_ends = np.concatenate([[0.0], coverage, [1.0, 1.0]])
    fit = fit_exponentiated_power_law(np.concatenate([[1], ks, [128, 256]]), with_ends)
    assert fit.num_points == len(ks)
    assert fit.a == pytest.approx(-1.5, rel=1e-6) and fit.b == pytest.approx(-0.4, rel=1e-6)
    with pytest.raises(ValueError, match="need at least 2 points with 0 < coverage < 1"):
        fit_exponentiated_power_law([1, 2, 3], [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="at distinct k"):
        fit_exponentiated_power_law([4, 4], [0.3, 0.31])
    with pytest.raises(ValueError, match=r"coverage values must lie in \[0, 1\]"):
        fit_exponentiated_power_law([1, 2], [0.3, 1.2])
    with pytest.raises(ValueError, match="ks must be finite and > 0"):
        fit_exponentiated_power_law([0, 2], [0.3, 0.4])
    with pytest.raises(ValueError, match="equal length"):
        fit_exponentiated_power_law([1, 2, 3], [0.3, 0.4])


def test_power_law_fit_record():
    fit = PowerLawFit(a=-1.0, b=-0.5, r2=0.9, rmse=0.01, num_points=5)
    assert json.loads(json.dumps(fit.to_dict())) == {
        "a": -1.0, "b": -0.5, "r2": 0.9, "rmse": 0.01, "num_points": 5,
    }  # fmt: skip
    assert float(fit.predict(4)) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="k must be finite and > 0"):
        fit.predict([1, 0])
    with pytest.raises(ValueError, match="PowerLawFit.a must be a finite negative float"):
        PowerLawFit(a=0.5, b=-0.5, r2=1.0, rmse=0.0, num_points=2)
    with pytest.raises(AttributeError):
        fit.a = -2.0  # frozen


def brute_force_majority(answers, correct, k):
    """Exact expected accuracy of the vote over all k-subsets (ties averaged)."""
    total = Fraction(0)
    subsets = list(itertools.combinations(range(len(answers)), k))
    for subset in subsets:
        votes: dict[str, int] = {}
        for j in subset:
            if answers[j] is not None:
                votes[answers[j]] = votes.get(answers[j], 0) + 1
        if not votes:
            continue
        best = max(votes.values())
        tied = [a for a, v in votes.items() if v == best]
        first_flag = {a: bool(correct[answers.index(a)]) for a in tied}
        total += Fraction(sum(first_flag.values()), len(tied))
    return float(total / len(subsets))


def test_majority_vote_matches_brute_force_enumeration():
    rng = np.random.default_rng(5)
    answers, correct = [], []
    for _ in range(4):
        n = 7
        row = [None if rng.random() < 0.2 else str(rng.integers(0, 3)) for _ in range(n)]
        answers.append(row)
        correct.append([a == "0" for a in row])
    ks = [1, 2, 3, 5, 7]
    got = majority_vote_curve(answers, correct, ks, num_trials=3000, seed=0)
    expected = [np.mean([brute_force_majority(a, c, k) for a, c in zip(answers, correct)])
                for k in ks]  # fmt: skip
    # each problem's estimate has a standard error <= 0.5/sqrt(3000) ~ 0.009
    assert got == pytest.approx(expected, abs=0.025)
    assert got.tolist() == majority_vote_curve(answers, correct, ks, num_trials=3000).tolist()


def test_majority_vote_ties_none_answers_and_whole_sets():
    # k = n has one subset: the majority is certain
    assert majority_vote_curve([["a", "a", "b"]], [[True, True, False]], [3]).tolist() == [1.0]
    # a two-way tie is broken uniformly at random
    tie = majority_vote_curve([["a", "b"]], [[True, False]], [2], num_trials=4000, seed=1)
    assert tie[0] == pytest.approx(0.5, abs=0.03)
    # None never wins, however many samples lack an answer...
    row, flags = [None, None, None, "x"], [True, True, True, False]
    assert majority_vote_curve([row], [flags], [4]).tolist() == [0.0]
    # ...and a problem with no answers at all is always wrong
    assert majority_vote_curve([[None, None]], [[True, True]], [1, 2]).tolist() == [0.0, 0.0]
    # at k = 1 the vote is one random sample: the fraction of answered correct samples
    answers = [["a", "b", "a", None], ["c", "c", "d", "d"]]
    correct = [[True, False, True, False], [False, False, True, True]]
    one = majority_vote_curve(answers, correct, [1], num_trials=4000, seed=2)
    assert one[0] == pytest.approx((0.5 + 0.5) / 2, abs=0.03)


def test_majority_vote_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"answers\[0\] has 2 entries but correct\[0\] has 3"):
        majority_vote_curve([["a", "b"]], [[True, False, True]], [1])
    with pytest.raises(TypeError, match=r"answers\[0\]\[1\] must be a str or None, got int 3"):
        majority_vote_curve([["a", 3]], [[True, False]], [1])
    with pytest.raises(TypeError, match=r"correct\[0\]\[0\] must be a bool"):
        majority_vote_curve([["a"]], [[1]], [1])
    with pytest.raises(ValueError, match=r"ks\[0\]=3 is larger than the smallest number"):
        majority_vote_curve([["a", "b"]], [[True, False]], [3])
    with pytest.raises(ValueError, match="answers has 2 problems but correct has 1"):
        majority_vote_curve([["a"], ["b"]], [[True]], [1])
    with pytest.raises(ValueError, match="num_trials must be >= 1"):
        majority_vote_curve([["a"]], [[True]], [1], num_trials=0)


def brute_force_reward(scores, correct, k):
    """Exact expected accuracy of the top-scored pick over all k-subsets (ties averaged)."""
    total = Fraction(0)
    subsets = list(itertools.combinations(range(len(scores)), k))
    for subset in subsets:
        best = max(scores[j] for j in subset)
        tied = [j for j in subset if scores[j] == best]
        total += Fraction(sum(correct[j] is True for j in tied), len(tied))
    return float(total / len(subsets))


def test_reward_selection_matches_brute_force_enumeration_with_ties():
    rng = np.random.default_rng(7)
    for trial in range(12):
        num_problems = int(rng.integers(1, 4))
        n = int(rng.integers(1, 9))
        # few distinct values, so ties are common; floats and ints mixed
        scores = [[float(s) if trial % 2 else int(s) for s in rng.integers(0, 3, n)]
                  for _ in range(num_problems)]  # fmt: skip
        correct = [[[True, False, None][int(v)] for v in rng.integers(0, 3, n)]
                   for _ in range(num_problems)]  # fmt: skip
        ks = list(range(1, n + 1))
        got = reward_selection_curve(scores, correct, ks)
        expected = [np.mean([brute_force_reward(s, c, k) for s, c in zip(scores, correct)])
                    for k in ks]  # fmt: skip
        assert got == pytest.approx(expected, abs=1e-12), (scores, correct)


def test_reward_selection_at_scale_and_its_limits():
    rng = np.random.default_rng(8)
    n = 10000
    correct = (rng.random(n) < 0.3).tolist()
    scores = (rng.random(n) + 0.5 * np.array(correct)).tolist()  # an informative verifier
    curve = reward_selection_curve([scores], [correct], [1, 10, 100, 1000, n])
    assert curve[0] == pytest.approx(np.mean(correct), abs=1e-12)  # one sample: no choice
    assert curve[-1] == float(correct[int(np.argmax(scores))])  # all samples: the top one
    assert np.all(np.diff(curve) > -1e-12) and curve[3] > 0.9
    with pytest.raises(ValueError, match=r"scores\[0\]\[1\] must be finite"):
        reward_selection_curve([[0.1, float("nan")]], [[True, False]], [1])
    with pytest.raises(ValueError, match=r"scores\[0\] has 1 entries but correct\[0\] has 2"):
        reward_selection_curve([[0.1]], [[True, False]], [1])
    with pytest.raises(TypeError, match=r"scores\[0\]\[0\] must be a number"):
        reward_selection_curve([[None]], [[True]], [1])


def test_summarize_is_json_able_and_reports_the_fit():
    rng = np.random.default_rng(9)
    n = np.full(60, 1000)
    p = rng.beta(0.3, 3.0, size=60)  # per-problem solve rates, many hard problems
    c = rng.binomial(n, p)
    ks = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    summary = json.loads(json.dumps(summarize(n, c, ks)))
    assert summary["num_problems"] == 60 and summary["ks"] == ks
    assert summary["coverage"] == pytest.approx(coverage_curve(n, c, ks).tolist())
    assert summary["fit_error"] is None and summary["fit"]["a"] < 0
    assert summary["fit"]["r2"] > 0.9
    saturated = summarize([10, 10], [10, 10], [1, 5])
    assert saturated["fit"] is None and "0 < coverage < 1" in saturated["fit_error"]


def test_the_module_imports_with_numpy_and_scipy_only():
    code = (
        "import importlib.util, sys\n"
        "sys.modules['torch'] = None; sys.modules['datasets'] = None\n"
        f"spec = importlib.util.spec_from_file_location('cm', {str(MODULE)!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['cm'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(module.pass_at_k(10, 2, 3))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(float(exact_pass_at_k(10, 2, 3)))
