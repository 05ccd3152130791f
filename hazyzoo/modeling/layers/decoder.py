"""The pre-norm block of the shared stack: a sequence mixer and/or a channel mixer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.modeling_layers import GradientCheckpointingLayer

from hazyzoo.modeling.cache import HazyCacheLayer, StatelessLayer
from hazyzoo.modeling.layers.norm import RMSNorm, build_norm
from hazyzoo.modeling.layers.protocol import split_mixer_output
from hazyzoo.modeling.layers.registry import build_channel_mixer, build_sequence_mixer


class DecoderLayer(GradientCheckpointingLayer):
    """``h = h + mixer(norm(h)); h = h + mlp(norm(h))``, either part optional.

    A block holds a sequence mixer (``mixer``), a channel mixer (``mlp``), or both, as
    mamba's blocks do; a missing part has no norm either. The residual stream keeps the dtype it
    arrives in (float32 when the model keeps its residual in float32), and each branch is cast
    back to it. Keyword arguments reach both mixers. Returns ``(hidden_states, aux_loss,
    attentions)``; the last two are None when no mixer produced them. Gradient checkpointing
    comes from transformers' ``GradientCheckpointingLayer``.
    """

    def __init__(
        self,
        hidden_size: int,
        mixer: nn.Module | None,
        mlp: nn.Module | None,
        make_norm: Callable[[], nn.Module] | None = None,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        if mixer is None and mlp is None:
            raise ValueError(f"layer {layer_idx} has neither a sequence mixer nor a channel mixer")
        make_norm = make_norm or (lambda: RMSNorm(hidden_size))
        self.layer_idx = layer_idx
        self.input_layernorm = make_norm() if mixer is not None else None
        self.mixer = mixer
        self.post_mixer_layernorm = make_norm() if mlp is not None else None
        self.mlp = mlp

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> DecoderLayer:
        """Block ``layer_idx``: mixer ``config.mixer_types[i]``, channel mixer
        ``config.channel_mixer_types[i]`` and norms of kind ``config.norm_type``."""
        mixer = build_sequence_mixer(config, layer_idx, config.mixer_types[layer_idx])
        mlp = build_channel_mixer(config, layer_idx, config.channel_mixer_types[layer_idx])
        return cls(
            config.hidden_size,
            mixer,
            mlp,
            make_norm=lambda: build_norm(config),
            layer_idx=layer_idx,
        )

    def make_cache_layer(self) -> HazyCacheLayer:
        """The mixer's cache layer (a position counter when the block has no sequence mixer)."""
        return self.mixer.make_cache_layer() if self.mixer is not None else StatelessLayer()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: HazyCacheLayer | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        aux, attentions = None, None
        if self.mixer is not None:
            out = self.mixer(
                self.input_layernorm(hidden_states),
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache_layer=cache_layer,
                **kwargs,
            )
            mixed, aux, attentions = split_mixer_output(out)
            hidden_states = hidden_states + mixed.to(hidden_states.dtype)
        if self.mlp is not None:
            out = self.mlp(
                self.post_mixer_layernorm(hidden_states), attention_mask=attention_mask, **kwargs
            )
            mixed, mlp_aux, _ = split_mixer_output(out)
            hidden_states = hidden_states + mixed.to(hidden_states.dtype)
            if mlp_aux is not None:
                aux = mlp_aux if aux is None else aux + mlp_aux
        return hidden_states, aux, attentions
