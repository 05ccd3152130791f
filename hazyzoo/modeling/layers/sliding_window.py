"""Sliding-window softmax attention with rotary embeddings (the local mixer of BASED)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hazyzoo.modeling.cache import SlidingWindowLayer
from hazyzoo.modeling.layers.rotary import apply_rotary, rotary_cos_sin


def windowed_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_valid: torch.Tensor,
    window: int,
    query_block_size: int = 512,
) -> torch.Tensor:
    """Exact causal sliding-window softmax attention.

    ``query`` [B, H, L, D] are the last L positions of ``keys``/``values`` [B, H, P + L, D]
    (the first P are cached past positions). Query ``i`` (absolute index ``P + i``) sees key
    ``j`` iff ``0 <= P + i - j < window`` and ``key_valid[:, j]``; every query always sees
    itself, so padding rows never become empty (their outputs are ignored downstream).
    Long sequences are processed in query blocks so that memory stays O(L * (window + block)).
    The dtype of the inputs is kept (float32 stays float32).
    """
    length, total = query.shape[2], keys.shape[2]
    past = total - length
    device = query.device
    outputs = []
    for start in range(0, length, query_block_size):
        end = min(start + query_block_size, length)
        k_lo = max(0, past + start - window + 1)
        k_hi = past + end
        q_idx = torch.arange(past + start, past + end, device=device)[:, None]
        k_idx = torch.arange(k_lo, k_hi, device=device)[None, :]
        distance = q_idx - k_idx
        visible = (distance >= 0) & (distance < window)  # [Lq, Lk]
        mask = visible[None] & key_valid[:, None, k_lo:k_hi]  # [B, Lq, Lk]
        mask = mask | (distance == 0)[None]
        outputs.append(
            F.scaled_dot_product_attention(
                query[:, :, start:end],
                keys[:, :, k_lo:k_hi],
                values[:, :, k_lo:k_hi],
                attn_mask=mask[:, None],
            )
        )
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


class SlidingWindowAttention(nn.Module):
    """Multi-head softmax attention over the last ``window`` tokens (itself included).

    Rotary embeddings rotate all of ``head_dim`` (non-interleaved halves). The cache is a ring
    buffer of ``window`` keys and values, so decoding memory is constant in the sequence length.
    Computation keeps the input dtype: float32 models attend in float32.
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
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.window = window
        self.rope_theta = rope_theta
        self.layer_idx = layer_idx
        self.query_block_size = query_block_size
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def make_cache_layer(self) -> SlidingWindowLayer:
        """A fresh ring-buffer cache layer of this mixer's window."""
        return SlidingWindowLayer(self.window)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: SlidingWindowLayer | None = None,
    ) -> torch.Tensor:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``position_ids`` [batch, seq] for rotary."""
        batch, length, _ = hidden_states.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        has_past = cache_layer is not None and cache_layer.has_state
        if position_ids is None:
            offset = cache_layer.seen_tokens if has_past else 0
            position_ids = torch.arange(offset, offset + length, device=q.device)[None]
            position_ids = position_ids.expand(batch, -1)
        cos, sin = rotary_cos_sin(position_ids, self.head_dim, self.rope_theta)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if attention_mask is None:
            valid = torch.ones(batch, length, dtype=torch.bool, device=q.device)
        else:
            valid = attention_mask.bool()

        if has_past and length == 1:
            slot = cache_layer.append(k, v, valid[:, 0])
            mask = cache_layer.valid.index_fill(1, slot, True)  # a query always sees itself
            out = F.scaled_dot_product_attention(
                q, cache_layer.keys, cache_layer.values, attn_mask=mask[:, None, None, :]
            )
        else:
            if has_past:
                past_k, past_v, past_valid = cache_layer.chronological()
                k = torch.cat([past_k, k], dim=2)
                v = torch.cat([past_v, v], dim=2)
                valid = torch.cat([past_valid, valid], dim=1)
            out = windowed_attention(q, k, v, valid, self.window, self.query_block_size)
            if cache_layer is not None:
                cache_layer.store(k.detach(), v.detach(), valid)
        out = out.transpose(1, 2).reshape(batch, length, self.hidden_size)
        return self.o_proj(out)
