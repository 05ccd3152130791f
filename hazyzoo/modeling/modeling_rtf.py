"""RTF models (Parnichkun et al. 2024, "State-free inference of state-space models") on the
shared stack.

Every block is pre-norm -> ``rtf`` mixer (RTF convolution, GELU, GLU output linear) ->
residual, then pre-norm -> channel mixer -> residual (see :class:`~hazyzoo.RtfConfig`).
:class:`RtfForCausalLM` trains by FFT convolution and decodes with the exact recurrence (a
``[batch, state_size, hidden]`` state per layer); :class:`RtfForSequenceClassification` is the
bidirectional Long Range Arena classifier (mean-pooled over real tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import SequenceClassifierOutput

from hazyzoo import validation
from hazyzoo.configuration.configuration_rtf import RtfConfig
from hazyzoo.modeling.base import config_already_checked
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.decoder_lm import (
    HazyDecoderModel,
    HazyDecoderPreTrainedModel,
    HazyForCausalLM,
    resolve_cache_argument,
)

# Modules a LoRA adapter should target on RTF: the mixers' output linears and the MLPs.
RTF_LORA_TARGET_MODULES = ["out_proj", "up_proj", "down_proj", "gate_proj"]


class RtfPreTrainedModel(HazyDecoderPreTrainedModel):
    """Base class of the RTF models: config class, weight init and the stack's settings."""

    config_class = RtfConfig


class RtfModel(RtfPreTrainedModel, HazyDecoderModel):
    """The RTF stack without a head: final hidden states (and, causal only, the cache).

    A bidirectional config builds an encoder: it reads the whole input at once, keeps no
    cache (``use_cache`` must not be True) and accepts any padding side. Loaded from a
    classifier's checkpoint, it leaves the head (``score``) out.
    """

    _keys_to_ignore_on_load_unexpected = [r"score\..*"]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HazyCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        cache: HazyCache | None = None,
        **kwargs: Any,
    ) -> Any:
        """As :meth:`HazyDecoderModel.forward`; a bidirectional model refuses a cache."""
        cache = resolve_cache_argument(past_key_values, cache)
        if self.config.bidirectional:
            if use_cache or cache is not None:
                raise ValueError(
                    "this RTF model is bidirectional (config.bidirectional=True): it reads future "
                    "tokens and has no recurrent cache; call it with use_cache=False"
                )
            use_cache = False
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=return_dict,
            **kwargs,
        )


class RtfForCausalLM(RtfPreTrainedModel, HazyForCausalLM, GenerationMixin):
    """RTF with a tied language-model head, for training and ``generate``.

    One call reads at most ``config.trunc_len`` tokens; ``generate`` decodes recurrently past
    it (longer prompts: ``prefill_chunk_size <= trunc_len``).
    """

    base_model_class = RtfModel
    lora_target_modules = RTF_LORA_TARGET_MODULES

    def __init__(self, config: RtfConfig) -> None:
        if config.bidirectional:
            raise ValueError(
                "RtfForCausalLM needs a causal model: config.bidirectional must be False "
                "(use RtfForSequenceClassification or RtfModel for a bidirectional encoder)"
            )
        super().__init__(config)


class RtfForSequenceClassification(RtfPreTrainedModel):
    """The RTF stack, pooled over real tokens (``config.pooling``), and a linear head.

    ``labels`` follow transformers' convention: ``num_labels == 1`` regression (MSE), integer
    labels single-label classification (cross-entropy), float ``[batch, num_labels]``
    multi-label (BCE); ``config.problem_type`` fixes the choice. Padding (mask 0) may be on
    either side; pooled features never see it.
    """

    lora_target_modules = [*RTF_LORA_TARGET_MODULES, "score"]

    def __init__(self, config: RtfConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        with config_already_checked():
            self.model = RtfModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def pool(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``[batch, hidden]``: the mean (or the last) of each row's real positions."""
        if attention_mask is None:
            if self.config.pooling == "mean":
                return hidden_states.mean(1)
            return hidden_states[:, -1]
        mask = attention_mask[:, -hidden_states.shape[1] :].to(hidden_states.dtype)
        if self.config.pooling == "mean":
            return (hidden_states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (positions * mask.long()).argmax(1)  # the last real position of each row
        return hidden_states[torch.arange(hidden_states.shape[0], device=last.device), last]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple:
        """Logits ``[batch, num_labels]`` and, with ``labels``, the loss."""
        if attention_mask is not None:
            given = input_ids if input_ids is not None else inputs_embeds
            if isinstance(given, torch.Tensor) and given.dim() >= 2:
                validation.check_attention_mask(attention_mask, *given.shape[:2], 0)
                if not bool(attention_mask.bool().any(-1).all()):
                    raise ValueError(
                        "attention_mask has a row without any real token (all zeros): there is "
                        "nothing to pool"
                    )
        if use_cache:
            raise ValueError("a sequence classifier keeps no cache: use_cache must not be True")
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        pooled = self.pool(outputs.last_hidden_state, attention_mask)
        logits = self.score(self.dropout(pooled).to(self.score.weight.dtype))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        out = SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        if return_dict is None:
            return_dict = bool(getattr(self.config, "return_dict", True))
        return out if return_dict else out.to_tuple()
