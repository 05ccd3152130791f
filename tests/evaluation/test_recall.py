"""The recall runner: synthetic data, Hub-schema loaders, scoring, plain vs JRT-Prompt."""

from __future__ import annotations

import json
import re

import pytest
import torch

from hazyzoo.evaluation import (
    RecallExample,
    contains_answer,
    evaluate_recall,
    format_table,
    load_recall_task,
    score,
    synthetic_documents,
    synthetic_examples,
    synthetic_tokenizer,
    synthetic_vocabulary,
)
from hazyzoo.jrt import generate_until
from tests.conftest import REPO_ROOT
from tests.evaluation import tiny

FIXTURES = REPO_ROOT / "tests" / "data" / "recall"

# --- scoring ------------------------------------------------------------------------------


def test_contains_answer_is_case_insensitive_containment_of_any_answer():
    assert contains_answer(" mara QUILL, director", "Mara Quill")
    assert contains_answer("class 2 device", ["Class II", "class 2"])
    assert not contains_answer(" Mara", "Mara Quill")
    assert not contains_answer("", ["x"])
    assert contains_answer("a (555) 010-7788 b", "(555) 010-7788")  # no regex semantics
    with pytest.raises(ValueError, match="answers is empty"):
        contains_answer("x", [])


def test_score_counts_and_records():
    examples = [
        RecallExample(id=str(i), plain_prompt=f"p{i}", jrt_prompt=f"j{i}", answers=(a,))
        for i, a in enumerate(["Kilov", "Vogog", "Pofob", "Tufan"])
    ]
    result = score([" kilov.", " Vogog", " nope", ""], examples, task="synthetic", prompt="jrt")
    assert (result.correct, result.count, result.accuracy) == (2, 4, 0.5)
    assert [r["correct"] for r in result.records] == [True, True, False, False]
    assert result.records[2] == {
        "id": "2",
        "prompt": "j2",
        "prediction": " nope",
        "answers": ["Pofob"],
        "correct": False,
    }
    json.dumps(result.to_dict())  # serialisable
    with pytest.raises(ValueError, match="3 predictions for 4 examples"):
        score(["a", "b", "c"], examples)


# --- synthetic ----------------------------------------------------------------------------


def test_synthetic_documents_are_deterministic_per_seed_and_differ_across_seeds():
    a = synthetic_documents(20, 6, seed=3)
    assert a == synthetic_documents(20, 6, seed=3)
    b = synthetic_documents(20, 6, seed=4)
    assert [d["context"] for d in a] != [d["context"] for d in b]
    assert len({d["context"] for d in a}) == 20


@pytest.mark.parametrize("style", ["table", "sentences"])
def test_synthetic_documents_hold_the_asked_fact_once(style):
    for doc in synthetic_documents(30, 5, seed=1, style=style):
        keys = [k for k, _ in doc["facts"]]
        values = [v for _, v in doc["facts"]]
        assert len(set(keys)) == len(keys) == 5 and len(set(values)) == 5
        fact = f"{doc['key']}: {doc['value']}." if style == "table" else None
        fact = fact or f"The {doc['key']} is {doc['value']}."
        assert doc["context"].count(fact) == 1
        assert (doc["key"], doc["value"]) in doc["facts"]
        # No other value contains the answer (containment scoring cannot credit a wrong one).
        assert all(doc["value"].lower() not in v.lower() for v in values if v != doc["value"])


def test_synthetic_examples_use_the_information_template():
    (ex,) = synthetic_examples(1, 3, seed=0)
    doc = synthetic_documents(1, 3, seed=0)[0]
    assert ex.plain_prompt == f"{doc['context']} {doc['key']}:"
    assert ex.jrt_prompt == (
        f"Information about {doc['key']}. {doc['context']}\n{doc['context']} {doc['key']}:"
    )
    assert ex.answers == (doc["value"],)


def test_synthetic_tokenizer_covers_every_prompt_word():
    tok = synthetic_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) == 4 + len(synthetic_vocabulary())
    for style in ("table", "sentences"):
        for ex in synthetic_examples(10, 8, seed=5, style=style):
            for text in (ex.plain_prompt, ex.jrt_prompt, ex.answers[0]):
                assert tok.unk_token_id not in tok(text)["input_ids"], text
    assert "\n" in tok.decode(tok("a\nb")["input_ids"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_docs=0), ValueError, "num_docs must be >= 1"),
        (dict(facts_per_doc=97), ValueError, "facts_per_doc must be <= 96"),
        (dict(facts_per_doc=2.0), TypeError, "facts_per_doc must be an int"),
        (dict(style="csv"), ValueError, "unknown style 'csv'"),
        (dict(seed="0"), TypeError, "seed must be an int"),
    ],
)
def test_synthetic_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        synthetic_documents(**kwargs)


# --- loaders ------------------------------------------------------------------------------


def test_swde_loader_cleans_the_document_as_released():
    examples = load_recall_task("swde", FIXTURES / "swde.jsonl")
    assert [e.id for e in examples] == [
        "swde-movie-0",
        "swde-movie-1",
        "swde-university-0",
        "swde-university-1",
    ]
    doc = (
        "Harbor Lights (1987) - Movie Page\nTitle: Harbor Lights\nDirector: Mara Quill\n"
        "Runtime: 104 min\nGenre: Drama."
    )
    assert examples[0].plain_prompt == f"{doc} Director:"
    assert examples[0].jrt_prompt == f"Information about Director. {doc}\n{doc} Director:"
    assert examples[0].answers == ("Mara Quill",)
    # The SWDE-v2 summary tail is dropped; a lower-case cue is stripped and the key capitalised.
    assert "Summary of information" not in examples[2].jrt_prompt
    assert examples[2].plain_prompt.endswith("Type: private. Phone:")
    assert examples[3].plain_prompt.endswith("Enrollment: 12,400. Type:")
    assert examples[3].plain_prompt.count("Type:") == 2


def test_fda_loader_reads_json_lists_and_several_answers():
    examples = load_recall_task("fda", FIXTURES / "fda.json")
    assert len(examples) == 3
    assert examples[1].answers == ("Class II", "class 2")
    # A repeated cue is stripped every time; the doc keeps its own text.
    assert examples[2].plain_prompt == (
        "510(k) SUMMARY.. Submitter: Nimbus Labs. Device name: Pulse Clip. "
        "Classification: Class I. Submitter:"
    )


def test_squad_loader_builds_the_released_forms():
    examples = load_recall_task("squad", FIXTURES / "squad.jsonl")
    passage = "The Brindle Bridge opened in 1931 and spans the river Caddo."
    assert examples[1].plain_prompt == f"{passage} The Brindle Bridge opened in"
    assert examples[1].jrt_prompt == (
        f"When did the Brindle Bridge open? {passage}\n{passage} The Brindle Bridge opened in"
    )
    assert examples[1].answers == ("1931", "nineteen thirty-one")
    # text not starting with the passage: question + passage + text, as released.
    row = [json.loads(x) for x in (FIXTURES / "squad.jsonl").read_text().splitlines()][2]
    assert examples[2].plain_prompt == row["text"]
    assert examples[2].jrt_prompt == f"{row['question']} {row['context']}\n{row['text']}"


def test_limit_takes_the_first_rows():
    assert [e.id for e in load_recall_task("swde", FIXTURES / "swde.jsonl", limit=2)] == [
        "swde-movie-0",
        "swde-movie-1",
    ]
    assert len(load_recall_task("swde", FIXTURES / "swde.jsonl", limit=100)) == 4
    assert len(load_recall_task("synthetic", limit=7)) == 7


def test_loaders_accept_datasets_parquet_folders_and_rows(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(x) for x in (FIXTURES / "swde.jsonl").read_text().splitlines()]
    expected = load_recall_task("swde", FIXTURES / "swde.jsonl")
    dataset = datasets.Dataset.from_list(rows)
    assert load_recall_task("swde", dataset) == expected
    assert load_recall_task("swde", datasets.DatasetDict(validation=dataset)) == expected
    assert load_recall_task("swde", rows) == expected
    # The Hub layout: data/validation-*.parquet (other splits in the folder are ignored).
    (tmp_path / "data").mkdir()
    dataset.to_parquet(str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    dataset.select([0]).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    assert load_recall_task("swde", tmp_path) == expected
    assert (
        load_recall_task("swde", tmp_path / "data" / "train-00000-of-00001.parquet")
        == (expected[:1])
    )


def test_columnar_json_and_json_lines_in_a_json_file(tmp_path):
    rows = json.loads((FIXTURES / "fda.json").read_text())
    expected = load_recall_task("fda", FIXTURES / "fda.json")
    columnar = {k: [r[k] for r in rows] for k in rows[0]}
    (tmp_path / "columns.json").write_text(json.dumps(columnar))
    assert load_recall_task("fda", tmp_path / "columns.json") == expected
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows))
    assert load_recall_task("fda", tmp_path / "lines.json") == expected


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_LOADS = [
    (lambda p: ("wikitext", None, {}), ValueError, "unknown task 'wikitext'"),
    (
        lambda p: ("swde", _write(p, "x.jsonl", '{"text": "a doc. Year:", "value": "1"}\n'), {}),
        ValueError,
        r"lacks column\(s\) \['key'\]",
    ),
    (
        lambda p: ("squad", FIXTURES / "swde.jsonl", {}),
        ValueError,
        r"lacks column\(s\) \['context', 'question'\]",
    ),
    (lambda p: ("swde", _write(p, "e.jsonl", "\n"), {}), ValueError, "has no rows"),
    (lambda p: ("swde", FIXTURES / "swde.jsonl", {"limit": 0}), ValueError, "limit must be >= 1"),
    (lambda p: ("swde", FIXTURES / "swde.jsonl", {"limit": -2}), ValueError, "limit must be"),
    (lambda p: ("swde", FIXTURES / "swde.jsonl", {"limit": 1.5}), TypeError, "limit must be"),
    (lambda p: ("swde", FIXTURES / "swde.jsonl", {"limit": True}), TypeError, "limit must be"),
    (lambda p: ("synthetic", FIXTURES / "swde.jsonl", {}), ValueError, "data must be None"),
    (lambda p: ("fda", _write(p, "d.csv", "a,b\n"), {}), ValueError, "unsupported file type"),
    (lambda p: ("fda", p / "missing.jsonl", {}), FileNotFoundError, "missing.jsonl"),
    (lambda p: ("fda", p, {}), FileNotFoundError, "holds no"),
    (lambda p: ("fda", _write(p, "b.jsonl", "{not json\n"), {}), ValueError, "line 1 is not JSON"),
    (
        lambda p: ("fda", _write(p, "v.jsonl", '{"text": "d. K:", "key": "K", "value": ""}\n'), {}),
        ValueError,
        "gold answer '' must be a non-empty string",
    ),
    (
        lambda p: ("fda", _write(p, "c.jsonl", '{"text": "K:", "key": "K", "value": "v"}\n'), {}),
        ValueError,
        "holds no document",
    ),
    (lambda p: ("swde", {"text": "x"}, {}), TypeError, "not one dict"),
]


@pytest.mark.parametrize("case, error, match", BAD_LOADS)
def test_bad_input_is_a_clear_error(case, error, match, tmp_path):
    task, data, kwargs = case(tmp_path)
    with pytest.raises(error, match=match):
        load_recall_task(task, data, **kwargs)


def test_hub_id_needs_datasets_with_a_clear_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ModuleNotFoundError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install 'hazyzoo[data]'")):
        load_recall_task("swde")  # the default: hazyresearch/based-swde
    assert len(load_recall_task("swde", FIXTURES / "swde.jsonl")) == 4  # JSON needs no datasets


# --- the runner ---------------------------------------------------------------------------


class OracleLM(torch.nn.Module):
    """Answers correctly only to the JRT prompts of ``examples`` (looked up by token ids) and
    says "Wrong" otherwise: shows that the runner sends each form's prompts, unpadded, and
    scores what comes back."""

    def __init__(self, tokenizer, examples):
        super().__init__()
        self.tokenizer = tokenizer
        self.answers = {tuple(tokenizer(e.jrt_prompt)["input_ids"]): e.answers[0] for e in examples}
        self.config = type("Config", (), {})()
        self.seen: list[tuple[int, ...]] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = tuple(ids[mask.bool()].tolist())
            self.seen.append(prompt)
            text = f"{self.answers.get(prompt, 'Wrong')} \n extra"
            rows.append(self.tokenizer(text)["input_ids"][:max_new_tokens])
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


def test_evaluate_recall_compares_plain_and_jrt_in_one_call():
    tok = synthetic_tokenizer(["Wrong", "extra"])
    examples = synthetic_examples(6, 3, seed=2)
    oracle = OracleLM(tok, examples)
    results = evaluate_recall(oracle, tok, "synthetic", examples=examples, batch_size=4)
    assert set(results) == {"plain", "jrt"}
    assert (results["plain"].accuracy, results["jrt"].accuracy) == (0.0, 1.0)
    assert results["jrt"].count == results["plain"].count == 6
    assert [r["prediction"] for r in results["jrt"].records] == [
        f"{ex.answers[0]} " for ex in examples
    ]  # cut at "\n"
    assert len(oracle.seen) == 12
    assert oracle.seen[:6] == [tuple(tok(e.plain_prompt)["input_ids"]) for e in examples]
    table = format_table(results)
    assert table.splitlines()[1].split() == ["plain", "0.000", "6"]
    assert table.splitlines()[2].split() == ["jrt", "1.000", "6"]
    only = evaluate_recall(oracle, tok, examples=examples, prompt="jrt")
    assert set(only) == {"jrt"}


def test_evaluate_recall_on_a_random_model_matches_generate_until():
    tok = tiny.tokenizer()
    model = tiny.based(len(tok))
    results = evaluate_recall(
        model, tok, "swde", data=FIXTURES / "swde.jsonl", limit=2, max_new_tokens=3, batch_size=2
    )
    examples = load_recall_task("swde", FIXTURES / "swde.jsonl", limit=2)
    for form in ("plain", "jrt"):
        expected = generate_until(
            model, tok, [e.prompt(form) for e in examples], max_new_tokens=3, batch_size=2
        )
        assert [r["prediction"] for r in results[form].records] == expected
        assert [r["prompt"] for r in results[form].records] == [e.prompt(form) for e in examples]
        assert results[form].count == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt="twice"), "unknown prompt 'twice'"),
        (dict(task="nq"), "unknown task 'nq'"),
        (dict(examples=[]), "examples is empty"),
        (dict(examples=synthetic_examples(1, 2), data="x.jsonl"), "either examples or data"),
    ],
)
def test_evaluate_recall_rejects_bad_arguments(kwargs, match):
    tok = synthetic_tokenizer()
    with pytest.raises(ValueError, match=match):
        evaluate_recall(tiny.based(len(tok)), tok, **kwargs)
