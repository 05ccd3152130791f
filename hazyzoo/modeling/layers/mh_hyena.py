"""MAD's ``mh-hyena``: order 2, ``inner / head_size`` heads, one long filter and skip per head
over the outer products ``k_t v_t^T``, read out by ``q_t``: a linear attention whose past is
weighted by a learned long filter (see :mod:`hazyzoo.modeling.layers.hyena`). Decoding from the
cache is the same sum in attention form, over the ring of past keys and values."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig

from hazyzoo.kernels import rtf as ops
from hazyzoo.modeling.cache import LongConvLayer
from hazyzoo.modeling.layers.hyena import (
    GatedConvBase,
    LongConv,
    cached_positions,
    make_long_filter,
    tiny_test_config,
)
from hazyzoo.modeling.layers.registry import layer_config, register_sequence_mixer

__all__ = ["MultiHeadHyenaOperator"]


@register_sequence_mixer("mh_hyena", test_config=tiny_test_config("mh-hyena"))
class MultiHeadHyenaOperator(GatedConvBase):
    """MAD's ``mh-hyena``: order 2, ``inner / head_size`` heads of ``head_size =
    hyena_num_heads`` channels, one long filter and skip per head over the outer products
    ``k_t v_t^T``, read out by ``q_t``; ``q, v, k`` are the short filter's three chunks in
    that order. Settings: those of :class:`HyenaOperator`, with ``hyena_num_heads`` the head
    size (MAD's convention).
    """

    def __init__(self, view: Any, layer_idx: int | None = None) -> None:
        dim = view.hidden_size
        self.inner = view.hyena_inner_factor * dim
        self.head_size = view.hyena_num_heads
        if self.inner % self.head_size:
            raise ValueError(
                f"mh-hyena: inner width {self.inner} is not divisible by hyena_num_heads "
                f"({self.head_size}, MAD's head size)"
            )
        self.heads = self.inner // self.head_size
        super().__init__(
            dim,
            3 * self.inner,
            view.hyena_proj_groups,
            view.hyena_short_filter_order,
            view.max_position_embeddings,
            layer_idx,
        )
        self.long_conv = LongConv(self.heads, make_long_filter(view, self.heads))
        self.out_proj = nn.Linear(self.inner, dim)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> MultiHeadHyenaOperator:
        """Build layer ``layer_idx`` from its settings (see :class:`~hazyzoo.MadConfig`)."""
        return cls(layer_config(config, layer_idx), layer_idx)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().unflatten(1, (self.heads, self.head_size))  # [B, G, hs, L]

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: LongConvLayer | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``[B, L, dim]`` -> ``[B, L, dim]`` (causal)."""
        past = cached_positions(cache_layer)
        length = hidden_states.shape[1]
        self._check_length(past, length)
        q, v, k = self._short(hidden_states, attention_mask, cache_layer).split(self.inner, 1)
        if attention_mask is not None:
            keep = attention_mask[:, None, :].to(k.dtype)
            k, v = k * keep, v * keep
        dtype = q.dtype
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        skip = self.long_conv.bias.float()
        if cache_layer is None or past == 0:
            # FFT form: the outer products as G * hs * hs channels, each head's filter shared
            kv = k[:, :, :, None] * v[:, :, None]  # [B, G, hs, hs, L]
            kernel = self.long_conv.kernel(length)  # [G, L]
            kern = kernel[:, None, None].expand(-1, self.head_size, self.head_size, -1)
            s = ops.fft_conv(kv.flatten(1, 3), kern.flatten(0, 2)).unflatten(
                1, (self.heads, self.head_size, self.head_size)
            )
            s = s + kv * skip[None, :, None, None, None]
            y = (q[:, :, :, None] * s).sum(2)  # [B, G, hs(j), L]
            if cache_layer is not None:
                cache_layer.store(torch.cat([k, v], dim=1).flatten(1, 2).detach())
        else:
            y = self._attend(q, k, v, cache_layer, skip)
        y = y.flatten(1, 2).to(dtype)  # [B, inner, L]
        return self.out_proj(y.transpose(1, 2))

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cache_layer: LongConvLayer,
        skip: torch.Tensor,
    ) -> torch.Tensor:
        """New positions given the cached ``k``/``v`` history: ``y_t = sum_s f[t - s]
        (q_t . k_s) v_s + D (q_t . k_t) v_t``, an attention with Toeplitz weights."""
        length, cap = q.shape[-1], cache_layer.capacity
        history = cache_layer.history().unflatten(1, (2 * self.heads, self.head_size))
        k_all = torch.cat([history[:, : self.heads], k], dim=-1)  # [B, G, hs, cap + L]
        v_all = torch.cat([history[:, self.heads :], v], dim=-1)
        kernel = self.long_conv.kernel(cap)  # [G, cap]
        lag = (cap + torch.arange(length, device=q.device))[:, None] - torch.arange(
            cap + length, device=q.device
        )[None]  # [L, cap + L]
        weights = kernel[:, lag.clamp(0, cap - 1)] * ((lag >= 0) & (lag < cap)).float()
        weights = weights + skip[:, None, None] * (lag == 0).float()  # [G, L, cap + L]
        scores = torch.einsum("bgit,bgis->bgts", q, k_all) * weights
        y = torch.einsum("bgts,bgjs->bgjt", scores, v_all)
        new = torch.cat([k_all, v_all], dim=1).flatten(1, 2)[..., -cap:]
        if length == 1:
            cache_layer.append(new[..., -1])
        else:
            cache_layer.store(new.detach())
        return y
