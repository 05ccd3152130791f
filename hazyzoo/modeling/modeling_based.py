"""BASED language models (Arora et al. 2024) on the shared hazyzoo decoder stack.

Each layer mixes the sequence with a gated short convolution, Taylor linear attention or
sliding-window attention (see :class:`~hazyzoo.BasedConfig`); every block is
pre-norm RMSNorm -> mixer -> residual -> RMSNorm -> SwiGLU -> residual.
"""

from __future__ import annotations

from transformers import GenerationMixin

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.modeling.decoder_lm import (
    HazyDecoderModel,
    HazyDecoderPreTrainedModel,
    HazyForCausalLM,
)

# Modules a LoRA adapter should target on BASED (projections of every mixer and the MLP).
BASED_LORA_TARGET_MODULES = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "in_proj",
    "out_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
]


class BasedPreTrainedModel(HazyDecoderPreTrainedModel):
    """Base class of the BASED models: config class, weight init and the decoder settings."""

    config_class = BasedConfig


class BasedModel(BasedPreTrainedModel, HazyDecoderModel):
    """The BASED decoder stack without a head: returns final hidden states and the cache."""


class BasedForCausalLM(BasedPreTrainedModel, HazyForCausalLM, GenerationMixin):
    """BASED with a tied language-model head, for training and ``generate``."""

    base_model_class = BasedModel
    lora_target_modules = BASED_LORA_TARGET_MODULES
