"""M2-BERT: the Monarch Mixer BERT encoder (Fu et al. 2023; Saad-Falcon et al. 2024).

``embeddings -> num_hidden_layers x (Monarch Mixer sequence mixer -> GLU MLP block) -> pooler``.
:class:`M2BertModel` returns the hidden states and the pooler output (``tanh(dense(h_first))``),
:class:`M2BertForTextEncoding` the sentence embedding of the released retrieval models (that
pooler output), :class:`M2BertForMaskedLM` BERT's masked-LM head tied to the word embeddings.

Padding: see :class:`~hazyzoo.M2BertConfig` (``padding_invariant``). By default (the released
semantics) the attention mask is read only by ``pool_all`` pooling, pad tokens are ordinary
tokens everywhere else, and inputs should be padded to the maximum length as the released
models were; with ``padding_invariant=True`` padding on either side is invisible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput
from transformers.utils import ModelOutput

from hazyzoo import validation
from hazyzoo.configuration.configuration_m2bert import M2BertConfig
from hazyzoo.modeling.base import HazyPreTrainedModel, config_already_checked
from hazyzoo.modeling.layers.monarch_mixer import MonarchGluMlp, MonarchMixerSequenceMixing

# Dense layers a LoRA adapter can target (the MLPs' matrices are block diagonal, which peft's
# LoRA does not wrap): the mixers' projections and the pooler.
M2BERT_LORA_TARGET_MODULES = ["in_linear", "out_linear", "dense"]


@dataclass
class M2BertTextEncodingOutput(ModelOutput):
    """``sentence_embedding [batch, hidden]`` (the pooler output, L2-normalised when the config
    says so), the final hidden states and, when asked, every layer's hidden states."""

    sentence_embedding: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def _flag(value: bool | None, config: M2BertConfig, name: str) -> bool:
    return value if value is not None else bool(getattr(config, name, False))


def _check_contiguous_rows(mask: torch.Tensor) -> None:
    """Each row of a 0/1 mask must hold one non-empty run of ones (padding on either side)."""
    if not validation.values_checkable(mask):
        return
    m = mask.long()
    starts = (m[:, 1:] > m[:, :-1]).sum(-1) + m[:, 0]  # number of runs of ones per row
    bad = (starts != 1).nonzero()
    if bad.numel():
        row = int(bad[0, 0])
        what = "no real token" if int(starts[row]) == 0 else "padding between real tokens"
        raise ValueError(
            f"attention_mask row {row} has {what} ({m[row].tolist()[:24]}...): with "
            "padding_invariant=True each row must be one run of real tokens, padded on the left "
            "or the right"
        )


def _local_checkpoint_keys(path: Any) -> list[str] | None:
    """The tensor names of a local safetensors checkpoint directory (headers only), else None."""
    from pathlib import Path

    from safetensors import safe_open

    directory = Path(str(path))
    files = sorted(directory.glob("model*.safetensors")) if directory.is_dir() else []
    if not files:
        return None
    keys: list[str] = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            keys.extend(f.keys())
    return keys


class M2BertEmbeddings(nn.Module):
    """word + token type (+ absolute position) embeddings, LayerNorm, dropout (BERT's)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.use_positional_encodings
            else None
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if self.position_embeddings is not None:
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class M2BertLayer(GradientCheckpointingLayer):
    """``mlp(sequence_mixer(h))``: no residual around the mixer; the MLP block adds the mixer's
    output back before its post-LayerNorm (the reference's ``BertLayer``)."""

    def __init__(self, config: M2BertConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.sequence_mixer = MonarchMixerSequenceMixing(
            config.hidden_size,
            config.long_conv_l_max,
            filter_order=config.hyena_filter_order,
            emb_dim=config.hyena_emb_dim,
            w=config.hyena_w,
            w_mod=config.hyena_w_mod,
            bidirectional=config.bidirectional,
            residual_long_conv=config.residual_long_conv,
            input_norm=config.hyena_training_additions,
        )
        self.mlp = MonarchGluMlp(
            config.hidden_size,
            config.intermediate_size,
            nblocks=config.monarch_mlp_nblocks if config.use_monarch_mlp else None,
            eps=config.layer_norm_eps,
            dropout=config.hidden_dropout_prob,
            glu=config.use_glu_mlp,
        )

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.mlp(self.sequence_mixer(hidden_states, attention_mask=attention_mask))


class M2BertEncoder(nn.Module):
    """The stack of :class:`M2BertLayer` (``encoder.layer.<i>``, as in BERT)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(M2BertLayer(config, i) for i in range(config.num_hidden_layers))


class M2BertPooler(nn.Module):
    """``tanh(dense(x))`` of the first (real) token, or of the masked mean with ``pool_all``."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, pooled_input: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(pooled_input))


class M2BertPreTrainedModel(HazyPreTrainedModel):
    """Base class of the M2-BERT models: config class, weight init, BERT's prefix.

    The Hyena filters (``filter_fn``, ``filter_fn2``) stay in float32 when a checkpoint is
    loaded in half precision (``_keep_in_fp32_modules_strict``): their sine MLP over positions
    and their FFT convolution lose too much in bfloat16, and they hold under 3% of the
    weights. ``model.to(torch.bfloat16)`` casts them like everything else (the convolution
    itself always runs in float32).
    """

    config_class = M2BertConfig
    base_model_prefix = "bert"
    _no_split_modules = ["M2BertLayer"]
    _keep_in_fp32_modules_strict = ["filter_fn"]

    def optimizer_parameter_groups(
        self, learning_rate: float, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Parameter groups with the reference's filter settings, for ``torch.optim.AdamW`` or
        ``Trainer(optimizers=...)``: every filter's positional features ``pos_emb.z`` at
        ``hyena_lr_pos_emb`` without weight decay, the causal filter MLPs (``implicit_filter``
        and the shared ``freq``) at ``long_conv_kernel_learning_rate`` with ``hyena_wd``
        weight decay, everything else at ``learning_rate`` / ``weight_decay`` (a None rate in
        the config means the base rate)."""
        c = self.config
        pos_lr = learning_rate if c.hyena_lr_pos_emb is None else c.hyena_lr_pos_emb
        kernel_lr = (
            learning_rate
            if c.long_conv_kernel_learning_rate is None
            else c.long_conv_kernel_learning_rate
        )
        groups: dict[str, list[nn.Parameter]] = {"pos": [], "kernel": [], "rest": []}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if name.endswith("pos_emb.z"):
                groups["pos"].append(param)
            elif ".implicit_filter." in name or name.endswith(
                ("filter_fn.freq", "filter_fn2.freq")
            ):
                groups["kernel"].append(param)
            else:
                groups["rest"].append(param)
        settings = {
            "pos": dict(lr=pos_lr, weight_decay=0.0),
            "kernel": dict(lr=kernel_lr, weight_decay=c.hyena_wd),
            "rest": dict(lr=learning_rate, weight_decay=weight_decay),
        }
        return [dict(params=p, **settings[k]) for k, p in groups.items() if p]

    def example_inputs(self, batch_size: int = 2, seq_len: int = 8, seed: int = 0) -> dict:
        """Random token ids in ``[1, vocab)`` and an all-ones attention mask."""
        inputs = super().example_inputs(batch_size, seq_len, seed)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return inputs


class M2BertModel(M2BertPreTrainedModel):
    """The M2-BERT encoder: hidden states and (``add_pooling_layer``) the pooler output.

    Loaded from a masked-LM checkpoint (which has no pooler), it is built without one (its
    ``pooler_output`` is None) rather than with a random pooler; the checkpoint's LM head is
    not part of the base model and is left out.
    """

    _keys_to_ignore_on_load_unexpected = [r"cls\.predictions\..*"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """As transformers' (strict, see :class:`HazyPreTrainedModel`); ``add_pooling_layer``
        defaults to whether a local checkpoint holds pooler weights."""
        if "add_pooling_layer" not in kwargs:
            keys = _local_checkpoint_keys(pretrained_model_name_or_path)
            if keys is not None and not any(".pooler." in f".{k}" for k in keys):
                kwargs["add_pooling_layer"] = False
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def __init__(self, config: M2BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = M2BertEmbeddings(config)
        self.encoder = M2BertEncoder(config)
        self.pooler = M2BertPooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def _check_inputs(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> tuple[int, int]:
        config = self.config
        validation.check_exactly_one(input_ids=input_ids, inputs_embeds=inputs_embeds)
        if input_ids is not None:
            validation.check_input_ids(input_ids, config.vocab_size)
            batch, length = input_ids.shape
        else:
            validation.check_inputs_embeds(inputs_embeds, config.hidden_size)
            batch, length = inputs_embeds.shape[:2]
        if length > config.max_input_length:
            raise ValueError(
                f"the input has {length} tokens but this model reads at most {config.max_input_length} "
                f"(config.max_position_embeddings={config.max_position_embeddings}, "
                f"long_conv_l_max={config.long_conv_l_max}); truncate it (tokenizer "
                f"truncation=True, max_length={config.max_input_length})"
            )
        if token_type_ids is not None:
            validation.check_input_ids(
                token_type_ids, config.type_vocab_size, name="token_type_ids"
            )
            if tuple(token_type_ids.shape) != (batch, length):
                raise ValueError(
                    f"token_type_ids must have shape [{batch}, {length}], "
                    f"got {tuple(token_type_ids.shape)}"
                )
        if attention_mask is not None:
            validation.check_attention_mask(attention_mask, batch, length)
            if config.padding_invariant:
                _check_contiguous_rows(attention_mask)
            elif config.pool_all and validation.values_checkable(attention_mask):
                if not bool(attention_mask.bool().any(-1).all()):
                    raise ValueError(
                        "attention_mask has a row without any real token (all zeros): "
                        "pool_all has nothing to average"
                    )
        if position_ids is not None:
            validation.check_position_ids(position_ids, batch, length)
            if config.use_positional_encodings and validation.values_checkable(position_ids):
                top = int(position_ids.max())
                if top >= config.max_position_embeddings:
                    raise ValueError(
                        f"position_ids must be < max_position_embeddings "
                        f"({config.max_position_embeddings}), got {top}"
                    )
        return batch, length

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encode ``input_ids`` (or ``inputs_embeds``) ``[batch, seq]``.

        Args:
            attention_mask: ``[batch, seq]``, 1 for tokens and 0 for padding. Read by the mixers
                and the pooler when ``config.padding_invariant``; otherwise only by ``pool_all``
                pooling (the released semantics: pad tokens are processed as tokens).
            token_type_ids: segment ids (default zeros).
            position_ids: absolute positions; by default ``0..seq-1``, or counted over real
                tokens when ``config.padding_invariant``.
            output_hidden_states, return_dict: as in transformers (the config's switch when
                None). ``output_attentions=True`` is an error: there is no attention.
        """
        config = self.config
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}.forward got unexpected arguments {sorted(kwargs)}"
            )
        if _flag(output_attentions, config, "output_attentions"):
            raise ValueError(
                "output_attentions=True, but M2-BERT has no attention: its sequence mixer is a "
                "gated long convolution with no attention weights"
            )
        output_hidden_states = _flag(output_hidden_states, config, "output_hidden_states")
        return_dict = return_dict if return_dict is not None else config.return_dict
        batch, length = self._check_inputs(
            input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids
        )
        if inputs_embeds is None:
            inputs_embeds = self.embeddings.word_embeddings(input_ids)
        device = inputs_embeds.device
        if token_type_ids is None:
            token_type_ids = torch.zeros(batch, length, dtype=torch.long, device=device)
        invariant = config.padding_invariant and attention_mask is not None
        if position_ids is None and config.use_positional_encodings:
            if invariant:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            else:
                position_ids = torch.arange(length, device=device)[None]
        mixer_mask = attention_mask if invariant else None

        hidden_states = self.embeddings(inputs_embeds, token_type_ids, position_ids)
        all_hidden = [hidden_states] if output_hidden_states else None
        for layer in self.encoder.layer:
            hidden_states = layer(hidden_states, attention_mask=mixer_mask)
            if all_hidden is not None:
                all_hidden.append(hidden_states)

        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(self.pool_input(hidden_states, attention_mask))
        out = BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        return out if return_dict else out.to_tuple()

    def first_token(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``[batch, hidden]``: position 0, or the first real token when padding-invariant."""
        if not self.config.padding_invariant or attention_mask is None:
            return hidden_states[:, 0]
        first = attention_mask.long().argmax(-1)
        return hidden_states[torch.arange(hidden_states.shape[0], device=first.device), first]

    def pool_input(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """What the pooler reads: the first (real) token, or with ``pool_all`` the mean of the
        real tokens (all tokens without a mask)."""
        if not self.config.pool_all:
            return self.first_token(hidden_states, attention_mask)
        if attention_mask is None:
            return hidden_states.mean(1)
        mask = attention_mask.to(hidden_states.dtype)[..., None]
        return (hidden_states * mask).sum(1) / mask.sum(1)


class M2BertForTextEncoding(M2BertPreTrainedModel):
    """Sentence embeddings for retrieval: ``sentence_embedding [batch, hidden]`` is the pooler
    output, as the released ``m2-bert-80M-*-retrieval`` models return (or the first token's
    hidden state with ``use_cls_token``; L2-normalised with ``normalize_embeddings``).
    Compare embeddings by cosine similarity."""

    lora_target_modules = M2BERT_LORA_TARGET_MODULES

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__(config)
        with config_already_checked():
            self.bert = M2BertModel(config, add_pooling_layer=not config.use_cls_token)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.bert.set_input_embeddings(value)

    def _save_extra_files(self, save_directory: Any) -> None:
        """``modules.json`` and the sentence-transformers configs, so the saved directory is
        also a sentence-transformers model encoding exactly ``sentence_embedding``."""
        from hazyzoo.integrations.sentence_transformers import write_sentence_transformers_files

        write_sentence_transformers_files(save_directory, config=self.config)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> M2BertTextEncodingOutput | tuple:
        """The sentence embedding of each input (arguments as :meth:`M2BertModel.forward`)."""
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        if self.config.use_cls_token:
            embedding = self.bert.first_token(out.last_hidden_state, attention_mask)
        else:
            embedding = out.pooler_output
        if self.config.normalize_embeddings:
            embedding = F.normalize(embedding, p=2, dim=-1)
        result = M2BertTextEncodingOutput(
            sentence_embedding=embedding,
            last_hidden_state=out.last_hidden_state,
            hidden_states=out.hidden_states,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return result if return_dict else result.to_tuple()


class M2BertPredictionHeadTransform(nn.Module):
    """``LayerNorm(act(dense(h)))`` (BERT's; the reference fixes the norm's eps at 1e-12)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class M2BertLMPredictionHead(nn.Module):
    """The transform, then the decoder to the vocabulary (tied to the word embeddings)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.transform = M2BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class M2BertOnlyMLMHead(nn.Module):
    """BERT's ``cls.predictions`` wrapper (kept for its weight names)."""

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__()
        self.predictions = M2BertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


class M2BertForMaskedLM(M2BertPreTrainedModel):
    """M2-BERT with BERT's masked-language-modelling head (the pretraining objective).

    ``labels [batch, seq]``: the original ids at masked positions and -100 elsewhere (e.g. from
    ``DataCollatorForLanguageModeling``); the loss is the mean cross-entropy over them.
    """

    lora_target_modules = ["in_linear", "out_linear"]
    # A text encoder's checkpoint has a pooler, which masked-LM training does not use.
    _keys_to_ignore_on_load_unexpected = [r"bert\.pooler\..*"]
    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"
    }

    def __init__(self, config: M2BertConfig) -> None:
        super().__init__(config)
        with config_already_checked():
            self.bert = M2BertModel(config, add_pooling_layer=False)
        self.cls = M2BertOnlyMLMHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.bert.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.cls.predictions.decoder = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        """Logits ``[batch, seq, vocab]`` and, with ``labels``, the masked-LM loss."""
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.cls(out.last_hidden_state)
        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(logits.shape[:2]):
                raise ValueError(
                    f"labels must have shape {list(logits.shape[:2])} (one id or -100 per "
                    f"input position), got {list(labels.shape)}"
                )
            validation.check_labels(labels, *logits.shape[:2], self.config.vocab_size)
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return result if return_dict else result.to_tuple()
