"""SwiGLU feed-forward block."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SwiGLUMLP(nn.Module):
    """``down_proj(up_proj(x) * silu(gate_proj(x)))``, the gated MLP of BASED and Llama.

    Projection names follow transformers' Llama so LoRA target lists carry over.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.up_proj(hidden_states) * F.silu(self.gate_proj(hidden_states)))
