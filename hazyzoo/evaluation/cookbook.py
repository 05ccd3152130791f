"""Cookbook evaluation: rule following (alignment), template mixing, and the CPU experiment.

Three parts of "Cookbook" (Narayan et al. 2024, arXiv:2410.05224), built on the templates of
:mod:`hazyzoo.datasets_scripts.cookbook_templates`:

**Alignment** (:func:`rule_following`). For a model and a template: the fraction of the model's
greedy generations on the template's held-out examples that its checker accepts (the paper's
alignment score: how well the model follows the rule the template encodes). Held-out means the
``test`` split of the ``cookbook`` builder (:func:`~hazyzoo.datasets_scripts.cookbook_templates.
split_examples`), whose random stream is disjoint from the ``train`` split's.
:func:`alignment_correlation` relates alignment scores to task accuracies over a set of models
(Pearson and Spearman with their p-values, from scipy).

**Template mixing** (:func:`template_effects`, :func:`solve_mixture_weights`). The paper learns
mixture weights over templates from downstream accuracy but does not publish the algorithm;
this is ours, stated so it can be checked:

1. *Effects.* Fine-tune the base model once per candidate template ``t`` (same budget of ``N``
   examples each) and evaluate every target task ``k`` (GPT4All tasks through lm-eval, or any
   accuracy): ``effect[t, k] = acc(tuned on t, k) - acc(base, k)``.
2. *Model of a mixture.* A mixture ``w`` (on the simplex) trained with the same budget gives
   ``t`` a fraction ``w_t`` of the examples. Gains have diminishing returns in the share a
   template gets, losses do not: predicted ``acc_k(w) = acc(base, k) + sum_t
   max(effect[t,k], 0) * w_t ** alpha + min(effect[t,k], 0) * w_t`` with ``0 < alpha <= 1``
   (``alpha = 1``: linear, so the best single template wins; default 0.5; estimate it with
   :func:`estimate_returns_exponent` from runs at a smaller budget).
3. *Solve.* Maximise the mean over tasks of ``acc_k(w)``. The objective is concave and separable
   over templates (``sum_t p_t w_t**alpha + n_t w_t`` with ``p_t``, ``n_t`` the mean positive
   and negative effects), so the KKT conditions give every weight in closed form for a given
   multiplier ``lam`` (``w_t = (alpha p_t / (lam - n_t)) ** (1 / (1 - alpha))``), and ``lam`` is
   found by bisection so that the weights sum to one. Templates that help no task get weight 0.

Departures from the paper: its mixing procedure is not public; ours ignores interactions
between templates (each template's effect is measured alone), assumes the same returns exponent
for every template and task, and measures effects at one budget. Check a solved mixture by
training it (:func:`run_mixing`), as the experiment below does against uniform weights.

**The CPU experiment** (``hazyzoo eval cookbook``): a tiny BASED model with a word tokenizer
over the default random vocabulary, fine-tuned with :func:`hazyzoo.train.train` on one
template (default ``copy_span``); its held-out rule following before and after, next to the
untrained model's, and the tuned model's rule following on the other templates of ``--probe``.
``--mix`` runs the mixing loop instead: effects of each ``--mix`` template on the targets'
rule following, solved weights, and the solved and the uniform mixture trained and scored.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hazyzoo.datasets_scripts.cookbook_templates import (
    TEMPLATES,
    CookbookExample,
    build_word_tokenizer,
    default_vocabulary,
    split_examples,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "AlignmentCorrelation",
    "RuleFollowing",
    "alignment_correlation",
    "chance_level",
    "estimate_returns_exponent",
    "format_table",
    "predicted_accuracy",
    "rule_following",
    "run_experiment",
    "run_mixing",
    "solve_mixture_weights",
    "template_effects",
]

RESULTS_JSON = "cookbook_results.json"

# Embedded defaults of ``hazyzoo eval cookbook`` (measured on 2 CPU cores: see the README).
DEFAULT_SETTINGS: dict[str, Any] = {
    "template": "copy_span",
    "probe": ["first_last", "key_value_retrieval", "fill_blank_coreference"],
    "vocab_size": 32,
    "hidden_size": 64,
    "feature_dim": 16,
    "sliding_window": 8,
    "initializer_range": 0.05,
    "max_steps": 1000,
    "batch_size": 32,
    # 3e-3 with a cosine schedule learns the templates; 1e-2 (the MQAR demo's) stays on the
    # loss plateau of these one-answer-per-example data.
    "learning_rate": 3e-3,
    "warmup_ratio": 0.1,
    "num_eval_examples": 200,
    "seed": 0,
}


# --------------------------------------------------------------------------------------------
# alignment: rule following


@dataclass(frozen=True)
class RuleFollowing:
    """The alignment score of a model on one template: ``num_following`` of ``num_examples``
    held-out generations pass the template's checker (``score`` is their ratio); ``chance`` is
    what a model that only learned the answer format would score by guessing (multiple choice:
    one over the options; yes/no: 0.5; free-form answers: 0)."""

    template: str
    num_examples: int
    num_following: int
    score: float
    chance: float
    samples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chance_level(examples: Sequence[CookbookExample]) -> float:
    """Mean probability of a correct uniform guess among the allowed answers of ``examples``."""
    if not examples:
        raise ValueError("examples is empty")
    total = 0.0
    for ex in examples:
        task_type = TEMPLATES[ex.template].task_type
        if "options" in ex.meta:
            total += 1.0 / len(ex.meta["options"])
        elif task_type == "yes_no":
            total += 0.5
    return total / len(examples)


def _max_new_tokens(tokenizer: Any, examples: Sequence[CookbookExample]) -> int:
    longest = max(
        len(tokenizer(ex.response, add_special_tokens=False)["input_ids"]) for ex in examples
    )
    return longest + 2


def rule_following(
    model: Any,
    tokenizer: Any,
    template: str,
    *,
    examples: Sequence[CookbookExample] | None = None,
    num_examples: int = 200,
    seed: int = 0,
    split: str = "test",
    vocab: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 50,
    device: str | None = None,
    num_samples_kept: int = 3,
) -> RuleFollowing:
    """The fraction of ``model``'s greedy generations on ``template``'s held-out examples that
    follow the rule (the template's checker accepts them).

    Examples are ``examples`` when given, else the first ``num_examples`` of the ``cookbook``
    builder's ``split`` for (``seed``, ``vocab``, ``params``). Generation is greedy, cut at the
    first newline (responses are one line) or after ``max_new_tokens`` (default: the longest
    reference response's token count + 2), through :func:`hazyzoo.jrt.generate_until`.
    """
    from hazyzoo.jrt import generate_until

    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid templates: {list(TEMPLATES)}")
    if examples is None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples must be an int >= 1, got {num_examples!r}")
        examples = split_examples(
            template, split, num_examples, seed=seed, vocab=vocab, params=params
        )
    examples = list(examples)
    if not examples:
        raise ValueError("examples is empty")
    wrong = [ex.template for ex in examples if ex.template != template]
    if wrong:
        raise ValueError(f"examples must all be of template {template!r}, got {wrong[0]!r}")
    if max_new_tokens is None:
        max_new_tokens = _max_new_tokens(tokenizer, examples)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        outputs = generate_until(
            model,
            tokenizer,
            [ex.instruction for ex in examples],
            max_new_tokens=max_new_tokens,
            stop="\n",
            batch_size=batch_size,
            device=device,
        )
    finally:
        if was_training:
            model.train()
    checker = TEMPLATES[template]
    passed = [checker.check(ex, out) for ex, out in zip(examples, outputs)]
    kept = [
        {"instruction": ex.instruction, "reference": ex.response, "generated": out}
        for ex, out in list(zip(examples, outputs))[:num_samples_kept]
    ]
    return RuleFollowing(
        template=template,
        num_examples=len(examples),
        num_following=sum(passed),
        score=sum(passed) / len(examples),
        chance=chance_level(examples),
        samples=kept,
    )


@dataclass(frozen=True)
class AlignmentCorrelation:
    """How alignment scores track task accuracy across models: Pearson ``r`` and Spearman
    ``rho`` with two-sided p-values, over ``num_models`` (alignment, accuracy) pairs."""

    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    num_models: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alignment_correlation(
    alignment: Mapping[str, float], accuracy: Mapping[str, float]
) -> AlignmentCorrelation:
    """Correlate one template's alignment score with one task's accuracy over models.

    ``alignment`` and ``accuracy`` map a model name to its score; they must name the same
    models (at least three, with neither list constant, or a correlation means nothing).
    """
    from scipy import stats

    if set(alignment) != set(accuracy):
        raise ValueError(
            f"alignment and accuracy must name the same models; only in alignment: "
            f"{sorted(set(alignment) - set(accuracy))}, only in accuracy: "
            f"{sorted(set(accuracy) - set(alignment))}"
        )
    names = sorted(alignment)
    if len(names) < 3:
        raise ValueError(f"need at least 3 models to correlate, got {len(names)}")
    x = [float(alignment[n]) for n in names]
    y = [float(accuracy[n]) for n in names]
    for what, values in (("alignment", x), ("accuracy", y)):
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{what} holds a non-finite value: {values}")
        if max(values) == min(values):
            raise ValueError(f"{what} is the same for every model ({values[0]}): no correlation")
    pearson = stats.pearsonr(x, y)
    spearman = stats.spearmanr(x, y)
    return AlignmentCorrelation(
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_rho=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
        num_models=len(names),
    )


# --------------------------------------------------------------------------------------------
# template mixing


def _check_scores(name: str, scores: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError(f"{name} must be a non-empty dict task -> accuracy, got {scores!r}")
    out = {}
    for task, value in scores.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name}[{task!r}] must be a finite number, got {value!r}")
        out[task] = float(value)
    return out


def template_effects(
    base: Mapping[str, float], tuned: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """``effect[t][k] = tuned[t][k] - base[k]``: what fine-tuning on template ``t`` alone did
    to target task ``k``. Every tuned model must be scored on exactly the base's tasks."""
    base = _check_scores("base", base)
    if not isinstance(tuned, Mapping) or not tuned:
        raise ValueError("tuned must be a non-empty dict template -> {task: accuracy}")
    effects = {}
    for template, scores in tuned.items():
        scores = _check_scores(f"tuned[{template!r}]", scores)
        if set(scores) != set(base):
            raise ValueError(
                f"tuned[{template!r}] scores tasks {sorted(scores)}, the base scores "
                f"{sorted(base)}: score every model on the same tasks"
            )
        effects[template] = {task: scores[task] - base[task] for task in base}
    return effects


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ValueError(f"alpha (the returns exponent) must be in (0, 1], got {alpha!r}")
    return float(alpha)


def _mean_effects(effects: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list, list]:
    if not effects:
        raise ValueError("effects is empty")
    names = list(effects)
    tasks = set(next(iter(effects.values())))
    for name in names:
        if set(effects[name]) != tasks:
            raise ValueError(
                f"effects[{name!r}] covers {sorted(effects[name])}, not {sorted(tasks)}"
            )
    positive = [sum(max(v, 0.0) for v in effects[n].values()) / len(tasks) for n in names]
    negative = [sum(min(v, 0.0) for v in effects[n].values()) / len(tasks) for n in names]
    return names, positive, negative


def predicted_accuracy(
    base: Mapping[str, float],
    effects: Mapping[str, Mapping[str, float]],
    weights: Mapping[str, float],
    alpha: float = 0.5,
) -> dict[str, float]:
    """The model's prediction of each task's accuracy after training on mixture ``weights``
    (normalised to sum to one; templates left out get 0): see the module docstring."""
    alpha = _check_alpha(alpha)
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be >= 0 with a positive sum, got {dict(weights)}")
    unknown = sorted(set(weights) - set(effects))
    if unknown:
        raise ValueError(f"weights name templates without a measured effect: {unknown}")
    share = {t: weights.get(t, 0.0) / total for t in effects}
    return {
        task: base[task]
        + sum(
            max(effects[t][task], 0.0) * share[t] ** alpha + min(effects[t][task], 0.0) * share[t]
            for t in effects
        )
        for task in base
    }


def solve_mixture_weights(
    effects: Mapping[str, Mapping[str, float]], alpha: float = 0.5, *, tol: float = 1e-12
) -> dict[str, float]:
    """The template weights (summing to one) that maximise the predicted mean task accuracy.

    Exact for the model of the module docstring: with ``p_t`` / ``n_t`` the mean positive /
    negative effect of template ``t``, the optimum has ``w_t = (alpha p_t / (lam - n_t)) **
    (1 / (1 - alpha))`` for the multiplier ``lam`` that makes the weights sum to one (found by
    bisection to ``tol``); ``alpha = 1`` puts all weight on the template with the largest mean
    effect (ties split evenly). Raises ``ValueError`` if no template helps any task.
    """
    alpha = _check_alpha(alpha)
    names, positive, negative = _mean_effects(effects)
    if max(positive) <= 0:
        raise ValueError(
            "no template improves any target task (every effect is <= 0): there is nothing to mix"
        )
    if alpha == 1.0:
        gains = [p + n for p, n in zip(positive, negative)]
        best = max(gains)
        winners = [n for n, g in zip(names, gains) if g == best]
        return {n: (1.0 / len(winners) if n in winners else 0.0) for n in names}

    exponent = 1.0 / (1.0 - alpha)

    def weights_at(lam: float) -> list[float]:
        return [
            (alpha * p / (lam - n)) ** exponent if p > 0 else 0.0
            for p, n in zip(positive, negative)
        ]

    # sum(weights_at(lam)) falls from +inf (lam -> max(n) over helpful templates) to 0.
    low = max(n for p, n in zip(positive, negative) if p > 0)
    high = low + 1.0
    while sum(weights_at(high)) > 1.0:
        high = low + 2.0 * (high - low)
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high) or high - low <= tol * max(1.0, abs(high)):
            break
        if sum(weights_at(mid)) > 1.0:
            low = mid
        else:
            high = mid
    raw = weights_at(high)
    total = sum(raw)
    return {n: w / total for n, w in zip(names, raw)}


def estimate_returns_exponent(
    full: Mapping[str, Mapping[str, float]],
    partial: Mapping[str, Mapping[str, float]],
    fraction: float,
) -> float:
    """``alpha`` from effects measured at the full budget and at ``fraction`` of it: each
    (template, task) pair with positive effects at both gives ``log(partial/full) / log
    fraction``; the median over pairs, clipped to (0, 1]. Pairs that do not improve at both
    budgets carry no information about returns and are skipped (``ValueError`` if none is
    left)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    values = []
    for template, scores in full.items():
        if template not in partial:
            continue
        for task, value in scores.items():
            small = partial[template].get(task)
            if small is not None and value > 0 and small > 0:
                values.append(math.log(small / value) / math.log(fraction))
    if not values:
        raise ValueError(
            "no (template, task) pair improved at both budgets: cannot estimate the exponent"
        )
    values.sort()
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
    return float(min(max(median, 1e-3), 1.0))


# --------------------------------------------------------------------------------------------
# the CPU experiment


def _settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = {**DEFAULT_SETTINGS, **(overrides or {})}
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS) - {"mix", "targets"})
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid: {sorted(DEFAULT_SETTINGS)}")
    named = [settings["template"], *settings["probe"]]
    named += [*(settings.get("mix") or []), *(settings.get("targets") or [])]
    for name in named:
        if name not in TEMPLATES:
            raise ValueError(f"unknown template {name!r}; valid templates: {list(TEMPLATES)}")
    for name in ("vocab_size", "hidden_size", "max_steps", "batch_size", "num_eval_examples"):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return settings


def _prepare(output_dir: Path, settings: Mapping[str, Any]) -> tuple[list[str], Any, Path]:
    vocab = default_vocabulary(settings["vocab_size"])
    tokenizer = build_word_tokenizer(vocab)
    tok_dir = output_dir / "tokenizer"
    tokenizer.save_pretrained(tok_dir)
    return vocab, tokenizer, tok_dir


def _model_args(settings: Mapping[str, Any], vocab_size: int) -> dict[str, Any]:
    hidden = settings["hidden_size"]
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "feature_dim": settings["feature_dim"],
        "sliding_window": settings["sliding_window"],
        "initializer_range": settings["initializer_range"],
    }


def _train(
    settings: Mapping[str, Any],
    tok_dir: Path,
    out: Path,
    vocab_size: int,
    *,
    config: str,
    weights: Mapping[str, float] | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> Any:
    from hazyzoo.train import TrainConfig, train

    steps = settings["max_steps"] if max_steps is None else max_steps
    dataset_args: dict[str, Any] = {
        "num_train_examples": steps * settings["batch_size"],
        "num_test_examples": 1,
        "vocab_size": settings["vocab_size"],
        "seed": settings["seed"],
    }
    if weights is not None:
        dataset_args["weights"] = dict(weights)
    result = train(
        TrainConfig(
            model="tiny:hazyzoo_based",
            model_args=_model_args(settings, vocab_size),
            tokenizer=str(tok_dir),
            dataset="cookbook",
            dataset_config=config,
            dataset_args=dataset_args,
            prompt_column="instruction",
            response_column="response",
            output_dir=str(out),
            overwrite_output_dir=True,
            cache_dir=str(out.parent / "data_cache"),
            max_steps=steps,
            per_device_train_batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            warmup_steps=int(settings["warmup_ratio"] * steps),
            lr_scheduler_type="cosine",
            logging_steps=max(1, steps // 10),
            save_steps=0,
            seed=settings["seed"],
            disable_tqdm=not progress,
        )
    )
    return result


def _fresh_model(settings: Mapping[str, Any], vocab_size: int) -> Any:
    import torch

    from hazyzoo.train import build_model

    torch.manual_seed(settings["seed"])
    model, _ = build_model("tiny:hazyzoo_based", _model_args(settings, vocab_size))
    return model.eval()


def _score(
    model: Any, tokenizer: Any, templates: Sequence[str], vocab, settings
) -> dict[str, RuleFollowing]:
    return {
        t: rule_following(
            model,
            tokenizer,
            t,
            num_examples=settings["num_eval_examples"],
            seed=settings["seed"],
            vocab=vocab,
        )
        for t in templates
    }


def run_experiment(
    output_dir: str | Path, settings: Mapping[str, Any] | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Fine-tune a tiny BASED on one template and score held-out rule following before and
    after (and on the ``probe`` templates); returns the JSON-able results, also written to
    ``output_dir/cookbook_results.json`` with the tuned model in ``output_dir/tuned``."""
    settings = _settings(settings)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, tokenizer, tok_dir = _prepare(out, settings)
    templates = [settings["template"], *[t for t in settings["probe"] if t != settings["template"]]]
    untuned = _score(_fresh_model(settings, len(tokenizer)), tokenizer, templates, vocab, settings)
    start = time.perf_counter()
    result = _train(
        settings,
        tok_dir,
        out / "tuned",
        len(tokenizer),
        config=settings["template"],
        progress=progress,
    )
    train_seconds = time.perf_counter() - start
    tuned = _score(result["model"], tokenizer, templates, vocab, settings)
    report = {
        "experiment": "single_template",
        "settings": dict(settings),
        "train_seconds": train_seconds,
        "train_loss": result["metrics"].get("train_loss"),
        "rows": [
            {
                "template": t,
                "trained_on": t == settings["template"],
                "chance": tuned[t].chance,
                "untuned": untuned[t].score,
                "tuned": tuned[t].score,
                "num_examples": tuned[t].num_examples,
            }
            for t in templates
        ],
        "samples": {t: tuned[t].samples for t in templates},
        "model_dir": str(out / "tuned"),
    }
    (out / RESULTS_JSON).write_text(json.dumps(report, indent=1) + "\n")
    return report


def run_mixing(
    output_dir: str | Path,
    candidates: Sequence[str],
    targets: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    *,
    alpha: float = 0.5,
    evaluate: Callable[[Any, Any], dict[str, float]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The mixing loop end to end: one fine-tune per candidate template, effects on the target
    tasks, solved weights, and the solved and the uniform mixture trained with the same budget
    and scored. Target tasks are the ``targets`` templates' held-out rule following unless
    ``evaluate(model, tokenizer) -> {task: accuracy}`` is given (e.g. lm-eval tasks through
    :func:`hazyzoo.evaluation.gpt4all.evaluate_gpt4all`)."""
    settings = _settings(
        {**(settings or {}), "mix": list(candidates), "targets": list(targets or candidates)}
    )
    if len(candidates) < 2:
        raise ValueError(f"mixing needs at least 2 candidate templates, got {list(candidates)}")
    targets = list(targets or candidates)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, tokenizer, tok_dir = _prepare(out, settings)

    def score(model: Any) -> dict[str, float]:
        if evaluate is not None:
            return evaluate(model, tokenizer)
        return {t: r.score for t, r in _score(model, tokenizer, targets, vocab, settings).items()}

    base = score(_fresh_model(settings, len(tokenizer)))
    tuned = {}
    for t in candidates:
        result = _train(
            settings, tok_dir, out / f"single_{t}", len(tokenizer), config=t, progress=progress
        )
        tuned[t] = score(result["model"])
    effects = template_effects(base, tuned)
    weights = solve_mixture_weights(effects, alpha)
    uniform = dict.fromkeys(candidates, 1.0 / len(candidates))
    mixes = {}
    for name, w in (("solved", weights), ("uniform", uniform)):
        kept = {t: v for t, v in w.items() if v > 0}
        result = _train(
            settings,
            tok_dir,
            out / f"mix_{name}",
            len(tokenizer),
            config="mix",
            weights=kept,
            progress=progress,
        )
        scores = score(result["model"])
        mixes[name] = {
            "weights": w,
            "scores": scores,
            "mean": sum(scores.values()) / len(scores),
            "predicted": predicted_accuracy(base, effects, w, alpha),
        }
    report = {
        "experiment": "mixing",
        "settings": dict(settings),
        "alpha": alpha,
        "base": base,
        "single": tuned,
        "effects": effects,
        "mixtures": mixes,
    }
    (out / RESULTS_JSON).write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_table(report: Mapping[str, Any]) -> str:
    """The printed table of :func:`run_experiment` or :func:`run_mixing` results."""
    if report["experiment"] == "single_template":
        lines = [
            f"| template | trained on | chance | untuned | tuned ({report['settings']['max_steps']} steps) |",
            "|---|---|---|---|---|",
        ]
        for row in report["rows"]:
            lines.append(
                f"| {row['template']} | {'yes' if row['trained_on'] else 'no'} | "
                f"{row['chance']:.3f} | {row['untuned']:.3f} | {row['tuned']:.3f} |"
            )
        return "\n".join(lines)
    targets = list(report["base"])
    lines = ["| model | " + " | ".join(targets) + " | mean |", "|---" * (len(targets) + 2) + "|"]

    def row(name: str, scores: Mapping[str, float]) -> str:
        mean = sum(scores.values()) / len(scores)
        return f"| {name} | " + " | ".join(f"{scores[t]:.3f}" for t in targets) + f" | {mean:.3f} |"

    lines.append(row("untuned", report["base"]))
    for t, scores in report["single"].items():
        lines.append(row(f"only {t}", scores))
    for name, mix in report["mixtures"].items():
        lines.append(row(f"mix {name}", mix["scores"]))
    weights = ", ".join(f"{t} {w:.2f}" for t, w in report["mixtures"]["solved"]["weights"].items())
    return "\n".join(lines) + f"\nsolved weights (alpha {report['alpha']}): {weights}"


# --------------------------------------------------------------------------------------------
# command line


def _templates(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TEMPLATES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown template(s) {unknown}; valid: {list(TEMPLATES)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hazyzoo eval cookbook``."""
    d = DEFAULT_SETTINGS
    parser.add_argument(
        "--output-dir", default="cookbook_output", help="models, tokenizer and JSON go here"
    )
    parser.add_argument(
        "--template",
        choices=list(TEMPLATES),
        default=d["template"],
        help="the template to fine-tune on",
    )
    parser.add_argument(
        "--probe",
        type=_templates,
        default=list(d["probe"]),
        metavar="T1,T2",
        help="other templates to score the tuned model on",
    )
    parser.add_argument(
        "--mix",
        type=_templates,
        default=None,
        metavar="T1,T2",
        help="run the mixing loop over these candidate templates instead",
    )
    parser.add_argument(
        "--targets",
        type=_templates,
        default=None,
        metavar="T1,T2",
        help="--mix: the target templates (default: the candidates)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="--mix: the returns exponent of the mixing model, in (0, 1]",
    )
    parser.add_argument("--max-steps", type=int, default=d["max_steps"])
    parser.add_argument("--num-eval-examples", type=int, default=d["num_eval_examples"])
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--no-progress", action="store_true", help="no training progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``hazyzoo eval cookbook``: print the table; the JSON goes to ``--output-dir``."""
    overrides = {
        "max_steps": args.max_steps,
        "num_eval_examples": args.num_eval_examples,
        "seed": args.seed,
    }
    start = time.perf_counter()
    if args.mix is not None:
        report = run_mixing(
            args.output_dir,
            args.mix,
            args.targets,
            overrides,
            alpha=args.alpha,
            progress=not args.no_progress,
        )
    else:
        if args.targets is not None:
            raise ValueError("--targets goes with --mix")
        overrides.update(template=args.template, probe=args.probe)
        report = run_experiment(args.output_dir, overrides, progress=not args.no_progress)
    print(format_table(report))
    print(f"took {time.perf_counter() - start:.0f} s; wrote {Path(args.output_dir) / RESULTS_JSON}")
    return 0
