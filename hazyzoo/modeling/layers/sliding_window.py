"""Sliding-window softmax attention with rotary embeddings (the local mixer of BASED)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from transformers import PreTrainedConfig

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.modeling.cache import SlidingWindowLayer
from hazyzoo.modeling.layers.attention import RotaryAttention, windowed_attention
from hazyzoo.modeling.layers.protocol import MixerOutput
from hazyzoo.modeling.layers.registry import register_sequence_mixer


@register_sequence_mixer("sliding_window_attention", test_config=BasedConfig.tiny)
class SlidingWindowAttention(RotaryAttention):
    """Multi-head softmax attention over the last ``window`` tokens (itself included).

    The cache is a ring buffer of ``window`` keys and values, so decoding memory is constant in
    the sequence length. Config fields read by :meth:`from_config`: ``hidden_size``,
    ``sliding_window_num_heads``, ``sliding_window``, ``rope_theta``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        window: int,
        rope_theta: float = 10000.0,
        layer_idx: int | None = None,
        query_block_size: int = 512,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        super().__init__(hidden_size, num_heads, rope_theta, layer_idx, query_block_size)
        self.window = window

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> SlidingWindowAttention:
        """Build layer ``layer_idx`` of a model with ``config``."""
        return cls(
            config.hidden_size,
            config.sliding_window_num_heads,
            config.sliding_window,
            config.rope_theta,
            layer_idx,
        )

    def make_cache_layer(self) -> SlidingWindowLayer:
        """A fresh ring-buffer cache layer of this mixer's window."""
        return SlidingWindowLayer(self.window)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: SlidingWindowLayer | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | MixerOutput:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``position_ids`` [batch, seq] for rotary."""
        length = hidden_states.shape[1]
        q, k, v, valid, has_past = self._prepare(
            hidden_states, position_ids, attention_mask, cache_layer
        )
        new_k, new_valid = k, valid
        if has_past and length == 1:
            slot = cache_layer.append(k, v, valid[:, 0])
            mask = cache_layer.valid.index_fill(1, slot, True)  # a query always sees itself
            out = F.scaled_dot_product_attention(
                q, cache_layer.keys, cache_layer.values, attn_mask=mask[:, None, None, :]
            )
        else:
            k_all, v_all, valid_all = k, v, valid
            if has_past:
                past_k, past_v, past_valid = cache_layer.chronological()
                k_all = torch.cat([past_k, k], dim=2)
                v_all = torch.cat([past_v, v], dim=2)
                valid_all = torch.cat([past_valid, valid], dim=1)
            out = windowed_attention(q, k_all, v_all, valid_all, self.window, self.query_block_size)
            if cache_layer is not None:
                cache_layer.store(k_all.detach(), v_all.detach(), valid_all)
        return self._finish(out, q, new_k, new_valid, has_past, output_attentions)
