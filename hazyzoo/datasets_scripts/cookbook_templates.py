"""Cookbook data-generating templates (Narayan et al. 2024), datasets-free (stdlib + numpy).

Cookbook ("Cookbook: a framework for improving LLM generative abilities via programmatic data
generating templates", arXiv:2410.05224) fine-tunes a language model on text that small Python
functions generate: simple patterns over *random tokens*, each encoding one explicit rule that
matches a task type (pick the option that appears in the context, say whether a word occurs in a
passage, fill a blank with the entity a cue points to, ...). Because the tokens are random, the
only thing a model can learn from the data is the rule. No code was released; this module
implements the idea from the paper's description.

Each :class:`Template` pairs a *generator* (``rng, vocab, **params -> CookbookExample``) with a
strict *checker* (``example, response -> bool``) and says which task type it trains and which
GPT4All tasks it is meant to help (``targets``; the mapping is ours, chosen by task format).
:data:`TEMPLATES` holds them by name:

=========================  ===============  =======================================
name                       task type        targets
=========================  ===============  =======================================
mc_context_match           multiple_choice  arc_easy, arc_challenge, openbookqa
mc_fact_lookup             multiple_choice  openbookqa, arc_easy, arc_challenge
continuation_pattern       multiple_choice  hellaswag
goal_constraint            multiple_choice  piqa
yes_no_membership          yes_no           boolq
yes_no_relation            yes_no           boolq
fill_blank_coreference     fill_in          winogrande
copy_span                  generic          hellaswag, winogrande
key_value_retrieval        generic          openbookqa, boolq, arc_easy
count_occurrences          generic          arc_challenge, arc_easy
sort_alphabetical          generic          arc_challenge
order_by_index             generic          piqa, arc_challenge
first_last                 generic          winogrande, hellaswag
=========================  ===============  =======================================

Text format. An instruction is a few ``\\n``-separated lines (the data, a ``Question:`` line,
options where there are any) and always ends with the answer cue ``"Answer:"``
(:data:`ANSWER_CUE`); the response starts with one space (``" B"``, ``" yes"``, ``" 3"``,
``" dabo kise"``), so :func:`format_example` (instruction + response) reads ``... Answer: B``.
Nothing marks the end of the response: a training collator appends ``tokenizer.eos_token``.

Checkers are strict and deterministic. The normalisation, and nothing more, is:

* option letters (multiple choice) and ``yes``/``no``: leading/trailing whitespace stripped,
  case folded (``" b "`` passes for ``B``; ``" B."``, ``" (B)"``, ``" B C"`` fail);
* counts: leading/trailing whitespace stripped, then the exact decimal string (``"3"``; not
  ``"03"``, ``"3."``, ``"three"``);
* words and spans (fill-in, copy, retrieval, sorting, ordering, first/last): compared as the
  sequence of whitespace-separated words, case-sensitively (any run of whitespace counts as one
  separator; every word must match, none may be missing or extra).

Random tokens come from a vocabulary: :func:`default_vocabulary` (deterministic pronounceable
pseudo-words, nothing downloaded) or :func:`vocabulary_from_tokenizer` (whole-word alphabetic
tokens of any Hugging Face tokenizer). A vocabulary word must be alphabetic (``str.isalpha``),
distinct, and must not be one of the templates' fixed words (:data:`TEMPLATE_WORDS`, compared
case-folded), so that a random token never reads as part of the rule.
:func:`build_word_tokenizer` makes a word-level ``PreTrainedTokenizerFast`` over a vocabulary
and every fixed word and symbol, for tiny models in tests; it round-trips text exactly.

    from hazyzoo.datasets_scripts.cookbook_templates import TEMPLATES, default_vocabulary
    import numpy as np
    ex = TEMPLATES["copy_span"].generate(np.random.default_rng(0), default_vocabulary())
    TEMPLATES["copy_span"].check(ex, ex.response)  # True
"""

from __future__ import annotations

import inspect
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import transformers

__all__ = [
    "ANSWER_CUE",
    "GPT4ALL_TASKS",
    "OPTION_LETTERS",
    "SPLITS",
    "TASK_TYPES",
    "TEMPLATES",
    "TEMPLATE_SYMBOLS",
    "TEMPLATE_WORDS",
    "CookbookExample",
    "Template",
    "build_word_tokenizer",
    "check_vocabulary",
    "default_vocabulary",
    "format_example",
    "generate_examples",
    "mixture_counts",
    "split_examples",
    "split_stream",
    "template_words",
    "vocabulary_from_tokenizer",
]

GPT4ALL_TASKS = (
    "arc_challenge",
    "arc_easy",
    "boolq",
    "hellaswag",
    "openbookqa",
    "piqa",
    "winogrande",
)
"""The GPT4All-suite tasks a template may target."""

TASK_TYPES = ("multiple_choice", "yes_no", "fill_in", "generic")
"""Task types: pick an option letter; answer yes/no; fill a blank with a word; a generic rule."""

ANSWER_CUE = "Answer:"
"""Every instruction ends with this cue; the response follows it, starting with a space."""

OPTION_LETTERS = "ABCDEF"
"""Option labels of the multiple-choice templates (2 to 6 options)."""

_COMPARATIVES = (
    ("bigger", "smaller"),
    ("taller", "shorter"),
    ("faster", "slower"),
    ("older", "younger"),
    ("stronger", "weaker"),
    ("heavier", "lighter"),
    ("richer", "poorer"),
    ("louder", "quieter"),
)
_RELATIONS = ("likes", "sees", "has", "helps")
_GOALS = ("starts", "ends", "contains", "avoids")

# Every fixed word any template writes (checked by the tests: each alphabetic word of an
# instruction is a vocabulary word or one of these).
_FIXED_WORDS = """
Answer Question Which What How Does Write Copy
Context Facts Sequence Goal Passage Sentence Option Text Pairs List Words Order
option appears in the context is continues sequence a that with does not contain
solution achieves goal word occur passage state than so fills blank words after value of
many times list alphabetical order at each position first last yes no
""".split()
TEMPLATE_WORDS: tuple[str, ...] = tuple(
    sorted(
        set(_FIXED_WORDS)
        | set(OPTION_LETTERS)
        | {w for pair in _COMPARATIVES for w in pair}
        | set(_RELATIONS)
        | set(_GOALS)
    )
)
"""The alphabetic words the templates themselves write (sorted). Vocabulary words must differ
from all of them (case-folded)."""

TEMPLATE_SYMBOLS: tuple[str, ...] = tuple(":.?,#=_") + tuple("0123456789")
"""Punctuation and digits the templates write (numbers are written digit by digit)."""

_TEMPLATE_WORDS_FOLDED = frozenset(w.casefold() for w in TEMPLATE_WORDS)


def template_words() -> tuple[str, ...]:
    """Every fixed word, punctuation mark and digit the templates write: what a tokenizer must
    cover besides the vocabulary (:data:`TEMPLATE_WORDS` + :data:`TEMPLATE_SYMBOLS`)."""
    return TEMPLATE_WORDS + TEMPLATE_SYMBOLS


# --------------------------------------------------------------------------------------------
# Examples and templates


@dataclass(frozen=True)
class CookbookExample:
    """One generated example.

    ``instruction`` is the prompt (ending with :data:`ANSWER_CUE`), ``response`` the correct
    response text (starting with a space), ``meta`` a JSON-serialisable dict holding what the
    template's checker needs (``answer`` always; options, positions, ... per template).
    """

    template: str
    instruction: str
    response: str
    meta: dict[str, Any]

    @property
    def text(self) -> str:
        """The training text: :func:`format_example` of this example."""
        return format_example(self)


@dataclass(frozen=True)
class Template:
    """A data-generating template: one rule, its task type, the tasks it targets.

    ``generator(rng, vocab, **params)`` makes a :class:`CookbookExample`; its keyword-only
    parameters and their defaults are the template's ``params`` (:attr:`defaults`).
    ``checker(example, response)`` says whether a response follows the rule. Call them through
    :meth:`generate` and :meth:`check`, which validate their arguments.
    """

    name: str
    task_type: str
    targets: tuple[str, ...]
    rule: str
    generator: Callable[..., CookbookExample] = field(repr=False, compare=False)
    checker: Callable[[CookbookExample, str], bool] = field(repr=False, compare=False)
    defaults: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"Template.name must be snake_case, got {self.name!r}")
        if self.task_type not in TASK_TYPES:
            raise ValueError(
                f"Template.task_type must be one of {TASK_TYPES}, got {self.task_type!r}"
            )
        targets = tuple(self.targets)
        if not targets or any(t not in GPT4ALL_TASKS for t in targets):
            raise ValueError(
                f"Template.targets must be a non-empty subset of {GPT4ALL_TASKS}, got {targets}"
            )
        object.__setattr__(self, "targets", targets)
        if not self.defaults:
            signature = inspect.signature(self.generator)
            defaults = {
                p.name: p.default
                for p in signature.parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY
            }
        else:
            defaults = dict(self.defaults)
        object.__setattr__(self, "defaults", MappingProxyType(defaults))

    @property
    def doc(self) -> str:
        """The generator's docstring: the rule and the task type in prose."""
        return inspect.getdoc(self.generator) or ""

    def resolve_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated by ``params``; ``ValueError`` naming any unknown parameter."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"template {self.name!r} has no parameter(s) {unknown}; its parameters are "
                f"{dict(self.defaults)}"
            )
        return {**self.defaults, **params}

    def generate(
        self, rng: np.random.Generator, vocab: Sequence[str], **params: Any
    ) -> CookbookExample:
        """One example drawn from ``rng`` over the words of ``vocab``; ``params`` override the
        template's defaults (``ValueError`` for unknown names or values that cannot work)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        words = check_vocabulary(vocab)
        return self.generator(rng, words, **self.resolve_params(params))

    def check(self, example: CookbookExample, response: str) -> bool:
        """Whether ``response`` follows this template's rule for ``example`` (see the module
        docstring for the only normalisation applied)."""
        if not isinstance(example, CookbookExample):
            raise TypeError(f"example must be a CookbookExample, got {type(example).__name__}")
        if example.template != self.name:
            raise ValueError(
                f"example was made by template {example.template!r}, not {self.name!r}"
            )
        if not isinstance(response, str):
            raise TypeError(f"response must be a str, got {type(response).__name__}")
        return bool(self.checker(example, response))


def format_example(example: CookbookExample) -> str:
    """The training text of ``example``: its instruction followed by its response."""
    return example.instruction + example.response


# --------------------------------------------------------------------------------------------
# Vocabularies


class _CheckedVocabulary(tuple):
    """A vocabulary :func:`check_vocabulary` has accepted (immutable, so it stays valid)."""

    __slots__ = ()


def check_vocabulary(vocab: Sequence[str]) -> tuple[str, ...]:
    """``vocab`` as a tuple after checking it: a sequence of distinct alphabetic strings, none
    of them a template word (case-folded). ``ValueError`` names the first offending word."""
    if isinstance(vocab, _CheckedVocabulary):
        return vocab
    if isinstance(vocab, (str, bytes)) or not isinstance(vocab, Sequence):
        raise TypeError(f"vocab must be a sequence of words, got {type(vocab).__name__}")
    words = tuple(vocab)
    seen: set[str] = set()
    for word in words:
        if not isinstance(word, str) or not word.isalpha():
            raise ValueError(f"vocabulary words must be alphabetic strings, got {word!r}")
        if word.casefold() in _TEMPLATE_WORDS_FOLDED:
            raise ValueError(
                f"vocabulary word {word!r} is one of the templates' fixed words "
                "(TEMPLATE_WORDS, compared case-folded)"
            )
        if word in seen:
            raise ValueError(f"vocabulary words must be distinct, {word!r} repeats")
        seen.add(word)
    if len(words) < 2:
        raise ValueError(f"a vocabulary needs at least 2 words, got {len(words)}")
    return _CheckedVocabulary(words)


_CONSONANTS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
_MAX_DEFAULT_VOCABULARY = 100_000


def default_vocabulary(size: int = 512, seed: int = 0) -> list[str]:
    """``size`` distinct pronounceable pseudo-words (``"dabo"``, ``"kisemu"``), deterministic in
    ``(size, seed)``.

    Each word is 2 or 3 consonant-vowel syllables (15 consonants x 5 vowels), drawn from
    ``numpy.random.default_rng(seed)``; repeats and template words are skipped. The first
    ``n`` words of ``default_vocabulary(m, s)`` are the same for every ``m >= n``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"default_vocabulary size must be an int, got {size!r}")
    if not 2 <= size <= _MAX_DEFAULT_VOCABULARY:
        raise ValueError(
            f"default_vocabulary size must be in [2, {_MAX_DEFAULT_VOCABULARY}], got {size}"
        )
    _check_seed("default_vocabulary seed", seed)
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    rng = np.random.default_rng(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        count = int(rng.integers(2, 4))
        word = "".join(syllables[i] for i in rng.integers(0, len(syllables), size=count))
        if word not in seen and word not in _TEMPLATE_WORDS_FOLDED:
            seen.add(word)
            words.append(word)
    return words


_WORD_START_MARKERS = ("Ġ", "▁")
_CONTINUATION_MARKER = "##"


def vocabulary_from_tokenizer(tokenizer: Any, size: int = 512, seed: int = 0) -> list[str]:
    """``size`` distinct alphabetic whole-word tokens of a tokenizer's vocabulary, drawn
    deterministically in ``(tokenizer vocabulary, size, seed)``.

    Works with any object that has ``get_vocab()`` (``PreTrainedTokenizerFast``, a
    ``tokenizers.Tokenizer``, ...). Whole words are found by the vocabulary's convention:
    where tokens carry a word-start marker (``"Ġ"`` byte-level BPE, ``"▁"`` SentencePiece),
    only marked tokens count, with the marker stripped; where tokens carry the WordPiece
    continuation marker ``"##"``, only unmarked tokens count; otherwise every token counts.
    Special and added tokens are skipped, and so are tokens that are not alphabetic
    (``str.isalpha``) after stripping and template words (case-folded). The candidates are
    sorted, then ``size`` of them drawn without replacement by ``default_rng(seed)``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"vocabulary_from_tokenizer size must be an int >= 2, got {size!r}")
    _check_seed("vocabulary_from_tokenizer seed", seed)
    if not hasattr(tokenizer, "get_vocab"):
        raise TypeError(f"tokenizer must have get_vocab(), got {type(tokenizer).__name__}")
    tokens = list(tokenizer.get_vocab())
    skip = set(getattr(tokenizer, "all_special_tokens", None) or ())
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        skip |= set(added())
    tokens = [t for t in tokens if t not in skip]
    marker = next((m for m in _WORD_START_MARKERS if any(t.startswith(m) for t in tokens)), None)
    if marker is not None:
        stripped = (t[len(marker) :] for t in tokens if t.startswith(marker))
    elif any(t.startswith(_CONTINUATION_MARKER) for t in tokens):
        stripped = (t for t in tokens if not t.startswith(_CONTINUATION_MARKER))
    else:
        stripped = iter(tokens)
    candidates = sorted(
        {w for w in stripped if w.isalpha() and w.casefold() not in _TEMPLATE_WORDS_FOLDED}
    )
    if len(candidates) < size:
        raise ValueError(
            f"the tokenizer has {len(candidates)} alphabetic whole-word tokens, fewer than "
            f"size={size}"
        )
    picks = np.random.default_rng(seed).choice(len(candidates), size=size, replace=False)
    return [candidates[i] for i in picks]


# One piece per word (with its leading space, if any), digit, punctuation mark, newline or
# lone space: every piece of a template text is in the word tokenizer's vocabulary.
_PIECE_PATTERN = r" ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]|\n| "
_SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


def build_word_tokenizer(
    vocab: Sequence[str], extra_words: Iterable[str] = ()
) -> transformers.PreTrainedTokenizerFast:
    """A word-level ``PreTrainedTokenizerFast`` covering ``vocab``, every template word and
    symbol (:func:`template_words`) and ``extra_words``, plus ``<pad>``, ``</s>``, ``<unk>``.

    Text is cut into words (letters), single digits, single punctuation marks, newlines and
    lone spaces; a piece keeps its leading space (``" dabo"``), so the vocabulary holds each
    word with and without it. Decoding concatenates the pieces: ``decode(encode(text)) ==
    text`` for any text made of covered words. ``extra_words`` must each be one piece
    (a word, a digit or a punctuation mark). transformers and tokenizers are imported here
    only, so this module stays light.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated")
    words = [*vocab, *template_words(), *extra_words]
    for word in words:
        if not isinstance(word, str) or [p for p, _ in pre_tokenizer.pre_tokenize_str(word)] != [
            word
        ]:
            raise ValueError(
                "build_word_tokenizer words must each be one word, digit or punctuation mark "
                f"without spaces, got {word!r}"
            )
    token_to_id: dict[str, int] = {}
    for piece in [*_SPECIAL_TOKENS.values(), "\n", " "]:
        token_to_id.setdefault(piece, len(token_to_id))
    for word in words:
        token_to_id.setdefault(word, len(token_to_id))
        token_to_id.setdefault(" " + word, len(token_to_id))
    backend = Tokenizer(models.WordLevel(vocab=token_to_id, unk_token=_SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(_SPECIAL_TOKENS.values()))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **_SPECIAL_TOKENS
    )


# --------------------------------------------------------------------------------------------
# Generation helpers


def _check_seed(what: str, seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{what} must be an int >= 0, got {seed!r}")


def _int_param(template: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else a ``ValueError`` naming template/param."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
    if ok and value >= low and (high is None or value <= high):
        return int(value)
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ValueError(f"template {template!r}: {name} must be an int {allowed}, got {value!r}")


def _choice_param(template: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"template {template!r}: {name} must be one of {allowed}, got {value!r}")
    return value


def _distinct(rng: np.random.Generator, vocab: Sequence[str], k: int, template: str) -> list[str]:
    """``k`` distinct words of ``vocab`` in random order."""
    if k > len(vocab):
        raise ValueError(
            f"template {template!r} needs {k} distinct words with these params, the vocabulary "
            f"has {len(vocab)}"
        )
    return [vocab[i] for i in rng.choice(len(vocab), size=k, replace=False)]


def _with_replacement(rng: np.random.Generator, words: Sequence[str], k: int) -> list[str]:
    return [words[i] for i in rng.integers(0, len(words), size=k)]


def _lines(*lines: str) -> str:
    return "\n".join([*lines, ANSWER_CUE])


def _multiple_choice(
    rng: np.random.Generator, correct: list[str], distractors: list[list[str]]
) -> tuple[list[str], int, str]:
    """Options (joined words) with the correct one at a uniformly random place; returns
    ``(options, answer_index, options_block)``."""
    options = [" ".join(correct)] + [" ".join(d) for d in distractors]
    if len(set(options)) != len(options):  # generators build distinct options; guard anyway
        raise AssertionError(f"options are not distinct: {options}")
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    answer_index = int(np.flatnonzero(order == 0)[0])
    block = "\n".join(f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(options))
    return options, answer_index, block


def _choice_meta(options: list[str], answer_index: int, **extra: Any) -> dict[str, Any]:
    return {
        "options": options,
        "answer_index": answer_index,
        "answer": OPTION_LETTERS[answer_index],
        **extra,
    }


def _check_letter(example: CookbookExample, response: str) -> bool:
    """Option letter: whitespace stripped, case folded, must equal the answer's letter."""
    return response.strip().casefold() == example.meta["answer"].casefold()


def _check_yes_no(example: CookbookExample, response: str) -> bool:
    """``yes``/``no``: whitespace stripped, case folded, must equal the answer."""
    return response.strip().casefold() == example.meta["answer"]


def _check_words(example: CookbookExample, response: str) -> bool:
    """Word sequence: split on whitespace, must equal the answer's words exactly (case too)."""
    return response.split() == example.meta["answer"].split()


def _example(name: str, instruction: str, answer: str, meta: dict[str, Any]) -> CookbookExample:
    return CookbookExample(template=name, instruction=instruction, response=" " + answer, meta=meta)


# --------------------------------------------------------------------------------------------
# Templates: one generator + checker pair each


def generate_mc_context_match(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    context_length: int = 12,
    num_options: int = 4,
    option_length: int = 1,
) -> CookbookExample:
    """Multiple choice (ARC / OpenBookQA): pick the option that matches the context.

    Rule: the correct option is a contiguous span of ``option_length`` words of the context;
    every distractor contains at least one word that is not in the context (for
    ``option_length > 1`` a distractor is a context span with one word replaced by an outside
    word, so word overlap alone does not give the answer). The context's words are distinct.
    Response: the correct option's letter.
    """
    name = "mc_context_match"
    context_length = _int_param(name, "context_length", context_length, 1)
    num_options = _int_param(name, "num_options", num_options, 2, len(OPTION_LETTERS))
    option_length = _int_param(name, "option_length", option_length, 1, context_length)
    words = _distinct(rng, vocab, context_length + num_options - 1, name)
    context, outside = words[:context_length], words[context_length:]

    def span() -> list[str]:
        start = int(rng.integers(0, context_length - option_length + 1))
        return context[start : start + option_length]

    correct = span()
    distractors = []
    for word in outside:
        distractor = list(span())
        distractor[int(rng.integers(0, option_length))] = word
        distractors.append(distractor)
    options, answer_index, block = _multiple_choice(rng, correct, distractors)
    instruction = _lines(
        "Context: " + " ".join(context),
        "Question: Which option appears in the context?",
        block,
    )
    meta = _choice_meta(options, answer_index, context=context)
    return _example(name, instruction, meta["answer"], meta)


def check_mc_context_match(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is the correct option's letter (whitespace/case normalised)."""
    return _check_letter(example, response)


def generate_mc_fact_lookup(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    num_facts: int = 4,
    num_options: int = 4,
) -> CookbookExample:
    """Multiple choice (OpenBookQA / ARC): answer a question by applying a stated fact.

    Rule: the facts say ``"s is o."`` for distinct subjects and objects; the question asks
    ``"What is s?"`` for one subject; the correct option is that subject's object and the
    distractors are objects of other facts (so every option occurs in the facts and only the
    stated relation picks the answer). Response: the correct option's letter.
    """
    name = "mc_fact_lookup"
    num_facts = _int_param(name, "num_facts", num_facts, 2)
    num_options = _int_param(name, "num_options", num_options, 2, min(num_facts, 6))
    words = _distinct(rng, vocab, 2 * num_facts, name)
    subjects, objects = words[:num_facts], words[num_facts:]
    asked = int(rng.integers(0, num_facts))
    others = [i for i in range(num_facts) if i != asked]
    picked = rng.choice(others, size=num_options - 1, replace=False)
    options, answer_index, block = _multiple_choice(
        rng, [objects[asked]], [[objects[int(i)]] for i in picked]
    )
    facts = " ".join(f"{s} is {o}." for s, o in zip(subjects, objects, strict=True))
    instruction = _lines("Facts: " + facts, f"Question: What is {subjects[asked]}?", block)
    meta = _choice_meta(
        options, answer_index, facts=[[s, o] for s, o in zip(subjects, objects, strict=True)]
    )
    meta["subject"] = subjects[asked]
    return _example(name, instruction, meta["answer"], meta)


def check_mc_fact_lookup(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is the correct option's letter (whitespace/case normalised)."""
    return _check_letter(example, response)


def generate_continuation_pattern(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    motif_length: int = 4,
    num_repeats: int = 2,
    continuation_length: int = 2,
    num_options: int = 4,
) -> CookbookExample:
    """Multiple choice (HellaSwag): pick the ending that continues the sequence's pattern.

    Rule: the sequence repeats a motif of ``motif_length`` distinct words ``num_repeats``
    times and then part of it (0 to ``motif_length - 1`` more words); the correct option is
    the next ``continuation_length`` words of the repetition. Distractors continue the same
    motif from other offsets (same words, wrong place in the pattern). Response: the correct
    option's letter.
    """
    name = "continuation_pattern"
    motif_length = _int_param(name, "motif_length", motif_length, 2)
    num_repeats = _int_param(name, "num_repeats", num_repeats, 2)
    continuation_length = _int_param(name, "continuation_length", continuation_length, 1)
    num_options = _int_param(name, "num_options", num_options, 2, min(motif_length, 6))
    motif = _distinct(rng, vocab, motif_length, name)
    shown = motif_length * num_repeats + int(rng.integers(0, motif_length))
    sequence = [motif[i % motif_length] for i in range(shown)]

    def from_offset(offset: int) -> list[str]:
        return [motif[(offset + j) % motif_length] for j in range(continuation_length)]

    wrong = rng.choice(np.arange(1, motif_length), size=num_options - 1, replace=False)
    options, answer_index, block = _multiple_choice(
        rng, from_offset(shown), [from_offset(shown + int(d)) for d in wrong]
    )
    instruction = _lines(
        "Sequence: " + " ".join(sequence),
        "Question: Which option continues the sequence?",
        block,
    )
    meta = _choice_meta(options, answer_index, motif=motif, shown=shown)
    return _example(name, instruction, meta["answer"], meta)


def check_continuation_pattern(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is the correct option's letter (whitespace/case normalised)."""
    return _check_letter(example, response)


def _satisfies(option: Sequence[str], goal: str, word: str) -> bool:
    """Whether ``option`` (words) achieves ``goal`` for ``word``."""
    if goal == "starts":
        return option[0] == word
    if goal == "ends":
        return option[-1] == word
    if goal == "contains":
        return word in option
    return word not in option  # avoids


def generate_goal_constraint(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    option_length: int = 4,
    num_options: int = 2,
    goal: str = "random",
) -> CookbookExample:
    """Multiple choice (PIQA): pick the solution that achieves the stated goal.

    Rule: the goal asks for a sequence that ``starts`` with, ``ends`` with, ``contains`` or
    ``avoids`` a word ``w`` (``goal="random"`` draws one of the four); exactly one option
    satisfies it. Distractors are near misses: for starts/ends they contain ``w`` at another
    place, for contains they lack ``w``, for avoids they contain it. Response: the letter of
    the option that achieves the goal (2 options by default, as in PIQA).
    """
    name = "goal_constraint"
    option_length = _int_param(name, "option_length", option_length, 2)
    num_options = _int_param(name, "num_options", num_options, 2, len(OPTION_LETTERS))
    goal = _choice_param(name, "goal", goal, ("random", *_GOALS))
    if goal == "random":
        goal = _GOALS[int(rng.integers(0, len(_GOALS)))]
    fillers_needed = num_options * option_length
    words = _distinct(rng, vocab, fillers_needed + 1, name)
    target, fillers = words[0], words[1:]
    # each option draws its other words from its own disjoint slice: options are distinct
    options_words = [
        fillers[i * option_length : (i + 1) * option_length] for i in range(num_options)
    ]

    def place(words_: list[str], positions: range) -> list[str]:
        out = list(words_)
        out[int(rng.choice(positions))] = target
        return out

    anywhere, last = range(option_length), option_length - 1
    if goal == "starts":
        correct = place(options_words[0], range(0, 1))
        distractors = [place(w, range(1, option_length)) for w in options_words[1:]]
    elif goal == "ends":
        correct = place(options_words[0], range(last, last + 1))
        distractors = [place(w, range(0, last)) for w in options_words[1:]]
    elif goal == "contains":
        correct = place(options_words[0], anywhere)
        distractors = [list(w) for w in options_words[1:]]
    else:
        correct = list(options_words[0])
        distractors = [place(w, anywhere) for w in options_words[1:]]
    options, answer_index, block = _multiple_choice(rng, correct, distractors)
    phrase = {"starts": "starts with", "ends": "ends with", "contains": "contains"}.get(
        goal, "does not contain"
    )
    instruction = _lines(
        f"Goal: a sequence that {phrase} {target}.",
        "Question: Which solution achieves the goal?",
        block,
    )
    meta = _choice_meta(options, answer_index, goal=goal, word=target)
    return _example(name, instruction, meta["answer"], meta)


def check_goal_constraint(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is the letter of the option achieving the goal
    (whitespace/case normalised)."""
    return _check_letter(example, response)


def generate_yes_no_membership(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    passage_length: int = 16,
    p_yes: float = 0.5,
) -> CookbookExample:
    """Yes/no (BoolQ): does the word occur in the passage?

    Rule: the passage is ``passage_length`` random words (repeats allowed); the answer is
    ``yes`` iff the asked word occurs in it. With probability ``p_yes`` the asked word is drawn
    from the passage, otherwise from the words not in it. Response: ``yes`` or ``no``.
    """
    name = "yes_no_membership"
    passage_length = _int_param(name, "passage_length", passage_length, 1)
    if isinstance(p_yes, bool) or not isinstance(p_yes, (int, float)) or not 0 <= p_yes <= 1:
        raise ValueError(f"template {name!r}: p_yes must be a number in [0, 1], got {p_yes!r}")
    if len(vocab) < passage_length + 1:
        raise ValueError(
            f"template {name!r} needs {passage_length + 1} distinct words with these params, "
            f"the vocabulary has {len(vocab)}"
        )
    passage = _with_replacement(rng, vocab, passage_length)
    is_yes = bool(rng.random() < p_yes)
    if is_yes:
        word = passage[int(rng.integers(0, passage_length))]
    else:
        present = set(passage)
        absent = [w for w in _distinct(rng, vocab, passage_length + 1, name) if w not in present]
        word = absent[0]
    answer = "yes" if is_yes else "no"
    instruction = _lines(
        "Passage: " + " ".join(passage),
        f"Question: Does the word {word} occur in the passage?",
    )
    return _example(name, instruction, answer, {"answer": answer, "passage": passage, "word": word})


def check_yes_no_membership(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is the right ``yes``/``no`` (whitespace/case normalised)."""
    return _check_yes_no(example, response)


def generate_yes_no_relation(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    num_facts: int = 4,
    p_yes: float = 0.5,
) -> CookbookExample:
    """Yes/no (BoolQ): does the passage state the relation?

    Rule: the passage states ``num_facts`` facts ``"s r o."`` (relations ``likes``, ``sees``,
    ``has``, ``helps``; distinct subjects and objects); the answer is ``yes`` iff the asked
    triple is stated exactly. A ``no`` question is a near miss of a stated fact: another
    relation, subject and object swapped, or another fact's object. Response: ``yes``/``no``.
    """
    name = "yes_no_relation"
    num_facts = _int_param(name, "num_facts", num_facts, 2)
    if isinstance(p_yes, bool) or not isinstance(p_yes, (int, float)) or not 0 <= p_yes <= 1:
        raise ValueError(f"template {name!r}: p_yes must be a number in [0, 1], got {p_yes!r}")
    words = _distinct(rng, vocab, 2 * num_facts, name)
    relations = [_RELATIONS[int(i)] for i in rng.integers(0, len(_RELATIONS), size=num_facts)]
    facts = [
        [words[i], relations[i], words[num_facts + i]] for i in range(num_facts)
    ]  # subject, relation, object
    k = int(rng.integers(0, num_facts))
    s, r, o = facts[k]
    is_yes = bool(rng.random() < p_yes)
    if is_yes:
        query = [s, r, o]
    else:
        kind = int(rng.integers(0, 3))
        if kind == 0:
            others = [x for x in _RELATIONS if x != r]
            query = [s, others[int(rng.integers(0, len(others)))], o]
        elif kind == 1:
            query = [o, r, s]
        else:
            other = (k + 1 + int(rng.integers(0, num_facts - 1))) % num_facts
            query = [s, r, facts[other][2]]
    assert (query in facts) == is_yes
    answer = "yes" if is_yes else "no"
    instruction = _lines(
        "Passage: " + " ".join(f"{a} {b} {c}." for a, b, c in facts),
        f"Question: Does the passage state that {' '.join(query)}?",
    )
    return _example(name, instruction, answer, {"answer": answer, "facts": facts, "query": query})


def check_yes_no_relation(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is the right ``yes``/``no`` (whitespace/case normalised)."""
    return _check_yes_no(example, response)


def generate_fill_blank_coreference(
    rng: np.random.Generator, vocab: Sequence[str]
) -> CookbookExample:
    """Fill-in (WinoGrande): fill the blank with the entity the sentence's cue points to.

    Rule: ``"x is bigger than y, so _ is bigger."`` -- the blank is ``x`` when the cue repeats
    the comparative and ``y`` when it gives its opposite (``"... so _ is smaller."``). Eight
    comparative pairs; the two entities are listed as Option 1 and Option 2 in random order.
    Response: the entity's word (not the option number).
    """
    name = "fill_blank_coreference"
    first, second = _distinct(rng, vocab, 2, name)
    comparative, opposite = _COMPARATIVES[int(rng.integers(0, len(_COMPARATIVES)))]
    flip = bool(rng.random() < 0.5)
    if rng.random() < 0.5:  # say the pair either way round: "bigger" or "smaller" first
        comparative, opposite = opposite, comparative
    answer = second if flip else first
    cue = opposite if flip else comparative
    options = [first, second] if rng.random() < 0.5 else [second, first]
    instruction = _lines(
        f"Sentence: {first} is {comparative} than {second}, so _ is {cue}.",
        f"Option 1: {options[0]}",
        f"Option 2: {options[1]}",
        "Question: Which option fills the blank?",
    )
    meta = {"answer": answer, "options": options, "answer_index": options.index(answer)}
    return _example(name, instruction, answer, meta)


def check_fill_blank_coreference(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is exactly the right entity word (whitespace stripped)."""
    return _check_words(example, response)


def generate_copy_span(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    text_length: int = 16,
    span_length: int = 3,
) -> CookbookExample:
    """Generic: copy the span after a marker.

    Rule: the text is ``text_length`` random words with the marker ``#`` inserted before word
    ``i`` (at least ``span_length`` words follow it); the answer is the ``span_length`` words
    right after ``#``, copied exactly. Response: those words.
    """
    name = "copy_span"
    text_length = _int_param(name, "text_length", text_length, 1)
    span_length = _int_param(name, "span_length", span_length, 1, text_length)
    text = _with_replacement(rng, vocab, text_length)
    start = int(rng.integers(0, text_length - span_length + 1))
    span = text[start : start + span_length]
    instruction = _lines(
        "Text: " + " ".join([*text[:start], "#", *text[start:]]),
        f"Question: Copy the {span_length} words after #.",
    )
    answer = " ".join(span)
    return _example(name, instruction, answer, {"answer": answer, "start": start})


def check_copy_span(example: CookbookExample, response: str) -> bool:
    """Passes iff the response's words are exactly the span's words (whitespace normalised)."""
    return _check_words(example, response)


def generate_key_value_retrieval(
    rng: np.random.Generator, vocab: Sequence[str], *, num_pairs: int = 8
) -> CookbookExample:
    """Generic: retrieve the value stored under a key.

    Rule: ``num_pairs`` pairs ``k = v`` (distinct keys and values) and then a question for one
    key; the answer is the value paired with it. Response: that value word.
    """
    name = "key_value_retrieval"
    num_pairs = _int_param(name, "num_pairs", num_pairs, 1)
    words = _distinct(rng, vocab, 2 * num_pairs, name)
    keys, values = words[:num_pairs], words[num_pairs:]
    asked = int(rng.integers(0, num_pairs))
    instruction = _lines(
        "Pairs: " + ", ".join(f"{k} = {v}" for k, v in zip(keys, values, strict=True)),
        f"Question: What is the value of {keys[asked]}?",
    )
    return _example(name, instruction, values[asked], {"answer": values[asked], "key": keys[asked]})


def check_key_value_retrieval(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is exactly the key's value (whitespace stripped)."""
    return _check_words(example, response)


def generate_count_occurrences(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    list_length: int = 12,
    num_distinct: int = 4,
) -> CookbookExample:
    """Generic: count how many times a word occurs in a list.

    Rule: the list holds ``list_length`` words drawn with repetition from ``num_distinct``
    words; the asked word is one of those (it may occur zero times). The answer is its number
    of occurrences in decimal. Response: that number (``" 3"``).
    """
    name = "count_occurrences"
    list_length = _int_param(name, "list_length", list_length, 1)
    num_distinct = _int_param(name, "num_distinct", num_distinct, 1)
    pool = _distinct(rng, vocab, num_distinct, name)
    items = _with_replacement(rng, pool, list_length)
    word = pool[int(rng.integers(0, num_distinct))]
    answer = str(items.count(word))
    instruction = _lines(
        "List: " + " ".join(items),
        f"Question: How many times does {word} occur in the list?",
    )
    return _example(name, instruction, answer, {"answer": answer, "word": word})


def check_count_occurrences(example: CookbookExample, response: str) -> bool:
    """Passes iff the stripped response is exactly the count's decimal string."""
    return response.strip() == example.meta["answer"]


def _alphabetical_key(word: str) -> tuple[str, str]:
    return (word.casefold(), word)


def generate_sort_alphabetical(
    rng: np.random.Generator, vocab: Sequence[str], *, num_words: int = 5
) -> CookbookExample:
    """Generic: order the words alphabetically.

    Rule: ``num_words`` distinct words; the answer lists them in alphabetical order (Python
    ``sorted`` by case-folded word, ties by the word itself; plain alphabetical order for
    lowercase ASCII words). Response: the words in that order.
    """
    name = "sort_alphabetical"
    num_words = _int_param(name, "num_words", num_words, 2)
    words = _distinct(rng, vocab, num_words, name)
    answer = " ".join(sorted(words, key=_alphabetical_key))
    instruction = _lines(
        "Words: " + " ".join(words), "Question: Write the words in alphabetical order."
    )
    return _example(name, instruction, answer, {"answer": answer, "words": words})


def check_sort_alphabetical(example: CookbookExample, response: str) -> bool:
    """Passes iff the response's words are the sorted words (whitespace normalised)."""
    return _check_words(example, response)


def generate_order_by_index(
    rng: np.random.Generator, vocab: Sequence[str], *, num_words: int = 5
) -> CookbookExample:
    """Generic: order the words by a listed order of positions.

    Rule: ``num_words`` words and a permutation of their positions ``1..num_words``
    (``Order: 3 1 2``); the answer writes the word at each listed position in turn. Response:
    the reordered words.
    """
    name = "order_by_index"
    num_words = _int_param(name, "num_words", num_words, 2)
    words = _distinct(rng, vocab, num_words, name)
    order = [int(i) + 1 for i in rng.permutation(num_words)]
    answer = " ".join(words[i - 1] for i in order)
    instruction = _lines(
        "Words: " + " ".join(words),
        "Order: " + " ".join(map(str, order)),
        "Question: Write the word at each position in the order.",
    )
    return _example(name, instruction, answer, {"answer": answer, "order": order})


def check_order_by_index(example: CookbookExample, response: str) -> bool:
    """Passes iff the response's words are the reordered words (whitespace normalised)."""
    return _check_words(example, response)


def generate_first_last(
    rng: np.random.Generator,
    vocab: Sequence[str],
    *,
    list_length: int = 8,
    position: str = "random",
) -> CookbookExample:
    """Generic: select the first or the last word of a list.

    Rule: ``list_length`` distinct words; the question asks for the ``first`` or ``last`` one
    (``position="random"`` draws which); the answer is that word. Response: the word.
    """
    name = "first_last"
    list_length = _int_param(name, "list_length", list_length, 2)
    position = _choice_param(name, "position", position, ("random", "first", "last"))
    if position == "random":
        position = "first" if rng.random() < 0.5 else "last"
    items = _distinct(rng, vocab, list_length, name)
    answer = items[0] if position == "first" else items[-1]
    instruction = _lines(
        "List: " + " ".join(items), f"Question: Which word is {position} in the list?"
    )
    return _example(name, instruction, answer, {"answer": answer, "position": position})


def check_first_last(example: CookbookExample, response: str) -> bool:
    """Passes iff the response is exactly the asked word (whitespace stripped)."""
    return _check_words(example, response)


def _registry() -> dict[str, Template]:
    specs = [
        (
            "mc_context_match",
            "multiple_choice",
            ("arc_easy", "arc_challenge", "openbookqa"),
            "Pick the option whose words appear, in order, in the context.",
        ),
        (
            "mc_fact_lookup",
            "multiple_choice",
            ("openbookqa", "arc_easy", "arc_challenge"),
            "Pick the option that the stated facts pair with the asked subject.",
        ),
        (
            "continuation_pattern",
            "multiple_choice",
            ("hellaswag",),
            "Pick the option that continues the sequence's repeating pattern.",
        ),
        (
            "goal_constraint",
            "multiple_choice",
            ("piqa",),
            "Pick the solution that satisfies the goal's constraint on a word.",
        ),
        (
            "yes_no_membership",
            "yes_no",
            ("boolq",),
            "Answer yes iff the asked word occurs in the passage.",
        ),
        (
            "yes_no_relation",
            "yes_no",
            ("boolq",),
            "Answer yes iff the passage states exactly the asked relation.",
        ),
        (
            "fill_blank_coreference",
            "fill_in",
            ("winogrande",),
            "Fill the blank with the entity the comparative cue points to.",
        ),
        (
            "copy_span",
            "generic",
            ("hellaswag", "winogrande"),
            "Copy the given number of words that follow the marker.",
        ),
        (
            "key_value_retrieval",
            "generic",
            ("openbookqa", "boolq", "arc_easy"),
            "Return the value paired with the queried key.",
        ),
        (
            "count_occurrences",
            "generic",
            ("arc_challenge", "arc_easy"),
            "Return how many times the asked word occurs in the list.",
        ),
        (
            "sort_alphabetical",
            "generic",
            ("arc_challenge",),
            "Write the words in alphabetical order.",
        ),
        (
            "order_by_index",
            "generic",
            ("piqa", "arc_challenge"),
            "Write the words in the order of the listed positions.",
        ),
        (
            "first_last",
            "generic",
            ("winogrande", "hellaswag"),
            "Return the first or the last word of the list, as asked.",
        ),
    ]
    found = globals()
    return {
        name: Template(
            name=name,
            task_type=task_type,
            targets=targets,
            rule=rule,
            generator=found[f"generate_{name}"],
            checker=found[f"check_{name}"],
        )
        for name, task_type, targets, rule in specs
    }


TEMPLATES: dict[str, Template] = _registry()
"""Every template by name (registry order is the order of the module docstring's table)."""


# --------------------------------------------------------------------------------------------
# Batches and mixtures


def _template(template: str | Template) -> Template:
    if isinstance(template, Template):
        return template
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid templates: {list(TEMPLATES)}")
    return TEMPLATES[template]


def generate_examples(
    template: str | Template,
    num: int,
    seed: int = 0,
    vocab: Sequence[str] | None = None,
    **params: Any,
) -> list[CookbookExample]:
    """``num`` examples of ``template`` (a name or a :class:`Template`), all drawn from one
    ``numpy.random.default_rng(seed)``, over ``vocab`` (:func:`default_vocabulary` when None).
    Deterministic in ``(template, num, seed, vocab, params)``."""
    tpl = _template(template)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num must be an int >= 0, got {num!r}")
    _check_seed("seed", seed)
    words = check_vocabulary(default_vocabulary() if vocab is None else vocab)
    resolved = tpl.resolve_params(params)
    rng = np.random.default_rng(seed)
    return [tpl.generator(rng, words, **resolved) for _ in range(num)]


SPLITS = {"train": 0, "test": 1}
"""The splits of the ``cookbook`` builder and the index each one mixes into its seeds."""


def split_stream(seed: int, split: str, template: str) -> np.random.Generator:
    """The random stream of ``template``'s examples in ``split`` of a ``cookbook`` build with
    ``seed``: ``default_rng(SeedSequence([seed, SPLITS[split], crc32(template)]))``. The builder
    and the held-out evaluation (:func:`split_examples`) share it, so evaluating on
    ``split="test"`` scores exactly the builder's test rows, never its train rows' stream."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    _check_seed("seed", seed)
    _template(template)
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), SPLITS[split], zlib.crc32(template.encode())])
    )


def split_examples(
    template: str,
    split: str,
    num: int,
    seed: int = 0,
    vocab: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> list[CookbookExample]:
    """The first ``num`` examples of ``template`` in ``split`` of the ``cookbook`` builder (its
    single-template config, or that template's rows of a ``mix``) built with ``seed``,
    ``vocab`` (default :func:`default_vocabulary`) and generator ``params``; needs no
    ``datasets``."""
    tpl = _template(template)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num must be an int >= 0, got {num!r}")
    words = check_vocabulary(default_vocabulary() if vocab is None else vocab)
    resolved = tpl.resolve_params(params)
    rng = split_stream(seed, split, tpl.name)
    return [tpl.generator(rng, words, **resolved) for _ in range(num)]


def mixture_counts(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` examples over templates in proportion to ``weights``, exactly.

    Largest-remainder (Hamilton) apportionment in exact rational arithmetic: each template
    first gets ``floor(total * w / sum(w))``; the examples left over go one each to the
    templates with the largest fractional remainders, ties broken by registry order. Counts
    sum to ``total``, and each differs from its exact quota by less than 1. Returns the
    templates of ``weights`` in registry order (zero-weight ones get 0).
    """
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0:
        raise ValueError(f"total must be an int >= 0, got {total!r}")
    names = [t for t in TEMPLATES if t in weights]
    unknown = sorted(set(weights) - set(TEMPLATES))
    if unknown:
        raise ValueError(f"unknown template(s) {unknown} in weights; valid: {list(TEMPLATES)}")
    exact = {}
    for name in names:
        w = weights[name]
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
            raise ValueError(f"weights[{name!r}] must be a number, got {w!r}")
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weights[{name!r}] must be finite and >= 0, got {w!r}")
        exact[name] = (
            Fraction(float(w)) if isinstance(w, (float, np.floating)) else Fraction(int(w))
        )
    mass = sum(exact.values())
    if mass == 0:
        raise ValueError(
            f"weights must give a positive weight to some template, got {dict(weights)}"
        )
    quotas = {name: total * exact[name] / mass for name in names}
    counts = {name: math.floor(q) for name, q in quotas.items()}
    left = int(total) - sum(counts.values())
    by_remainder = sorted(names, key=lambda n: (-(quotas[n] - counts[n]), names.index(n)))
    for name in by_remainder[:left]:
        counts[name] += 1
    return counts
