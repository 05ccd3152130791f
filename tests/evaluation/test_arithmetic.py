"""The arithmetic word-problem set: deterministic, correct answers, full tokenizer, clean split."""

from __future__ import annotations

import re

import pytest

from hazyzoo.evaluation import arithmetic
from hazyzoo.evaluation.arithmetic import (
    ANSWER_CUE,
    OPERATIONS,
    build_arithmetic_tokenizer,
    check_answer,
    make_arithmetic_problems,
    max_answer,
    question_split,
    train_rows,
)

# The question templates read back: operands, then the answer they determine.
_PATTERNS = [
    (r"\w+ has (\d+) \w+ and buys (\d+) more\. How many \w+ does \w+ have\?", lambda a, b: a + b),
    (
        r"\w+ has (\d+) \w+ and gives (\d+) to \w+\. How many \w+ does \w+ have left\?",
        lambda a, b: a - b,
    ),
    (
        r"\w+ has (\d+) boxes with (\d+) \w+ in each box\. How many \w+ does \w+ have\?",
        lambda a, b: a * b,
    ),
    (
        r"\w+ has (\d+) \w+, buys (\d+) more and gives (\d+) to \w+\. How many \w+ does \w+ have now\?",
        lambda a, b, c: a + b - c,
    ),
]


def _recompute(question: str) -> int:
    for pattern, answer in _PATTERNS:
        match = re.fullmatch(pattern, question)
        if match:
            return answer(*(int(g) for g in match.groups()))
    raise AssertionError(f"no template reads {question!r}")


def test_problems_are_deterministic_in_seed() -> None:
    a = make_arithmetic_problems(40, seed=5)
    assert a == make_arithmetic_problems(40, seed=5)
    assert [p["question"] for p in a] != [p["question"] for p in make_arithmetic_problems(40, 6)]
    assert train_rows(30, seed=2) == train_rows(30, seed=2)
    assert len({p["problem_id"] for p in a}) == len({p["question"] for p in a}) == 40


def test_answers_are_correct_by_construction() -> None:
    problems = make_arithmetic_problems(200, seed=0, max_operand=12)
    for p in problems:
        assert set(p) == {"problem_id", "question", "prompt", "gt_answer"}
        assert p["prompt"] == p["question"] + ANSWER_CUE
        answer = _recompute(p["question"])
        assert p["gt_answer"] == str(answer)
        assert 0 <= answer <= max_answer(12)
    for row in train_rows(200, seed=1):
        assert row["prompt"].endswith(ANSWER_CUE)
        assert row["response"] == f" {_recompute(row['prompt'][: -len(ANSWER_CUE)])}"
    # every operation is drawn
    counts = [sum(bool(re.fullmatch(pat, p["question"])) for p in problems) for pat, _ in _PATTERNS]
    assert len(counts) == len(OPERATIONS) and min(counts) == 50


def test_tokenizer_covers_every_piece(tmp_path) -> None:
    from transformers import AutoTokenizer

    build_arithmetic_tokenizer(tmp_path, max_operand=12)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    texts = [
        p["prompt"] + " " + p["gt_answer"] for p in make_arithmetic_problems(300, 1, max_operand=12)
    ]
    texts += [r["prompt"] + r["response"] for r in train_rows(300, seed=3, max_operand=12)]
    texts += [" ".join(str(n) for n in range(max_answer(12) + 1))]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
    answer_ids = tok(" 17", add_special_tokens=False)["input_ids"]
    assert len(answer_ids) == 1  # numbers are whole tokens
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)


def test_held_out_problems_never_appear_in_training() -> None:
    held_out = make_arithmetic_problems(150, seed=0)
    train = train_rows(3000, seed=1)
    held = {p["question"] for p in held_out}
    assert not held & {r["prompt"][: -len(ANSWER_CUE)] for r in train}
    assert {question_split(q) for q in held} == {"test"}
    train_split = make_arithmetic_problems(100, seed=0, split="train")
    assert not held & {p["question"] for p in train_split}


def test_check_answer_reads_the_first_integer() -> None:
    problem = {"problem_id": "x", "gt_answer": "7"}
    assert check_answer(" 7", problem) == (True, "7")
    assert check_answer(" 07 apples", problem) == (True, "7")
    assert check_answer(" 8 or 7", problem) == (False, "8")
    assert check_answer(" seven", problem) == (False, None)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(num_problems=0), ValueError, "num_problems"),
        (dict(num_problems=3, split="dev"), ValueError, "split"),
        (dict(num_problems=3, operations=("div",)), ValueError, "unknown operation 'div'"),
        (dict(num_problems=3, max_operand=1), ValueError, "max_operand"),
        (dict(num_problems=3, seed=1.5), TypeError, "seed"),
        (dict(num_problems=5000, operations=("mul",)), ValueError, "could not draw 5000"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        make_arithmetic_problems(**kwargs)


def test_train_tiny_model_runs_end_to_end(tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hazyzoo.evaluation.sampling import SamplingConfig, sample_problems

    results = arithmetic.train_tiny_model(
        tmp_path / "model", steps=2, num_train_rows=16, batch_size=4, progress=False
    )
    assert results["global_step"] == 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert model.generation_config.eos_token_id == tok.eos_token_id
    problems = make_arithmetic_problems(2, seed=0)
    config = SamplingConfig(num_samples=2, batch_size=2, max_new_tokens=2, temperature=1.0)
    records = sample_problems(
        model,
        tok,
        problems,
        config,
        output_path=tmp_path / "s.jsonl",
        verifier=check_answer,
        progress=False,
    )
    assert len(records) == 4 and all(isinstance(r["correct"], bool) for r in records)
