"""hazyzoo: a Hugging Face-native zoo of efficient architectures, data sets and evaluations.

Importing the package registers every configuration and model with transformers' Auto
classes, so ``AutoModelForCausalLM.from_pretrained(path)`` loads a hazyzoo checkpoint.
Nothing here needs ``datasets`` or ``evaluate`` and nothing is downloaded.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from hazyzoo.configuration.configuration_based import BASED_PRESETS, BasedConfig
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.modeling_based import (
    BASED_LORA_TARGET_MODULES,
    BasedForCausalLM,
    BasedModel,
    BasedPreTrainedModel,
)

__version__ = "0.2.0"

# The zoo's models by model_type, for the contract tests (tests/modeling): the model-generic
# tests (save/load, Auto classes, init, gradient checkpointing, LoRA, offload) run over both
# registries, the generative ones (cache, generate) over the causal LMs. A model joins by being
# listed here; its config class has a ``tiny()`` constructor and the model class a
# ``lora_target_modules`` list.
CAUSAL_LM_REGISTRY: dict[str, type] = {BasedConfig.model_type: BasedForCausalLM}
ENCODER_REGISTRY: dict[str, type] = {}


def _register() -> None:
    AutoConfig.register(BasedConfig.model_type, BasedConfig, exist_ok=True)
    AutoModel.register(BasedConfig, BasedModel, exist_ok=True)
    AutoModelForCausalLM.register(BasedConfig, BasedForCausalLM, exist_ok=True)


_register()

__all__ = [
    "BASED_LORA_TARGET_MODULES",
    "BASED_PRESETS",
    "CAUSAL_LM_REGISTRY",
    "ENCODER_REGISTRY",
    "BasedConfig",
    "BasedForCausalLM",
    "BasedModel",
    "BasedPreTrainedModel",
    "HazyCache",
    "__version__",
]
