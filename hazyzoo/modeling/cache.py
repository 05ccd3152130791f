"""Caches for ``generate`` on transformers' Cache / cache-layer API.

A :class:`HazyCache` holds one layer object per model layer; each layer keeps what its mixer needs
to take the next token. Layers that promise a constant size (``constant_size = True``) never grow
with the sequence:

* :class:`LinearAttentionStateLayer`: the linear-attention state ``sum phi(k)^T v`` and the
  normaliser state ``sum phi(k)`` (float32);
* :class:`ConvStateLayer`: the last ``kernel_size - 1`` inputs of a short causal convolution;
* :class:`SlidingWindowLayer`: a ring buffer of the last ``window`` keys and values, with a
  validity mask for left padding;
* :class:`InputHistoryLayer`: a ring buffer of the last ``capacity`` inputs of a layer, for
  long-convolution (Hyena, FFT) decoding;
* :class:`LongConvLayer`: an input-history ring plus a short-convolution tail (Hyena);
* :class:`SsmStateLayer`: the state of a linear state-space recurrence (RTF's companion form,
  or any SSM mixer's), ``ssm_state`` [batch, state_size, channels] in float32;
* :class:`MambaStateLayer`: Mamba's short-convolution tail and selective-scan state;
* :class:`StatelessLayer`: for blocks whose mixer keeps no state (it only counts positions).

:class:`FullAttentionLayer` is the exception, documented as such: full softmax attention must see
every past key, so its key/value cache grows by one position per token (``constant_size =
False``), and CUDA-graph replay cannot serve it (``supports_graph_replay = False``).

Every layer counts the positions it has seen (padding included): that is what
``get_seq_length()`` reports to ``generate``. A layer's tensors come in two groups, each listed
by name on the class: ``batch_states`` (batch-first; batch operations such as beam reordering and
``num_return_sequences`` repetition act on them) and ``counters`` (small tensors that are not
per batch row, e.g. a ring buffer's write index, kept on the device so a captured CUDA graph can
advance them). :meth:`HazyCacheLayer.state_tensors` lists both, publicly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch.nn import functional as F
from transformers.cache_utils import Cache, CacheLayerMixin


class HazyCacheLayer(CacheLayerMixin):
    """Base of hazyzoo's cache layers: named state tensors plus a position counter.

    Subclasses list their batch-first state tensors in ``batch_states`` and their non-batch
    tensors in ``counters``; ``constant_size`` says whether the layer's memory is independent of
    the sequence length and ``supports_graph_replay`` whether every decode update is in place on
    fixed-shape tensors (so a CUDA graph captured once can be replayed).
    """

    is_compileable = False
    is_sliding = False
    supports_early_init = False
    batch_states: ClassVar[tuple[str, ...]] = ()
    counters: ClassVar[tuple[str, ...]] = ()
    constant_size: ClassVar[bool] = True
    supports_graph_replay: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.seen_tokens = 0
        for name in (*self.batch_states, *self.counters):
            setattr(self, name, None)

    # --- public state access ----------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor this layer holds (batch states, then counters), by name; unset ones are
        left out. Graph replay, memory accounting and compatibility checks go through this."""
        names = (*self.batch_states, *self.counters)
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def batch_state_tensors(self) -> dict[str, torch.Tensor]:
        """The batch-first state tensors, by name (unset ones left out)."""
        return {n: getattr(self, n) for n in self.batch_states if getattr(self, n) is not None}

    def nbytes(self) -> int:
        """Bytes held by this layer's tensors."""
        return sum(t.numel() * t.element_size() for t in self.state_tensors().values())

    def _map_batch_states(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for name, value in self.batch_state_tensors().items():
            setattr(self, name, fn(value))

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
        """Batch size of the states (-1 before the first token)."""
        for value in self.batch_state_tensors().values():
            return value.shape[0]
        return -1

    @property
    def has_state(self) -> bool:
        """Whether the layer has consumed at least one token (its state tensors exist)."""
        names = (*self.batch_states, *self.counters)
        return self.seen_tokens > 0 and all(getattr(self, n) is not None for n in names)

    def reset(self) -> None:
        self.seen_tokens = 0
        for name in (*self.batch_states, *self.counters):
            setattr(self, name, None)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_batch_states(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_batch_states(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_batch_states(lambda t: t.repeat_interleave(repeats, dim=0))

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError(
                f"{type(self).__name__} keeps a fixed-size state and cannot drop past tokens"
            )

    def offload(self) -> None:
        for name, value in self.state_tensors().items():
            setattr(self, name, value.to("cpu", non_blocking=True))

    def prefetch(self) -> None:  # states stay where they are
        return None

    def __repr__(self) -> str:
        shapes = {n: tuple(t.shape) for n, t in self.state_tensors().items()}
        return f"{type(self).__name__}(seen_tokens={self.seen_tokens}, states={shapes})"


class StatelessLayer(HazyCacheLayer):
    """The cache layer of a block whose sequence mixer keeps no state: it only counts positions."""


class LinearAttentionStateLayer(HazyCacheLayer):
    """Linear-attention recurrent state.

    ``kv_state`` [batch, heads, feature_map_dim, head_dim] = sum_s phi(k_s)^T v_s and
    ``k_state`` [batch, heads, feature_map_dim] = sum_s phi(k_s), both float32.
    """

    batch_states = ("kv_state", "k_state")


class SsmStateLayer(HazyCacheLayer):
    """State of a linear state-space recurrence: ``ssm_state`` [batch, state_size, channels]
    (float32; channels last, so one decode step reads and writes it coalesced).

    The mixer owns what the state means (RTF: the companion-form state in input-corrected
    coordinates, see :mod:`hazyzoo.kernels.rtf`) and updates it in place on decode steps.
    """

    batch_states = ("ssm_state",)


class MambaStateLayer(HazyCacheLayer):
    """Mamba's decoding state: ``conv_state`` [batch, d_inner, d_conv - 1] (the short
    convolution's last inputs) and ``ssm_state`` [batch, d_inner, d_state] (float32)."""

    batch_states = ("conv_state", "ssm_state")


class ConvStateLayer(HazyCacheLayer):
    """Short causal-convolution tail: ``conv_state`` [batch, channels, kernel_size - 1]."""

    batch_states = ("conv_state",)


class RingBufferLayer(HazyCacheLayer):
    """Base of the ring-buffer layers: the last ``capacity`` positions along ``time_dim`` of each
    batch state, written in place over the oldest slot.

    ``write_index`` (a one-element long tensor on the states' device) is the slot the next
    position overwrites, i.e. the oldest one; it is a counter, not a batch state.
    """

    counters = ("write_index",)
    # Dimension of each batch state that holds positions (negative: counted from the end).
    time_dims: ClassVar[dict[str, int]] = {}

    def __init__(self, capacity: int) -> None:
        super().__init__()
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = capacity

    def get_max_length(self) -> int:
        return self.capacity

    def get_max_cache_shape(self) -> int:
        return self.capacity

    def _order(self, device: torch.device) -> torch.Tensor:
        return (torch.arange(self.capacity, device=device) + self.write_index) % self.capacity

    def read_chronological(self) -> dict[str, torch.Tensor]:
        """Every batch state ordered oldest to newest along its time dimension."""
        order = self._order(self.write_index.device)
        return {
            name: value.index_select(self.time_dims[name] % value.dim(), order)
            for name, value in self.batch_state_tensors().items()
            if name in self.time_dims  # states outside the ring (LongConvLayer's tail) as they are
        }

    def store_last(self, **states: torch.Tensor) -> None:
        """Keep the last ``capacity`` positions of chronological ``states`` (left-filled with
        zeros / False when shorter) and reset the write index."""
        for name, value in states.items():
            dim = self.time_dims[name] % value.dim()
            length = value.shape[dim]
            if length >= self.capacity:
                value = value.narrow(dim, length - self.capacity, self.capacity)
            else:
                pad = [0, 0] * (value.dim() - 1 - dim) + [self.capacity - length, 0]
                value = F.pad(value, pad, value=False if value.dtype == torch.bool else 0)
            setattr(self, name, value.contiguous())
        device = next(iter(states.values())).device
        self.write_index = torch.zeros(1, dtype=torch.long, device=device)

    def write_next(self, **states: torch.Tensor) -> torch.Tensor:
        """Write one position of each state over the oldest slot, in place, and advance the ring.

        Each value has the state's shape with a time dimension of size 1 (or none for a state
        whose time dimension is its last and only non-batch one, e.g. a validity mask).
        Returns the slot written (a one-element tensor).
        """
        slot = self.write_index.clone()
        for name, value in states.items():
            buffer = getattr(self, name)
            dim = self.time_dims[name] % buffer.dim()
            if value.dim() == buffer.dim() - 1:
                value = value.unsqueeze(dim)
            buffer.index_copy_(dim, slot, value.to(buffer.dtype))
        self.write_index.add_(1).remainder_(self.capacity)
        return slot


class SlidingWindowLayer(RingBufferLayer):
    """Ring buffer of the last ``window`` rotary-embedded keys and values.

    ``keys``/``values`` [batch, heads, window, head_dim]; ``valid`` [batch, window] marks slots
    holding real (non-padding) tokens. Softmax attention does not depend on key order once rotary
    has been applied, so decoding attends over the buffer as it lies.
    """

    is_sliding = True
    batch_states = ("keys", "values", "valid")
    time_dims = {"keys": 2, "values": 2, "valid": 1}

    def __init__(self, window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        super().__init__(window)
        self.window = window

    def chronological(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The buffer ordered oldest to newest: keys, values, valid."""
        states = self.read_chronological()
        return states["keys"], states["values"], states["valid"]

    def store(self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Keep the last ``window`` positions of chronological ``keys``/``values``/``valid``."""
        self.store_last(keys=keys, values=values, valid=valid)

    def append(self, key: torch.Tensor, value: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Write one token ([batch, heads, 1, head_dim], valid [batch]) over the oldest slot, in
        place. Returns the slot index it wrote (a one-element tensor) and advances the ring."""
        return self.write_next(keys=key, values=value, valid=valid)


class InputHistoryLayer(RingBufferLayer):
    """Ring buffer of a layer's last ``capacity`` inputs: ``inputs`` [batch, channels, capacity]
    (zeros before the first token), for mixers whose decode step reads a long input history
    (Hyena and other long convolutions evaluated directly at decode time)."""

    batch_states = ("inputs",)
    time_dims = {"inputs": -1}

    def history(self) -> torch.Tensor:
        """The last ``capacity`` inputs, oldest first: [batch, channels, capacity]."""
        return self.read_chronological()["inputs"]

    def store(self, inputs: torch.Tensor) -> None:
        """Keep the last ``capacity`` positions of ``inputs`` [batch, channels, length]."""
        self.store_last(inputs=inputs)

    def append(self, inputs: torch.Tensor) -> torch.Tensor:
        """Write one position ``inputs`` [batch, channels] in place; returns the slot written."""
        return self.write_next(inputs=inputs)


class LongConvLayer(InputHistoryLayer):
    """A gated long convolution's decoding state (MAD's Hyena operators): the ring buffer
    ``inputs`` [batch, channels, capacity] of the long convolution's last ``capacity`` inputs,
    plus ``conv_state`` [batch, short_channels, short_kernel - 1], the tail of the short
    convolution before it. ``capacity`` is the filter's length, so the memory is fixed."""

    batch_states = ("inputs", "conv_state")


class FullAttentionLayer(HazyCacheLayer):
    """Key/value cache of full softmax attention: it GROWS by one position per token.

    ``keys``/``values`` [batch, heads, seen, head_dim] (rotary applied) and ``valid`` [batch,
    seen] (False for padding). Not constant in size, and not servable by CUDA-graph replay (each
    step makes new, larger tensors); ``crop`` drops the newest positions.
    """

    batch_states = ("keys", "values", "valid")
    constant_size = False
    supports_graph_replay = False

    def append(self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Add ``keys``/``values`` [batch, heads, new, head_dim] and ``valid`` [batch, new]."""
        if self.keys is None:
            self.keys, self.values, self.valid = keys, values, valid
        else:
            self.keys = torch.cat([self.keys, keys.to(self.keys.dtype)], dim=2)
            self.values = torch.cat([self.values, values.to(self.values.dtype)], dim=2)
            self.valid = torch.cat([self.valid, valid], dim=1)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove <= 0 or self.keys is None:
            return
        keep = max(0, self.keys.shape[2] - tokens_to_remove)
        self.keys, self.values = self.keys[:, :, :keep], self.values[:, :, :keep]
        self.valid = self.valid[:, :keep]
        self.seen_tokens = keep


class HazyCache(Cache):
    """The cache of a hazyzoo model: one :class:`HazyCacheLayer` per layer.

    ``model.make_cache()`` builds it (``generate`` and ``forward(use_cache=True)`` do so too).
    """

    is_hazyzoo_cache = True
    # False when the cache was built from a prompt that was not left-padded: its state then
    # holds trailing pads, and the model refuses to continue it.
    continuable = True

    def __init__(self, layers: Sequence[HazyCacheLayer]) -> None:
        layers = list(layers)
        for idx, layer in enumerate(layers):
            if not isinstance(layer, HazyCacheLayer):
                raise TypeError(
                    f"HazyCache layer {idx} must be a HazyCacheLayer, got {type(layer).__name__}"
                )
        super().__init__(layers=layers)

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

    @property
    def constant_size(self) -> bool:
        """Whether no layer grows with the sequence."""
        return all(layer.constant_size for layer in self.layers)

    @property
    def supports_graph_replay(self) -> bool:
        """Whether every layer can be served by CUDA-graph replay of a decode step."""
        return all(layer.supports_graph_replay for layer in self.layers)

    @property
    def batch_size(self) -> int:
        """Batch size of the states (-1 while no layer holds one)."""
        for layer in self.layers:
            if layer.batch_size >= 0:
                return layer.batch_size
        return -1

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor of every layer, in layer order (what a CUDA graph is tied to)."""
        return [t for layer in self.layers for t in layer.state_tensors().values()]

    def nbytes(self) -> int:
        """Bytes held by all state tensors (for memory accounting in benchmarks)."""
        return sum(layer.nbytes() for layer in self.layers)
