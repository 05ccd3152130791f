"""A generic pre-norm decoder language model whose layers take their mixer from the config.

BASED uses it directly; JRT-RNN, RTF and the MAD hybrids reuse it by registering their mixers
with :func:`register_mixer` and giving their config a ``mixer_types`` list (one name a layer).
The pieces a transformers user relies on live here once: weight init that survives
``from_pretrained`` on the meta device, tied embeddings, gradient checkpointing, the recurrent
:class:`~hazyzoo.modeling.cache.HazyCache` for ``generate`` (which never grows), left-padding
aware positions, and the ``past_key_values`` -> ``cache`` rename of transformers 5.24.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from hazyzoo.hub import push_folder_to_hub, write_model_card
from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.graphs import CudaGraphDecoder
from hazyzoo.modeling.layers.base_conv import BaseConv
from hazyzoo.modeling.layers.decoder import DecoderLayer
from hazyzoo.modeling.layers.linear_attention import TaylorLinearAttention
from hazyzoo.modeling.layers.mlp import SwiGLUMLP
from hazyzoo.modeling.layers.norm import RMSNorm
from hazyzoo.modeling.layers.sliding_window import SlidingWindowAttention

MixerFactory = Callable[[PreTrainedConfig, int], nn.Module]
MIXER_FACTORIES: dict[str, MixerFactory] = {}

# transformers 5.24 renamed the output field ``past_key_values`` to ``cache``.
CACHE_FIELD = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
)
# Output projections that write into the residual stream (scaled down at init, GPT-2 style).
RESIDUAL_PROJECTIONS = ("o_proj", "out_proj", "down_proj")
_HUB_KEYS = ("repo_id", "commit_message", "private", "token", "create_pr", "revision")


def register_mixer(name: str, factory: MixerFactory) -> None:
    """Make ``name`` usable in a config's ``mixer_types``; ``factory(config, layer_idx)`` builds it."""
    MIXER_FACTORIES[name] = factory


register_mixer(
    "base_conv",
    lambda c, i: BaseConv(
        c.hidden_size, c.conv_expansion * c.hidden_size, c.conv_kernel_size, c.conv_bias, i
    ),
)
register_mixer(
    "linear_attention",
    lambda c, i: TaylorLinearAttention(
        c.hidden_size, c.num_attention_heads, c.feature_dim, c.linear_attention_eps, i
    ),
)
register_mixer(
    "sliding_window_attention",
    lambda c, i: SlidingWindowAttention(
        c.hidden_size, c.sliding_window_num_heads, c.sliding_window, c.rope_theta, i
    ),
)


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


class HazyPreTrainedModel(PreTrainedModel):
    """Shared PreTrainedModel settings of hazyzoo's decoder models."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderLayer"]
    _is_stateful = True
    _supports_attention_backend = False

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The model builds its own HazyCache in forward; a DynamicCache would be wrong here.
        return False

    def save_pretrained(
        self, save_directory: str | Path, *args: Any, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """transformers' ``save_pretrained`` plus a hazyzoo model card (``README.md``, written
        when absent). With ``push_to_hub=True`` the directory (config, weights, generation
        config, card) is uploaded to ``repo_id`` (default: the directory name)."""
        hub = {k: kwargs.pop(k) for k in _HUB_KEYS if k in kwargs}
        if "token" in hub:
            kwargs["token"] = hub["token"]
        super().save_pretrained(save_directory, *args, push_to_hub=False, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        write_model_card(save_directory, overwrite=False)
        if push_to_hub:
            repo_id = hub.pop("repo_id", None) or Path(save_directory).name
            push_folder_to_hub(save_directory, repo_id, **hub)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: list[str] | None = None,
        base_model: str | None = None,
    ) -> Any:
        """Upload config, safetensors weights, generation config and the hazyzoo model card
        to ``repo_id`` in one commit."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, max_shard_size=max_shard_size)
            write_model_card(tmp, repo_id=repo_id, tags=tags, base_model=base_model)
            return push_folder_to_hub(
                tmp,
                repo_id,
                commit_message=commit_message,
                private=private,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Reference init: normal(0, initializer_range); residual output projections scaled by
        1/sqrt(2 * num_layers); depthwise convolutions uniform(+-1/sqrt(kernel)); norms one.

        Uses ``transformers.initialization`` so weights loaded by ``from_pretrained`` are kept.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            scale = 1.0
            if getattr(module, "_hazy_residual_projection", False):
                scale = 1.0 / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std * scale)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Conv1d):
            bound = 1.0 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)


class HazyDecoderModel(HazyPreTrainedModel):
    """Embedding -> ``num_hidden_layers`` pre-norm blocks (mixer from ``config.mixer_types``
    + SwiGLU MLP) -> final RMSNorm. Returns hidden states and the recurrent cache."""

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        layers = []
        for idx, kind in enumerate(config.mixer_types):
            if kind not in MIXER_FACTORIES:
                raise ValueError(
                    f"mixer_types[{idx}] = {kind!r} is not a registered mixer; "
                    f"choose from {sorted(MIXER_FACTORIES)}"
                )
            mixer = MIXER_FACTORIES[kind](config, idx)
            mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size)
            layers.append(DecoderLayer(config.hidden_size, mixer, mlp, config.rms_norm_eps, idx))
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in RESIDUAL_PROJECTIONS:
                module._hazy_residual_projection = True
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def make_cache(self) -> HazyCache:
        """An empty recurrent cache for this model (one fixed-size layer state per layer)."""
        return HazyCache([layer.mixer.make_cache_layer() for layer in self.layers])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HazyCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: HazyCache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the stack.

        Args:
            input_ids: [batch, seq] token ids (or give ``inputs_embeds`` [batch, seq, hidden]).
            attention_mask: [batch, past + seq] or [batch, seq], 1 for tokens and 0 for padding
                (left padding for batched generation). Padding tokens do not reach any other token.
            position_ids: [batch, seq] rotary positions; by default counted over real tokens.
            cache / past_key_values: a :class:`HazyCache` to continue from (updated in place).
            use_cache: return a cache (a new one is made when none is given).
        """
        cache = resolve_cache_argument(past_key_values, cache)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(
                    f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}"
                )
            inputs_embeds = self.embed_tokens(input_ids)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be [batch, seq, hidden_size={self.config.hidden_size}], "
                f"got shape {tuple(inputs_embeds.shape)}"
            )
        batch, length = inputs_embeds.shape[:2]
        if use_cache is None:
            # Training never needs the recurrent state, and building it costs a pass over the
            # sequence per layer, so a cache is made by default only in eval mode.
            use_cache = self.config.use_cache and not self.training
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if cache is not None and not isinstance(cache, HazyCache):
            raise TypeError(
                f"{type(self).__name__} needs a HazyCache (from model.make_cache()), "
                f"got {type(cache).__name__}"
            )
        if use_cache and cache is None:
            cache = self.make_cache()
        past = cache.get_seq_length() if cache is not None else 0

        chunk_mask = None
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != batch:
                raise ValueError(
                    f"attention_mask must be [batch, seq] or [batch, past + seq] = [{batch}, "
                    f"{length}] or [{batch}, {past + length}], got {tuple(attention_mask.shape)}"
                )
            if attention_mask.shape[1] not in (length, past + length):
                raise ValueError(
                    f"attention_mask has {attention_mask.shape[1]} positions but the input has "
                    f"{length} new and {past} cached ones"
                )
            chunk_mask = attention_mask[:, -length:].bool()
        if position_ids is None:
            position_ids = default_position_ids(
                attention_mask, past, length, batch, inputs_embeds.device
            )

        residual_dtype = torch.float32 if self.config.residual_in_fp32 else inputs_embeds.dtype
        hidden_states = inputs_embeds.to(residual_dtype)
        all_hidden = [] if output_hidden_states else None
        for idx, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            hidden_states = layer(
                hidden_states,
                attention_mask=chunk_mask,
                position_ids=position_ids,
                cache_layer=cache.layers[idx] if cache is not None else None,
            )
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden.append(hidden_states)
        if cache is not None:
            cache.advance(length)
        out = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            **{CACHE_FIELD: cache if use_cache else None},
        )
        return out if return_dict is not False else out.to_tuple()


class HazyForCausalLM(HazyPreTrainedModel, GenerationMixin):
    """A :class:`HazyDecoderModel` with a (tied) language-model head; generates with the cache.

    Subclasses set ``config_class`` and ``base_model_class``.
    """

    base_model_class: type[HazyDecoderModel] = HazyDecoderModel
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
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
        """An empty recurrent cache (see :meth:`HazyDecoderModel.make_cache`)."""
        return self.model.make_cache()

    def enable_cuda_graph_decode(self, enabled: bool = True) -> None:
        """Replay single-token decode steps from a captured CUDA graph (CUDA, inference only).

        Decode steps of a deep hybrid are launch-bound at small and medium batch; the graph removes
        that overhead. Capture happens on the first decode step of each new cache (each
        ``generate`` call) and costs about two eager steps. Other calls run eagerly as before.
        """
        self._graph_decoder = CudaGraphDecoder(self) if enabled else None

    def decode_step(
        self, input_ids: torch.LongTensor, position_ids: torch.LongTensor, cache: HazyCache
    ) -> torch.Tensor:
        """Logits [batch, 1, vocab] of one real token per row, updating ``cache`` in place but
        not its position count (the caller advances it). The body the CUDA graph captures."""
        hidden = self.model.embed_tokens(input_ids)
        dtype = torch.float32 if self.config.residual_in_fp32 else hidden.dtype
        hidden = hidden.to(dtype)
        for idx, layer in enumerate(self.model.layers):
            hidden = layer(hidden, position_ids=position_ids, cache_layer=cache.layers[idx])
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
        if cache.get_seq_length() == 0 or not all(layer.has_state for layer in cache.layers):
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
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: HazyCache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits [batch, seq, vocab] (the last ``logits_to_keep`` positions if > 0), the loss
        when ``labels`` are given (shifted inside, -100 ignored), and the cache."""
        cache = resolve_cache_argument(past_key_values, cache)
        if self._can_replay_graph(
            input_ids, cache, attention_mask, inputs_embeds, labels, (output_hidden_states,)
        ):
            past = cache.get_seq_length()
            if position_ids is None:
                position_ids = default_position_ids(
                    attention_mask, past, 1, input_ids.shape[0], input_ids.device
                )
            logits = self._graph_decoder(input_ids, position_ids, cache)
            cache.advance(1)
            out = CausalLMOutputWithPast(logits=logits, **{CACHE_FIELD: cache})
            return out if return_dict is not False else out.to_tuple()
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            if logits_to_keep < 0:
                raise ValueError(f"logits_to_keep must be >= 0 (0 keeps all), got {logits_to_keep}")
            keep = slice(-logits_to_keep, None) if logits_to_keep > 0 else slice(None)
        else:
            keep = logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)
        out = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return out if return_dict is not False else out.to_tuple()
