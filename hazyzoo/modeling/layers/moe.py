"""A sparse mixture-of-experts channel mixer with a load-balancing auxiliary loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig

from hazyzoo.modeling.layers.mlp import SwiGLUMLP
from hazyzoo.modeling.layers.protocol import MixerOutput
from hazyzoo.modeling.layers.registry import register_channel_mixer


def _moe_test_config() -> PreTrainedConfig:
    return PreTrainedConfig(
        hidden_size=32,
        intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        router_aux_loss_coef=0.01,
    )


@register_channel_mixer("moe", test_config=_moe_test_config)
class MoEMLP(nn.Module):
    """Top-k routed SwiGLU experts (as in Switch / Mixtral, and MAD's ``moe-mlp``).

    A linear router scores ``num_experts`` experts per token; each token goes to its
    ``num_experts_per_tok`` best experts, whose outputs are summed with the softmax router
    probabilities renormalised over the chosen ones. In training mode the layer returns the
    load-balancing loss ``coef * num_experts * sum_e f_e P_e`` (``f_e``: fraction of routed
    token slots sent to expert e, ``P_e``: mean router probability of e, both over the real
    tokens), which the language model adds to its loss; padding (mask 0) is neither counted nor
    changed by routing, since every token is routed on its own.

    Config fields read by :meth:`from_config`: ``hidden_size``, ``moe_intermediate_size``
    (default ``intermediate_size``), ``num_experts``, ``num_experts_per_tok``,
    ``router_aux_loss_coef`` (default 0.01).
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int,
        top_k: int,
        aux_loss_coef: float = 0.01,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(
                f"num_experts_per_tok must be in 1..num_experts={num_experts}, got {top_k}"
            )
        self.num_experts = num_experts
        self.top_k = top_k
        self.aux_loss_coef = aux_loss_coef
        self.router = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts = nn.ModuleList(
            SwiGLUMLP(hidden_size, intermediate_size) for _ in range(num_experts)
        )

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> MoEMLP:
        """Build the MoE MLP of layer ``layer_idx`` of a model with ``config``."""
        inner = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
        return cls(
            config.hidden_size,
            inner,
            config.num_experts,
            config.num_experts_per_tok,
            getattr(config, "router_aux_loss_coef", 0.01),
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> MixerOutput:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        probs = F.softmax(self.router(x).float(), dim=-1)  # [T, E]
        weights, chosen = probs.topk(self.top_k, dim=-1)  # [T, k]
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        if torch.compiler.is_compiling():
            # torch.compile: no data-dependent shapes (nonzero) or branches, so every expert
            # runs on every token, weighted by the token's routing weight for it (0 where the
            # expert was not chosen): the same sums, at num_experts / top_k times the FLOPs.
            for e, expert in enumerate(self.experts):
                gate = (weights * (chosen == e).to(weights.dtype)).sum(-1, keepdim=True)
                out = out + (expert(x) * gate).to(out.dtype)
        else:
            # Every expert runs on the tokens routed to it (a dense loop: fine for the sizes
            # the zoo trains; a grouped-GEMM kernel would replace it for large expert counts).
            for e, expert in enumerate(self.experts):
                token, slot = (chosen == e).nonzero(as_tuple=True)
                if token.numel():
                    y = expert(x.index_select(0, token)) * weights[token, slot, None]
                    out.index_add_(0, token, y.to(out.dtype))
        aux = None
        if self.training and self.aux_loss_coef:
            real = (
                torch.ones(x.shape[0], device=x.device, dtype=probs.dtype)
                if attention_mask is None
                else attention_mask.reshape(-1).to(probs.dtype)
            )
            count = real.sum().clamp_min(1.0)
            routed = F.one_hot(chosen, self.num_experts).to(probs.dtype).sum(1)  # [T, E]
            fraction = (routed * real[:, None]).sum(0) / (count * self.top_k)
            mean_prob = (probs * real[:, None]).sum(0) / count
            aux = self.aux_loss_coef * self.num_experts * (fraction * mean_prob).sum()
        return MixerOutput(out.reshape(shape), aux_loss=aux)
