"""Cookbook templates: every template's examples follow its rule (checked by an independent
solver that reads only the text), pass their own checker, and corrupted responses fail;
generation is deterministic; vocabularies; the word tokenizer; mixture counts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hazyzoo.datasets_scripts import cookbook_templates as ct
from hazyzoo.datasets_scripts.cookbook_templates import (
    ANSWER_CUE,
    GPT4ALL_TASKS,
    OPTION_LETTERS,
    TASK_TYPES,
    TEMPLATE_WORDS,
    TEMPLATES,
    CookbookExample,
    build_word_tokenizer,
    check_vocabulary,
    default_vocabulary,
    format_example,
    generate_examples,
    mixture_counts,
    template_words,
    vocabulary_from_tokenizer,
)

NAMES = list(TEMPLATES)
MIXED_CASE_VOCAB = [
    "Zeta",
    "zeta",
    "alpha",
    "Bravo",
    "charlie",
    "Delta",
    "echo",
    "Foxtrot",
    "golf",
    "Hotel",
    "india",
    "Juliett",
    "kilo",
    "Lima",
    "mike",
    "November",
    "oscar",
    "Papa",
    "quebec",
    "Romeo",
    "sierra",
    "Tango",
    "uniform",
    "Victor",
    "whiskey",
    "Xray",
    "yankee",
    "Zulu",
    "émile",
    "Straße",
]
VOCABS = {
    "default": default_vocabulary(512, 0),
    "small": default_vocabulary(40, 3),
    "mixed_case": MIXED_CASE_VOCAB,
}
# parameter variants per template: defaults, extremes, harder settings
PARAMS = {
    "mc_context_match": [{}, {"option_length": 3}, {"num_options": 2, "context_length": 3}],
    "mc_fact_lookup": [{}, {"num_facts": 6, "num_options": 6}, {"num_facts": 2, "num_options": 2}],
    "continuation_pattern": [
        {},
        {"motif_length": 6, "num_options": 6, "continuation_length": 7},
        {"motif_length": 2, "num_options": 2, "num_repeats": 3, "continuation_length": 1},
    ],
    "goal_constraint": [
        {},
        *({"goal": g, "option_length": 2} for g in ct._GOALS),
        {"num_options": 4},
    ],
    "yes_no_membership": [{}, {"passage_length": 1}, {"p_yes": 1.0}, {"p_yes": 0.0}],
    "yes_no_relation": [{}, {"num_facts": 2}, {"p_yes": 0.0}],
    "fill_blank_coreference": [{}],
    "copy_span": [{}, {"text_length": 1, "span_length": 1}, {"span_length": 16}],
    "key_value_retrieval": [{}, {"num_pairs": 1}, {"num_pairs": 12}],
    "count_occurrences": [{}, {"num_distinct": 1}, {"list_length": 30, "num_distinct": 2}],
    "sort_alphabetical": [{}, {"num_words": 2}, {"num_words": 12}],
    "order_by_index": [{}, {"num_words": 2}, {"num_words": 12}],
    "first_last": [{}, {"position": "first"}, {"position": "last", "list_length": 2}],
}
SEEDS = (0, 1, 7)
PER_CASE = 12


def cases(name):
    """(vocab name, params, examples) for every vocabulary, params variant and seed."""
    out = []
    for vocab_name, vocab in VOCABS.items():
        for params in PARAMS[name]:
            for seed in SEEDS:
                out.append(
                    (vocab_name, params, generate_examples(name, PER_CASE, seed, vocab, **params))
                )
    return out


@pytest.fixture(scope="module")
def all_examples():
    return {name: cases(name) for name in NAMES}


# --------------------------------------------------------------------------------------------
# Independent solvers: read the instruction text only, apply the rule, return the answer.


def _line(text, label):
    match = re.search(rf"^{label}: (.*)$", text, flags=re.M)
    assert match, (label, text)
    return match.group(1)


def _options(text):
    return {m.group(1): m.group(2).split() for m in re.finditer(r"^([A-F])\. (.*)$", text, re.M)}


def _question(text):
    return _line(text, "Question")


def _only(letters):
    assert len(letters) == 1, letters
    return letters[0]


def solve_mc_context_match(text):
    context = _line(text, "Context").split()
    spans = {
        tuple(context[i : i + n]) for n in range(1, len(context) + 1) for i in range(len(context))
    }
    return _only([k for k, words in _options(text).items() if tuple(words) in spans])


def solve_mc_fact_lookup(text):
    facts = dict(re.findall(r"(\S+) is (\S+)\.", _line(text, "Facts")))
    subject = re.fullmatch(r"What is (\S+)\?", _question(text)).group(1)
    return _only([k for k, words in _options(text).items() if words == [facts[subject]]])


def solve_continuation_pattern(text):
    seq = _line(text, "Sequence").split()
    period = next(
        p for p in range(1, len(seq)) if all(seq[i] == seq[i - p] for i in range(p, len(seq)))
    )
    options = _options(text)
    n = len(next(iter(options.values())))
    ext = list(seq)
    for _ in range(n):
        ext.append(ext[-period])
    return _only([k for k, words in options.items() if words == ext[len(seq) :]])


def solve_goal_constraint(text):
    goal, word = re.fullmatch(r"a sequence that (.*) (\S+)\.", _line(text, "Goal")).groups()
    test = {
        "starts with": lambda o: o[0] == word,
        "ends with": lambda o: o[-1] == word,
        "contains": lambda o: word in o,
        "does not contain": lambda o: word not in o,
    }[goal]
    return _only([k for k, words in _options(text).items() if test(words)])


def solve_yes_no_membership(text):
    word = re.fullmatch(r"Does the word (\S+) occur in the passage\?", _question(text)).group(1)
    return "yes" if word in _line(text, "Passage").split() else "no"


def solve_yes_no_relation(text):
    facts = re.findall(r"(\S+) (\S+) (\S+)\.", _line(text, "Passage"))
    query = re.fullmatch(
        r"Does the passage state that (\S+) (\S+) (\S+)\?", _question(text)
    ).groups()
    return "yes" if query in facts else "no"


OPPOSITES = {
    "bigger": "smaller",
    "taller": "shorter",
    "faster": "slower",
    "older": "younger",
    "stronger": "weaker",
    "heavier": "lighter",
    "richer": "poorer",
    "louder": "quieter",
}
OPPOSITES.update({v: k for k, v in list(OPPOSITES.items())})


def solve_fill_blank_coreference(text):
    first, comp, second, cue = re.fullmatch(
        r"(\S+) is (\S+) than (\S+), so _ is (\S+)\.", _line(text, "Sentence")
    ).groups()
    assert {_line(text, "Option 1"), _line(text, "Option 2")} == {first, second}
    assert cue in (comp, OPPOSITES[comp])
    return first if cue == comp else second


def solve_copy_span(text):
    n = int(re.fullmatch(r"Copy the (\d+) words after #\.", _question(text)).group(1))
    words = _line(text, "Text").split()
    assert words.count("#") == 1
    i = words.index("#")
    return " ".join(words[i + 1 : i + 1 + n])


def solve_key_value_retrieval(text):
    pairs = dict(p.split(" = ") for p in _line(text, "Pairs").split(", "))
    key = re.fullmatch(r"What is the value of (\S+)\?", _question(text)).group(1)
    return pairs[key]


def solve_count_occurrences(text):
    word = re.fullmatch(r"How many times does (\S+) occur in the list\?", _question(text)).group(1)
    return str(_line(text, "List").split().count(word))


def solve_sort_alphabetical(text):
    return " ".join(sorted(_line(text, "Words").split(), key=lambda w: (w.lower(), w)))


def solve_order_by_index(text):
    words = _line(text, "Words").split()
    order = [int(i) for i in _line(text, "Order").split()]
    assert sorted(order) == list(range(1, len(words) + 1))
    return " ".join(words[i - 1] for i in order)


def solve_first_last(text):
    position = re.fullmatch(r"Which word is (first|last) in the list\?", _question(text)).group(1)
    words = _line(text, "List").split()
    return words[0] if position == "first" else words[-1]


SOLVERS = {name: globals()[f"solve_{name}"] for name in NAMES}


# --------------------------------------------------------------------------------------------
# The registry


def test_registry_covers_the_papers_task_types_and_the_gpt4all_tasks():
    assert len(TEMPLATES) >= 10
    assert {t.task_type for t in TEMPLATES.values()} == set(TASK_TYPES)
    assert set().union(*(t.targets for t in TEMPLATES.values())) == set(GPT4ALL_TASKS)
    kind_words = {
        "multiple_choice": "Multiple choice",
        "yes_no": "Yes/no",
        "fill_in": "Fill-in",
        "generic": "Generic",
    }
    for name, t in TEMPLATES.items():
        assert t.name == name and t.targets and set(t.targets) <= set(GPT4ALL_TASKS)
        assert t.rule.endswith(".") and len(t.rule.split()) >= 5
        assert t.doc.startswith(kind_words[t.task_type]), name  # doc names the task type...
        assert "Rule:" in t.doc and "Response:" in t.doc  # ...and states the rule
        assert t.checker.__doc__ and t.generator.__doc__
        with pytest.raises(TypeError):
            t.defaults["x"] = 1  # read-only
    with pytest.raises(AttributeError):
        TEMPLATES["copy_span"].rule = "x"  # frozen
    with pytest.raises(ValueError, match="task_type"):
        ct.Template("x", "essay", ("boolq",), "r.", ct.generate_copy_span, ct.check_copy_span)
    with pytest.raises(ValueError, match="targets"):
        ct.Template("x", "generic", ("mmlu",), "r.", ct.generate_copy_span, ct.check_copy_span)


# --------------------------------------------------------------------------------------------
# Examples follow the rule and pass their checker


@pytest.mark.parametrize("name", NAMES)
def test_examples_follow_the_rule_and_pass_the_checker(name, all_examples):
    template = TEMPLATES[name]
    allowed = set(TEMPLATE_WORDS)
    for vocab_name, params, examples in all_examples[name]:
        vocab = set(VOCABS[vocab_name])
        for ex in examples:
            assert ex.template == name
            assert ex.instruction.endswith("\n" + ANSWER_CUE)
            assert ex.response.startswith(" ") and ex.response == ex.response.rstrip()
            assert format_example(ex) == ex.instruction + ex.response == ex.text
            assert json.loads(json.dumps(ex.meta)) == ex.meta
            # every word is a random token or a fixed template word; the rule holds
            for word in re.findall(r"[^\W\d_]+", ex.instruction):
                assert word in vocab or word in allowed, (word, ex.instruction)
            assert SOLVERS[name](ex.instruction) == ex.response.strip(), (params, ex.text)
            assert template.check(ex, ex.response)
            # documented normalisation: surrounding whitespace (and case for letters/yes-no)
            assert template.check(ex, "  " + ex.response.strip() + " \n")
            if template.task_type in ("multiple_choice", "yes_no"):
                assert template.check(ex, ex.response.swapcase())
            if template.task_type in ("fill_in", "generic"):
                assert template.check(ex, ex.response.replace(" ", "  \t"))


def test_answers_are_balanced(all_examples):
    """Correct letters and yes/no answers vary (no position or label bias to learn)."""
    for name in ("mc_context_match", "continuation_pattern", "yes_no_membership"):
        examples = generate_examples(name, 200, 0)
        answers = {ex.response for ex in examples}
        assert len(answers) >= 2
        most = max(sum(ex.response == a for ex in examples) for a in answers)
        assert most < 0.7 * len(examples), name


def corruptions(ex, vocab):
    """Responses that break the rule for ``ex`` (each must fail)."""
    answer = ex.response.strip()
    words = answer.split()
    meta = ex.meta
    task_type = TEMPLATES[ex.template].task_type
    out = ["", " ", ex.response + " " + vocab[0], ex.response + ".", ex.response + ex.response]
    if task_type == "multiple_choice":
        out += [" " + letter for letter in OPTION_LETTERS if letter != answer]
        out += [f" ({answer})", f" {answer}.", " " + meta["options"][meta["answer_index"]]]
    elif task_type == "yes_no":
        out += [" no" if answer == "yes" else " yes", " yes no", " y", " true"]
    elif ex.template == "count_occurrences":
        count = int(answer)
        out += [f" {count + 1}", f" {count - 1}", f" 0{count}", f" {count}.0", " three"]
    else:
        other = next(w for w in vocab if w not in words)
        out += [" " + " ".join([*words[:-1], other])]  # last word altered
        out += [" " + " ".join([*words[:-1], words[-1][:-1]])]  # a word truncated
        out += [" " + " ".join([*words, words[-1]])]  # a word too many
        if len(words) > 1:
            out += [" " + " ".join(words[:-1])]  # a word missing
            swapped = [words[1], words[0], *words[2:]]
            if swapped != words:
                out += [" " + " ".join(swapped)]
            if words[::-1] != words:
                out += [" " + " ".join(words[::-1])]
        if answer.upper() != answer:
            out += [" " + answer.upper()]  # words are case-sensitive
        if "options" in meta:  # fill-in: the other entity, or the option number
            out += [" " + o for o in meta["options"] if o != answer]
            out += [f" {meta['answer_index'] + 1}", " Option"]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_corrupted_responses_fail(name, all_examples):
    template = TEMPLATES[name]
    checked = 0
    for vocab_name, _, examples in all_examples[name]:
        vocab = VOCABS[vocab_name]
        for ex in examples[:4]:
            for bad in corruptions(ex, vocab):
                assert not template.check(ex, bad), (ex.text, repr(bad))
                checked += 1
    assert checked > 100


def test_near_miss_structure():
    """Distractors are hard: they share words with the right answer."""
    for ex in generate_examples("continuation_pattern", 20, 2):
        motif = set(ex.meta["motif"])
        assert all(set(o.split()) <= motif for o in ex.meta["options"])
    for ex in generate_examples("mc_fact_lookup", 20, 2):
        objects = {o for _, o in ex.meta["facts"]}
        assert set(ex.meta["options"]) <= objects
    for ex in generate_examples("goal_constraint", 20, 2, goal="starts"):
        assert all(ex.meta["word"] in o.split() for o in ex.meta["options"])


def test_check_validates_its_arguments():
    ex = generate_examples("copy_span", 1, 0)[0]
    with pytest.raises(ValueError, match="made by template 'copy_span'"):
        TEMPLATES["first_last"].check(ex, ex.response)
    with pytest.raises(TypeError, match="response must be a str"):
        TEMPLATES["copy_span"].check(ex, None)
    with pytest.raises(TypeError, match="CookbookExample"):
        TEMPLATES["copy_span"].check({"response": " x"}, " x")


# --------------------------------------------------------------------------------------------
# Determinism and parameters


@pytest.mark.parametrize("name", NAMES)
def test_generation_is_deterministic(name):
    vocab = VOCABS["default"]
    params = PARAMS[name][-1]
    first = generate_examples(name, 8, 5, vocab, **params)
    assert first == generate_examples(TEMPLATES[name], 8, 5, list(vocab), **params)
    assert first != generate_examples(name, 8, 6, vocab, **params)
    assert first != generate_examples(name, 8, 5, VOCABS["small"], **params)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert TEMPLATES[name].generate(rng_a, vocab, **params) == TEMPLATES[name].generate(
        rng_b, vocab, **params
    )
    assert [e.text for e in first] == [format_example(e) for e in first]


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("copy_span", {"span_length": 0}, "span_length must be an int in"),
        ("copy_span", {"span_length": 17}, r"span_length must be an int in \[1, 16\]"),
        ("copy_span", {"span": 3}, "has no parameter"),
        ("mc_context_match", {"num_options": 7}, "num_options"),
        ("mc_fact_lookup", {"num_facts": 3, "num_options": 4}, "num_options"),
        ("continuation_pattern", {"num_repeats": 1}, "num_repeats"),
        ("continuation_pattern", {"motif_length": 3, "num_options": 4}, "num_options"),
        ("goal_constraint", {"goal": "sorted"}, "goal must be one of"),
        ("goal_constraint", {"option_length": 1}, "option_length"),
        ("yes_no_membership", {"p_yes": 1.5}, "p_yes"),
        ("first_last", {"position": "middle"}, "position must be one of"),
        ("count_occurrences", {"list_length": True}, "list_length must be an int"),
        ("key_value_retrieval", {"num_pairs": 30}, "needs 60 distinct words"),
    ],
)
def test_bad_params_are_refused_by_name(name, params, match):
    with pytest.raises(ValueError, match=match):
        generate_examples(name, 1, 0, VOCABS["small"], **params)


def test_generate_examples_validates():
    with pytest.raises(ValueError, match="unknown template 'nope'"):
        generate_examples("nope", 1)
    with pytest.raises(ValueError, match="num must be"):
        generate_examples("copy_span", -1)
    with pytest.raises(ValueError, match="seed must be"):
        generate_examples("copy_span", 1, seed=-2)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        TEMPLATES["copy_span"].generate(0, VOCABS["small"])
    assert generate_examples("copy_span", 0) == []
    assert generate_examples("copy_span", 3) == generate_examples(
        "copy_span", 3, 0, default_vocabulary()
    )


# --------------------------------------------------------------------------------------------
# Vocabularies


def test_default_vocabulary_is_deterministic_pronounceable_and_clean():
    words = default_vocabulary()
    assert len(words) == len(set(words)) == 512
    assert words == default_vocabulary(512, 0)
    assert default_vocabulary(100, 0) == words[:100]
    assert default_vocabulary(512, 1) != words
    syllable = f"[{ct._CONSONANTS}][{ct._VOWELS}]"
    assert all(re.fullmatch(f"(?:{syllable}){{2,3}}", w) for w in words)
    folded = {w.casefold() for w in TEMPLATE_WORDS}
    assert not folded & set(default_vocabulary(20_000, 0))
    check_vocabulary(words)
    for bad in (0, 1, -5, 10**6, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            default_vocabulary(bad)
    with pytest.raises(ValueError, match="seed"):
        default_vocabulary(10, -1)


@pytest.mark.parametrize(
    ("vocab", "match"),
    [
        (["dabo", "Answer"], "fixed words"),
        (["dabo", "yes"], "fixed words"),
        (["dabo", "b"], "fixed words"),
        (["dabo", "dabo"], "distinct"),
        (["dabo", "ki se"], "alphabetic"),
        (["dabo", "kise1"], "alphabetic"),
        (["dabo", ""], "alphabetic"),
        (["dabo"], "at least 2"),
    ],
)
def test_bad_vocabularies_are_refused(vocab, match):
    with pytest.raises(ValueError, match=match):
        generate_examples("copy_span", 1, 0, vocab)
    with pytest.raises(TypeError):
        check_vocabulary("dabo kise")


class _StubTokenizer:
    def __init__(self, tokens, special=()):
        self._vocab = {t: i for i, t in enumerate(tokens)}
        self.all_special_tokens = list(special)

    def get_vocab(self):
        return dict(self._vocab)


def test_vocabulary_from_tokenizer_takes_whole_alphabetic_words():
    bpe = _StubTokenizer(
        ["Ġdog", "Ġcat", "ing", "Ġ123", "Ġthe", "Ġlamp", "<|endoftext|>", "Ġtree", "Ġa1", "tree"],
        special=["<|endoftext|>"],
    )
    assert sorted(vocabulary_from_tokenizer(bpe, 4, 0)) == ["cat", "dog", "lamp", "tree"]
    sentencepiece = _StubTokenizer(["▁dog", "▁cat", "og", "<s>", "▁Yes", "▁sun"], special=["<s>"])
    assert sorted(vocabulary_from_tokenizer(sentencepiece, 3, 0)) == ["cat", "dog", "sun"]
    wordpiece = _StubTokenizer(["dog", "##ing", "cat", "[CLS]", "sun", "##s", "no"], ["[CLS]"])
    assert sorted(vocabulary_from_tokenizer(wordpiece, 3, 0)) == ["cat", "dog", "sun"]
    with pytest.raises(ValueError, match="fewer than size=4"):
        vocabulary_from_tokenizer(wordpiece, 4, 0)
    with pytest.raises(TypeError, match="get_vocab"):
        vocabulary_from_tokenizer(object(), 3)
    # a real PreTrainedTokenizerFast (our word tokenizer): its specials, spaced forms and
    # template words are skipped; draws are deterministic in the seed
    tok = build_word_tokenizer(VOCABS["small"])
    words = vocabulary_from_tokenizer(tok, 30, 1)
    assert set(words) <= set(VOCABS["small"]) and len(set(words)) == 30
    assert words == vocabulary_from_tokenizer(tok, 30, 1) != vocabulary_from_tokenizer(tok, 30, 2)
    assert generate_examples("first_last", 2, 0, words)


# --------------------------------------------------------------------------------------------
# Word tokenizer


def test_word_tokenizer_round_trips_every_template_text(all_examples, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    assert set(template_words()) == set(TEMPLATE_WORDS) | set(ct.TEMPLATE_SYMBOLS)
    tokenizers = {name: build_word_tokenizer(v) for name, v in VOCABS.items()}
    for name in NAMES:
        for vocab_name, _, examples in all_examples[name]:
            tok = tokenizers[vocab_name]
            for ex in examples:
                ids = tok(ex.text, add_special_tokens=False)["input_ids"]
                assert tok.unk_token_id not in ids, tok.convert_ids_to_tokens(ids)
                assert tok.decode(ids) == ex.text
                prompt = tok(ex.instruction, add_special_tokens=False)["input_ids"]
                assert ids[: len(prompt)] == prompt  # the response starts a new token
    tok = tokenizers["default"]
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == ("<pad>", "</s>", "<unk>")
    assert tok("dabo zzzqx", add_special_tokens=False)["input_ids"][-1] == tok.unk_token_id
    text = generate_examples("copy_span", 1, 0)[0].text + tok.eos_token
    ids = tok(text)["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.decode(ids, skip_special_tokens=True) == text[:-4]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids and again.decode(ids) == text
    extra = build_word_tokenizer(VOCABS["small"], extra_words=["Hello", "!"])
    assert extra.unk_token_id not in extra("Hello!", add_special_tokens=False)["input_ids"]
    for bad in ("two words", "a-b", ""):
        with pytest.raises(ValueError, match="one word"):
            build_word_tokenizer(VOCABS["small"], extra_words=[bad])


def test_module_needs_only_numpy_and_the_standard_library():
    """Loaded on its own with datasets, transformers, tokenizers and torch made unimportable."""
    path = Path(ct.__file__)
    code = f"""
import importlib.util, sys
for name in ("datasets", "transformers", "tokenizers", "torch", "hazyzoo"):
    sys.modules[name] = None
spec = importlib.util.spec_from_file_location("cookbook_templates", {str(path)!r})
module = importlib.util.module_from_spec(spec)
sys.modules["cookbook_templates"] = module
spec.loader.exec_module(module)
examples = module.generate_examples("count_occurrences", 3, 0)
assert all(module.TEMPLATES["count_occurrences"].check(e, e.response) for e in examples)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# --------------------------------------------------------------------------------------------
# Mixture counts


def test_mixture_counts_are_exact_largest_remainder():
    assert mixture_counts(10, {"copy_span": 1, "count_occurrences": 2}) == {
        "copy_span": 3,
        "count_occurrences": 7,
    }
    # ties broken by registry order
    weights = {"first_last": 1, "copy_span": 1, "mc_context_match": 1}
    assert mixture_counts(10, weights) == {"mc_context_match": 4, "copy_span": 3, "first_last": 3}
    assert mixture_counts(5, {"copy_span": 0, "first_last": 0.1}) == {
        "copy_span": 0,
        "first_last": 5,
    }
    rng = np.random.default_rng(0)
    for total in (0, 1, 7, 99, 1000):
        w = dict(zip(NAMES, rng.random(len(NAMES)).tolist(), strict=True))
        counts = mixture_counts(total, w)
        assert sum(counts.values()) == total and list(counts) == NAMES
        mass = sum(Fraction(x) for x in w.values())
        for name, n in counts.items():
            assert abs(n - total * Fraction(w[name]) / mass) < 1
    for bad, match in [
        ({"nope": 1}, "unknown template"),
        ({"copy_span": -1}, "finite and >= 0"),
        ({"copy_span": float("nan")}, "finite"),
        ({"copy_span": "1"}, "must be a number"),
        ({"copy_span": 0}, "positive weight"),
        ({}, "positive weight"),
    ]:
        with pytest.raises(ValueError, match=match):
            mixture_counts(10, bad)


def test_example_is_frozen():
    ex = CookbookExample("copy_span", "Text: a\nAnswer:", " a", {"answer": "a"})
    with pytest.raises(AttributeError):
        ex.response = " b"
