"""JRT-Prompt ("Just read twice", Arora et al. 2024): repeat the context before the question.

A recurrent LM keeps a fixed-size state, so when the question comes after a long document it
must already have decided, while reading, which facts to keep. JRT-Prompt gives the document
twice: on the second read the model has seen everything once (and, in the key-value form, the
key it will be asked about), so it can keep what matters. It needs no training and works with
any causal LM; :func:`generate_read_twice` runs it on any ``AutoModelForCausalLM`` with the
paper's evaluation settings (greedy, until ``"\\n"``, at most 48 new tokens).

The templates, from the paper's released evaluation (``based_swde``/``based_fda`` "twice" tasks
and ``based_squad`` "twice"):

- ``"information"`` (SWDE, FDA: key-value extraction)::

      Information about {key}. {doc}\\n{doc} {key}:

- ``"squad"`` (document QA as completion: the context twice, then the question; with
  ``preamble`` given, e.g. the original question, it goes first as in the released form)::

      [{preamble} ]{context}\\n{context} {question}

- ``"plain"`` (the single read, for comparison): ``{context} {question}``.

:func:`read_once` gives the plain prompt that matches a template (``{doc} {key}:`` for
``"information"``), so plain and JRT prompts differ only by the repetition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

TEMPLATES = ("information", "squad", "plain")

# Config fields under which transformers models state their longest input.
_MAX_LENGTH_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty or only whitespace, got {value!r}")
    return value


def _check_template(template: Any) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {list(TEMPLATES)}")
    return template


def _key(question: str) -> str:
    # "Information about {key}." names the key without the colon the prompt ends with.
    key = question.strip()
    while key.endswith(":"):
        key = key[:-1].rstrip()
    if not key:
        raise ValueError(f"question {question!r} is only colons; give the key, e.g. 'year'")
    return key


def read_twice(
    context: str, question: str, *, template: str = "information", preamble: str | None = None
) -> str:
    """The JRT-Prompt for ``context`` and ``question`` under ``template`` (see the module doc).

    ``"information"`` takes the key as ``question`` (a trailing ``":"`` is optional) and ends
    with ``" {key}:"``; ``"squad"`` reads ``context`` twice and then ``question`` (a completion
    prefix), after an optional ``preamble``; ``"plain"`` reads once (``preamble`` not allowed).
    Strings are used as given (no stripping), so a caller controls every character.
    """
    _check_template(template)
    _check_text("context", context)
    _check_text("question", question)
    if preamble is not None:
        _check_text("preamble", preamble)
        if template != "squad":
            raise ValueError(f"preamble is only used by the 'squad' template, not {template!r}")
    if template == "information":
        key = _key(question)
        return f"Information about {key}. {context}\n{context} {key}:"
    if template == "squad":
        prefix = f"{preamble} " if preamble is not None else ""
        return f"{prefix}{context}\n{context} {question}"
    return f"{context} {question}"


def read_once(context: str, question: str, *, template: str = "information") -> str:
    """The plain (single-read) prompt matching ``template``: ``"{context} {key}:"`` for
    ``"information"``, ``"{context} {question}"`` otherwise. The baseline JRT-Prompt is
    compared against."""
    _check_template(template)
    _check_text("context", context)
    _check_text("question", question)
    if template == "information":
        return f"{context} {_key(question)}:"
    return f"{context} {question}"


def model_max_length(model: Any) -> int | None:
    """The longest sequence ``model`` states it accepts (``config.max_position_embeddings``,
    ``n_positions``, ...), or None when it states none (e.g. recurrent models such as BASED)."""
    config = getattr(model, "config", None)
    for field in _MAX_LENGTH_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _stops(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty str, got {s!r}")
    return stops


def cut_at_stop(text: str, stop: str | Sequence[str] | None) -> str:
    """``text`` up to (not including) the first occurrence of any stop string."""
    end = len(text)
    for s in _stops(stop):
        i = text.find(s)
        if i != -1:
            end = min(end, i)
    return text[:end]


def _pad_and_eos_ids(model: Any, tokenizer: Any) -> tuple[int, Any]:
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = getattr(gen, "pad_token_id", None)
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else eos
    if pad is None:
        raise ValueError(
            "the tokenizer has no pad token and neither it nor the model names an eos token; "
            "set tokenizer.pad_token before batched generation"
        )
    return int(pad), eos


class _StopStrings(StoppingCriteria):
    """Marks a row done once its decoded new text holds a stop string. transformers'
    ``stop_strings=`` needs a tokenizer whose vocabulary it can map back to text, which fails
    for some (e.g. word-level ones); decoding works with every tokenizer."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_width: int) -> None:
        self.tokenizer, self.stops, self.prompt_width = tokenizer, stops, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_width :], skip_special_tokens=True
        )
        done = [any(s in text for s in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate_until(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    stop: str | Sequence[str] | None = "\n",
    batch_size: int = 8,
    max_length: int | None = None,
    device: str | torch.device | None = None,
    add_special_tokens: bool = True,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts``, each cut at the first ``stop`` string.

    Works with any causal LM that has ``generate`` and its tokenizer. Prompts are batched
    ``batch_size`` at a time and padded on the left here (so the tokenizer's ``padding_side``
    and pad token are never changed); the pad id is the tokenizer's, else the eos id. Generation stops at eos,
    after ``max_new_tokens``, or once every row holds a stop string. ``max_length`` (default: the
    model's, see :func:`model_max_length`) bounds prompt plus new tokens: a longer prompt is a
    ``ValueError`` naming it, never truncated. Returns the decoded new text (special tokens
    skipped), in prompt order.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of str, not one str")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    for i, p in enumerate(prompts):
        _check_text(f"prompts[{i}]", p)
    _check_positive_int("max_new_tokens", max_new_tokens)
    _check_positive_int("batch_size", batch_size)
    stops = _stops(stop)
    limit = model_max_length(model) if max_length is None else max_length
    if limit is not None:
        _check_positive_int("max_length", limit)
    pad_id, eos_id = _pad_and_eos_ids(model, tokenizer)
    if device is None:
        device = getattr(model, "device", None) or torch.device("cpu")

    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompts[{i}] tokenizes to no tokens: {prompts[i][:80]!r}")
        if limit is not None and len(ids) + max_new_tokens > limit:
            raise ValueError(
                f"prompts[{i}] has {len(ids)} tokens; with max_new_tokens={max_new_tokens} that "
                f"exceeds the model's max length {limit} (prompts are not truncated: shorten "
                "the context, lower max_new_tokens, or pass max_length)"
            )

    was_training = getattr(model, "training", False)
    model.eval()
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generate", unit="batch")
    outputs: list[str] = []
    try:
        for start in starts:
            batch = encoded[start : start + batch_size]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):  # left padding: prompts end at the same column
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            criteria = [_StopStrings(tokenizer, stops, width)] if stops else []
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                stopping_criteria=StoppingCriteriaList(criteria),
                **kwargs,
            )
            for row in out[:, width:].tolist():
                text = tokenizer.decode(row, skip_special_tokens=True)
                outputs.append(cut_at_stop(text, stops))
    finally:
        if was_training:
            model.train()
    return outputs


def generate_read_twice(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    questions: Sequence[str],
    *,
    template: str = "information",
    jrt: bool = True,
    preambles: Sequence[str] | None = None,
    max_new_tokens: int = 48,
    stop: str | Sequence[str] | None = "\n",
    batch_size: int = 8,
    max_length: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> list[str]:
    """Answer each (context, question) pair with JRT-Prompt (``jrt=True``) or the plain prompt.

    Builds the prompts with :func:`read_twice` / :func:`read_once` under ``template`` and runs
    :func:`generate_until` (greedy, left-padded batches, cut at ``stop``, no truncation), the
    paper's evaluation settings by default. ``preambles`` (one per pair) go in front of the
    ``"squad"`` JRT prompt. Returns one continuation per pair.
    """
    if isinstance(contexts, str) or isinstance(questions, str):
        raise TypeError("contexts and questions must be sequences of str, not one str")
    contexts, questions = list(contexts), list(questions)
    if len(contexts) != len(questions):
        raise ValueError(
            f"got {len(contexts)} contexts but {len(questions)} questions; give one per context"
        )
    if preambles is not None:
        preambles = list(preambles)
        if len(preambles) != len(contexts):
            raise ValueError(f"got {len(preambles)} preambles for {len(contexts)} contexts")
        if not jrt:
            raise ValueError("preambles belong to the JRT prompt; pass jrt=True or no preambles")
    _check_template(template)
    prompts = []
    for i, (context, question) in enumerate(zip(contexts, questions)):
        if jrt:
            preamble = preambles[i] if preambles is not None else None
            prompts.append(read_twice(context, question, template=template, preamble=preamble))
        else:
            prompts.append(read_once(context, question, template=template))
    return generate_until(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        stop=stop,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        progress=progress,
    )
