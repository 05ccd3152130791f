"""MAD hybrids (Poli et al. 2024) on the shared stack: a language model and MAD's autoencoder.

A :class:`~hazyzoo.MadConfig` is a list of layers; each becomes one pre-norm block of the shared
decoder stack (``x = x + layer(norm(x))``; a ``"a+b"`` layer is a sequence mixer and a channel
mixer in one block). :class:`MadForCausalLM` is MAD's ``LanguageModel`` (token embedding, the
blocks, final norm, an output projection with a bias), with the zoo's cache and ``generate``.
:class:`MadAutoEncoder` is MAD's ``AutoEncoder`` for the compression task: the blocks encode
the sequence, the last position's state is the code, and an MLP decoder over sine-cosine
positional embeddings reconstructs ``max_position_embeddings`` tokens from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from hazyzoo import validation
from hazyzoo.configuration.configuration_mad import MadConfig
from hazyzoo.modeling.base import config_already_checked, mark_residual_projections
from hazyzoo.modeling.decoder_lm import (
    HazyDecoderModel,
    HazyDecoderPreTrainedModel,
    HazyForCausalLM,
)
from hazyzoo.modeling.layers.decoder import DecoderLayer
from hazyzoo.modeling.layers.norm import build_norm

__all__ = [
    "MAD_LORA_TARGET_MODULES",
    "MadAutoEncoder",
    "MadAutoEncoderOutput",
    "MadForCausalLM",
    "MadModel",
    "MadPreTrainedModel",
    "posemb_sincos_1d",
]

# Linear layers a LoRA adapter targets on MAD hybrids (attention, Hyena, Mamba and MLP names).
MAD_LORA_TARGET_MODULES = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "in_proj",
    "out_proj",
    "up_proj",
    "down_proj",
    "gate_proj",
]


class MadPreTrainedModel(HazyDecoderPreTrainedModel):
    """Base class of the MAD models: config class, weight init and the stack's settings."""

    config_class = MadConfig
    lora_target_modules = MAD_LORA_TARGET_MODULES
    # Hyena's long filters (an MLP of sines over positions, or RTF coefficients) stay float32
    # when the model is loaded in half precision: their kernels are not accurate in bfloat16.
    _keep_in_fp32_modules_strict = ["long_conv.filter"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """MAD's init: Linear weights keep PyTorch's default (uniform +-1/sqrt(fan_in)) and
        biases start at zero, embeddings N(0, initializer_range); modules with their own hook
        (Mamba's dt projection, Hyena's filters, norms) use it. The normal(0, 0.02) the other
        zoo models use would leave Hyena's implicit filters (a sine MLP) with ~1e-6 kernels."""
        if isinstance(module, nn.Linear) and not hasattr(module, "_init_hazy_weights"):
            bound = 1.0 / math.sqrt(module.in_features)
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        super()._init_weights(module)


class MadModel(MadPreTrainedModel, HazyDecoderModel):
    """The MAD blocks without a head: final (normed) hidden states and the cache. Loaded from
    a language model's checkpoint, it leaves the head out."""

    _keys_to_ignore_on_load_unexpected = [r"lm_head\..*"]


class MadForCausalLM(MadPreTrainedModel, HazyForCausalLM, GenerationMixin):
    """MAD's language model: the blocks, a final norm and the output projection ``lm_head``
    (with a bias when ``config.lm_head_bias``, as MAD's ``unembed``; untied by default).

    Causal primitives keep fixed-size caches (attention's grows); Hyena's filters are defined
    for ``max_position_embeddings`` positions, so generation stops being possible there.
    """

    base_model_class = MadModel

    def __init__(self, config: MadConfig) -> None:
        if config.backbone != "language-model":
            raise ValueError(
                f"MadForCausalLM needs backbone='language-model', got {config.backbone!r} "
                "(use MadAutoEncoder)"
            )
        super().__init__(config)


def posemb_sincos_1d(length: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``[length, dim]`` fixed positional embeddings: ``[sin(n w_j), cos(n w_j)]`` with
    ``w_j = temperature ** (-j / (dim / 2 - 1))`` (MAD's autoencoder decoder's)."""
    if dim % 2:
        raise ValueError(f"the sine-cosine embedding needs an even width, got {dim}")
    half = dim // 2
    omega = torch.exp(-torch.arange(half, dtype=torch.float32) * math.log(temperature) / (half - 1))
    n = torch.arange(length, dtype=torch.float32)[:, None]
    return torch.cat([torch.sin(n * omega), torch.cos(n * omega)], dim=1)


@dataclass
class MadAutoEncoderOutput(ModelOutput):
    """``logits`` [batch, max_position_embeddings, vocab], ``encoding`` [batch, hidden] (the
    code: the encoder's last position), ``loss`` (cross-entropy against ``labels``)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    encoding: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None


class MadAutoEncoder(MadPreTrainedModel):
    """MAD's compression-task model: ``encoding = blocks(embed(ids))[:, -1]`` (no final norm),
    then ``h = encoding + P`` for the fixed positions ``P`` (:func:`posemb_sincos_1d`) of all
    ``max_position_embeddings`` outputs, ``decoder`` = norm, Linear, GELU, norm, Linear,
    GELU, then the output norm and ``lm_head``. ``labels`` ([batch, max_position_embeddings],
    -100 ignored) are the tokens to reconstruct, position for position (no shift).
    """

    _is_stateful = False
    _no_split_modules = ["DecoderLayer"]

    def __init__(self, config: MadConfig) -> None:
        if config.backbone != "autoencoder":
            raise ValueError(
                f"MadAutoEncoder needs backbone='autoencoder', got {config.backbone!r} "
                "(use MadForCausalLM)"
            )
        super().__init__(config)
        dim = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, dim)
        with config_already_checked():
            self.layers = nn.ModuleList(
                DecoderLayer.from_config(config, i) for i in range(config.num_hidden_layers)
            )
        self.decoder = nn.Sequential(
            build_norm(config),
            nn.Linear(dim, dim),
            nn.GELU(),
            build_norm(config),
            nn.Linear(dim, dim),
            nn.GELU(),
        )
        self.norm = build_norm(config)
        self.lm_head = nn.Linear(dim, config.vocab_size, bias=config.lm_head_bias)
        self.register_buffer(
            "positions", posemb_sincos_1d(config.max_position_embeddings, dim), persistent=False
        )
        mark_residual_projections(self)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def encode(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(encoding [batch, hidden], aux_loss)``: the residual stream at the last position."""
        validation.check_input_ids(input_ids, self.config.vocab_size)
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {length} positions; this autoencoder reads at most "
                f"max_position_embeddings={self.config.max_position_embeddings}"
            )
        mask = None
        if attention_mask is not None:
            validation.check_attention_mask(attention_mask, *input_ids.shape, 0)
            mask = attention_mask.bool()
        dtype = torch.float32 if self.config.residual_in_fp32 else self.embed_tokens.weight.dtype
        h = self.embed_tokens(input_ids).to(dtype)
        positions = torch.arange(length, device=h.device)[None].expand(h.shape[0], -1)
        aux = None
        for layer in self.layers:
            h, layer_aux, _ = layer(h, attention_mask=mask, position_ids=positions)
            if layer_aux is not None:
                aux = layer_aux if aux is None else aux + layer_aux
        return h[:, -1], aux

    def decode(self, encoding: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, max_position_embeddings, vocab]`` from codes ``[batch, hidden]``."""
        h = encoding[:, None, :] + self.positions.to(encoding.dtype)[None]
        h = self.decoder(h.to(self.lm_head.weight.dtype))
        return self.lm_head(self.norm(h))

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MadAutoEncoderOutput | tuple:
        """Reconstruction logits and, with ``labels``, the cross-entropy (plus any aux loss)."""
        encoding, aux = self.encode(input_ids, attention_mask)
        logits = self.decode(encoding)
        loss = None
        if labels is not None:
            validation.check_labels(labels, *logits.shape[:2], self.config.vocab_size)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten().to(logits.device), ignore_index=-100
            )
            if aux is not None:
                loss = loss + aux.to(loss.dtype)
        out = MadAutoEncoderOutput(loss=loss, logits=logits, encoding=encoding, aux_loss=aux)
        if return_dict is None:
            return_dict = bool(getattr(self.config, "return_dict", True))
        return out if return_dict else out.to_tuple()
