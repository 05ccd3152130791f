"""The shared stack beyond BASED: blocks with only a mixer or only an MLP, LayerNorm, an MoE
channel mixer whose auxiliary loss reaches the LM loss, and keyword arguments that reach every
mixer. Built from a config subclass made here, as a later architecture would."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from hazyzoo import BasedConfig, BasedForCausalLM
from hazyzoo.modeling.cache import StatelessLayer
from hazyzoo.modeling.layers import register_sequence_mixer


class StripedConfig(BasedConfig):
    """BASED fields plus per-layer lists, an MoE and LayerNorm (a MAD-like striped hybrid)."""

    model_type = "hazyzoo_test_striped"
    num_experts: int = 4
    num_experts_per_tok: int = 2
    router_aux_loss_coef: float = 0.1
    norm_type = "layer_norm"

    @property
    def mixer_types(self) -> list[str]:
        return ["base_conv", "none", "linear_attention", "kwarg_probe"]

    @property
    def channel_mixer_types(self) -> list[str]:
        return ["swiglu", "moe", "none", "mlp"]


@register_sequence_mixer("kwarg_probe", test_config=lambda: StripedConfig.tiny())
class KwargProbe(nn.Module):
    """Records the keyword arguments it is called with; mixes nothing (returns zeros)."""

    seen: list[dict[str, Any]] = []

    def __init__(self, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.scale = nn.Parameter(torch.ones(()))

    @classmethod
    def from_config(cls, config, layer_idx: int) -> KwargProbe:
        return cls(layer_idx)

    def make_cache_layer(self) -> StatelessLayer:
        return StatelessLayer()

    def forward(
        self, hidden_states, *, attention_mask=None, position_ids=None, cache_layer=None, **kwargs
    ):
        KwargProbe.seen.append(kwargs)
        return hidden_states * 0 * self.scale


def _model() -> BasedForCausalLM:
    torch.manual_seed(0)
    return BasedForCausalLM(StripedConfig.tiny())


def test_blocks_hold_what_the_config_lists():
    model = _model()
    layers = model.model.layers
    assert layers[1].mixer is None and layers[1].input_layernorm is None
    assert layers[2].mlp is None and layers[2].post_mixer_layernorm is None
    assert type(layers[1].mlp).__name__ == "MoEMLP" and type(layers[3].mlp).__name__ == "MLP"
    assert type(model.model.norm).__name__ == "LayerNorm"
    assert all(hasattr(model.model.layers[i].input_layernorm, "bias") for i in (0, 2, 3))


def test_moe_aux_loss_is_added_to_the_loss_and_kwargs_reach_mixers():
    model = _model().train()
    ids = torch.randint(1, 61, (2, 12))
    KwargProbe.seen.clear()
    out = model(ids, labels=ids, probe_option=7)
    assert out.aux_loss is not None and out.aux_loss > 0
    plain = model.loss_function(out.logits, ids, model.vocab_size)
    torch.testing.assert_close(out.loss, plain + out.aux_loss)
    assert KwargProbe.seen and KwargProbe.seen[-1].get("probe_option") == 7
    out.loss.backward()
    assert model.model.layers[1].mlp.router.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(ids).aux_loss is None


def test_striped_model_decodes_like_its_parallel_forward():
    model = _model().eval()
    ids = torch.randint(1, 61, (2, 14))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :5])
        steps = [out.logits]
        for t in range(5, 14):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_mixer_lists_must_cover_every_layer():
    class Short(StripedConfig):
        @property
        def channel_mixer_types(self) -> list[str]:
            return ["swiglu"] * 3

    with pytest.raises(
        ValueError, match="channel_mixer_types lists 3 layers but num_hidden_layers is 4"
    ):
        BasedForCausalLM(Short.tiny())

    class Empty(StripedConfig):
        @property
        def mixer_types(self) -> list[str]:
            return ["base_conv", "none", "linear_attention", "none"]

        @property
        def channel_mixer_types(self) -> list[str]:
            return ["swiglu", "moe", "mlp", "none"]

    with pytest.raises(ValueError, match="layer 3 has neither"):
        BasedForCausalLM(Empty.tiny())
    with pytest.raises(ValueError, match="mixer_types\\[0\\] = 'nope'.*choose from"):
        from hazyzoo.modeling.layers.registry import build_sequence_mixer

        build_sequence_mixer(StripedConfig.tiny(), 0, "nope")
