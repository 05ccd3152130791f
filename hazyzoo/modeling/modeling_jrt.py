"""JRT-RNN language models (Arora et al. 2024, "Just read twice") on the shared decoder stack.

BASED's blocks with prefix linear attention (see :class:`~hazyzoo.JrtConfig`): the first
``enc_length`` tokens are read non-causally, then decoding is recurrent with a fixed-size
state. :class:`JrtForCausalLM` adds the JRT training objective: next-token loss only after the
prefix, plus ``mlm_loss_weight`` x a masked-LM loss on the prefix tokens that
:class:`~hazyzoo.JrtDataCollator` replaced by the mask token (``mlm_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import GenerationMixin

from hazyzoo import validation
from hazyzoo.configuration.configuration_jrt import JrtConfig
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.decoder_lm import (
    HazyCausalLMOutput,
    HazyDecoderModel,
    HazyDecoderPreTrainedModel,
    HazyForCausalLM,
    resolve_cache_argument,
)
from hazyzoo.modeling.modeling_based import BASED_LORA_TARGET_MODULES

# Modules a LoRA adapter should target on JRT: BASED's, plus the encoder projections.
JRT_LORA_TARGET_MODULES = [*BASED_LORA_TARGET_MODULES, "k_enc_proj", "v_enc_proj"]


@dataclass
class JrtCausalLMOutput(HazyCausalLMOutput):
    """:class:`HazyCausalLMOutput` plus ``mlm_loss`` (the unweighted masked-LM loss, already
    included in ``loss`` with weight ``config.mlm_loss_weight``); None without ``mlm_labels``."""

    mlm_loss: torch.FloatTensor | None = None


def prefix_token_mask(
    attention_mask: torch.Tensor | None, batch: int, length: int, config: JrtConfig, device: Any
) -> torch.Tensor:
    """[batch, length] bool: the positions of each row's non-causal prefix, as the model reads
    them in a call on an empty cache (exact semantics: the first ``enc_length`` real tokens;
    reference semantics: the first ``enc_length`` positions)."""
    if config.mask_semantics == "reference" or attention_mask is None:
        positions = torch.arange(length, device=device)
        return (positions < config.enc_length)[None].expand(batch, -1)
    real = attention_mask[:, -length:].bool()
    return real & (real.long().cumsum(-1) <= config.enc_length)


class JrtPreTrainedModel(HazyDecoderPreTrainedModel):
    """Base class of the JRT models: config class, weight init and the decoder settings."""

    config_class = JrtConfig


class JrtModel(JrtPreTrainedModel, HazyDecoderModel):
    """The JRT decoder stack without a head: returns final hidden states and the cache.

    In ``"reference"`` mask semantics the attention mask reaches only the prefix layers (as
    ``reference_mask``) and positions count from the first (pad) token, as in the released
    code; the mask must then be left padding (what the reference harness produces).
    """

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
        """As :meth:`HazyDecoderModel.forward`; see the class docstring for the masks."""
        cache = resolve_cache_argument(past_key_values, cache)
        if self.config.mask_semantics == "reference" and attention_mask is not None:
            given = input_ids if input_ids is not None else inputs_embeds
            if not isinstance(given, torch.Tensor) or given.dim() < 2:
                raise ValueError(
                    "give input_ids [batch, seq] or inputs_embeds [batch, seq, hidden]"
                )
            batch, length = given.shape[:2]
            past = cache.get_seq_length() if isinstance(cache, HazyCache) else 0
            validation.check_attention_mask(
                attention_mask, batch, length, past, require_left_padding=True
            )
            kwargs["reference_mask"] = attention_mask[:, -length:].bool()
            attention_mask = None
            if position_ids is None:
                position_ids = torch.arange(past, past + length, device=given.device)
                position_ids = position_ids[None].expand(batch, -1)
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


class JrtForCausalLM(JrtPreTrainedModel, HazyForCausalLM, GenerationMixin):
    """JRT-RNN with a tied language-model head, for training and ``generate``.

    With ``labels``, the next-token loss skips targets inside each row's prefix unless
    ``config.loss_on_prefix`` (prefix positions see later prefix tokens, so those targets are
    trivially visible). With ``mlm_labels`` ([batch, seq], the original ids at masked prefix
    positions, -100 elsewhere) it adds ``config.mlm_loss_weight`` x the masked-LM loss: the
    logits at each masked position against its original token (no shift).
    """

    base_model_class = JrtModel
    lora_target_modules = JRT_LORA_TARGET_MODULES

    def _prepare_position_ids_for_generation(self, inputs_tensor: Any, model_kwargs: dict) -> Any:
        # Reference semantics count positions from the first (pad) token, as the released code.
        if self.config.mask_semantics == "reference":
            mask = model_kwargs.pop("attention_mask", None)
            try:
                return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)
            finally:
                if mask is not None:
                    model_kwargs["attention_mask"] = mask
        return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HazyCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: HazyCache | None = None,
        mlm_labels: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> JrtCausalLMOutput | tuple:
        """:meth:`HazyForCausalLM.forward` with the JRT objective (see the class docstring)."""
        cache = resolve_cache_argument(past_key_values, cache)
        given = input_ids if input_ids is not None else inputs_embeds
        shape = (
            tuple(given.shape[:2]) if isinstance(given, torch.Tensor) and given.dim() >= 2 else None
        )
        fresh = cache is None or (isinstance(cache, HazyCache) and cache.get_seq_length() == 0)
        if labels is not None and not self.config.loss_on_prefix and shape is not None and fresh:
            validation.check_labels(labels, *shape, self.config.vocab_size)
            in_prefix = prefix_token_mask(attention_mask, *shape, self.config, labels.device)
            labels = labels.masked_fill(in_prefix, -100)
        if mlm_labels is not None:
            if shape is None:
                raise ValueError("mlm_labels need input_ids or inputs_embeds [batch, seq]")
            validation.check_labels(mlm_labels, *shape, self.config.vocab_size, name="mlm_labels")
            if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
                raise ValueError("mlm_labels need the logits of every position: logits_to_keep=0")
        out = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        fields = {name: getattr(out, name) for name in out.__dataclass_fields__}
        result = JrtCausalLMOutput(**fields)
        if mlm_labels is not None:
            logits = out.logits.float()
            mlm_loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                mlm_labels.to(logits.device).reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ) / (mlm_labels != -100).sum().clamp(min=1)
            result.mlm_loss = mlm_loss
            weighted = self.config.mlm_loss_weight * mlm_loss
            result.loss = weighted if result.loss is None else result.loss + weighted
        if return_dict is None:
            return_dict = bool(getattr(self.config, "return_dict", True))
        return result if return_dict else result.to_tuple()
