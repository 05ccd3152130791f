"""RMSNorm, computed in float32 whatever the input dtype."""

from __future__ import annotations

import torch
from torch import nn

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

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
