"""Taylor-feature-map linear attention (the global mixer of BASED)."""

from __future__ import annotations

import torch
from torch import nn

from hazyzoo.kernels.linear_attention import (
    taylor_attention_parallel,
    taylor_attention_state,
    taylor_attention_step,
    taylor_feature_map,
)
from hazyzoo.modeling.cache import LinearAttentionStateLayer


class TaylorLinearAttention(nn.Module):
    """Causal linear attention with the 2nd-order Taylor feature map of ``exp``.

    With ``phi(x) = [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))]`` (d = ``feature_dim``),
    ``phi(q).phi(k) = 1 + s + s^2 / 2`` with ``s = q.k / sqrt(d)``, and

        y_t = sum_{s<=t} phi(q_t).phi(k_s) v_s / (sum_{s<=t} phi(q_t).phi(k_s) + eps).

    Queries and keys have ``feature_dim`` entries per head, values ``hidden_size // num_heads``.
    Prefill uses the parallel kernel (never materialising phi in memory on GPU); decoding keeps
    the state ``sum phi(k)^T v`` and ``sum phi(k)`` in float32, of fixed size. Padding keys
    (mask 0) contribute nothing.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        feature_dim: int = 16,
        eps: float = 1e-12,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.feature_dim = feature_dim
        self.head_dim = hidden_size // num_heads
        self.eps = eps
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, num_heads * feature_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_heads * feature_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)

    def make_cache_layer(self) -> LinearAttentionStateLayer:
        """A fresh cache layer for this mixer."""
        return LinearAttentionStateLayer()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: LinearAttentionStateLayer | None = None,
    ) -> torch.Tensor:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``attention_mask`` [batch, seq] (1 = token)."""
        batch, length, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, length, self.num_heads, self.feature_dim)
        k = self.k_proj(hidden_states).view(batch, length, self.num_heads, self.feature_dim)
        v = self.v_proj(hidden_states).view(batch, length, self.num_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mask = attention_mask
        if mask is not None and bool(mask.all()):
            mask = None

        has_past = cache_layer is not None and cache_layer.has_state
        if has_past and length == 1 and mask is None:
            o, z = taylor_attention_step(
                q[:, :, 0], k[:, :, 0], v[:, :, 0], cache_layer.kv_state, cache_layer.k_state
            )
            o, z = o[:, :, None], z[:, :, None]
        else:
            o, z = taylor_attention_parallel(q, k, v, key_mask=mask)
            if has_past:
                phi_q = taylor_feature_map(q.float())
                o = o + phi_q @ cache_layer.kv_state
                z = z + (phi_q @ cache_layer.k_state[..., None])[..., 0]
            if cache_layer is not None:
                with torch.no_grad():
                    kv_state, k_state = taylor_attention_state(k, v, key_mask=mask)
                if has_past:
                    cache_layer.kv_state.add_(kv_state)
                    cache_layer.k_state.add_(k_state)
                else:
                    cache_layer.kv_state, cache_layer.k_state = kv_state, k_state
        y = (o / (z[..., None] + self.eps)).to(v.dtype)
        y = y.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(y)
