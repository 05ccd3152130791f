"""JRT-Prompt: the templates, and greedy generation with any causal LM."""

from __future__ import annotations

import pytest
import torch

from hazyzoo.jrt import (
    TEMPLATES,
    cut_at_stop,
    generate_read_twice,
    generate_until,
    model_max_length,
    read_once,
    read_twice,
)
from tests.evaluation import tiny

DOC = "Title: Harbor Lights. Director: Mara Quill."

# --- templates ----------------------------------------------------------------------------


def test_information_template_is_the_released_swde_fda_form():
    expected = (
        "Information about Director. Title: Harbor Lights. Director: Mara Quill.\n"
        "Title: Harbor Lights. Director: Mara Quill. Director:"
    )
    assert read_twice(DOC, "Director") == expected
    assert read_twice(DOC, "Director:", template="information") == expected  # colon optional
    assert read_once(DOC, "Director") == "Title: Harbor Lights. Director: Mara Quill. Director:"


def test_squad_template_reads_the_context_twice_then_the_question():
    context, completion = "The bridge opened in 1931.", "The bridge opened in"
    assert read_twice(context, completion, template="squad") == (
        "The bridge opened in 1931.\nThe bridge opened in 1931. The bridge opened in"
    )
    assert read_twice(context, completion, template="squad", preamble="When did it open?") == (
        "When did it open? The bridge opened in 1931.\n"
        "The bridge opened in 1931. The bridge opened in"
    )
    assert read_once(context, completion, template="squad") == (
        "The bridge opened in 1931. The bridge opened in"
    )


def test_plain_template_reads_once():
    assert read_twice("a b", "c:", template="plain") == "a b c:"
    assert read_once("a b", "c:", template="plain") == "a b c:"
    assert TEMPLATES == ("information", "squad", "plain")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(context=DOC, question="k", template="twice"), ValueError, "unknown template 'twice'"),
        (dict(context="  ", question="k"), ValueError, "context must not be empty"),
        (dict(context=DOC, question=""), ValueError, "question must not be empty"),
        (dict(context=DOC, question="::"), ValueError, "only colons"),
        (dict(context=3, question="k"), TypeError, "context must be a str, got int"),
        (dict(context=DOC, question=["k"]), TypeError, "question must be a str, got list"),
        (dict(context=DOC, question="k", preamble="q?"), ValueError, "only used by the 'squad'"),
        (dict(context=DOC, question="k", template="squad", preamble=""), ValueError, "preamble"),
    ],
)
def test_read_twice_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        read_twice(**kwargs)


def test_cut_at_stop():
    assert cut_at_stop(" Quill\nRuntime", "\n") == " Quill"
    assert cut_at_stop("a. b; c", [";", "."]) == "a"
    assert cut_at_stop("no stop", "\n") == "no stop"
    assert cut_at_stop("keep\nall", None) == "keep\nall"
    with pytest.raises(ValueError, match="non-empty"):
        cut_at_stop("x", "")


# --- generation ---------------------------------------------------------------------------

CONTEXTS = [
    "fafil: Kilov. sokem: Vogog. lanes: Pofob.",
    "the cat sat on the mat. the dog ran to the red mat.",
    "sokem: Tufan.",
]
QUESTIONS = ["sokem", "dog", "sokem"]


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer()


@pytest.fixture(scope="module", params=["based", "llama"])
def model(request, tok):
    return getattr(tiny, request.param)(len(tok))


@pytest.mark.parametrize("jrt", [True, False])
def test_generation_equals_a_manual_greedy_loop(model, tok, jrt):
    prompts = [
        (read_twice if jrt else read_once)(c, q, template="information")
        for c, q in zip(CONTEXTS, QUESTIONS)
    ]
    expected = [tiny.manual_greedy(model, tok, p, max_new_tokens=4) for p in prompts]
    got = generate_read_twice(model, tok, CONTEXTS, QUESTIONS, jrt=jrt, max_new_tokens=4)
    assert got == expected
    assert any(got), "a random model that only emits eos/specials tests nothing"


def test_batched_equals_one_by_one_and_tokenizer_is_left_unchanged(model, tok):
    prompts = [read_twice(c, q) for c, q in zip(CONTEXTS, QUESTIONS)]
    assert len({len(tok(p)["input_ids"]) for p in prompts}) == 3  # the batch really pads
    side, pad = tok.padding_side, tok.pad_token
    model.train()
    one_by_one = generate_until(model, tok, prompts, max_new_tokens=4, batch_size=1)
    batched = generate_until(model, tok, prompts, max_new_tokens=4, batch_size=3)
    assert batched == one_by_one
    assert (tok.padding_side, tok.pad_token) == (side, pad)
    assert model.training  # the mode is restored
    model.eval()


def test_output_is_cut_at_the_stop_string(tok):
    model = tiny.based(len(tok))
    prompt = read_twice(CONTEXTS[0], QUESTIONS[0])
    full = generate_until(model, tok, [prompt], max_new_tokens=8, stop=None)[0]
    words = full.split()
    assert len(words) >= 2
    stop = f" {words[1]}"  # the second generated word: the output ends before it
    cut = generate_until(model, tok, [prompt], max_new_tokens=8, stop=stop)[0]
    assert cut == full[: full.index(stop)]


def test_works_without_a_pad_token(tok):
    model = tiny.based(len(tok))
    prompts = [read_twice(c, q) for c, q in zip(CONTEXTS, QUESTIONS)]
    expected = generate_until(model, tok, prompts, max_new_tokens=4, batch_size=3)
    no_pad = tiny.tokenizer()
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    assert generate_until(model, no_pad, prompts, max_new_tokens=4, batch_size=3) == expected


def test_too_long_prompt_is_an_error_not_a_truncation(tok):
    model = tiny.llama(len(tok), max_positions=24)
    assert model_max_length(model) == 24
    assert model_max_length(tiny.based(len(tok))) is None  # recurrent: no stated limit
    prompt = read_twice(CONTEXTS[1], QUESTIONS[1])  # 34 tokens
    with pytest.raises(ValueError, match=r"prompts\[1\] has \d+ tokens.*max length 24"):
        generate_until(model, tok, ["the cat", prompt], max_new_tokens=4)
    with pytest.raises(ValueError, match="max length 10"):
        generate_until(tiny.based(len(tok)), tok, [prompt], max_new_tokens=4, max_length=10)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(prompts=[]), ValueError, "prompts is empty"),
        (dict(prompts="a prompt"), TypeError, "not one str"),
        (dict(prompts=["ok", " "]), ValueError, r"prompts\[1\] must not be empty"),
        (dict(prompts=["ok"], max_new_tokens=0), ValueError, "max_new_tokens must be >= 1"),
        (dict(prompts=["ok"], max_new_tokens=2.5), TypeError, "max_new_tokens must be an int"),
        (dict(prompts=["ok"], batch_size=0), ValueError, "batch_size must be >= 1"),
    ],
)
def test_generate_until_rejects_bad_arguments(tok, kwargs, error, match):
    with pytest.raises(error, match=match):
        generate_until(tiny.based(len(tok)), tok, **kwargs)


def test_generate_read_twice_rejects_mismatched_inputs(tok):
    model = tiny.based(len(tok))
    with pytest.raises(ValueError, match="2 contexts but 1 questions"):
        generate_read_twice(model, tok, ["a", "b"], ["k"])
    with pytest.raises(TypeError, match="not one str"):
        generate_read_twice(model, tok, "a", "k")
    with pytest.raises(ValueError, match="unknown template"):
        generate_read_twice(model, tok, ["a"], ["k"], template="nope")
    with pytest.raises(ValueError, match="preambles belong to the JRT prompt"):
        generate_read_twice(model, tok, ["a"], ["k"], template="squad", preambles=["q"], jrt=False)


def test_squad_preambles_reach_the_prompt(tok):
    model = tiny.based(len(tok))
    got = generate_read_twice(
        model,
        tok,
        ["the cat sat"],
        ["the cat"],
        template="squad",
        preambles=["the dog"],
        max_new_tokens=3,
    )
    prompt = read_twice("the cat sat", "the cat", template="squad", preamble="the dog")
    assert got == [tiny.manual_greedy(model, tok, prompt, max_new_tokens=3)]
    assert torch.equal(
        tok(prompt, return_tensors="pt")["input_ids"][0, :2], torch.tensor(tok("the dog").input_ids)
    )
