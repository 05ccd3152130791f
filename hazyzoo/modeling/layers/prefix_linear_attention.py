"""Prefix linear attention (the global mixer of JRT-RNN): Taylor linear attention plus a
non-causal read of the prefix through encoder key/value projections."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig

from hazyzoo.configuration.configuration_jrt import JrtConfig
from hazyzoo.kernels.linear_attention import taylor_prefix_linear_attention
from hazyzoo.modeling.cache import LinearAttentionStateLayer
from hazyzoo.modeling.layers.linear_attention import TaylorLinearAttention, state_dtype_of
from hazyzoo.modeling.layers.protocol import MixerOutput
from hazyzoo.modeling.layers.registry import register_sequence_mixer


@register_sequence_mixer("prefix_linear_attention", test_config=JrtConfig.tiny)
class PrefixLinearAttention(TaylorLinearAttention):
    """JRT-RNN's mixer: for every position ``t`` of the first call on an empty cache,

        y_t = phi(q_t).(S_t + S_enc) / (phi(q_t).(z_t + z_enc) + eps),

    where ``S_t, z_t`` are the causal Taylor linear-attention sums over ``s <= t`` (as in
    :class:`TaylorLinearAttention`) and ``S_enc = sum_{s in prefix} phi(ke_s) ve_s^T``,
    ``z_enc = sum phi(ke_s)`` come from the encoder projections ``k_enc_proj``/``v_enc_proj``
    applied to the prefix: the first ``enc_length`` tokens (each row's first ``enc_length``
    real tokens in ``"exact"`` mask semantics; the first ``min(enc_length, L)`` positions in
    ``"reference"`` semantics). Positions inside the prefix therefore see later prefix tokens;
    positions after it never see the future. The prefix state joins the recurrent state once,
    so later calls on the cache (decode steps, more chunks) are plain causal linear attention
    with the same fixed-size state.

    The prefix must arrive in the first call on a cache (:attr:`noncausal_prefix_length` tells
    the stack and ``generate`` how long it is). Config fields read by :meth:`from_config`:
    BASED's linear-attention fields (``linear_attention_state_dtype`` included),
    ``enc_length`` and ``mask_semantics``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        feature_dim: int = 16,
        eps: float = 1e-12,
        enc_length: int = 1024,
        mask_semantics: str = "exact",
        layer_idx: int | None = None,
        state_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(hidden_size, num_heads, feature_dim, eps, layer_idx, state_dtype)
        if mask_semantics not in ("exact", "reference"):
            raise ValueError(
                f"mask_semantics must be 'exact' or 'reference', got {mask_semantics!r}"
            )
        if isinstance(enc_length, bool) or not isinstance(enc_length, int) or enc_length < 1:
            raise ValueError(f"enc_length must be an integer >= 1, got {enc_length!r}")
        self.enc_length = enc_length
        self.mask_semantics = mask_semantics
        self.k_enc_proj = nn.Linear(hidden_size, num_heads * feature_dim, bias=False)
        self.v_enc_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> PrefixLinearAttention:
        """Build layer ``layer_idx`` of a model with ``config``."""
        return cls(
            config.hidden_size,
            config.num_attention_heads,
            config.feature_dim,
            config.linear_attention_eps,
            config.enc_length,
            config.mask_semantics,
            layer_idx,
            state_dtype_of(config),
        )

    @property
    def noncausal_prefix_length(self) -> int:
        """How many leading (real) tokens this mixer reads non-causally: they must all be in
        the first call on a cache."""
        return self.enc_length

    def make_cache_layer(self) -> LinearAttentionStateLayer:
        """A fresh cache layer: the linear-attention state (the prefix state joins it)."""
        return LinearAttentionStateLayer()

    def _heads(self, x: torch.Tensor, width: int) -> torch.Tensor:
        """[B, L, H * width] -> [B, H, L, width]."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, width).transpose(1, 2)

    def _prefix_rows(
        self, attention_mask: torch.Tensor | None, length: int
    ) -> tuple[int, torch.Tensor | None]:
        """Exact semantics: how many leading positions hold some row's prefix, and which of
        them are prefix tokens (each row's first ``enc_length`` real tokens)."""
        if attention_mask is None:
            return min(self.enc_length, length), None
        real = attention_mask.bool()
        in_prefix = real & (real.long().cumsum(-1) <= self.enc_length)
        if torch.compiler.is_compiling():
            cut = length  # no data-dependent shape under torch.compile
        else:
            used = in_prefix.any(0).nonzero()
            cut = int(used[-1]) + 1 if used.numel() else 0
        return cut, in_prefix[:, :cut]

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: LinearAttentionStateLayer | None = None,
        output_attentions: bool = False,
        reference_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | MixerOutput:
        """Mix ``hidden_states`` [batch, seq, hidden].

        ``attention_mask`` [batch, seq] (1 = token) in exact semantics; in reference semantics
        the model passes the mask as ``reference_mask`` instead (the other mixers must not see
        it there). A call continuing a cache that already holds the prefix is causal.
        """
        if cache_layer is not None and cache_layer.has_state:
            return super().forward(
                hidden_states,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache_layer=cache_layer,
                output_attentions=output_attentions,
            )
        batch, length, _ = hidden_states.shape
        q = self._heads(self.q_proj(hidden_states), self.feature_dim)
        k = self._heads(self.k_proj(hidden_states), self.feature_dim)
        v = self._heads(self.v_proj(hidden_states), self.head_dim)
        if self.mask_semantics == "reference":
            cut, enc_mask, key_mask = min(self.enc_length, length), None, None
            x_enc = hidden_states[:, :cut]
            k_enc = self._heads(self.k_enc_proj(x_enc), self.feature_dim)
            v_enc = self._heads(self.v_enc_proj(x_enc), self.head_dim)
            if reference_mask is not None and 1 < length <= self.enc_length:
                # The released code zeroes the projected keys of pads (phi(0) = e_0, so each
                # pad still adds 1 to the normaliser and its value to the sums).
                keep = reference_mask.to(k.dtype)[:, None, :, None]
                k, k_enc = k * keep, k_enc * keep[:, :, :cut]
        else:
            cut, enc_mask = self._prefix_rows(attention_mask, length)
            key_mask = attention_mask
            x_enc = hidden_states[:, :cut]
            k_enc = self._heads(self.k_enc_proj(x_enc), self.feature_dim)
            v_enc = self._heads(self.v_enc_proj(x_enc), self.head_dim)
        o, z, final = taylor_prefix_linear_attention(
            q,
            k,
            v,
            k_enc,
            v_enc,
            key_mask=key_mask,
            enc_mask=enc_mask,
            output_final_state=cache_layer is not None,
        )
        if cache_layer is not None:
            self.store_state(cache_layer, final, in_place=False)
        y = (o / (z[..., None] + self.eps)).to(v.dtype)
        y = self.o_proj(y.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))
        if not output_attentions:
            return y
        weights = self._prefix_attention_weights(q, k, k_enc, key_mask, enc_mask, z)
        return MixerOutput(y, attentions=weights)

    def _prefix_attention_weights(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        k_enc: torch.Tensor,
        key_mask: torch.Tensor | None,
        enc_mask: torch.Tensor | None,
        z: torch.Tensor,
    ) -> torch.Tensor:
        """The normalised weights [B, H, L, L] the output averages the values with: the causal
        weights plus, on the prefix key positions, ``phi(q_t).phi(ke_s)`` (any t)."""
        causal = self._attention_weights(q, k, key_mask, z).float()
        s = (q.float() @ k_enc.float().transpose(-1, -2)) / math.sqrt(self.feature_dim)
        a = 1.0 + s + 0.5 * s * s
        if enc_mask is not None:
            a = a * enc_mask[:, None, None, :].to(a.dtype)
        prefix = a / (z[..., None] + self.eps)
        cut = k_enc.shape[2]
        weights = torch.cat([causal[..., :cut] + prefix, causal[..., cut:]], dim=-1)
        return weights.to(q.dtype)
