"""The JRT-Prompt recall experiment (hazyzoo.demo_jrt)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from hazyzoo.demo_jrt import DEFAULT_SETTINGS, run_recall_experiment, training_texts
from hazyzoo.evaluation import evaluate_recall, synthetic_examples, synthetic_tokenizer
from tests.evaluation import tiny


def test_training_texts_hold_both_prompt_forms_with_answers():
    pairs = training_texts(3, 4, seed=9)
    assert len(pairs) == 6
    for (plain, answer), (jrt, jrt_answer) in zip(pairs[::2], pairs[1::2]):
        assert not plain.startswith("Information about") and jrt.startswith("Information about")
        assert answer == jrt_answer and answer.endswith("\n")  # the same answer


def test_labels_score_the_answer_and_the_second_read_only():
    from hazyzoo.demo_jrt import _TokenizedTexts

    tokenizer = synthetic_tokenizer()
    plain, jrt = _TokenizedTexts(tokenizer, training_texts(1, 4, seed=2)).items
    answer_ids = tokenizer(" " + training_texts(1, 4, seed=2)[0][1])["input_ids"]
    scored = [i for i in plain["labels"] if i != -100]
    assert scored == answer_ids  # the value and the newline
    newline = jrt["input_ids"].index(tokenizer.convert_tokens_to_ids("\n"))
    assert all(i == -100 for i in jrt["labels"][: newline + 1])
    assert jrt["labels"][newline + 1 :] == jrt["input_ids"][newline + 1 :]


def _check_result(result, output_dir, num_eval_docs):
    assert set(result["accuracy"]) == {"plain", "jrt"}
    assert result["count"] == {"plain": num_eval_docs, "jrt": num_eval_docs}
    assert result["eval_overlap_with_training"] == 0
    saved = json.loads((output_dir / "jrt_recall_results.json").read_text())
    assert saved["accuracy"] == result["accuracy"]
    # The saved model reproduces the reported accuracies through the runner.
    model = AutoModelForCausalLM.from_pretrained(result["saved_path"])
    tokenizer = AutoTokenizer.from_pretrained(result["saved_path"])
    examples = synthetic_examples(num_eval_docs, result["settings"]["facts_per_doc"], seed=0)
    again = evaluate_recall(model, tokenizer, examples=examples, batch_size=50)
    assert {k: r.accuracy for k, r in again.items()} == result["accuracy"]


def test_quick_run_trains_evaluates_and_saves(tmp_path):
    result = run_recall_experiment(tmp_path, quick=True, max_steps=20, num_train_docs=100)
    assert result["model_class"] == "BasedForCausalLM"
    _check_result(result, tmp_path, 40)


def test_model_factory_replaces_the_model(tmp_path):
    made = []

    def factory(vocab_size, pad_id, eos_id):
        made.append((vocab_size, pad_id, eos_id))
        return tiny.llama(vocab_size)

    result = run_recall_experiment(
        tmp_path, quick=True, model_factory=factory, max_steps=5, num_train_docs=20, num_eval_docs=5
    )
    assert made == [(len(synthetic_tokenizer()), 0, 1)]
    assert result["model_class"] == "LlamaForCausalLM"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(learning_rat=1e-3), TypeError, "unknown settings"),
        (dict(max_steps=0), ValueError, "max_steps must be a positive number"),
        (dict(seed="1"), TypeError, "seed must be an int"),
    ],
)
def test_bad_settings_are_errors(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        run_recall_experiment(tmp_path, quick=True, **kwargs)


@pytest.mark.slow
def test_full_run(tmp_path):
    result = run_recall_experiment(tmp_path)
    _check_result(result, tmp_path, DEFAULT_SETTINGS["num_eval_docs"])
    assert result["wall_seconds"] < 600
