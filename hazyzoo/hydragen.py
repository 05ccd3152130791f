"""Hydragen generation: prefill each shared prefix once, then decode the whole batch.

>>> import hazyzoo
>>> out = hazyzoo.hydragen.generate(model, prompt_ids, num_return_sequences=256,
...                                 do_sample=True, temperature=0.7, max_new_tokens=128)

``model`` is any transformers causal LM whose attention dispatches through
``ALL_ATTENTION_FUNCTIONS`` (Llama, Qwen2, Mistral, ...). The prompt is prefilled once per
prefix group and stored once (:class:`~hazyzoo.modeling.hydragen.SharedPrefixCache`); decoding
then runs in ``model.generate`` with every generation option it has (greedy, sampling,
``max_new_tokens``, eos/pad, stopping criteria, streamers, ``return_dict_in_generate``), and
the attention over the prefix is computed once per group and step by the Hydragen kernels. The
result is what ``model.generate`` returns for the same prompts replicated per sequence and
left-padded: the same tokens (greedy) and logits (to float rounding).

Prefix sharing can be hierarchical: ``prefix_ids`` may be a list of levels, each level a batch
of ``G_l`` prompts whose count divides the next level's (and the batch). E.g. one few-shot
preamble for everyone, then one problem statement per group, then the samples.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from hazyzoo.modeling.hydragen import (
    ATTN_IMPLEMENTATION,
    CACHE_KWARG,
    MODULE_CACHE_ATTR,
    PrefixLevel,
    SharedPrefixCache,
    SharedPrefixLayer,
    hydragen_attention_forward,
    register_hydragen,
)

__all__ = [
    "ATTN_IMPLEMENTATION",
    "PrefixLevel",
    "SharedPrefixCache",
    "SharedPrefixLayer",
    "generate",
    "hydragen_attention_forward",
    "prefill_prefix",
    "register_hydragen",
]

_OWNED_KWARGS = (
    "input_ids",
    "inputs",
    "attention_mask",
    "past_key_values",
    "cache",
    "position_ids",
    "inputs_embeds",
    CACHE_KWARG,
)
_UNSUPPORTED = {
    "assistant_model": "assisted decoding",
    "prompt_lookup_num_tokens": "prompt-lookup decoding",
    "num_beam_groups": "group beam search",
    "penalty_alpha": "contrastive search",
}

Tokens = Tensor | Sequence[int] | Sequence[Sequence[int]]


# -- input normalisation ----------------------------------------------------------------------
def _depth(x: Any) -> int:
    """Nesting depth of a token structure: a tensor counts its dims."""
    if isinstance(x, Tensor):
        return x.dim()
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            return 1
        return 1 + _depth(x[0])
    return 0


def _as_batch(x: Any, what: str, pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """A batch of token sequences as left-padded ``ids [N, L]`` and bool ``mask [N, L]``.

    Accepts a 1-D tensor / list of ints (one sequence), a 2-D tensor (every token real) or a
    list of sequences of any lengths (left-padded here)."""
    if isinstance(x, Tensor):
        if x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise TypeError(f"{what} must hold integer token ids, got dtype {x.dtype}")
        ids = x.to(device=device, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ValueError(f"{what} must be [L] or [N, L] token ids, got shape {tuple(x.shape)}")
        if ids.shape[1] == 0 or ids.shape[0] == 0:
            raise ValueError(f"{what} is empty (shape {tuple(x.shape)})")
        return ids, torch.ones_like(ids, dtype=torch.bool)
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        raise ValueError(f"{what} must be a non-empty tensor or list of token ids, got {x!r:.80}")
    rows = [x] if _depth(x) == 1 else list(x)
    seqs = []
    for i, row in enumerate(rows):
        row = row.tolist() if isinstance(row, Tensor) else list(row)
        if len(row) == 0:
            raise ValueError(f"{what}[{i}] is empty: every prompt needs at least one token")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
            raise TypeError(f"{what}[{i}] must be a sequence of int token ids")
        seqs.append(row)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = True
    return ids.to(device), mask.to(device)


def _levels(prefix_ids: Any, pad_id: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """``prefix_ids`` as a list of levels ``(ids [G, P], mask [G, P])``."""
    if prefix_ids is None:
        raise ValueError("prefix_ids is required (the shared prompt)")
    depth = _depth(prefix_ids)
    is_level_list = isinstance(prefix_ids, (list, tuple)) and (
        depth == 3 or any(isinstance(x, Tensor) and x.dim() == 2 for x in prefix_ids)
    )
    raw = list(prefix_ids) if is_level_list else [prefix_ids]
    if not raw:
        raise ValueError("prefix_ids is an empty list of levels")
    levels = [_as_batch(x, f"prefix_ids level {i}", pad_id, device) for i, x in enumerate(raw)]
    for i in range(1, len(levels)):
        outer, inner = levels[i - 1][0].shape[0], levels[i][0].shape[0]
        if inner % outer:
            raise ValueError(
                f"prefix level {i} has {inner} prompts, not a multiple of level {i - 1}'s "
                f"{outer}: each level's batch must divide the next"
            )
    return levels


def _expand_rows(t: Tensor, rows: int) -> Tensor:
    """Repeat each row of ``t`` consecutively so that it has ``rows`` rows."""
    return t.repeat_interleave(rows // t.shape[0], dim=0)


def _pad_token_id(model: Any, kwargs: dict[str, Any]) -> int:
    config = kwargs.get("generation_config") or model.generation_config
    for candidate in (kwargs.get("pad_token_id"), config.pad_token_id, kwargs.get("eos_token_id")):
        if candidate is not None:
            return int(candidate[0] if isinstance(candidate, (list, tuple)) else candidate)
    eos = config.eos_token_id
    if eos is not None:
        return int(eos[0] if isinstance(eos, (list, tuple)) else eos)
    return 0


def _check_model(model: Any) -> int:
    """The model's number of attention layers; a clear error if Hydragen cannot drive it."""
    if not hasattr(model, "generate") or not hasattr(model, "config"):
        raise TypeError(f"model must be a transformers causal LM, got {type(model).__name__}")
    if not getattr(model, "_supports_attention_backend", False):
        raise TypeError(
            f"{type(model).__name__} does not dispatch attention through transformers' "
            "AttentionInterface (its class lacks `_supports_attention_backend`), so hydragen "
            "attention cannot replace it"
        )
    text_config = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        raise ValueError(
            "hydragen supports models whose layers are all full attention, got layer_types "
            f"{sorted(set(layer_types))}"
        )
    layers = getattr(text_config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers < 1:
        raise TypeError(f"cannot read num_hidden_layers from {type(model.config).__name__}")
    return layers


def _attention_modules(model: Any) -> list[torch.nn.Module]:
    """The modules that call the attention interface: those with an int ``layer_idx`` and
    a ``num_key_value_groups`` (transformers' attention modules)."""
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "layer_idx", None), int) and hasattr(m, "num_key_value_groups")
    ]


@contextlib.contextmanager
def _hydragen_attention(model: Any, cache: SharedPrefixCache | None = None) -> Iterator[None]:
    """Run with ``attn_implementation="hydragen"`` and, with ``cache``, attach it to every
    attention module (``generate`` does not forward unknown kwargs to the model, so this is
    how the attention function finds the prefix there); restores both after."""
    register_hydragen()
    previous = model.config._attn_implementation
    modules = _attention_modules(model) if cache is not None else []
    if cache is not None and not modules:
        raise TypeError(
            f"found no attention modules (with layer_idx and num_key_value_groups) in "
            f"{type(model).__name__}"
        )
    if previous != ATTN_IMPLEMENTATION:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    for module in modules:
        setattr(module, MODULE_CACHE_ATTR, cache)
    try:
        yield
    finally:
        for module in modules:
            if hasattr(module, MODULE_CACHE_ATTR):
                delattr(module, MODULE_CACHE_ATTR)
        if previous != ATTN_IMPLEMENTATION:
            model.set_attn_implementation(previous)


def _forward_params(model: Any) -> Any:
    return inspect.signature(model.forward).parameters


def _cache_kwarg_name(model: Any) -> str:
    """``cache`` on transformers >= 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def _positions(mask: Tensor) -> Tensor:
    """Position ids from a 2-D padding mask, as transformers' generate computes them."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


# -- the API ----------------------------------------------------------------------------------
def _prefill_levels(
    model: Any, levels: list[tuple[Tensor, Tensor]], cache: SharedPrefixCache
) -> Tensor | None:
    """Prefill ``levels`` in order, each attending to the levels before it through the
    cache, and make each a shared level; returns the last level's final-token logits."""
    cache_name = _cache_kwarg_name(model)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(model) else {}
    seen: list[Tensor] = []
    logits = None
    with _hydragen_attention(model):
        for ids, mask in levels:
            rows = ids.shape[0]
            full = torch.cat([_expand_rows(m, rows) for m in seen] + [mask], dim=1)
            out = model(
                input_ids=ids,
                attention_mask=full,
                position_ids=_positions(full)[:, -ids.shape[1] :],
                use_cache=True,
                **extra,
                **{cache_name: cache, CACHE_KWARG: cache},
            )
            cache.push_level(mask)
            seen.append(mask)
            logits = out.logits[:, -1]
    return logits


@torch.no_grad()
def prefill_prefix(
    model: Any, prefix_ids: Any, *, pad_token_id: int = 0
) -> tuple[SharedPrefixCache, list[tuple[Tensor, Tensor]], Tensor]:
    """Prefill the prefix levels once each into a new :class:`SharedPrefixCache`.

    Returns ``(cache, levels, last_logits)``: the levels as left-padded ``(ids [G, P],
    mask [G, P])`` and the logits of each last-level prompt's final token ``[G_last, V]``
    (the distribution of the first generated token)."""
    cache = SharedPrefixCache(_check_model(model))
    levels = _levels(prefix_ids, pad_token_id, model.device)
    logits = _prefill_levels(model, levels, cache)
    return cache, levels, logits


@torch.no_grad()
def generate(
    model: Any,
    prefix_ids: Any,
    *,
    num_return_sequences: int | None = None,
    suffix_ids: Tokens | None = None,
    **generate_kwargs: Any,
) -> Any:
    """``model.generate`` for many sequences sharing prompt prefixes, with Hydragen attention.

    Args:
        model: a transformers causal LM with attention-interface support (e.g.
            ``LlamaForCausalLM``, ``Qwen2ForCausalLM``), in eval mode.
        prefix_ids: the shared prompt. One level: a 1-D tensor / list of ints (one prompt), a
            2-D tensor ``[G, P]`` or a list of ``G`` token lists (ragged: left-padded here).
            Several levels: a list of such batches (2-D tensors or lists of token lists),
            outermost first, each level's count dividing the next.
        num_return_sequences: sequences per suffix (or per last-level prompt without
            suffixes), as in ``model.generate`` (default: the generation config's, else 1).
        suffix_ids: optional per-sequence continuations of the prompt: ``[Bs, S]`` or a list
            of ``Bs`` token lists (ragged ones are padded between prefix and suffix, which
            attention masks and positions make invisible), ``Bs`` a multiple of the last
            level's count; sequence ``i`` continues prompt ``i // (Bs // G_last)``.
        **generate_kwargs: anything ``model.generate`` takes (``max_new_tokens``,
            ``do_sample``, ``temperature``, ``top_p``, ``top_k``, ``eos_token_id``,
            ``pad_token_id``, ``streamer``, ``return_dict_in_generate``, ``output_scores``,
            ``output_logits``, ``generation_config``, ...). ``cache_implementation="static"``
            preallocates the suffix cache, which makes transformers compile the decode step
            on GPUs (as it does for its own static cache). ``max_length`` / ``min_length``
            count the replicated prompt's length, as in ``model.generate``.

    Returns:
        What ``model.generate`` returns for the replicated prompts (each sequence's prefix
        levels then its suffix, left-padded to the longest): a ``[B, L + new]`` tensor, or a
        ``GenerateOutput`` whose ``sequences`` are laid out so, with
        ``B = Bs * num_return_sequences`` (or ``G_last * num_return_sequences``).
    """
    config = generate_kwargs.get("generation_config") or model.generation_config
    if num_return_sequences is None:
        num_return_sequences = getattr(config, "num_return_sequences", None) or 1
    if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, int):
        raise TypeError(f"num_return_sequences must be an int, got {num_return_sequences!r}")
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {num_return_sequences}")
    for name in _OWNED_KWARGS:
        if name in generate_kwargs:
            raise ValueError(
                f"hydragen.generate builds {name!r} itself from prefix_ids/suffix_ids; do not "
                "pass it"
            )
    for name, what in _UNSUPPORTED.items():
        if generate_kwargs.get(name):
            raise ValueError(f"hydragen.generate does not support {what} ({name})")
    beams = generate_kwargs.get("num_beams", config.num_beams) or 1
    if beams > 1:
        raise ValueError(f"hydragen.generate does not support beam search (num_beams={beams})")
    sampling = generate_kwargs.get("do_sample", config.do_sample)
    if num_return_sequences > 1 and not sampling:
        raise ValueError(
            "greedy decoding (do_sample=False) gives num_return_sequences identical copies; "
            f"got num_return_sequences={num_return_sequences}: pass do_sample=True (as "
            "model.generate requires)"
        )
    cache_impl = generate_kwargs.pop("cache_implementation", None)
    if cache_impl not in (None, "dynamic", "static"):
        raise ValueError(
            f"cache_implementation must be None, 'dynamic' or 'static' with hydragen, got "
            f"{cache_impl!r}"
        )
    pad_id = _pad_token_id(model, generate_kwargs)
    cache = SharedPrefixCache(_check_model(model))
    levels = _levels(prefix_ids, pad_id, model.device)
    groups = levels[-1][0].shape[0]
    if suffix_ids is None:
        # Each last-level prompt's final token becomes the per-sequence part (one token
        # prefilled per sequence), so that generate starts from a query.
        *outer, (last_ids, last_mask) = levels
        suffix, suffix_mask = last_ids[:, -1:], last_mask[:, -1:]
        levels = outer + ([(last_ids[:, :-1], last_mask[:, :-1])] if last_ids.shape[1] > 1 else [])
    else:
        suffix, suffix_mask = _as_batch(suffix_ids, "suffix_ids", pad_id, model.device)
        if suffix.shape[0] % groups:
            raise ValueError(
                f"suffix_ids has {suffix.shape[0]} sequences, not a multiple of the "
                f"{groups} prompts of the last prefix level"
            )
    _prefill_levels(model, levels, cache)
    batch = suffix.shape[0] * num_return_sequences
    suffix = _expand_rows(suffix, batch)
    suffix_mask = _expand_rows(suffix_mask, batch)

    ids = torch.cat([_expand_rows(i, batch) for i, _ in levels] + [suffix], dim=1)
    mask = torch.cat([_expand_rows(m, batch) for _, m in levels] + [suffix_mask], dim=1)
    # Our prompt layout is wider than transformers' (padding between the levels), so lengths
    # given as totals are turned into new-token counts against the replicated prompt's width.
    overrides, max_new = _length_overrides(
        generate_kwargs, config, int(mask.sum(1).max()), mask.shape[1]
    )
    if cache_impl == "static":
        cache.set_suffix_storage(suffix.shape[1] + max_new)
    overrides["num_return_sequences"] = 1
    if generate_kwargs.get("pad_token_id") is None and config.pad_token_id is None:
        overrides["pad_token_id"] = pad_id
    if generate_kwargs.get("generation_config") is not None:
        # set on a copy of the user's config: extra kwargs beside a config are deprecated
        generate_kwargs["generation_config"] = copy.deepcopy(generate_kwargs["generation_config"])
        for name, value in overrides.items():
            setattr(generate_kwargs["generation_config"], name, value)
    else:
        generate_kwargs.update(overrides)
    if generate_kwargs.get("streamer") is not None:
        generate_kwargs["streamer"] = _PromptLayoutStreamer(
            generate_kwargs["streamer"], mask, pad_id
        )
    with _hydragen_attention(model, cache):
        out = model.generate(
            input_ids=ids,
            attention_mask=mask.long(),
            **{_cache_kwarg_name(model): cache},
            **generate_kwargs,
        )
    sequences = out if isinstance(out, Tensor) else out.sequences
    sequences = _left_pad_prompts(sequences, mask, pad_id)
    if isinstance(out, Tensor):
        return sequences
    out.sequences = sequences
    return out


class _PromptLayoutStreamer:
    """Hands a streamer the prompt in transformers' left-padded layout (``generate`` puts
    the prompt first, and ours has padding between the levels and the suffix); every later
    ``put`` (the new tokens) and ``end`` pass through unchanged."""

    def __init__(self, streamer: Any, mask: Tensor, pad_id: int) -> None:
        self.streamer, self.mask, self.pad_id = streamer, mask, pad_id
        self.prompt_sent = False

    def put(self, value: Tensor) -> None:
        if not self.prompt_sent:
            self.prompt_sent = True
            value = _left_pad_prompts(value, self.mask.to(value.device), self.pad_id)
        self.streamer.put(value)

    def end(self) -> None:
        self.streamer.end()


def _length_overrides(
    kwargs: dict[str, Any], config: Any, prompt_width: int, our_width: int
) -> tuple[dict[str, Any], int]:
    """The length arguments for our ``our_width``-wide prompt layout that give the number of
    new tokens ``model.generate`` would give for prompts ``prompt_width`` tokens wide (pops
    ``max_length`` / ``min_length`` / ``*_new_tokens`` from ``kwargs``); and that number."""
    out: dict[str, Any] = {}
    max_length = kwargs.pop("max_length", None)
    max_new = kwargs.pop("max_new_tokens", None)
    if max_new is None and max_length is None:
        max_new = config.max_new_tokens
    if max_new is None:
        max_length = config.max_length if max_length is None else max_length
        if max_length is None:
            raise ValueError("hydragen.generate needs max_new_tokens (or max_length)")
        max_new = int(max_length) - prompt_width
        if max_new < 1:
            raise ValueError(
                f"max_length={max_length} leaves no new token after the {prompt_width}-token "
                "prompt; pass max_new_tokens"
            )
        out["max_length"] = our_width + max_new
    else:
        out["max_new_tokens"] = int(max_new)
    min_length = kwargs.pop("min_length", None)
    min_new = kwargs.pop("min_new_tokens", None)
    if min_new is None and min_length is None:
        min_new = config.min_new_tokens
        min_length = config.min_length
    if min_new is not None:
        out["min_new_tokens"] = int(min_new)
    elif min_length:
        out["min_new_tokens"] = max(int(min_length) - prompt_width, 0)
    return out, int(max_new)


def _left_pad_prompts(sequences: Tensor, mask: Tensor, pad_id: int) -> Tensor:
    """Move the padding inside each prompt to its left end (transformers' layout)."""
    prompt_len = mask.shape[1]
    prompt, new = sequences[:, :prompt_len], sequences[:, prompt_len:]
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # padding first, in order
    prompt = prompt.gather(1, order)
    real = mask.sum(1)
    width = int(real.max())
    prompt = prompt[:, prompt_len - width :]
    cols = torch.arange(width, device=prompt.device)
    prompt = torch.where(cols[None, :] >= (width - real)[:, None], prompt, pad_id)
    return torch.cat([prompt, new], dim=1)
