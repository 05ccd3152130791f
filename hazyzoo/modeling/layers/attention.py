"""Softmax attention with rotary embeddings: exact blockwise kernels, and the full-attention mixer.

:class:`RotaryAttention` holds what full and sliding-window attention share (projections, rotary,
attention weights for ``output_attentions``); :class:`FullAttention` is causal attention over
every past token, whose cache (:class:`~hazyzoo.modeling.cache.FullAttentionLayer`) grows with
the sequence. :class:`~hazyzoo.modeling.layers.sliding_window.SlidingWindowAttention` keeps a
fixed window instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.modeling.cache import FullAttentionLayer
from hazyzoo.modeling.layers.protocol import MixerOutput
from hazyzoo.modeling.layers.registry import register_sequence_mixer
from hazyzoo.modeling.layers.rotary import apply_rotary, rotary_cos_sin


def _visible(
    past: int, start: int, end: int, k_lo: int, k_hi: int, window: int | None, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal (and window) visibility [Lq, Lk] of queries ``past+start..past+end`` over keys
    ``k_lo..k_hi``, and the query-is-key diagonal."""
    q_idx = torch.arange(past + start, past + end, device=device)[:, None]
    k_idx = torch.arange(k_lo, k_hi, device=device)[None, :]
    distance = q_idx - k_idx
    visible = distance >= 0
    if window is not None:
        visible = visible & (distance < window)
    return visible, distance == 0


def windowed_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_valid: torch.Tensor,
    window: int | None,
    query_block_size: int = 512,
) -> torch.Tensor:
    """Exact causal softmax attention, optionally restricted to a sliding window.

    ``query`` [B, H, L, D] are the last L positions of ``keys``/``values`` [B, H, P + L, D]
    (the first P are cached past positions). Query ``i`` (absolute index ``P + i``) sees key
    ``j`` iff ``0 <= P + i - j`` (and ``< window`` when a window is given) and
    ``key_valid[:, j]``; every query always sees itself, so padding rows never become empty
    (their outputs are ignored downstream). Queries are processed in blocks so that memory stays
    O(L * (window + block)) with a window and O(block * (P + L)) without. The dtype of the
    inputs is kept (float32 stays float32).
    """
    length, total = query.shape[2], keys.shape[2]
    past = total - length
    outputs = []
    for start in range(0, length, query_block_size):
        end = min(start + query_block_size, length)
        k_lo = 0 if window is None else max(0, past + start - window + 1)
        k_hi = past + end
        visible, diagonal = _visible(past, start, end, k_lo, k_hi, window, query.device)
        mask = (visible[None] & key_valid[:, None, k_lo:k_hi]) | diagonal[None]
        outputs.append(
            F.scaled_dot_product_attention(
                query[:, :, start:end],
                keys[:, :, k_lo:k_hi],
                values[:, :, k_lo:k_hi],
                attn_mask=mask[:, None],
            )
        )
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


def attention_weights(
    query: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor, window: int | None
) -> torch.Tensor:
    """The softmax weights [B, H, L, L] that :func:`windowed_attention` applies (no past), for
    ``output_attentions``: zero outside the causal window and on padding keys."""
    length = query.shape[2]
    visible, diagonal = _visible(0, 0, length, 0, length, window, query.device)
    mask = (visible[None] & key_valid[:, None, :]) | diagonal[None]
    scores = (query.float() @ keys.float().transpose(-1, -2)) / math.sqrt(query.shape[-1])
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    return scores.softmax(-1).to(query.dtype)


class RotaryAttention(nn.Module):
    """Multi-head softmax attention with rotary embeddings over all of ``head_dim``
    (non-interleaved halves): the projections and helpers full and windowed attention share.
    Computation keeps the input dtype: float32 models attend in float32."""

    # returns attention weights when asked (output_attentions=True)
    has_attention_weights = True

    window: int | None = None

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        rope_theta: float = 10000.0,
        layer_idx: int | None = None,
        query_block_size: int = 512,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for rotary embeddings")
        self.rope_theta = rope_theta
        self.layer_idx = layer_idx
        self.query_block_size = query_block_size
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def _prepare(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        cache_layer: object | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """Rotary-embedded q, k, v [batch, heads, seq, head_dim], the validity of the new keys
        [batch, seq] and whether the cache layer holds past positions."""
        batch, length, _ = hidden_states.shape
        has_past = cache_layer is not None and cache_layer.has_state
        shape = (batch, length, self.num_heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        if position_ids is None:
            offset = cache_layer.seen_tokens if has_past else 0
            position_ids = torch.arange(offset, offset + length, device=q.device)[None]
            position_ids = position_ids.expand(batch, -1)
        cos, sin = rotary_cos_sin(position_ids, self.head_dim, self.rope_theta)
        if attention_mask is None:
            valid = torch.ones(batch, length, dtype=torch.bool, device=q.device)
        else:
            valid = attention_mask.bool()
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, valid, has_past

    def _finish(
        self,
        out: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        valid: torch.Tensor,
        has_past: bool,
        output_attentions: bool,
    ) -> torch.Tensor | MixerOutput:
        batch, _, length, _ = out.shape
        out = self.o_proj(out.transpose(1, 2).reshape(batch, length, self.hidden_size))
        if not output_attentions:
            return out
        if has_past:
            raise ValueError(
                "output_attentions=True needs the whole sequence in one call; it is not "
                "available when continuing from a cache (pass use_cache=False)"
            )
        return MixerOutput(out, attentions=attention_weights(q, k, valid, self.window))


@register_sequence_mixer("attention", test_config=BasedConfig.tiny)
class FullAttention(RotaryAttention):
    """Causal multi-head softmax attention over every past token, with rotary embeddings.

    Its cache is a growing key/value list (:class:`~hazyzoo.modeling.cache.FullAttentionLayer`),
    so a model with such layers is not constant-size and does not use CUDA-graph replay. Config
    fields read by :meth:`from_config`: ``hidden_size``, ``num_attention_heads``, ``rope_theta``.
    """

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> FullAttention:
        """Build layer ``layer_idx`` of a model with ``config``."""
        return cls(config.hidden_size, config.num_attention_heads, config.rope_theta, layer_idx)

    def make_cache_layer(self) -> FullAttentionLayer:
        """A fresh (growing) key/value cache layer."""
        return FullAttentionLayer()

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: FullAttentionLayer | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | MixerOutput:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``position_ids`` [batch, seq] for rotary."""
        q, k, v, valid, has_past = self._prepare(
            hidden_states, position_ids, attention_mask, cache_layer
        )
        new_valid = valid
        if has_past:
            k_all = torch.cat([cache_layer.keys, k], dim=2)
            v_all = torch.cat([cache_layer.values, v], dim=2)
            valid_all = torch.cat([cache_layer.valid, valid], dim=1)
        else:
            k_all, v_all, valid_all = k, v, valid
        if not has_past and attention_mask is None:
            # no padding, no past: SDPA's own causal mask (flash attention on CUDA)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = windowed_attention(q, k_all, v_all, valid_all, None, self.query_block_size)
        if cache_layer is not None:
            cache_layer.append(k.detach(), v.detach(), new_valid)
        return self._finish(out, q, k, valid, has_past, output_attentions)
