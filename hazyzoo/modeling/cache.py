"""Recurrent-state caches for ``generate`` on transformers' Cache / cache-layer API.

A :class:`HazyCache` holds one layer object per model layer. Each layer keeps only what its
mixer needs to take the next token, so the cache does not grow with the sequence:

* :class:`LinearAttentionStateLayer`: the linear-attention state ``sum phi(k)^T v`` and the
  normaliser state ``sum phi(k)`` (float32);
* :class:`ConvStateLayer`: the last ``kernel_size - 1`` inputs of a causal convolution;
* :class:`SlidingWindowLayer`: a ring buffer of the last ``window`` keys and values, with a
  validity mask for left padding; it never grows past the window.

Every layer counts the positions it has seen (padding included), which is what
``get_seq_length()`` reports to ``generate``. The layers subclass transformers'
``CacheLayerMixin`` so that ``Cache`` methods (``get_seq_length``, ``reorder_cache``,
``batch_select_indices``, ``batch_repeat_interleave``, ``reset``) work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class HazyCacheLayer(CacheLayerMixin):
    """Base of hazyzoo's cache layers: a set of named state tensors plus a position counter.

    Subclasses list the attribute names of their batch-first state tensors in ``_state_names``;
    the batch operations (reorder, select, repeat) and ``reset`` act on all of them.
    """

    is_compileable = False
    is_sliding = False
    supports_early_init = False
    _state_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.seen_tokens = 0
        for name in self._state_names:
            setattr(self, name, None)

    # --- transformers' CacheLayerMixin interface -------------------------------------------
    def lazy_initialization(self, *args: object, **kwargs: object) -> None:
        """State tensors are created by the mixer on its first call (nothing to do here)."""

    def update(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} holds a recurrent state, not a key/value list; "
            "hazyzoo mixers update it through their own methods"
        )

    def get_seq_length(self) -> int:
        """Number of positions (padding included) this layer has consumed."""
        return self.seen_tokens

    def get_max_length(self) -> int:
        """-1: a recurrent state has no maximum length."""
        return -1

    def get_max_cache_shape(self) -> int:
        return -1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    @property
    def batch_size(self) -> int:
        for name in self._state_names:
            value = getattr(self, name)
            if value is not None:
                return value.shape[0]
        return -1

    @property
    def has_state(self) -> bool:
        """Whether the layer has consumed at least one token (its state tensors exist)."""
        return self.seen_tokens > 0 and all(getattr(self, n) is not None for n in self._state_names)

    def _map_states(self, fn) -> None:
        for name in self._state_names:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, fn(value))

    def reset(self) -> None:
        self.seen_tokens = 0
        for name in self._state_names:
            setattr(self, name, None)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_states(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_states(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_states(lambda t: t.repeat_interleave(repeats, dim=0))

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError(
                f"{type(self).__name__} keeps a fixed-size state and cannot drop past tokens"
            )

    def offload(self) -> None:
        self._map_states(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:  # states stay where they are
        return None

    def __repr__(self) -> str:
        shapes = {
            n: tuple(getattr(self, n).shape)
            for n in self._state_names
            if getattr(self, n) is not None
        }
        return f"{type(self).__name__}(seen_tokens={self.seen_tokens}, states={shapes})"


class LinearAttentionStateLayer(HazyCacheLayer):
    """Linear-attention recurrent state.

    ``kv_state`` [batch, heads, feature_map_dim, head_dim] = sum_s phi(k_s)^T v_s and
    ``k_state`` [batch, heads, feature_map_dim] = sum_s phi(k_s), both float32.
    """

    _state_names = ("kv_state", "k_state")


class ConvStateLayer(HazyCacheLayer):
    """Causal-convolution tail: ``conv_state`` [batch, channels, kernel_size - 1]."""

    _state_names = ("conv_state",)


class SlidingWindowLayer(HazyCacheLayer):
    """Ring buffer of the last ``window`` rotary-embedded keys and values.

    ``keys``/``values`` [batch, heads, window, head_dim]; ``valid`` [batch, window] marks slots
    holding real (non-padding) tokens; ``write_index`` (a one-element long tensor on the state's
    device, so a captured CUDA graph can advance it) is the slot the next token overwrites, i.e.
    the oldest one. Softmax attention does not depend on key order once rotary has been applied,
    so decoding attends over the buffer as it lies.
    """

    is_sliding = True
    _state_names = ("keys", "values", "valid", "write_index")

    def __init__(self, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window

    def get_max_length(self) -> int:
        return self.window

    def get_max_cache_shape(self) -> int:
        return self.window

    def _map_states(self, fn) -> None:
        index = self.write_index
        self.write_index = None
        super()._map_states(fn)
        self.write_index = index

    def chronological(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The buffer ordered oldest to newest: keys, values, valid."""
        order = (
            torch.arange(self.window, device=self.keys.device) + self.write_index
        ) % self.window
        return self.keys[:, :, order], self.values[:, :, order], self.valid[:, order]

    def store(self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Keep the last ``window`` positions of chronological ``keys``/``values``/``valid``."""
        length = keys.shape[2]
        if length >= self.window:
            keys, values, valid = (
                keys[:, :, -self.window :],
                values[:, :, -self.window :],
                valid[:, -self.window :],
            )
        else:
            pad = self.window - length
            keys = torch.nn.functional.pad(keys, (0, 0, pad, 0))
            values = torch.nn.functional.pad(values, (0, 0, pad, 0))
            valid = torch.nn.functional.pad(valid, (pad, 0), value=False)
        self.keys, self.values, self.valid = (
            keys.contiguous(),
            values.contiguous(),
            valid.contiguous(),
        )
        self.write_index = torch.zeros(1, dtype=torch.long, device=keys.device)

    def append(self, key: torch.Tensor, value: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Write one token ([batch, heads, 1, head_dim]) over the oldest slot, in place.

        Returns the slot index it wrote (a one-element tensor) and advances the ring.
        """
        slot = self.write_index.clone()
        self.keys.index_copy_(2, slot, key.to(self.keys.dtype))
        self.values.index_copy_(2, slot, value.to(self.values.dtype))
        self.valid.index_copy_(1, slot, valid[:, None])
        self.write_index.add_(1).remainder_(self.window)
        return slot


class HazyCache(Cache):
    """The cache of a hazyzoo recurrent/hybrid model: one :class:`HazyCacheLayer` per layer.

    Build it with :meth:`for_model` (``model.make_cache()`` does this), or let ``forward``
    create one when ``use_cache=True``.
    """

    is_hazyzoo_cache = True

    def __init__(self, layers: Sequence[HazyCacheLayer]) -> None:
        super().__init__(layers=list(layers))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if not self.layers:
            return 0
        return self.layers[layer_idx].get_seq_length()

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.layers[layer_idx].get_mask_sizes(query_length)

    def advance(self, num_tokens: int) -> None:
        """Record that every layer has consumed ``num_tokens`` more positions."""
        for layer in self.layers:
            layer.seen_tokens += num_tokens

    def has_previous_state(
        self, layer_idx: int | None = None, state_idx: int | None = None
    ) -> bool:
        idx = 0 if layer_idx is None else layer_idx
        return self.layers[idx].has_state

    def nbytes(self) -> int:
        """Bytes held by all state tensors (for memory accounting in benchmarks)."""
        total = 0
        for layer in self.layers:
            for name in layer._state_names:
                value = getattr(layer, name)
                if value is not None:
                    total += value.numel() * value.element_size()
        return total
