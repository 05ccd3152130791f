"""hazyzoo: a Hugging Face-native zoo of efficient architectures, data sets and evaluations.

Importing the package registers every configuration and model with transformers' Auto
classes, so ``AutoModelForCausalLM.from_pretrained(path)`` loads a hazyzoo checkpoint.
Nothing here needs ``datasets`` or ``evaluate`` and nothing is downloaded.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTextEncoding,
)

from hazyzoo import hydragen
from hazyzoo.collators import JrtDataCollator
from hazyzoo.configuration.configuration_based import BASED_PRESETS, BasedConfig
from hazyzoo.configuration.configuration_jrt import JRT_PRESETS, JrtConfig
from hazyzoo.configuration.configuration_m2bert import M2BERT_PRESETS, M2BertConfig
from hazyzoo.configuration.configuration_mad import MAD_LAYERS, MadConfig
from hazyzoo.configuration.configuration_prospector import ProspectorConfig
from hazyzoo.configuration.configuration_rtf import RTF_PRESETS, RtfConfig
from hazyzoo.configuration.configuration_vqvae import VQVAEConfig
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.modeling_based import (
    BASED_LORA_TARGET_MODULES,
    BasedForCausalLM,
    BasedModel,
    BasedPreTrainedModel,
)
from hazyzoo.modeling.modeling_jrt import (
    JRT_LORA_TARGET_MODULES,
    JrtForCausalLM,
    JrtModel,
    JrtPreTrainedModel,
)
from hazyzoo.modeling.modeling_m2bert import (
    M2BERT_LORA_TARGET_MODULES,
    M2BertForMaskedLM,
    M2BertForTextEncoding,
    M2BertModel,
    M2BertPreTrainedModel,
)
from hazyzoo.modeling.modeling_mad import (
    MAD_LORA_TARGET_MODULES,
    MadAutoEncoder,
    MadForCausalLM,
    MadModel,
    MadPreTrainedModel,
)
from hazyzoo.modeling.modeling_prospector import (
    ProspectorModel,
    ProspectorOutput,
    ProspectorPreTrainedModel,
)
from hazyzoo.modeling.modeling_rtf import (
    RTF_LORA_TARGET_MODULES,
    RtfForCausalLM,
    RtfForSequenceClassification,
    RtfModel,
    RtfPreTrainedModel,
)
from hazyzoo.modeling.modeling_vqvae import VQVAEModel, VQVAEOutput, VQVAEPreTrainedModel
from hazyzoo.modeling.quantizer import VectorQuantizer

__version__ = "0.2.0"

# The zoo's models by model_type, for the contract tests (tests/modeling): the model-generic
# tests (save/load, Auto classes, init, gradient checkpointing, LoRA, offload) run over both
# registries, the generative ones (cache, generate) over the causal LMs. A model joins by being
# listed here; its config class has a ``tiny()`` constructor and the model class a
# ``lora_target_modules`` list. A key names one head class: the model_type itself for the
# main head, ``<model_type>/<head>`` for further heads of the same model type.
CAUSAL_LM_REGISTRY: dict[str, type] = {
    BasedConfig.model_type: BasedForCausalLM,
    JrtConfig.model_type: JrtForCausalLM,
    RtfConfig.model_type: RtfForCausalLM,
    MadConfig.model_type: MadForCausalLM,
}
ENCODER_REGISTRY: dict[str, type] = {
    M2BertConfig.model_type: M2BertForTextEncoding,
    f"{M2BertConfig.model_type}/masked_lm": M2BertForMaskedLM,
    f"{RtfConfig.model_type}/sequence_classification": RtfForSequenceClassification,
}


def _register() -> None:
    AutoConfig.register(BasedConfig.model_type, BasedConfig, exist_ok=True)
    AutoModel.register(BasedConfig, BasedModel, exist_ok=True)
    AutoModelForCausalLM.register(BasedConfig, BasedForCausalLM, exist_ok=True)
    AutoConfig.register(JrtConfig.model_type, JrtConfig, exist_ok=True)
    AutoModel.register(JrtConfig, JrtModel, exist_ok=True)
    AutoModelForCausalLM.register(JrtConfig, JrtForCausalLM, exist_ok=True)
    AutoConfig.register(RtfConfig.model_type, RtfConfig, exist_ok=True)
    AutoModel.register(RtfConfig, RtfModel, exist_ok=True)
    AutoModelForCausalLM.register(RtfConfig, RtfForCausalLM, exist_ok=True)
    AutoModelForSequenceClassification.register(
        RtfConfig, RtfForSequenceClassification, exist_ok=True
    )
    AutoConfig.register(MadConfig.model_type, MadConfig, exist_ok=True)
    AutoModel.register(MadConfig, MadModel, exist_ok=True)
    AutoModelForCausalLM.register(MadConfig, MadForCausalLM, exist_ok=True)
    AutoConfig.register(VQVAEConfig.model_type, VQVAEConfig, exist_ok=True)
    AutoModel.register(VQVAEConfig, VQVAEModel, exist_ok=True)
    AutoConfig.register(ProspectorConfig.model_type, ProspectorConfig, exist_ok=True)
    AutoModel.register(ProspectorConfig, ProspectorModel, exist_ok=True)
    AutoConfig.register(M2BertConfig.model_type, M2BertConfig, exist_ok=True)
    AutoModel.register(M2BertConfig, M2BertModel, exist_ok=True)
    AutoModelForTextEncoding.register(M2BertConfig, M2BertForTextEncoding, exist_ok=True)
    AutoModelForMaskedLM.register(M2BertConfig, M2BertForMaskedLM, exist_ok=True)
    # attn_implementation="hydragen" for transformers' own attention models (Llama, Qwen2, ...)
    hydragen.register_hydragen()


_register()

__all__ = [
    "BASED_LORA_TARGET_MODULES",
    "BASED_PRESETS",
    "CAUSAL_LM_REGISTRY",
    "ENCODER_REGISTRY",
    "JRT_LORA_TARGET_MODULES",
    "JRT_PRESETS",
    "M2BERT_LORA_TARGET_MODULES",
    "M2BERT_PRESETS",
    "MAD_LAYERS",
    "MAD_LORA_TARGET_MODULES",
    "RTF_LORA_TARGET_MODULES",
    "RTF_PRESETS",
    "BasedConfig",
    "BasedForCausalLM",
    "BasedModel",
    "BasedPreTrainedModel",
    "HazyCache",
    "JrtConfig",
    "JrtDataCollator",
    "JrtForCausalLM",
    "JrtModel",
    "JrtPreTrainedModel",
    "M2BertConfig",
    "M2BertForMaskedLM",
    "M2BertForTextEncoding",
    "M2BertModel",
    "M2BertPreTrainedModel",
    "MadAutoEncoder",
    "MadConfig",
    "MadForCausalLM",
    "MadModel",
    "MadPreTrainedModel",
    "ProspectorConfig",
    "ProspectorModel",
    "ProspectorOutput",
    "ProspectorPreTrainedModel",
    "RtfConfig",
    "RtfForCausalLM",
    "RtfForSequenceClassification",
    "RtfModel",
    "RtfPreTrainedModel",
    "VQVAEConfig",
    "VQVAEModel",
    "VQVAEOutput",
    "VQVAEPreTrainedModel",
    "VectorQuantizer",
    "__version__",
    "hydragen",
]
