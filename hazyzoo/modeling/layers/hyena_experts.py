"""MAD's ``hyena-experts``: the order-2 Hyena operator over ``expert_size * num_experts``
channels (no tiling), whose output is mixed over experts by MAD's top-k router before
``out_proj`` (see :mod:`hazyzoo.modeling.layers.hyena` for the operator and its cache)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig

from hazyzoo.modeling.cache import LongConvLayer
from hazyzoo.modeling.layers.hyena import (
    GatedConvBase,
    LongConv,
    make_long_filter,
    tiny_test_config,
)
from hazyzoo.modeling.layers.mad_moe import mad_topk_gate
from hazyzoo.modeling.layers.registry import layer_config, register_sequence_mixer

__all__ = ["HyenaExpertsOperator"]


@register_sequence_mixer("hyena_experts", test_config=tiny_test_config("hyena-experts"))
class HyenaExpertsOperator(GatedConvBase):
    """MAD's ``hyena-experts``: the order-2 operator over ``expert_size * num_experts``
    channels (channel ``num_experts * i + e`` is channel i of expert e), mixed over experts by
    MAD's top-k gate of ``router(u)`` (:func:`mad_topk_gate`), then ``out_proj``.

    Settings: ``hyena_expert_size``, ``num_experts``, ``num_experts_per_tok``,
    ``hyena_short_filter_order`` and the filter settings of :class:`HyenaOperator`.
    """

    def __init__(self, view: Any, layer_idx: int | None = None) -> None:
        dim = view.hidden_size
        self.expert_size, self.num_experts = view.hyena_expert_size, view.num_experts
        self.top_k = view.num_experts_per_tok
        self.inner = self.expert_size * self.num_experts
        super().__init__(
            dim,
            3 * self.inner,
            1,
            view.hyena_short_filter_order,
            view.max_position_embeddings,
            layer_idx,
        )
        self.long_conv = LongConv(self.inner, make_long_filter(view, self.inner))
        self.router = nn.Linear(dim, self.num_experts)
        self.out_proj = nn.Linear(self.expert_size, dim)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> HyenaExpertsOperator:
        """Build layer ``layer_idx`` from its settings (see :class:`~hazyzoo.MadConfig`)."""
        return cls(layer_config(config, layer_idx), layer_idx)

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
        y = self._order2(hidden_states, attention_mask, cache_layer)
        y = y.transpose(1, 2).unflatten(-1, (self.expert_size, self.num_experts))
        gate = mad_topk_gate(self.router(hidden_states), self.top_k)  # [B, L, E]
        return self.out_proj((y * gate[..., None, :].to(y.dtype)).sum(-1))
