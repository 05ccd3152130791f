"""The shared decoder stack: a list of blocks, each a sequence mixer and/or a channel mixer.

An architecture is a config whose ``mixer_types`` and ``channel_mixer_types`` name one
registered mixer per layer (see :mod:`hazyzoo.modeling.layers.registry`), with ``norm_type``
choosing the norms; its ``<Name>PreTrainedModel`` derives from
:class:`HazyDecoderPreTrainedModel`, and its model classes from that and the generic
:class:`HazyDecoderModel` / :class:`HazyForCausalLM`. The pieces a transformers user relies on
live here once: tied embeddings, gradient checkpointing, the :class:`HazyCache` that
``generate`` creates itself (``prefill_chunk_size`` and ``cache_implementation`` included),
left-padding aware positions, keyword arguments threaded to every mixer, auxiliary losses added
to the LM loss, the output flags of the config, input validation, and the ``past_key_values`` ->
``cache`` rename of transformers 5.24.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from hazyzoo import validation
from hazyzoo.modeling.base import (
    HazyPreTrainedModel,
    config_already_checked,
    mark_residual_projections,
)
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.graphs import CudaGraphDecoder
from hazyzoo.modeling.layers.decoder import DecoderLayer
from hazyzoo.modeling.layers.norm import build_norm

# transformers 5.24 renamed the output field (and generate's model kwarg) ``past_key_values``
# to ``cache``.
CACHE_FIELD = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
)
# ``cache_implementation`` values generate may be asked for: the model's own cache serves them
# all (it is fixed-size for recurrent layers already); others are refused with a clear error.
_SERVED_CACHE_IMPLEMENTATIONS = (None, "dynamic", "static")
# Config fields that do not shape any cache state (left out of a cache's signature).
_NON_ARCHITECTURE_FIELDS = frozenset(
    {
        "use_cache",
        "initializer_range",
        "tie_word_embeddings",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "vocab_size",
        "residual_in_fp32",
        # training objective settings (JRT): no effect on any state
        "mask_token_id",
        "mlm_loss_weight",
        "mlm_probability",
        "loss_on_prefix",
    }
)


@dataclass
class HazyModelOutput(BaseModelOutputWithPast):
    """``BaseModelOutputWithPast`` plus ``aux_loss``: the sum of the mixers' auxiliary losses
    (e.g. MoE load balancing), None when no mixer has one."""

    aux_loss: torch.FloatTensor | None = None


@dataclass
class HazyCausalLMOutput(CausalLMOutputWithPast):
    """``CausalLMOutputWithPast`` plus ``aux_loss`` (already included in ``loss``)."""

    aux_loss: torch.FloatTensor | None = None


def resolve_cache_argument(past_key_values: Any, cache: Any) -> Any:
    """Accept the cache under either name (transformers <5.24 ``past_key_values``, >=5.24 ``cache``)."""
    if past_key_values is not None and cache is not None and past_key_values is not cache:
        raise ValueError("pass the cache as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


def default_position_ids(
    attention_mask: torch.Tensor | None, past: int, length: int, batch: int, device: torch.device
) -> torch.LongTensor:
    """Positions of the ``length`` new tokens: counted over real tokens when the mask covers
    past and new positions (so left padding does not shift them), else ``past .. past+length``."""
    if attention_mask is not None and attention_mask.shape[1] == past + length:
        counted = attention_mask.long().cumsum(-1) - 1
        return counted[:, -length:].clamp(min=0)
    return torch.arange(past, past + length, device=device)[None].expand(batch, -1)


def prefix_end(attention_mask: torch.Tensor | None, length: int, prefix: int) -> int:
    """How many leading positions hold every row's first ``prefix`` real tokens."""
    if attention_mask is None:
        return min(prefix, length)
    real = attention_mask[:, -length:].bool()
    used = (real & (real.long().cumsum(-1) <= prefix)).any(0).nonzero()
    return int(used[-1]) + 1 if used.numel() else 0


def _flag(value: bool | None, config: PreTrainedConfig, name: str, default: bool) -> bool:
    """A forward argument, else the config's switch of the same name (as transformers does)."""
    return value if value is not None else bool(getattr(config, name, default))


class HazyDecoderPreTrainedModel(HazyPreTrainedModel):
    """Settings every hazyzoo decoder shares: blocks are the unit of device placement, the
    model is stateful (it keeps a recurrent cache, so transformers' assisted and prompt-lookup
    decoding are refused by design), SDPA is what the attention mixers use."""

    _no_split_modules = ["DecoderLayer"]
    _is_stateful = True
    _supports_sdpa = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The model builds its own HazyCache; a DynamicCache would be wrong here.
        return False


class HazyDecoderModel(HazyDecoderPreTrainedModel):
    """Embedding -> ``num_hidden_layers`` pre-norm blocks -> final norm. Returns hidden states,
    the cache, the mixers' auxiliary loss and, when asked, hidden states and attentions."""

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__(config)
        for name in ("mixer_types", "channel_mixer_types"):
            kinds = getattr(config, name)
            if len(kinds) != config.num_hidden_layers:
                raise ValueError(
                    f"{name} lists {len(kinds)} layers but num_hidden_layers is "
                    f"{config.num_hidden_layers}: give one entry per layer"
                )
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer.from_config(config, idx) for idx in range(config.num_hidden_layers)
        )
        self.norm = build_norm(config)
        mark_residual_projections(self)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def cache_signature(self) -> tuple:
        """What a cache must match to continue this model: the architecture fields of its
        config (flags such as ``use_cache`` or token ids do not change any state's shape)."""
        c = self.config
        own = getattr(c, "own_fields", None)
        fields = own() if own is not None else sorted(c.to_diff_dict())
        skip = _NON_ARCHITECTURE_FIELDS
        return (c.model_type, *((k, repr(getattr(c, k, None))) for k in fields if k not in skip))

    @property
    def noncausal_prefix_length(self) -> int:
        """How many leading real tokens some mixer reads non-causally (0 for causal models):
        they must all arrive in the first call on a cache (JRT's prefix)."""
        return max(
            (getattr(layer.mixer, "noncausal_prefix_length", 0) for layer in self.layers),
            default=0,
        )

    def make_cache_layers(self) -> list:
        """Fresh, empty cache layers, one per block."""
        return [layer.make_cache_layer() for layer in self.layers]

    def make_cache(self) -> HazyCache:
        """An empty cache for this model (one layer state per block)."""
        cache = HazyCache(self.make_cache_layers())
        cache.signature = self.cache_signature()
        return cache

    def _check_cache(self, cache: HazyCache, batch: int) -> None:
        if not isinstance(cache, HazyCache):
            raise TypeError(
                f"{type(self).__name__} needs a HazyCache (from model.make_cache()), "
                f"got {type(cache).__name__}"
            )
        validation.check_cache_compatible(
            cache, [type(layer) for layer in self.make_cache_layers()], batch
        )
        signature = getattr(cache, "signature", None)
        if signature is not None and signature != self.cache_signature():
            raise ValueError(
                "the cache was built by a model of another shape "
                f"(hidden_size/layers differ from this {self.config.model_type} model)"
            )

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
    ) -> HazyModelOutput | tuple:
        """Run the stack.

        Args:
            input_ids: [batch, seq] token ids (or give ``inputs_embeds`` [batch, seq, hidden]).
            attention_mask: [batch, past + seq] or [batch, seq], 1 for tokens and 0 for padding.
                Padding tokens do not reach any other token. When a cache is built or continued
                the padding must be on the left (a recurrent state cannot skip trailing pads).
            position_ids: [batch, seq] rotary positions; by default counted over real tokens.
            cache / past_key_values: a :class:`HazyCache` to continue from (updated in place).
            use_cache: return a cache (a new one is made when none is given); by default in
                eval mode only, as training never needs the recurrent state.
            output_hidden_states, output_attentions, return_dict: as in transformers; when None,
                the config's switch of the same name decides.
            **kwargs: passed to every mixer (see ``hazyzoo.modeling.layers.protocol``).
        """
        cache = resolve_cache_argument(past_key_values, cache)
        config = self.config
        output_hidden_states = _flag(output_hidden_states, config, "output_hidden_states", False)
        output_attentions = _flag(output_attentions, config, "output_attentions", False)
        return_dict = _flag(return_dict, config, "return_dict", True)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        past = cache.get_seq_length() if isinstance(cache, HazyCache) else 0
        given = input_ids if input_ids is not None else inputs_embeds
        if past and isinstance(given, torch.Tensor) and given.dim() >= 2 and given.shape[1] == 0:
            raise ValueError(
                f"the input adds no new positions, but the cache has already seen {past}: pass "
                "only the new tokens to forward, or to generate a prompt that extends what the "
                "cache has seen"
            )
        if inputs_embeds is None:
            validation.check_input_ids(input_ids, self.embed_tokens.num_embeddings)
            inputs_embeds = self.embed_tokens(input_ids)
        validation.check_inputs_embeds(inputs_embeds, config.hidden_size)
        batch, length = inputs_embeds.shape[:2]
        if use_cache is None:
            use_cache = config.use_cache and not self.training
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if cache is not None:
            self._check_cache(cache, batch)
        if length == 0:
            raise ValueError("the input has no positions (sequence length 0)")
        if use_cache and cache is None:
            cache = self.make_cache()

        if cache is not None and past and not getattr(cache, "continuable", True):
            raise ValueError(
                "this cache was built from a right- or middle-padded attention mask, so its "
                "state includes the wrong positions; pad prompts on the left to generate or to "
                "continue a cache (tokenizer.padding_side = 'left')"
            )
        chunk_mask = None
        if attention_mask is not None:
            # Continuing a cache needs left padding (a recurrent state cannot skip trailing
            # pads); a fresh cache built from another padding is marked so it cannot be
            # continued, while its logits (right padding in evaluation loops) stay valid.
            left_padded = validation.check_attention_mask(
                attention_mask, batch, length, past, require_left_padding=past > 0
            )
            if cache is not None and past == 0 and not left_padded:
                cache.continuable = False
            chunk_mask = attention_mask[:, -length:].bool()
        if position_ids is None:
            position_ids = default_position_ids(
                attention_mask, past, length, batch, inputs_embeds.device
            )
        else:
            validation.check_position_ids(position_ids, batch, length)

        residual_dtype = torch.float32 if config.residual_in_fp32 else inputs_embeds.dtype
        hidden_states = inputs_embeds.to(residual_dtype)
        all_hidden = [] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        aux_loss = None
        if output_attentions:
            kwargs["output_attentions"] = True
        for idx, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            hidden_states, aux, attentions = layer(
                hidden_states,
                attention_mask=chunk_mask,
                position_ids=position_ids,
                cache_layer=cache.layers[idx] if cache is not None else None,
                **kwargs,
            )
            if aux is not None:
                aux_loss = aux if aux_loss is None else aux_loss + aux
            if all_attentions is not None:
                all_attentions.append(attentions)
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden.append(hidden_states)
        if all_attentions is not None and all(a is None for a in all_attentions):
            raise ValueError(
                f"output_attentions=True, but none of this model's mixers "
                f"({sorted(set(config.mixer_types))}) computes attention weights"
            )
        if cache is not None:
            cache.advance(length)
        out = HazyModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attentions) if all_attentions is not None else None,
            aux_loss=aux_loss,
            **{CACHE_FIELD: cache if use_cache else None},
        )
        return out if return_dict else out.to_tuple()


class HazyForCausalLM(HazyDecoderPreTrainedModel, GenerationMixin):
    """A :class:`HazyDecoderModel` with a (tied) language-model head; generates with the cache.

    Subclasses set ``config_class`` and ``base_model_class`` (and list ``GenerationMixin`` among
    their own bases, as transformers' LM classes do).
    """

    base_model_class: type[HazyDecoderModel] = HazyDecoderModel
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__(config)
        with config_already_checked():
            self.model = self.base_model_class(config)
        self.vocab_size = config.vocab_size
        # a bias only where the config asks for one (MAD's output projection has it)
        bias = bool(getattr(config, "lm_head_bias", False))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=bias)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def make_cache(self) -> HazyCache:
        """An empty cache (see :meth:`HazyDecoderModel.make_cache`)."""
        return self.model.make_cache()

    # --- generate --------------------------------------------------------------------------
    def generate(self, inputs: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        """transformers' ``generate``, with its length and count arguments checked first (a
        ``max_new_tokens=2.5`` or ``"10"`` is an error naming it, not a failure deep inside)."""
        validation.check_generation_lengths(**kwargs)
        validation.check_generation_config(
            kwargs.get("generation_config") or self.generation_config
        )
        return super().generate(inputs, *args, **kwargs)

    def _prepare_cache_for_generation(
        self,
        generation_config: Any,
        model_kwargs: dict,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Give ``generate`` this model's own cache, so chunked prefill (``prefill_chunk_size``)
        and ``cache_implementation="static"`` work without the user building one. The cache of
        the recurrent layers is fixed-size already, so "static" needs nothing more."""
        implementation = generation_config.cache_implementation
        if model_kwargs.get(CACHE_FIELD) is not None:
            if implementation is not None:
                raise ValueError(
                    "pass either cache_implementation or a cache to generate, not both"
                )
            return
        if generation_config.use_cache is False:
            return
        if implementation not in _SERVED_CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"cache_implementation={implementation!r} is not supported by "
                f"{type(self).__name__}, which generates from its own cache; use None, "
                "'dynamic' or 'static' (all give the same cache)"
            )
        model_kwargs[CACHE_FIELD] = self.make_cache()

    def _prefill(
        self,
        input_ids: torch.LongTensor,
        generation_config: Any,
        model_kwargs: dict,
        *args,
        **kwargs,
    ) -> Any:
        """transformers' prefill; for a model with a non-causal prefix, a ``prefill_chunk_size``
        too small to hold every row's prefix is widened to hold it (the prefix must be read
        in one call, or the positions of the first chunk could not see the rest of it)."""
        chunk = generation_config.prefill_chunk_size
        prefix = self.model.noncausal_prefix_length
        cache = model_kwargs.get(CACHE_FIELD)
        if (
            chunk is not None
            and prefix
            and isinstance(cache, HazyCache)
            and not cache.get_seq_length()
        ):
            need = prefix_end(model_kwargs.get("attention_mask"), input_ids.shape[1], prefix)
            if need > chunk:
                generation_config = copy.copy(generation_config)
                generation_config.prefill_chunk_size = need
        return super()._prefill(input_ids, generation_config, model_kwargs, *args, **kwargs)

    def _valid_auto_compile_criteria(self, model_kwargs: dict, generation_config: Any) -> bool:
        # transformers compiles the decode step for "static" caches; the hazyzoo cache is
        # updated by Python-level mixer code that CUDA-graph replay serves instead.
        return False

    # --- CUDA-graph decode -----------------------------------------------------------------
    def enable_cuda_graph_decode(self, enabled: bool = True, compile: bool = False) -> None:
        """Replay single-token decode steps from a captured CUDA graph (CUDA, inference only).

        Decode steps of a deep hybrid are launch-bound at small and medium batch; the graph removes
        that overhead. Capture happens on the first decode step of each new cache (each
        ``generate`` call) and costs about two eager steps. Other calls run eagerly as before.
        Caches with layers that cannot be replayed (a growing key/value cache) run eagerly.
        ``compile=True`` captures the ``torch.compile``d step instead (inductor fuses the
        small per-layer ops; the first capture at each batch size compiles, which takes tens of
        seconds at the 1.3B shapes).
        """
        for name, value in (("enabled", enabled), ("compile", compile)):
            if not isinstance(value, bool):
                raise TypeError(
                    f"enable_cuda_graph_decode: {name} must be True or False, got {value!r}"
                )
        self._graph_decoder = CudaGraphDecoder(self, compile=compile) if enabled else None

    def decode_step(
        self, input_ids: torch.LongTensor, position_ids: torch.LongTensor, cache: HazyCache
    ) -> torch.Tensor:
        """Logits [batch, 1, vocab] of one real token per row, updating ``cache`` in place but
        not its position count (the caller advances it). The body the CUDA graph captures."""
        hidden = self.model.embed_tokens(input_ids)
        dtype = torch.float32 if self.config.residual_in_fp32 else hidden.dtype
        hidden = hidden.to(dtype)
        for idx, layer in enumerate(self.model.layers):
            hidden = layer(hidden, position_ids=position_ids, cache_layer=cache.layers[idx])[0]
        return self.lm_head(self.model.norm(hidden))

    def _can_replay_graph(
        self, input_ids, cache, attention_mask, inputs_embeds, labels, flags
    ) -> bool:
        decoder = getattr(self, "_graph_decoder", None)
        if decoder is None or input_ids is None or inputs_embeds is not None or labels is not None:
            return False
        if any(flags) or self.training or torch.is_grad_enabled():
            return False
        if not input_ids.is_cuda or input_ids.shape[1] != 1 or not isinstance(cache, HazyCache):
            return False
        if not cache.supports_graph_replay or cache.get_seq_length() == 0:
            return False
        if not all(layer.has_state for layer in cache.layers):
            return False
        return attention_mask is None or bool(attention_mask[:, -1].all())

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
        **kwargs: Any,
    ) -> HazyCausalLMOutput | tuple:
        """Logits [batch, seq, vocab] (the last ``logits_to_keep`` positions if > 0), the loss
        when ``labels`` are given (shifted inside, -100 ignored; plus the mixers' auxiliary
        losses), and the cache. Other keyword arguments reach every mixer and the loss."""
        cache = resolve_cache_argument(past_key_values, cache)
        return_dict = _flag(return_dict, self.config, "return_dict", True)
        hidden_flags = (
            _flag(output_hidden_states, self.config, "output_hidden_states", False),
            _flag(output_attentions, self.config, "output_attentions", False),
        )
        if self._can_replay_graph(
            input_ids, cache, attention_mask, inputs_embeds, labels, hidden_flags
        ):
            past = cache.get_seq_length()
            if position_ids is None:
                position_ids = default_position_ids(
                    attention_mask, past, 1, input_ids.shape[0], input_ids.device
                )
            logits = self._graph_decoder(input_ids, position_ids, cache)
            cache.advance(1)
            out = HazyCausalLMOutput(logits=logits, **{CACHE_FIELD: cache})
            return out if return_dict else out.to_tuple()
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=hidden_flags[0],
            output_attentions=hidden_flags[1],
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        validation.check_logits_to_keep(logits_to_keep, hidden_states.shape[1])
        if isinstance(logits_to_keep, int):
            keep = slice(-logits_to_keep, None) if logits_to_keep > 0 else slice(None)
        else:
            keep = logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            validation.check_labels(labels, *hidden_states.shape[:2], self.vocab_size)
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)
            if outputs.aux_loss is not None:
                loss = loss + outputs.aux_loss.to(loss.dtype)
        out = HazyCausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            aux_loss=outputs.aux_loss,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return out if return_dict else out.to_tuple()
