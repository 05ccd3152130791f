"""BASED language models (Arora et al. 2024) on the generic hazyzoo decoder stack.

Each layer mixes the sequence with a gated short convolution, Taylor linear attention or
sliding-window attention (see :class:`~hazyzoo.BasedConfig`); every block is
pre-norm RMSNorm -> mixer -> residual -> RMSNorm -> SwiGLU -> residual.
"""

from __future__ import annotations

from hazyzoo.configuration.configuration_based import BasedConfig
from hazyzoo.modeling.decoder_lm import HazyDecoderModel, HazyForCausalLM, HazyPreTrainedModel

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


class BasedPreTrainedModel(HazyPreTrainedModel):
    """Base class of the BASED models: config class and weight init."""

    config_class = BasedConfig


class BasedModel(HazyDecoderModel):
    """The BASED decoder stack without a head: returns final hidden states and the cache."""

    config_class = BasedConfig


class BasedForCausalLM(HazyForCausalLM):
    """BASED with a tied language-model head, for training and ``generate``."""

    config_class = BasedConfig
    base_model_class = BasedModel
    lora_target_modules = BASED_LORA_TARGET_MODULES
