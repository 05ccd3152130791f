"""Taylor-feature-map linear attention (the global mixer of BASED)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.kernels.linear_attention import taylor_attention_step, taylor_linear_attention
from hazyzoo.modeling.cache import LinearAttentionStateLayer
from hazyzoo.modeling.layers.protocol import MixerOutput
from hazyzoo.modeling.layers.registry import register_sequence_mixer

# The dtypes a linear-attention state matrix may be kept in (config names -> torch dtypes).
LINEAR_ATTENTION_STATE_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def state_dtype_of(config: PreTrainedConfig) -> torch.dtype:
    """The torch dtype named by ``config.linear_attention_state_dtype`` (float32 when the
    config predates the field)."""
    name = getattr(config, "linear_attention_state_dtype", None) or "float32"
    return LINEAR_ATTENTION_STATE_DTYPES[name]


@register_sequence_mixer("linear_attention", test_config=BasedConfig.tiny)
class TaylorLinearAttention(nn.Module):
    """Causal linear attention with the 2nd-order Taylor feature map of ``exp``.

    With ``phi(x) = [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))]`` (d = ``feature_dim``),
    ``phi(q).phi(k) = 1 + s + s^2 / 2`` with ``s = q.k / sqrt(d)``, and

        y_t = sum_{s<=t} phi(q_t).phi(k_s) v_s / (sum_{s<=t} phi(q_t).phi(k_s) + eps).

    Queries and keys have ``feature_dim`` entries per head, values ``hidden_size // num_heads``.
    Prefill and chunks continuing from a cache use the parallel op (which reads the cached state
    as its initial state and returns the new one); single-token decoding updates the state
    ``sum phi(k)^T v``, ``sum phi(k)`` (fixed size) in place. Padding keys (mask 0)
    contribute nothing. Config fields read by :meth:`from_config`: ``hidden_size``,
    ``num_attention_heads``, ``feature_dim``, ``linear_attention_eps``,
    ``linear_attention_state_dtype``.

    ``state_dtype`` is the dtype the cache keeps ``sum phi(k)^T v`` in: float32 (the default,
    exact up to float32 summation), or bfloat16 / float16 to halve the bytes a decode step
    reads and writes at large batch. Every update is computed in float32 and rounded once when
    stored; the normaliser ``sum phi(k)`` (1% of the state, and a token count in its first
    entry that half precision could not hold past a few hundred tokens) stays float32.
    Prefill and chunks continuing a cache compute in float32 from the (upcast) state.
    """

    # returns attention weights when asked (output_attentions=True)
    has_attention_weights = True

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        feature_dim: int = 16,
        eps: float = 1e-12,
        layer_idx: int | None = None,
        state_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if state_dtype not in LINEAR_ATTENTION_STATE_DTYPES.values():
            raise ValueError(
                f"state_dtype must be one of {sorted(LINEAR_ATTENTION_STATE_DTYPES)} as a "
                f"torch.dtype, got {state_dtype!r}"
            )
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
        self.state_dtype = state_dtype
        self.q_proj = nn.Linear(hidden_size, num_heads * feature_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_heads * feature_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> TaylorLinearAttention:
        """Build layer ``layer_idx`` of a model with ``config``."""
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            config.feature_dim,
            config.linear_attention_eps,
            layer_idx,
            state_dtype_of(config),
        )

    def store_state(
        self,
        cache_layer: LinearAttentionStateLayer,
        final: tuple[torch.Tensor, torch.Tensor],
        in_place: bool,
    ) -> None:
        """Put a prefill's float32 final state into ``cache_layer`` (``kv_state`` in
        :attr:`state_dtype`). ``in_place`` (continuing a cache) copies into the existing
        tensors, so a captured CUDA graph keeps reading the same buffers."""
        kv_state, k_state = (s.detach() for s in final)
        if in_place:
            cache_layer.kv_state.copy_(kv_state)
            cache_layer.k_state.copy_(k_state)
        else:
            cache_layer.kv_state = kv_state.to(self.state_dtype)
            cache_layer.k_state = k_state

    def make_cache_layer(self) -> LinearAttentionStateLayer:
        """A fresh cache layer for this mixer."""
        return LinearAttentionStateLayer()

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: LinearAttentionStateLayer | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | MixerOutput:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``attention_mask`` [batch, seq] (1 = token)."""
        batch, length, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, length, self.num_heads, self.feature_dim)
        k = self.k_proj(hidden_states).view(batch, length, self.num_heads, self.feature_dim)
        v = self.v_proj(hidden_states).view(batch, length, self.num_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mask = attention_mask
        has_past = cache_layer is not None and cache_layer.has_state
        if has_past and length == 1:
            o, z = taylor_attention_step(
                q[:, :, 0],
                k[:, :, 0],
                v[:, :, 0],
                cache_layer.kv_state,
                cache_layer.k_state,
                key_mask=None if mask is None else mask[:, 0],
            )
            o, z = o[:, :, None], z[:, :, None]
        else:
            initial = None
            if has_past:  # the kernels read a float32 state
                initial = (cache_layer.kv_state.float(), cache_layer.k_state)
            o, z, final = taylor_linear_attention(
                q,
                k,
                v,
                key_mask=mask,
                initial_state=initial,
                output_final_state=cache_layer is not None,
            )
            if cache_layer is not None:
                self.store_state(cache_layer, final, in_place=has_past)
        y = (o / (z[..., None] + self.eps)).to(v.dtype)
        y = self.o_proj(y.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))
        if not output_attentions:
            return y
        if has_past:
            raise ValueError(
                "output_attentions=True needs the whole sequence in one call; it is not "
                "available when continuing from a cache (pass use_cache=False)"
            )
        return MixerOutput(y, attentions=self._attention_weights(q, k, mask, z))

    def _attention_weights(
        self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, z: torch.Tensor
    ) -> torch.Tensor:
        """The normalised weights ``phi(q_t).phi(k_s) / (z_t + eps)`` [B, H, L, L] (causal, zero
        on padding keys): what the output averages the values with."""
        length = q.shape[2]
        s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(self.feature_dim)
        a = (1.0 + s + 0.5 * s * s) * torch.ones(length, length, device=q.device).tril()
        if mask is not None:
            a = a * mask[:, None, None, :].to(a.dtype)
        return (a / (z[..., None] + self.eps)).to(q.dtype)
