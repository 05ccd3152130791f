"""Channel mixers: the SwiGLU feed-forward block and a plain two-layer MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.modeling.layers.registry import register_channel_mixer


@register_channel_mixer("swiglu", test_config=BasedConfig.tiny)
class SwiGLUMLP(nn.Module):
    """``down_proj(up_proj(x) * silu(gate_proj(x)))``, the gated MLP of BASED and Llama.

    Projection names follow transformers' Llama so LoRA target lists carry over. Config fields
    read by :meth:`from_config`: ``hidden_size``, ``intermediate_size``, ``mlp_bias`` (default
    False).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> SwiGLUMLP:
        """Build the MLP of layer ``layer_idx`` of a model with ``config``."""
        return cls(config.hidden_size, config.intermediate_size, getattr(config, "mlp_bias", False))

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.down_proj(self.up_proj(hidden_states) * F.silu(self.gate_proj(hidden_states)))


@register_channel_mixer("mlp", test_config=BasedConfig.tiny)
class MLP(nn.Module):
    """``down_proj(act(up_proj(x)))``: the ungated two-layer MLP (GPT-2, BERT, MAD's ``mlp``).

    Config fields read by :meth:`from_config`: ``hidden_size``, ``intermediate_size``,
    ``hidden_act`` (default ``"gelu"``, any name of transformers' ``ACT2FN``), ``mlp_bias``.
    """

    def __init__(
        self, hidden_size: int, intermediate_size: int, act: str = "gelu", bias: bool = False
    ) -> None:
        super().__init__()
        if act not in ACT2FN:
            raise ValueError(f"hidden_act {act!r} is not one of transformers' ACT2FN names")
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.act = ACT2FN[act]

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> MLP:
        """Build the MLP of layer ``layer_idx`` of a model with ``config``."""
        return cls(
            config.hidden_size,
            config.intermediate_size,
            getattr(config, "hidden_act", "gelu"),
            getattr(config, "mlp_bias", False),
        )

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(hidden_states)))
