"""hazyzoo.evaluation.cookbook: alignment (rule following), mixing weights, the experiment."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from hazyzoo.datasets_scripts.cookbook_templates import (
    TEMPLATES,
    build_word_tokenizer,
    default_vocabulary,
    split_examples,
)
from hazyzoo.evaluation.cookbook import (
    alignment_correlation,
    chance_level,
    estimate_returns_exponent,
    predicted_accuracy,
    rule_following,
    run_experiment,
    solve_mixture_weights,
    template_effects,
)

VOCAB = default_vocabulary(32)


class _Oracle:
    """A stand-in LM for ``generate_until``: answers each prompt with a fixed map's response."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def __call__(self, model, tokenizer, prompts, **kwargs):
        return [self.answers.get(p, " wrong") for p in prompts]


def test_split_examples_are_the_builders_test_rows(tmp_path):
    pytest.importorskip("datasets")
    from hazyzoo.datasets_scripts import load

    data = load(
        "cookbook",
        "copy_span",
        num_train_examples=3,
        num_test_examples=5,
        seed=7,
        vocab_size=32,
        cache_dir=tmp_path,
    )
    held_out = split_examples("copy_span", "test", 5, seed=7, vocab=VOCAB)
    assert [e.instruction for e in held_out] == data["test"]["instruction"]
    assert [e.response for e in held_out] == data["test"]["response"]
    train = split_examples("copy_span", "train", 3, seed=7, vocab=VOCAB)
    assert [e.text for e in train] == data["train"]["text"]
    with pytest.raises(ValueError, match="split must be one of"):
        split_examples("copy_span", "validation", 1)


def test_rule_following_counts_what_the_checker_accepts(monkeypatch):
    import hazyzoo.jrt

    examples = split_examples("copy_span", "test", 10, seed=1, vocab=VOCAB)
    answers = {e.instruction: e.response for e in examples[:7]}
    monkeypatch.setattr(hazyzoo.jrt, "generate_until", _Oracle(answers))
    tok = build_word_tokenizer(VOCAB)
    import torch

    model = torch.nn.Linear(2, 2).train()
    result = rule_following(model, tok, "copy_span", num_examples=10, seed=1, vocab=VOCAB)
    assert model.training  # put back in the mode it came in
    assert (result.num_examples, result.num_following) == (10, 7)
    assert result.score == pytest.approx(0.7) and result.chance == 0.0
    assert result.samples[0]["generated"] == examples[0].response
    with pytest.raises(ValueError, match="must all be of template 'first_last'"):
        rule_following(None, tok, "first_last", examples=examples)
    with pytest.raises(ValueError, match="unknown template"):
        rule_following(None, tok, "nope")


def test_chance_level():
    mc = split_examples("mc_context_match", "test", 4, vocab=VOCAB, params={"num_options": 4})
    assert chance_level(mc) == pytest.approx(0.25)
    assert chance_level(split_examples("yes_no_membership", "test", 3, vocab=VOCAB)) == 0.5
    assert chance_level(split_examples("sort_alphabetical", "test", 3, vocab=VOCAB)) == 0.0


def test_rule_following_of_a_real_model_runs_generation():
    """An untrained tiny BASED follows no copy rule; the result is well formed."""
    import torch

    from hazyzoo import BasedConfig, BasedForCausalLM

    tok = build_word_tokenizer(VOCAB)
    torch.manual_seed(0)
    model = BasedForCausalLM(BasedConfig.tiny(vocab_size=len(tok))).eval()
    result = rule_following(model, tok, "first_last", num_examples=6, vocab=VOCAB, batch_size=4)
    assert result.num_examples == 6 and 0 <= result.num_following <= 6
    assert len(result.samples) == 3 and all(isinstance(s["generated"], str) for s in result.samples)


def test_alignment_correlation():
    align = {"a": 0.1, "b": 0.4, "c": 0.5, "d": 0.9}
    acc = {"a": 0.30, "b": 0.35, "c": 0.50, "d": 0.52}
    corr = alignment_correlation(align, acc)
    assert corr.num_models == 4 and corr.spearman_rho == pytest.approx(1.0)
    assert corr.pearson_r == pytest.approx(
        np.corrcoef(list(align.values()), list(acc.values()))[0, 1]
    )
    with pytest.raises(ValueError, match="same models"):
        alignment_correlation(align, {"a": 1.0, "b": 0.0, "c": 0.5})
    with pytest.raises(ValueError, match="same for every model"):
        alignment_correlation(align, dict.fromkeys(align, 0.5))
    with pytest.raises(ValueError, match="at least 3"):
        alignment_correlation({"a": 0.1, "b": 0.2}, {"a": 0.1, "b": 0.3})


def test_template_effects_are_differences_and_check_tasks():
    base = {"boolq": 0.5, "piqa": 0.6}
    effects = template_effects(base, {"t1": {"boolq": 0.7, "piqa": 0.55}})
    assert effects == {"t1": {"boolq": pytest.approx(0.2), "piqa": pytest.approx(-0.05)}}
    with pytest.raises(ValueError, match="same tasks"):
        template_effects(base, {"t1": {"boolq": 0.7}})
    with pytest.raises(ValueError, match="finite number"):
        template_effects(base, {"t1": {"boolq": float("nan"), "piqa": 0.1}})


def _brute_force(effects, alpha, step=0.005):
    """Grid search over the simplex of three templates."""
    names = list(effects)
    base = dict.fromkeys(next(iter(effects.values())), 0.0)
    best, best_w = -math.inf, None
    grid = np.arange(0, 1 + 1e-9, step)
    for a, b in itertools.product(grid, grid):
        if a + b > 1 + 1e-9:
            continue
        w = dict(zip(names, (a, b, max(0.0, 1 - a - b))))
        pred = predicted_accuracy(base, effects, w, alpha)
        value = sum(pred.values()) / len(pred)
        if value > best:
            best, best_w = value, w
    return best, best_w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solved_weights_maximise_the_model(seed):
    rng = np.random.default_rng(seed)
    tasks = ["arc_easy", "boolq", "piqa", "winogrande"]
    effects = {
        t: {k: float(v) for k, v in zip(tasks, rng.normal(0.02, 0.05, len(tasks)))}
        for t in ("a", "b", "c")
    }
    base = dict.fromkeys(tasks, 0.0)
    weights = solve_mixture_weights(effects, alpha=0.5)
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    pred = predicted_accuracy(base, effects, weights, 0.5)
    value = sum(pred.values()) / len(pred)
    best, _ = _brute_force(effects, 0.5)
    assert value >= best - 1e-9  # at least as good as every grid point


def test_mixing_shares_weight_between_complementary_templates():
    effects = {
        "yes_no_membership": {"boolq": 0.10, "piqa": 0.0},
        "goal_constraint": {"boolq": 0.0, "piqa": 0.10},
        "harmful": {"boolq": -0.05, "piqa": -0.05},
    }
    w = solve_mixture_weights(effects, alpha=0.5)
    assert w["yes_no_membership"] == pytest.approx(0.5) and w["goal_constraint"] == pytest.approx(
        0.5
    )
    assert w["harmful"] == 0.0
    # linear returns: the single best template takes everything
    effects["yes_no_membership"]["boolq"] = 0.12
    w1 = solve_mixture_weights(effects, alpha=1.0)
    assert w1 == {"yes_no_membership": 1.0, "goal_constraint": 0.0, "harmful": 0.0}
    # a template with a side cost gets less than its benefit alone would give
    w2 = solve_mixture_weights(
        {"a": {"x": 0.1, "y": 0.0}, "b": {"x": 0.0, "y": 0.1}, "c": {"x": 0.1, "y": -0.02}}, 0.5
    )
    assert w2["c"] < w2["a"] and w2["a"] == pytest.approx(w2["b"])
    with pytest.raises(ValueError, match="nothing to mix"):
        solve_mixture_weights({"a": {"x": -0.1}, "b": {"x": 0.0}})
    with pytest.raises(ValueError, match="alpha"):
        solve_mixture_weights(effects, alpha=0.0)


def test_estimate_returns_exponent_recovers_alpha():
    full = {"a": {"x": 0.2, "y": 0.1}, "b": {"x": 0.05, "y": -0.1}}
    alpha, fraction = 0.4, 0.25
    partial = {t: {k: v * fraction**alpha for k, v in s.items()} for t, s in full.items()}
    assert estimate_returns_exponent(full, partial, fraction) == pytest.approx(alpha)
    with pytest.raises(ValueError, match="cannot estimate"):
        estimate_returns_exponent({"a": {"x": -0.1}}, {"a": {"x": -0.2}}, 0.5)


def test_experiment_writes_results_and_a_loadable_model(tmp_path):
    pytest.importorskip("datasets")
    from transformers import AutoModelForCausalLM

    import hazyzoo  # noqa: F401

    settings = {"max_steps": 6, "num_eval_examples": 4, "probe": ["first_last"], "batch_size": 4}
    report = run_experiment(tmp_path, settings, progress=False)
    assert [r["template"] for r in report["rows"]] == ["copy_span", "first_last"]
    assert report["rows"][0]["trained_on"] and not report["rows"][1]["trained_on"]
    saved = json.loads((tmp_path / "cookbook_results.json").read_text())
    assert saved["rows"] == report["rows"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tuned")
    assert type(model).__name__ == "BasedForCausalLM"
    with pytest.raises(ValueError, match="unknown template"):
        run_experiment(tmp_path, {"template": "nope"})
    assert set(TEMPLATES) >= {r["template"] for r in report["rows"]}
