"""hazyzoo eval coverage: analysis of sample files, the CLI, and a tiny sampling run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hazyzoo.evaluation.coverage import analyse, format_table, make_verifier, run_from_args
from hazyzoo.evaluation.coverage_data import ProblemSamples, write_problem_samples_jsonl
from hazyzoo.evaluation.coverage_metrics import pass_at_k


def _problems(seed: int = 0, num: int = 12, n: int = 32) -> list[ProblemSamples]:
    """Problems whose per-sample success rates spread from 0 to 0.5, with answers and scores."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num):
        p = rng.uniform(0, 0.5)
        correct = (rng.random(n) < p).tolist()
        answers = ["42" if c else str(rng.integers(0, 5)) for c in correct]
        scores = (np.asarray(correct) * 0.5 + rng.normal(0, 1, n)).tolist()
        out.append(
            ProblemSamples(
                problem_id=f"q{i}",
                prompt=f"question {i}",
                samples=[f"The answer is {a}" for a in answers],
                correct=correct,
                gt_answer="42",
                answers=answers,
                scores=scores,
            )
        )
    return out


def test_analyse_gives_unbiased_coverage_a_fit_and_selection_curves():
    problems = _problems()
    report = analyse(problems)
    assert report["ks"] == list(range(1, 33)) and report["table_ks"] == [1, 2, 4, 8, 16, 32]
    want = np.mean([pass_at_k(p.num_samples, p.num_correct, 8) for p in problems])
    assert report["coverage"][7] == pytest.approx(want)
    assert np.all(np.diff(report["coverage"]) >= 0)
    assert report["mean_accuracy"] == pytest.approx(report["coverage"][0])
    assert report["fit"] is not None and report["fit"]["a"] < 0
    # majority vote and best-of-k start at single-sample accuracy and stay below coverage
    for curve in (report["majority_vote"], report["reward_selection"]):
        assert len(curve) == 6 and curve[0] == pytest.approx(report["coverage"][0], abs=0.05)
        assert all(c <= cov + 1e-9 for c, cov in zip(curve, report["table_coverage"]))
    table = format_table(report)
    assert "| 32 |" in table and "coverage ~ exp(" in table
    json.dumps(report)  # JSON-able


def test_analyse_without_answers_or_scores_leaves_those_curves_out():
    problems = [
        ProblemSamples(f"q{i}", "", ["x"] * 4, [True, False, False, i % 2 == 0]) for i in range(4)
    ]
    report = analyse(problems)
    assert report["majority_vote"] is None and report["reward_selection"] is None
    assert "| 4 |" in format_table(report)
    with pytest.raises(ValueError, match="no problems"):
        analyse([])


def test_cli_analyses_a_monkey_business_file(tmp_path, capsys):
    path = write_problem_samples_jsonl(_problems(num=6, n=16), tmp_path / "mb.jsonl")
    import argparse

    from hazyzoo.evaluation.coverage import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["--samples", str(path), "--output-dir", str(out)])
    assert run_from_args(args) == 0
    printed = capsys.readouterr().out
    assert "| 16 |" in printed
    saved = json.loads((out / "coverage_results.json").read_text())
    assert saved["num_problems"] == 6 and len(saved["coverage"]) == 16
    assert (out / "coverage.png").stat().st_size > 1000
    bad = parser.parse_args(["--samples", str(path), "--model", "x"])
    with pytest.raises(ValueError, match="excludes --model"):
        run_from_args(bad)
    with pytest.raises(ValueError, match="needs --problems"):
        run_from_args(parser.parse_args(["--model", "x"]))


def test_arithmetic_verifier_and_unknown_names():
    hook = make_verifier("arithmetic")
    assert hook(" 7", {"problem_id": "a", "gt_answer": "7"}) == (True, "7")
    assert hook(" 8", {"problem_id": "a", "gt_answer": "7"})[0] is False
    with pytest.raises(ValueError, match="unknown verifier"):
        make_verifier("nope")


def test_math_verifier_hook_needs_a_reference():
    pytest.importorskip("math_verify")
    hook = make_verifier("math")
    assert hook("so the answer is \\boxed{\\frac{1}{2}}", {"problem_id": "a", "gt_answer": "0.5"})[
        0
    ]
    with pytest.raises(ValueError, match="has no 'gt_answer'"):
        hook("1", {"problem_id": "a"})


def test_sample_verify_analyse_end_to_end_on_a_tiny_llama(tmp_path):
    """A random tiny Llama on three arithmetic problems: records, report, PNG, resume."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hazyzoo.evaluation.arithmetic import build_arithmetic_tokenizer, make_arithmetic_problems
    from hazyzoo.evaluation.coverage import sample_and_analyse
    from hazyzoo.evaluation.sampling import SamplingConfig

    tok = build_arithmetic_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).eval()
    problems = make_arithmetic_problems(3, seed=0)
    config = SamplingConfig(num_samples=4, batch_size=4, max_new_tokens=3, stop=("\n",))
    report = sample_and_analyse(
        model,
        tok,
        problems,
        tmp_path,
        config=config,
        verifier="arithmetic",
        score=True,
        progress=False,
    )
    assert report["num_problems"] == 3 and report["ks"] == [1, 2, 3, 4]
    assert report["sampling"]["backend"] == "hydragen" and report["reward_selection"] is not None
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 12
    # a second run finds every sample and generates nothing new
    again = sample_and_analyse(
        model, tok, problems, tmp_path, config=config, verifier="arithmetic", progress=False
    )
    assert again["coverage"] == report["coverage"]
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 12


def test_default_refuses_a_model_of_another_architecture(tmp_path):
    from hazyzoo.evaluation.coverage import run_default

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="holds a 'llama' model"):
        run_default(tmp_path, {"architecture": "based"}, progress=False)
    with pytest.raises(ValueError, match="unknown setting"):
        run_default(tmp_path, {"nope": 1}, progress=False)
