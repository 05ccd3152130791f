"""The pre-norm decoder block every hazyzoo decoder stack is made of."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from hazyzoo.modeling.cache import HazyCacheLayer
from hazyzoo.modeling.layers.norm import RMSNorm


class DecoderLayer(GradientCheckpointingLayer):
    """``h = h + mixer(norm(h)); h = h + mlp(norm(h))`` with any sequence mixer.

    The mixer takes ``(hidden_states, attention_mask, position_ids, cache_layer)`` and returns a
    tensor of the same shape. The residual stream keeps the dtype it arrives in (float32 when the
    model keeps its residual in float32), and each branch is cast back to it.
    Gradient checkpointing comes from transformers' ``GradientCheckpointingLayer``.
    """

    def __init__(
        self,
        hidden_size: int,
        mixer: nn.Module,
        mlp: nn.Module,
        rms_norm_eps: float = 1e-5,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSNorm(hidden_size, eps=rms_norm_eps)
        self.mixer = mixer
        self.post_mixer_layernorm = RMSNorm(hidden_size, eps=rms_norm_eps)
        self.mlp = mlp

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: HazyCacheLayer | None = None,
    ) -> torch.Tensor:
        mixed = self.mixer(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache_layer=cache_layer,
        )
        hidden_states = hidden_states + mixed.to(hidden_states.dtype)
        out = self.mlp(self.post_mixer_layernorm(hidden_states))
        return hidden_states + out.to(hidden_states.dtype)
