"""Metrics of repeated sampling: coverage (pass@k), its scaling law, and answer selection.

"Large Language Monkeys" (Brown et al. 2024) draws many samples per problem and asks three
questions, each answered by one function here:

- How often does *some* sample solve the problem? :func:`pass_at_k` is the unbiased estimator
  of pass@k from ``n`` samples of which ``c`` are correct; :func:`coverage_curve` averages it
  over problems for every k (the paper's "coverage").
- How does coverage grow with k? Roughly log-linearly over four orders of magnitude, which the
  paper models with an exponentiated power law ``c(k) = exp(a * k**b)``;
  :func:`fit_exponentiated_power_law` fits it and returns a :class:`PowerLawFit`.
- Can we find the correct sample without an oracle? :func:`majority_vote_curve` (the most
  frequent extracted answer of a random k-subset) and :func:`reward_selection_curve` (the
  highest-scored sample of a random k-subset) give the accuracy of the two verifier-free and
  reward-model baselines; both plateau while coverage keeps growing.

:func:`summarize` bundles coverage and the fit as a JSON-able dict. Only numpy and scipy are
imported, so the module works without torch or datasets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares


def _as_counts(name: str, value: Any) -> np.ndarray:
    """``value`` as an int64 array of counts >= 0; non-integers are an error, never rounded."""
    array = np.asarray(value)
    if array.dtype.kind in "iu" or (array.size == 0 and array.dtype.kind == "f"):
        counts = array.astype(np.int64)
    elif array.dtype.kind in "fb":
        raise ValueError(f"{name} must hold integers, got {array.dtype} values {_preview(array)}")
    else:
        raise TypeError(f"{name} must be integers, got {type(value).__name__} {_preview(array)}")
    if (counts < 0).any():
        raise ValueError(f"{name} must be >= 0, got {_preview(counts[counts < 0])}")
    return counts


def _preview(array: np.ndarray) -> str:
    values = np.asarray(array).ravel().tolist()
    return repr(values[:5])[:-1] + ", ...]" if len(values) > 5 else repr(values)


def _check_k(name: str, k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        if isinstance(k, (float, np.floating)):
            raise ValueError(f"{name} must be an integer, got {k!r}")
        raise TypeError(f"{name} must be an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return int(k)


def _one_minus_ratio(n: int, c: int, k: int) -> float:
    """``1 - C(n-c, k) / C(n, k)`` with the shorter of the two product forms, in float64.

    ``C(n-c,k)/C(n,k) = prod_{j<k} (1 - c/(n-j)) = prod_{i=n-c+1..n} (1 - k/i)``; the log of
    the product is a sum of ``log1p`` terms and ``-expm1`` of it keeps relative precision when
    pass@k is tiny as well as when it is close to 1.
    """
    if n - c < k:
        return 1.0
    if c == 0:
        return 0.0
    if c <= k:
        log_ratio = np.log1p(-k / np.arange(n - c + 1, n + 1, dtype=np.float64)).sum()
    else:
        log_ratio = np.log1p(-c / np.arange(n - k + 1, n + 1, dtype=np.float64)).sum()
    return float(-np.expm1(log_ratio))


def pass_at_k(n: Any, c: Any, k: int) -> float | np.ndarray:
    """Unbiased pass@k: the chance that a random k of ``n`` samples holds one of ``c`` correct.

    ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021), computed as a float64 product of at most
    ``min(c, k)`` factors, so ``n`` in the tens of thousands needs no huge binomials. It is
    exactly 1.0 when ``n - c < k`` (every k-subset holds a correct sample) and exactly 0.0 when
    ``c == 0``. Scalar ``n`` and ``c`` give a float; arrays broadcast against each other and give
    an ndarray. ``k`` is one int with ``1 <= k <= n``.
    """
    k = _check_k("k", k)
    n_arr, c_arr = _as_counts("n", n), _as_counts("c", c)
    try:
        n_b, c_b = np.broadcast_arrays(n_arr, c_arr)
    except ValueError:
        raise ValueError(
            f"n and c must broadcast together, got shapes {n_arr.shape} and {c_arr.shape}"
        ) from None
    if (c_b > n_b).any():
        bad = np.argwhere(c_b > n_b)[0]
        where = f" at index {tuple(bad.tolist())}" if n_b.ndim else ""
        raise ValueError(
            f"c must be <= n{where}, got c={int(c_b[tuple(bad)])} > n={int(n_b[tuple(bad)])}"
        )
    if (n_b < k).any():
        bad = np.argwhere(n_b < k)[0]
        where = f" at index {tuple(bad.tolist())}" if n_b.ndim else ""
        raise ValueError(
            f"k={k} is larger than the number of samples n={int(n_b[tuple(bad)])}{where}; "
            "pass@k needs k <= n"
        )
    if n_b.ndim == 0:
        return _one_minus_ratio(int(n_b), int(c_b), k)
    cache: dict[tuple[int, int], float] = {}
    out = np.empty(n_b.shape, dtype=np.float64)
    for index, (n_i, c_i) in enumerate(zip(n_b.ravel().tolist(), c_b.ravel().tolist())):
        key = (n_i, c_i)
        if key not in cache:
            cache[key] = _one_minus_ratio(n_i, c_i, k)
        out.flat[index] = cache[key]
    return out


def _pass_at_every_k(n: int, c: int, k_max: int) -> np.ndarray:
    """pass@k for k = 1..k_max of one problem from one cumulative sum.

    ``log C(n-c,k)/C(n,k) = sum_{j<k} log1p(-c/(n-j))`` is a running sum of non-positive
    terms, so the curve is non-decreasing in k by construction (also in floating point).
    """
    out = np.ones(k_max, dtype=np.float64)
    if c == 0:
        out[:] = 0.0
        return out
    finite = min(k_max, n - c)  # for k > n - c the ratio is 0 and pass@k is exactly 1
    if finite > 0:
        log_ratio = np.cumsum(np.log1p(-c / (n - np.arange(finite, dtype=np.float64))))
        out[:finite] = -np.expm1(log_ratio)
    return out


def _problem_counts(num_samples: Any, num_correct: Any) -> tuple[np.ndarray, np.ndarray]:
    n = _as_counts("num_samples", num_samples)
    c = _as_counts("num_correct", num_correct)
    if n.ndim != 1 or c.ndim != 1:
        raise ValueError(
            f"num_samples and num_correct must be 1-D (one entry per problem), got shapes "
            f"{n.shape} and {c.shape}"
        )
    if len(n) != len(c):
        raise ValueError(f"got {len(n)} num_samples but {len(c)} num_correct")
    if len(n) == 0:
        raise ValueError("no problems: num_samples and num_correct are empty")
    if (c > n).any():
        i = int(np.argmax(c > n))
        raise ValueError(
            f"num_correct[{i}]={int(c[i])} is larger than num_samples[{i}]={int(n[i])}"
        )
    if (n == 0).any():
        raise ValueError(f"num_samples[{int(np.argmax(n == 0))}] is 0; every problem needs samples")
    return n, c


def _check_ks(ks: Any, k_limit: int, what: str) -> np.ndarray:
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        raise TypeError(f"ks must be a sequence of ints, got the single int {ks!r}; use [{ks}]")
    values = [_check_k(f"ks[{i}]", k) for i, k in enumerate(ks)]
    if not values:
        raise ValueError("ks is empty; give at least one k")
    for i, k in enumerate(values):
        if k > k_limit:
            raise ValueError(f"ks[{i}]={k} is larger than {what} ({k_limit}); pass@k needs k <= n")
    return np.asarray(values, dtype=np.int64)


def coverage_curve(
    num_samples: Any, num_correct: Any, ks: Sequence[int] | None = None
) -> np.ndarray:
    """Coverage at each k: the mean over problems of ``pass_at_k(n_i, c_i, k)``.

    ``num_samples[i]`` and ``num_correct[i]`` are problem i's sample and correct counts.
    ``ks`` defaults to ``1..min(num_samples)``; every k must be <= the smallest ``n_i``. The
    result (one float per k, in the order of ``ks``) is non-decreasing in k.
    """
    n, c = _problem_counts(num_samples, num_correct)
    n_min = int(n.min())
    ks_arr = (
        np.arange(1, n_min + 1) if ks is None else _check_ks(ks, n_min, "the smallest num_samples")
    )
    k_max = int(ks_arr.max())
    total = np.zeros(len(ks_arr), dtype=np.float64)
    pairs, counts = np.unique(np.stack([n, c], axis=1), axis=0, return_counts=True)
    for (n_i, c_i), weight in zip(pairs.tolist(), counts.tolist()):
        total += weight * _pass_at_every_k(n_i, c_i, k_max)[ks_arr - 1]
    return total / len(n)


@dataclass(frozen=True)
class PowerLawFit:
    """An exponentiated power law ``coverage(k) = exp(a * k**b)`` and how well it fits.

    ``r2`` and ``rmse`` are measured in coverage space on the ``num_points`` points used.
    """

    a: float
    b: float
    r2: float
    rmse: float
    num_points: int

    def __post_init__(self) -> None:
        for name in ("a", "b", "r2", "rmse"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"PowerLawFit.{name} must be a float, got {value!r}")
        if not (math.isfinite(self.a) and self.a < 0):
            raise ValueError(f"PowerLawFit.a must be a finite negative float, got {self.a!r}")
        if not math.isfinite(self.b):
            raise ValueError(f"PowerLawFit.b must be finite, got {self.b!r}")
        if isinstance(self.num_points, bool) or not isinstance(self.num_points, int):
            raise TypeError(f"PowerLawFit.num_points must be an int, got {self.num_points!r}")

    def predict(self, k: Any) -> np.ndarray:
        """``exp(a * k**b)`` at each k (> 0); always an ndarray, 0-d for a scalar k."""
        ks = np.asarray(k, dtype=np.float64)
        if not np.isfinite(ks).all() or (ks <= 0).any():
            raise ValueError(f"k must be finite and > 0, got {_preview(ks)}")
        return np.exp(self.a * ks**self.b)

    def to_dict(self) -> dict[str, float | int]:
        """The fields as plain Python numbers (JSON-able)."""
        return asdict(self)


def fit_exponentiated_power_law(ks: Sequence[float], coverage: Sequence[float]) -> PowerLawFit:
    """Fit ``coverage(k) = exp(a * k**b)`` with ``a < 0`` (``b`` is free; it is < 0 when
    coverage grows with k).

    Only points with ``0 < coverage < 1`` are used: the law is strictly between 0 and 1 for
    every finite k, so a point at exactly 0 (nothing solved yet) or 1 (saturated) has no finite
    ``log(-log c)`` and would pull the fit towards a limit it never reaches; such points are
    dropped (``num_points`` counts those kept). At least 2 usable points at 2 distinct k are
    needed. The start is the least-squares line ``log(-log c) = log(-a) + b log k``; it is
    then refined by ``scipy.optimize.least_squares`` on the coverage residuals, with
    ``a = -exp(theta)`` so that ``a`` stays negative.
    """
    k_arr = np.asarray(ks, dtype=np.float64)
    c_arr = np.asarray(coverage, dtype=np.float64)
    if k_arr.ndim != 1 or k_arr.shape != c_arr.shape:
        raise ValueError(
            f"ks and coverage must be 1-D and of equal length, got shapes {k_arr.shape} "
            f"and {c_arr.shape}"
        )
    if not np.isfinite(k_arr).all() or (k_arr <= 0).any():
        raise ValueError(f"ks must be finite and > 0, got {_preview(k_arr)}")
    if not np.isfinite(c_arr).all() or (c_arr < 0).any() or (c_arr > 1).any():
        raise ValueError(f"coverage values must lie in [0, 1], got {_preview(c_arr)}")
    usable = (c_arr > 0) & (c_arr < 1)
    k_fit, c_fit = k_arr[usable], c_arr[usable]
    if len(k_fit) < 2 or np.unique(k_fit).size < 2:
        raise ValueError(
            f"need at least 2 points with 0 < coverage < 1 at distinct k to fit, got "
            f"{len(k_fit)} (of {len(k_arr)}; points at coverage 0 or 1 are dropped)"
        )
    x, y = np.log(k_fit), np.log(-np.log(c_fit))
    b0, intercept = np.polyfit(x, y, 1)

    def residuals(params: np.ndarray) -> np.ndarray:
        theta, b = params
        return np.exp(-np.exp(theta) * k_fit**b) - c_fit

    result = least_squares(residuals, x0=[intercept, b0], method="trf", xtol=1e-14, ftol=1e-14)
    theta, b = (float(v) for v in result.x)
    a = -math.exp(theta)
    residual = residuals(result.x)
    ss_res = float(residual @ residual)
    ss_tot = float(((c_fit - c_fit.mean()) ** 2).sum())
    # A flat curve has nothing to explain: r2 is 1 if the fit is exact, else 0.
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    rmse = math.sqrt(ss_res / len(c_fit))
    return PowerLawFit(a=a, b=b, r2=r2, rmse=rmse, num_points=len(c_fit))


def _check_problem_lists(name: str, per_problem: Any, num_problems: int | None) -> list[list]:
    """``per_problem`` as a list of per-problem lists (one entry per sample)."""
    if isinstance(per_problem, (str, bytes)) or not hasattr(per_problem, "__iter__"):
        raise TypeError(f"{name} must hold one list per problem, got {type(per_problem).__name__}")
    lists = []
    for i, row in enumerate(per_problem):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__iter__"):
            raise TypeError(
                f"{name}[{i}] must be a list (one entry per sample), got "
                f"{type(row).__name__} {row!r}"
            )
        lists.append(list(row))
    if not lists:
        raise ValueError(f"{name} is empty; give one list per problem")
    if num_problems is not None and len(lists) != num_problems:
        raise ValueError(f"{name} has {len(lists)} problems but correct has {num_problems}")
    return lists


def _check_correct(correct: Any) -> list[np.ndarray]:
    """Per-problem correctness flags as bool arrays; None (unknown) counts as not correct."""
    out = []
    for i, row in enumerate(_check_problem_lists("correct", correct, None)):
        if not row:
            raise ValueError(f"correct[{i}] is empty; every problem needs samples")
        for j, flag in enumerate(row):
            if flag is not None and not isinstance(flag, (bool, np.bool_)):
                raise TypeError(
                    f"correct[{i}][{j}] must be a bool (or None for unknown), got "
                    f"{type(flag).__name__} {flag!r}"
                )
        out.append(np.array([flag is not None and bool(flag) for flag in row], dtype=bool))
    return out


def majority_vote_curve(
    answers: Sequence[Sequence[str | None]],
    correct: Sequence[Sequence[bool | None]],
    ks: Sequence[int],
    num_trials: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """Expected accuracy of majority voting over a random k-subset of each problem's samples.

    ``answers[i][j]`` is the answer extracted from sample j of problem i (``None``: no answer)
    and ``correct[i][j]`` whether that sample is correct (``None`` counts as not correct). For
    each problem, ``num_trials`` uniformly random orderings of its samples are drawn with
    ``numpy.random.Generator(seed)``; the first k of an ordering is a uniform k-subset, so each
    ordering serves every k. In a subset the most frequent non-None answer wins, ties broken
    uniformly at random; a subset of only None answers is wrong. The vote is correct iff the
    samples giving the winning answer are correct (the first such sample's flag is used).
    Returns the mean over problems of the fraction of correct votes, one float per k.
    """
    flags = _check_correct(correct)
    answer_lists = _check_problem_lists("answers", answers, len(flags))
    num_trials = _check_k("num_trials", num_trials)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    for i, (row, flag_row) in enumerate(zip(answer_lists, flags)):
        if len(row) != len(flag_row):
            raise ValueError(
                f"answers[{i}] has {len(row)} entries but correct[{i}] has {len(flag_row)}"
            )
        for j, answer in enumerate(row):
            if answer is not None and not isinstance(answer, str):
                raise TypeError(
                    f"answers[{i}][{j}] must be a str or None, got "
                    f"{type(answer).__name__} {answer!r}"
                )
    ks_arr = _check_ks(ks, min(len(f) for f in flags), "the smallest number of samples")
    rng = np.random.default_rng(seed)
    accuracy = np.zeros(len(ks_arr), dtype=np.float64)
    for row, flag_row in zip(answer_lists, flags):
        codes: dict[str, int] = {}
        answer_correct: list[bool] = []
        sample_codes = np.empty(len(row), dtype=np.int64)
        for j, answer in enumerate(row):
            if answer is None:
                sample_codes[j] = -1
                continue
            if answer not in codes:
                codes[answer] = len(codes)
                answer_correct.append(bool(flag_row[j]))
            sample_codes[j] = codes[answer]
        if not codes:  # every sample lacks an answer: every vote is wrong
            continue
        num_answers = len(codes)
        is_correct = np.array(answer_correct, dtype=bool)
        orders = rng.permuted(np.tile(np.arange(len(row)), (num_trials, 1)), axis=1)
        ordered = sample_codes[orders]  # (trials, n) answer codes in random order
        # Shift each trial's codes into its own block of bins; None goes to one bin past all.
        shifted = np.where(
            ordered >= 0,
            ordered + num_answers * np.arange(num_trials)[:, None],
            num_trials * num_answers,
        )
        for index, k in enumerate(ks_arr.tolist()):
            votes = np.bincount(shifted[:, :k].ravel(), minlength=num_trials * num_answers + 1)
            votes = votes[: num_trials * num_answers].reshape(num_trials, num_answers)
            # Jitter in [0, 0.5) orders only equal counts: uniform among the tied answers.
            winner = np.argmax(votes + 0.5 * rng.random(votes.shape), axis=1)
            won = is_correct[winner] & (votes.max(axis=1) > 0)
            accuracy[index] += won.mean()
    return accuracy / len(flags)


def _check_scores(scores: Any, flags: list[np.ndarray]) -> list[np.ndarray]:
    rows = _check_problem_lists("scores", scores, len(flags))
    out = []
    for i, (row, flag_row) in enumerate(zip(rows, flags)):
        if len(row) != len(flag_row):
            raise ValueError(
                f"scores[{i}] has {len(row)} entries but correct[{i}] has {len(flag_row)}"
            )
        for j, score in enumerate(row):
            if isinstance(score, (bool, np.bool_)) or not isinstance(
                score, (int, float, np.integer, np.floating)
            ):
                raise TypeError(
                    f"scores[{i}][{j}] must be a number, got {type(score).__name__} {score!r}"
                )
            if not math.isfinite(score):
                raise ValueError(f"scores[{i}][{j}] must be finite, got {score!r}")
        out.append(np.asarray(row, dtype=np.float64))
    return out


def _max_rank_weights(n: int, k: int) -> np.ndarray:
    """``w[r] = C(n-1-r, k-1) / C(n, k)``: the chance that rank r (0 = best) is a k-subset's best.

    ``w[0] = k/n`` and ``w[r+1]/w[r] = 1 - (k-1)/(n-1-r)``; ``w[r] = 0`` for ``r > n-k``.
    """
    w = np.zeros(n, dtype=np.float64)
    last = n - k  # the lowest rank that can still be a subset's best
    steps = np.log1p(-(k - 1) / (n - 1 - np.arange(last, dtype=np.float64)))
    w[: last + 1] = np.exp(math.log(k / n) + np.concatenate([[0.0], np.cumsum(steps)]))
    return w


def reward_selection_curve(
    scores: Sequence[Sequence[float]],
    correct: Sequence[Sequence[bool | None]],
    ks: Sequence[int],
) -> np.ndarray:
    """Exact expected accuracy of keeping the highest-scored sample of a random k-subset.

    Sort a problem's n samples by score, best first (rank r = 0..n-1). With distinct scores,
    rank r is the best of a uniform k-subset iff r is in the subset and no better rank is:
    ``P = C(n-1-r, k-1) / C(n, k)``, so the accuracy is ``sum_r P_r * correct_r``. With ties
    (broken uniformly at random inside the subset), the chance that the pick comes from a tie
    group is the sum of ``P_r`` over the group's ranks, and by symmetry each member of the group
    is then equally likely; so each correctness flag is replaced by the mean of its tie group
    and the same sum applies. ``None`` in ``correct`` counts as not correct; higher scores are
    better. Returns the mean over problems, one float per k; no sampling is involved.
    """
    flags = _check_correct(correct)
    score_rows = _check_scores(scores, flags)
    ks_arr = _check_ks(ks, min(len(f) for f in flags), "the smallest number of samples")
    accuracy = np.zeros(len(ks_arr), dtype=np.float64)
    for score_row, flag_row in zip(score_rows, flags):
        n = len(score_row)
        order = np.argsort(-score_row, kind="stable")
        sorted_scores = score_row[order]
        sorted_flags = flag_row[order].astype(np.float64)
        # Mean correctness of each tie group, spread over the group's ranks.
        _, starts, sizes = np.unique(-sorted_scores, return_index=True, return_counts=True)
        group_means = np.add.reduceat(sorted_flags, starts) / sizes
        tie_averaged = np.repeat(group_means, sizes)
        for index, k in enumerate(ks_arr.tolist()):
            accuracy[index] += float(_max_rank_weights(n, k) @ tie_averaged)
    return accuracy / len(flags)


def summarize(num_samples: Any, num_correct: Any, ks: Sequence[int]) -> dict[str, Any]:
    """Coverage at each k and the exponentiated power-law fit, as a JSON-able dict.

    Keys: ``num_problems``, ``ks``, ``coverage`` (a list aligned with ``ks``), ``fit``
    (:meth:`PowerLawFit.to_dict`, or None when the curve has fewer than 2 points strictly
    between 0 and 1) and ``fit_error`` (why there is no fit, else None).
    """
    n, c = _problem_counts(num_samples, num_correct)
    ks_list = _check_ks(ks, int(n.min()), "the smallest num_samples").tolist()
    coverage = coverage_curve(n, c, ks_list)
    fit: dict[str, float | int] | None = None
    fit_error: str | None = None
    try:
        fit = fit_exponentiated_power_law(ks_list, coverage).to_dict()
    except ValueError as error:
        fit_error = str(error)
    return {
        "num_problems": len(n),
        "ks": ks_list,
        "coverage": [float(v) for v in coverage],
        "fit": fit,
        "fit_error": fit_error,
    }


__all__ = [
    "PowerLawFit",
    "coverage_curve",
    "fit_exponentiated_power_law",
    "majority_vote_curve",
    "pass_at_k",
    "reward_selection_curve",
    "summarize",
]
