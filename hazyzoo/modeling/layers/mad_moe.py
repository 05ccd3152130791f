"""MAD's mixture-of-experts MLP (``moe-mlp``) and the top-k gate its Hyena experts share.

MAD's gate is not a renormalised top-k softmax: the router scores below the k-th largest are
set to *zero* (not -inf) and the softmax runs over all experts, so unselected experts keep the
weight ``exp(0) / Z``; ties with the k-th value are kept. :func:`mad_topk_gate` reproduces it.
hazyzoo's own sparse MoE (``moe``, :class:`~hazyzoo.modeling.layers.moe.MoEMLP`) is the usual
renormalised top-k with a load-balancing loss; this file is MAD's layer, for parity.

MAD's ``MoeMlp``: ``h = up1(x) * gelu_tanh(up2(x))`` (inner width ``expert_size *
num_experts``), ``z = down1(h)`` (width ``dim * num_experts``; output channel o of expert e is
z channel ``num_experts * o + e``), ``out[o] = sum_e p_e z[num_experts * o + e]``. Every expert
reads all inner channels (down1 is one dense matrix), as in the reference. The reference's
``gates`` parameter is never used by its forward and is not kept here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig

from hazyzoo.modeling.layers.registry import layer_config, register_channel_mixer

__all__ = ["MadMoeMlp", "mad_topk_gate"]


def mad_topk_gate(scores: torch.Tensor, k: int) -> torch.Tensor:
    """MAD's gate over the last dim: scores below the k-th largest become 0, then softmax."""
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k must be between 1 and the number of experts ({scores.shape[-1]})")
    threshold = scores.topk(k, dim=-1).values[..., -1:]
    kept = torch.where(scores >= threshold, scores, torch.zeros_like(scores))
    return kept.float().softmax(-1).to(scores.dtype)


def _tiny() -> PreTrainedConfig:
    from hazyzoo.configuration.configuration_mad import MadConfig

    return MadConfig.tiny(layers=["moe-mlp", "moe-mlp", "moe-mlp", "hyena+moe-mlp"])


@register_channel_mixer("mad_moe_mlp", test_config=_tiny)
class MadMoeMlp(nn.Module):
    """MAD's ``moe-mlp`` (see the module docstring); names ``up1``, ``up2``, ``down1``,
    ``router``. Settings: ``intermediate_size`` (MAD's ``dim_inner``, per expert),
    ``num_experts``, ``num_experts_per_tok`` (MAD's ``active_experts``), ``mlp_bias``."""

    def __init__(
        self,
        dim: int,
        expert_size: int,
        num_experts: int,
        top_k: int,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"num_experts_per_tok ({top_k}) must be in 1..{num_experts}")
        self.dim, self.num_experts, self.top_k = dim, num_experts, top_k
        self.up1 = nn.Linear(dim, expert_size * num_experts, bias=bias)
        self.up2 = nn.Linear(dim, expert_size * num_experts, bias=bias)
        self.down1 = nn.Linear(expert_size * num_experts, dim * num_experts, bias=bias)
        self.router = nn.Linear(dim, num_experts)  # always with a bias, as the reference

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> MadMoeMlp:
        """Build layer ``layer_idx`` from its settings (see :class:`~hazyzoo.MadConfig`)."""
        view = layer_config(config, layer_idx)
        return cls(
            view.hidden_size,
            view.intermediate_size,
            view.num_experts,
            view.num_experts_per_tok,
            view.mlp_bias,
        )

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        h = self.up1(hidden_states) * F.gelu(self.up2(hidden_states), approximate="tanh")
        z = self.down1(h).unflatten(-1, (self.dim, self.num_experts))
        gate = mad_topk_gate(self.router(hidden_states), self.top_k)
        return (z * gate[..., None, :]).sum(-1)
