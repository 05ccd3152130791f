"""Hydragen: exact shared-prefix attention and its cache, for transformers attention models.

Juravsky et al., "Hydragen: High-Throughput LLM Inference with Shared Prefixes" (2024). When
many sequences share a prompt, attention over ``[prefix; suffix]`` splits exactly into
attention over the prefix and over the suffix, merged through their log-sum-exps. The prefix
keys/values are then stored once per prefix group, and each decode step reads them once for
the whole group as one matrix-matrix product instead of once per sequence.

Pieces (all on transformers' public attention and cache APIs, so any model whose attention
modules dispatch through ``ALL_ATTENTION_FUNCTIONS`` can use them: Llama, Qwen2, Mistral, ...):

- :class:`SharedPrefixCache`: a transformers ``Cache`` whose layers hold prefix *levels*
  (level ``l`` has ``G_l`` groups, each level's group count dividing the next and the batch)
  plus per-sequence suffix keys/values, dynamic or static (preallocated, for compiled decode).
  ``get_seq_length()`` counts prefix + suffix, so positions (rotary embeddings) run on from
  the prefix.
- :func:`hydragen_attention_forward`, registered as ``attn_implementation="hydragen"`` (with
  the SDPA mask builder) by :func:`register_hydragen` on ``import hazyzoo``. It finds the cache
  in the ``shared_prefix_cache`` forward kwarg; without one (training, plain ``generate``, the
  prefix's own prefill) it is exactly SDPA attention.

:func:`hazyzoo.hydragen.generate` drives both from one call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from hazyzoo.kernels.attention import attention_with_lse, merge_attention

__all__ = [
    "ATTN_IMPLEMENTATION",
    "CACHE_KWARG",
    "MODULE_CACHE_ATTR",
    "PrefixLevel",
    "SharedPrefixCache",
    "SharedPrefixLayer",
    "hydragen_attention_forward",
    "register_hydragen",
]

# The name under which the attention function (and its mask builder) is registered.
ATTN_IMPLEMENTATION = "hydragen"
# The forward kwarg through which the attention function finds the shared-prefix cache
# (transformers threads unknown forward kwargs down to the attention interface).
CACHE_KWARG = "shared_prefix_cache"
# Where :func:`hazyzoo.hydragen.generate` attaches the cache on each attention module
# (``generate`` rejects unknown kwargs, so the kwarg cannot carry it there).
MODULE_CACHE_ATTR = "_hydragen_cache"


@dataclasses.dataclass
class PrefixLevel:
    """One level of shared prefix in one layer.

    Attributes:
        keys, values: ``[G, Hkv, P, D]``: one entry per prefix group, stored once.
        key_mask: bool ``[G, 1, P]`` (False at padding) or ``None`` when nothing is padded.
    """

    keys: Tensor
    values: Tensor
    key_mask: Tensor | None

    @property
    def groups(self) -> int:
        return self.keys.shape[0]

    @property
    def length(self) -> int:
        return self.keys.shape[2]


def _mark_static(*tensors: Tensor) -> None:
    """Tell torch.compile that these tensors keep their address while a decode runs, so
    that CUDA graphs read them in place instead of copying them into the graph's inputs each
    step (the prefix is the largest tensor of the step). Without an identity guard: each
    ``generate`` call builds a new cache, which must not trigger a recompilation."""
    if torch.compiler.is_compiling():
        return
    for t in tensors:
        torch._dynamo.mark_static_address(t, guard=False)


class SharedPrefixLayer(CacheLayerMixin):
    """One decoder layer's cache: prefix levels (shared) + suffix keys/values (per sequence).

    The suffix grows by concatenation (``max_suffix_length=None``) or lives in a preallocated
    ``[B, Hkv, max_suffix_length, D]`` buffer written in place (static: what
    ``torch.compile`` / CUDA graphs need). The mask transformers builds for this layer covers
    the suffix keys only (``get_mask_sizes`` offsets it by the prefix length), so it carries
    the suffix's causal structure and padding; the prefix levels carry their own key masks.
    """

    is_sliding = False
    is_croppable = False

    def __init__(self, max_suffix_length: int | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.levels: list[PrefixLevel] = []
        self.prefix_length = 0
        self.max_suffix_length: int | None = None
        self.cumulative_length: Tensor | int = 0
        self.set_suffix_storage(max_suffix_length)

    # -- storage mode ---------------------------------------------------------------------
    @property
    def is_compileable(self) -> bool:  # type: ignore[override]
        return self.max_suffix_length is not None

    def set_suffix_storage(self, max_suffix_length: int | None) -> None:
        """Switch the (empty) suffix to dynamic (``None``) or static storage of that length."""
        if self.suffix_length:
            raise RuntimeError("the suffix storage can only change while the suffix is empty")
        if max_suffix_length is not None and max_suffix_length < 1:
            raise ValueError(f"max_suffix_length must be >= 1 or None, got {max_suffix_length}")
        self.max_suffix_length = max_suffix_length
        self.keys = self.values = None
        self.is_initialized = False
        self.cumulative_length = 0 if max_suffix_length is None else torch.tensor(0)

    @property
    def suffix_length(self) -> int:
        """Suffix tokens stored so far (a Python int; for static storage this syncs)."""
        if not self.is_initialized:
            return 0
        if self.max_suffix_length is None:
            return self.keys.shape[-2]
        return int(self.cumulative_length)

    # -- CacheLayerMixin ------------------------------------------------------------------
    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads = key_states.shape[:2]
        if self.max_suffix_length is None:
            self.keys = key_states.new_empty(batch, heads, 0, key_states.shape[-1])
            self.values = value_states.new_empty(batch, heads, 0, value_states.shape[-1])
        else:
            shape = (batch, heads, self.max_suffix_length)
            self.keys = key_states.new_zeros(*shape, key_states.shape[-1])
            self.values = value_states.new_zeros(*shape, value_states.shape[-1])
            self.cumulative_length = torch.tensor(0, device=self.device)
            _mark_static(self.keys, self.values, self.cumulative_length)
        self.is_initialized = True

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Append the new suffix keys/values; return all suffix keys/values (the static
        buffer, unwritten slots included: the mask hides them)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.levels and key_states.shape[0] % self.levels[-1].groups:
            raise ValueError(
                f"batch {key_states.shape[0]} is not a multiple of the last prefix level's "
                f"{self.levels[-1].groups} groups"
            )
        if self.max_suffix_length is None:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
            return self.keys, self.values
        n = key_states.shape[-2]
        positions = torch.arange(n, device=self.device) + self.cumulative_length
        self.cumulative_length.add_(n)
        self.keys.index_copy_(2, positions, key_states)
        self.values.index_copy_(2, positions, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: Any, *args: Any) -> tuple[int, int]:
        """The suffix keys' mask covers absolute positions from the end of the prefix."""
        if isinstance(query_length, Tensor):  # older transformers passed cache_position
            query_length = query_length.shape[0]
        if self.max_suffix_length is not None:
            return self.max_suffix_length, self.prefix_length
        return self.suffix_length + query_length, self.prefix_length

    def get_seq_length(self) -> Any:
        """Prefix + suffix tokens: the position the next token takes."""
        if self.max_suffix_length is not None and self.is_initialized:
            return self.cumulative_length + self.prefix_length
        return self.prefix_length + self.suffix_length

    def get_max_length(self) -> int:
        if self.max_suffix_length is None:
            return -1
        return self.prefix_length + self.max_suffix_length

    def reset(self) -> None:
        """Drop the suffix (the prefix levels stay: a new batch of samples can reuse them)."""
        self.keys = self.values = None
        self.is_initialized = False
        self.cumulative_length = 0 if self.max_suffix_length is None else torch.tensor(0)

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise NotImplementedError(
            "a shared-prefix cache cannot reorder sequences across prefix groups (beam search "
            "is not supported with hydragen)"
        )

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a shared-prefix cache cannot be repeated along the batch")

    def batch_select_indices(self, indices: Tensor) -> None:
        raise NotImplementedError("a shared-prefix cache cannot select sequences")

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("a shared-prefix cache cannot be cropped")

    # -- prefix levels --------------------------------------------------------------------
    def push_level(self, key_mask: Tensor | None) -> None:
        """Turn the (dynamic) suffix stored so far into a new shared prefix level.

        Args:
            key_mask: bool ``[G, P]`` (False at padding) over the suffix tokens, or ``None``.
        """
        if self.max_suffix_length is not None:
            raise RuntimeError("prefix levels are built with dynamic suffix storage")
        if not self.is_initialized or self.keys.shape[-2] == 0:
            raise ValueError("push_level needs the level's tokens in the suffix (prefill first)")
        groups, _, length, _ = self.keys.shape
        if self.levels and groups % self.levels[-1].groups:
            raise ValueError(
                f"a level of {groups} groups does not refine the previous level's "
                f"{self.levels[-1].groups}"
            )
        mask = None
        if key_mask is not None:
            if tuple(key_mask.shape) != (groups, length):
                raise ValueError(
                    f"key_mask must be [G, P] = {(groups, length)}, got {tuple(key_mask.shape)}"
                )
            if not bool(key_mask.all()):
                mask = key_mask.to(device=self.keys.device, dtype=torch.bool).unsqueeze(1)
        _mark_static(self.keys, self.values, *(() if mask is None else (mask,)))
        self.levels.append(PrefixLevel(self.keys, self.values, mask))
        self.prefix_length += length
        self.keys = self.values = None
        self.is_initialized = False


class SharedPrefixCache(Cache):
    """transformers ``Cache`` for Hydragen decoding: shared prefix levels + per-sequence
    suffixes, one :class:`SharedPrefixLayer` per decoder layer.

    Build it empty, prefill each prefix level through the model (passing the cache as both
    ``past_key_values`` and ``shared_prefix_cache``) and call :meth:`push_level` after each;
    then optionally :meth:`set_suffix_storage` to a static length, and decode the full batch.
    :func:`hazyzoo.hydragen.generate` does all of this.
    """

    def __init__(self, num_layers: int, max_suffix_length: int | None = None) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        super().__init__(layers=[SharedPrefixLayer(max_suffix_length) for _ in range(num_layers)])

    @property
    def levels(self) -> list[PrefixLevel]:
        """The first layer's prefix levels (every layer has the same structure)."""
        return self.layers[0].levels

    @property
    def group_sizes(self) -> list[int]:
        """Number of groups of each prefix level, outermost first."""
        return [level.groups for level in self.levels]

    @property
    def prefix_length(self) -> int:
        """Positions the prefix levels occupy (padded lengths summed)."""
        return self.layers[0].prefix_length

    def push_level(self, key_mask: Tensor | None = None) -> None:
        """Make the tokens prefilled since the last level a new shared level (all layers)."""
        for layer in self.layers:
            layer.push_level(key_mask)

    def set_suffix_storage(self, max_suffix_length: int | None) -> None:
        """Dynamic (``None``) or static suffix storage for the decode that follows."""
        for layer in self.layers:
            layer.set_suffix_storage(max_suffix_length)

    def prefix_bytes(self) -> int:
        """Bytes held by the shared prefix keys/values over all layers."""
        return sum(
            t.numel() * t.element_size()
            for layer in self.layers
            for level in layer.levels
            for t in (level.keys, level.values)
        )


def _suffix_mask(
    attention_mask: Tensor | None, query: Tensor, layer: SharedPrefixLayer, n_keys: int
) -> Tensor:
    """The suffix part of the mask as bool ``[B or 1, T, N]``.

    transformers passes either a 4D mask over the suffix keys (bool from the SDPA builder, or
    additive float) or ``None`` when the mask is purely causal with nothing padded; then the
    causal pattern is rebuilt from the number of suffix tokens stored (a tensor for static
    storage, so no host sync)."""
    length = query.shape[2]
    if attention_mask is None:
        stored = layer.cumulative_length if layer.max_suffix_length is not None else n_keys
        first = stored - length  # suffix index of the first query
        q_pos = torch.arange(length, device=query.device) + first
        k_pos = torch.arange(n_keys, device=query.device)
        return (k_pos[None, :] <= q_pos[:, None]).unsqueeze(0)
    if attention_mask.dim() != 4 or attention_mask.shape[1] != 1:
        raise ValueError(
            "hydragen attention expects a [B, 1, T, N] attention mask over the suffix keys, got "
            f"shape {tuple(attention_mask.shape)}"
        )
    mask = attention_mask[:, 0, :, :n_keys]
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2
    if mask.shape[-1] != n_keys:
        raise ValueError(
            f"the attention mask covers {mask.shape[-1]} keys, the suffix has {n_keys}"
        )
    return mask


def hydragen_attention_forward(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers attention function: shared prefix + suffix attention, merged exactly.

    ``query [B, Hq, T, D]``; ``key``/``value`` are what the cache's ``update`` returned (the
    suffix). The :class:`SharedPrefixCache` comes from the ``shared_prefix_cache`` kwarg or,
    inside :func:`hazyzoo.hydragen.generate`, from the module; without one with prefix levels
    this is transformers' SDPA attention. Returns
    ``(out [B, T, Hq, D], None)``: attention weights are never materialised.
    """
    cache = kwargs.get(CACHE_KWARG)
    if cache is None:
        cache = getattr(module, MODULE_CACHE_ATTR, None)
    layer_idx = getattr(module, "layer_idx", None)
    layer = None
    if cache is not None:
        if not isinstance(cache, SharedPrefixCache):
            raise TypeError(
                f"{CACHE_KWARG} must be a SharedPrefixCache, got {type(cache).__name__}"
            )
        if layer_idx is None:
            raise ValueError("hydragen attention needs attention modules with a layer_idx")
        layer = cache.layers[layer_idx]
    if layer is None or not layer.levels:
        kwargs.pop(CACHE_KWARG, None)
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout and module.training:
        raise ValueError("hydragen attention does not implement attention dropout")
    for name in ("softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise ValueError(f"hydragen attention does not support {name!r} (got it set)")
    window = kwargs.get("sliding_window")
    if window is not None and not torch.compiler.is_compiling():
        total = layer.prefix_length + key.shape[-2]
        if total > window:
            raise ValueError(
                f"hydragen attention is full attention; this layer has a sliding window of "
                f"{window} tokens and the sequence has reached {total}"
            )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    outs, lses = [], []
    for level in layer.levels:
        out, lse = attention_with_lse(query, level.keys, level.values, level.key_mask, scale)
        outs.append(out)
        lses.append(lse)
    mask = _suffix_mask(attention_mask, query, layer, key.shape[-2])
    out, lse = attention_with_lse(query, key, value, mask.expand(query.shape[0], -1, -1), scale)
    outs.append(out)
    lses.append(lse)
    merged, _ = merge_attention(torch.stack(outs), torch.stack(lses), query.dtype)
    return merged.transpose(1, 2), None


def register_hydragen() -> None:
    """Register ``attn_implementation="hydragen"`` (attention and mask builder) with
    transformers. Called on ``import hazyzoo``; idempotent."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, hydragen_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
