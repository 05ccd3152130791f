"""Normalisation layers (statistics in float32 whatever the input dtype), chosen by config."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers import initialization as init

from hazyzoo.kernels.rms_norm import rms_norm


class RMSNorm(nn.Module):
    """Root-mean-square norm: ``x * rsqrt(mean(x^2) + eps) * weight`` (no bias, no centring).

    The statistics are computed in float32 (the residual stream may be float32 while the weights
    are bf16); the result has the weight's dtype so the next projection can take it directly.
    On CUDA it is one Triton kernel (forward and backward), elsewhere the PyTorch formula.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden_states, self.weight, self.eps)

    def _init_hazy_weights(self, config: PreTrainedConfig) -> None:
        init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.Module):
    """Layer norm with a bias, statistics in float32 and the result in the weight's dtype
    (the same mixed-dtype behaviour as :class:`RMSNorm`)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(
            hidden_states.float(),
            self.weight.shape,
            self.weight.float(),
            self.bias.float(),
            self.eps,
        )
        return out.to(self.weight.dtype)

    def _init_hazy_weights(self, config: PreTrainedConfig) -> None:
        init.ones_(self.weight)
        init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS: dict[str, type[nn.Module]] = {"rms_norm": RMSNorm, "layer_norm": LayerNorm}


def build_norm(config: PreTrainedConfig) -> nn.Module:
    """The norm ``config.norm_type`` (``rms_norm`` or ``layer_norm``; default ``rms_norm``) of
    width ``hidden_size`` with epsilon ``norm_eps`` (default ``rms_norm_eps``)."""
    kind = getattr(config, "norm_type", "rms_norm")
    if kind not in NORMS:
        raise ValueError(f"norm_type must be one of {sorted(NORMS)}, got {kind!r}")
    eps = getattr(config, "norm_eps", None)
    if eps is None:
        eps = config.rms_norm_eps
    return NORMS[kind](config.hidden_size, eps=eps)
