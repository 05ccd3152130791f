"""The contract every sequence mixer and channel mixer of the shared stack keeps.

A block of :mod:`hazyzoo.modeling.decoder_lm` is ``h = h + mixer(norm(h)); h = h + mlp(norm(h))``
where either part may be absent. The *sequence mixer* mixes across positions (attention, linear
attention, convolutions, SSMs) and may keep a cache layer for generation; the *channel mixer*
mixes within a position (SwiGLU, MLP, mixture of experts). Both are ``nn.Module`` classes that
build themselves from the model config and their layer index, and register under a name with
:func:`~hazyzoo.modeling.layers.registry.register_sequence_mixer` /
:func:`~hazyzoo.modeling.layers.registry.register_channel_mixer` in the file that defines them.

Keyword arguments given to the model's ``forward`` reach every mixer (as transformers threads
``**kwargs`` to its attention modules): a mixer reads the ones it knows (``MixerKwargs``) and
ignores the rest. A mixer returns the mixed hidden states, or a :class:`MixerOutput` when it also
has an auxiliary loss (already weighted: the LM adds it to its loss) or attention weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, runtime_checkable

import torch
from transformers import PreTrainedConfig

from hazyzoo.modeling.cache import HazyCacheLayer


class MixerKwargs(TypedDict, total=False):
    """Per-call options the stack passes to every mixer (models may add their own keys)."""

    output_attentions: bool  # return attention weights where the mixer has them


@dataclass
class MixerOutput:
    """What a mixer returns when it has more than hidden states.

    ``aux_loss``: a scalar the language-model loss adds as is (weight it inside the mixer, e.g.
    a router load-balancing loss times its coefficient). ``attentions``: [batch, heads, seq, keys]
    attention weights, returned when ``output_attentions=True`` was asked for.
    """

    hidden_states: torch.Tensor
    aux_loss: torch.Tensor | None = None
    attentions: torch.Tensor | None = None


@runtime_checkable
class SequenceMixer(Protocol):
    """A sequence mixer: ``[batch, seq, hidden] -> [batch, seq, hidden]`` across positions.

    Contract (checked for every registered mixer by ``tests/modeling/test_mixer_contract.py``):
    feeding a sequence in pieces through the mixer's cache layer gives the same outputs as one
    call over the whole sequence; positions whose ``attention_mask`` is 0 (left padding) change
    no other position's output; the cache layer survives batch operations (reorder, repeat).
    """

    layer_idx: int | None
    # Optional class attribute: True for mixers that return attention weights when the model is
    # called with ``output_attentions=True`` (a model none of whose mixers do refuses the flag).

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> SequenceMixer: ...

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: HazyCacheLayer | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | MixerOutput: ...

    def make_cache_layer(self) -> HazyCacheLayer: ...


@runtime_checkable
class ChannelMixer(Protocol):
    """A channel mixer: ``[batch, seq, hidden] -> [batch, seq, hidden]`` position by position."""

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> ChannelMixer: ...

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor | MixerOutput: ...


def split_mixer_output(
    out: torch.Tensor | MixerOutput,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(hidden_states, aux_loss, attentions)`` of whatever a mixer returned."""
    if isinstance(out, MixerOutput):
        return out.hidden_states, out.aux_loss, out.attentions
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"a mixer must return a Tensor or a MixerOutput, got {type(out).__name__}")
    return out, None, None
