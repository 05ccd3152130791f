"""BaseConv: a gated short causal convolution (the "convolution" mixer of BASED)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.modeling.cache import ConvStateLayer
from hazyzoo.modeling.layers.registry import register_sequence_mixer


@register_sequence_mixer("base_conv", test_config=BasedConfig.tiny)
class BaseConv(nn.Module):
    """``out_proj(silu(causal_depthwise_conv(u)) * gate)`` with ``[u, gate] = in_proj(x)``.

    ``in_proj`` maps ``hidden_size`` to ``2 * channels``: the first ``channels`` outputs feed a
    depthwise causal convolution of width ``kernel_size`` (a cross-correlation whose last tap
    multiplies the current token), the other half gates it. Padding positions (mask 0) are zeroed
    before the convolution, so left padding behaves like the convolution's own zero padding.
    The cache keeps the last ``kernel_size - 1`` convolution inputs.

    Config fields read by :meth:`from_config`: ``hidden_size``, ``conv_expansion`` (channels =
    ``conv_expansion * hidden_size``), ``conv_kernel_size``, ``conv_bias``.
    """

    def __init__(
        self,
        hidden_size: int,
        channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.hidden_size = hidden_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.layer_idx = layer_idx
        self.in_proj = nn.Linear(hidden_size, 2 * channels, bias=bias)
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False)
        self.out_proj = nn.Linear(channels, hidden_size, bias=bias)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> BaseConv:
        """Build layer ``layer_idx`` of a model with ``config``."""
        return cls(
            config.hidden_size,
            config.conv_expansion * config.hidden_size,
            config.conv_kernel_size,
            config.conv_bias,
            layer_idx,
        )

    def make_cache_layer(self) -> ConvStateLayer:
        """A fresh cache layer for this mixer."""
        return ConvStateLayer()

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: ConvStateLayer | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``attention_mask`` [batch, seq] (1 = token)."""
        u, gate = self.in_proj(hidden_states).chunk(2, dim=-1)
        if attention_mask is not None:
            u = u * attention_mask[..., None].to(u.dtype)
        u = u.transpose(1, 2)  # [B, C, L]
        tail = self.kernel_size - 1
        has_past = cache_layer is not None and cache_layer.has_state
        if has_past:
            u = torch.cat([cache_layer.conv_state.to(u.dtype), u], dim=-1)
        else:
            u = F.pad(u, (tail, 0))
        if has_past:  # in place, so a captured CUDA graph keeps updating the same buffer
            cache_layer.conv_state.copy_(u[..., u.shape[-1] - tail :])
        elif cache_layer is not None:
            cache_layer.conv_state = u[..., u.shape[-1] - tail :].detach().clone()
        # Call the module (not F.conv1d on its weight): accelerate's offload hooks load the
        # weight in the module's forward.
        y = self.conv(u)  # [B, C, L]
        y = F.silu(y).transpose(1, 2) * gate
        return self.out_proj(y)
