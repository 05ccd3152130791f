"""MAD's Hyena operators (Poli et al. 2023, 2024), order 2, as shared-stack sequence mixers.

Three registered mixers (this file, :mod:`.mh_hyena` and :mod:`.hyena_experts`), all
``in_proj -> short causal conv -> gated long convolution -> out_proj`` with the reference's parameter names (``in_proj``, ``short_filter``,
``long_conv.bias`` (the per-channel skip), ``long_conv.filter`` (an implicit Hyena filter or an
RTF filter), ``out_proj``, ``router``):

* ``hyena`` (:class:`HyenaOperator`; MAD's ``hyena``, and ``hyena-rtf`` with the RTF filter)::

      p = in_proj(u)                     [B, L, 3 inner / proj_groups], inner = inner_factor * d
      p = [p, p, ..., p]                 tiled proj_groups times along channels (not interleaved)
      x0, x1, v = short_filter(p)        depthwise, causal
      w = v * x1;  y = conv(w, k) + D w  the long filter, per-channel skip D
      out_proj(y * x0)

* ``mh_hyena`` (:class:`MultiHeadHyenaOperator`; MAD's ``mh-hyena``): the three chunks are
  ``q = c0, v = c1, k = c2``, in ``G = inner / head_size`` heads of ``head_size`` channels
  (MAD passes its ``num_heads`` as the head *size*; here ``hyena_num_heads`` keeps MAD's
  meaning). Per head g, one filter ``f_g`` and skip ``D_g`` act on the outer products
  ``k_t v_t^T``: ``y_t = q_t^T (sum_s f_g[t - s] k_s v_s^T + D_g k_t v_t^T)``, a linear
  attention whose past is weighted by a learned long filter.
* ``hyena_experts`` (:class:`HyenaExpertsOperator`; MAD's ``hyena-experts``): the order-2
  operator over ``expert_size * num_experts`` channels (no tiling), whose output is mixed over
  experts by MAD's top-k router (:func:`mad_topk_gate`) before ``out_proj``.

Caching: a long convolution's decode step needs its input history, so the cache layer
(:class:`~hazyzoo.modeling.cache.LongConvLayer`) keeps the last ``max_position_embeddings``
long-convolution inputs (``w``, or ``k`` and ``v``) in a ring buffer plus the short filter's
tail: fixed memory, exact steps. The filters are defined for ``max_position_embeddings``
positions, so a cache cannot continue past that length (an error says so). Padding positions
(mask 0) are zeroed before both convolutions, so left padding changes no real token's output.

MAD's RTF variant never registers its filter (a bound method: not trained, not saved); here it
is a submodule, trained and saved like any parameter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig

from hazyzoo.kernels import rtf as ops
from hazyzoo.modeling.cache import LongConvLayer
from hazyzoo.modeling.layers.hyena_filter import ImplicitHyenaFilter
from hazyzoo.modeling.layers.registry import layer_config, register_sequence_mixer
from hazyzoo.modeling.layers.rtf import RtfFilter

__all__ = [
    "GatedConvBase",
    "HyenaOperator",
    "LongConv",
    "cached_positions",
    "make_long_filter",
    "tiny_test_config",
]


def tiny_test_config(name: str) -> Any:
    """A builder of the tiny MAD config whose layers are all ``name`` (the mixer contract builds
    layers 0 and 3); the config module is imported lazily."""

    def build() -> PreTrainedConfig:
        from hazyzoo.configuration.configuration_mad import MadConfig

        return MadConfig.tiny(layers=[name] * 4)

    return build


class LongConv(nn.Module):
    """The long convolution: ``filter`` (an :class:`RtfFilter` or an implicit filter without
    its own skip) gives the kernel; ``bias`` is the per-channel skip ``D``."""

    def __init__(self, channels: int, filt: nn.Module) -> None:
        super().__init__()
        self.filter = filt
        self.bias = nn.Parameter(torch.randn(channels))

    @property
    def max_length(self) -> int:
        return (
            self.filter.trunc_len if isinstance(self.filter, RtfFilter) else self.filter.max_length
        )

    def kernel(self, length: int) -> torch.Tensor:
        """``[channels, length]`` in float32 (through the filter's ``__call__`` where it has
        one, so accelerate's offload hooks load its parameters)."""
        if isinstance(self.filter, RtfFilter):
            return self.filter.kernel(length).float()
        kernel, _ = self.filter(length=length)
        return kernel.float()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``v [B, channels, L]`` -> ``conv(v, k) + bias v`` in float32."""
        x = v.float()
        if isinstance(self.filter, RtfFilter):
            y = self.filter(x.transpose(1, 2)).transpose(1, 2)
        else:
            y = ops.fft_conv(x, self.kernel(x.shape[-1]))
        return y + x * self.bias.float()[:, None]


def make_long_filter(view: Any, channels: int) -> nn.Module:
    """The long filter a layer's settings ask for: implicit Hyena or RTF, ``channels`` wide."""
    kind = view.hyena_filter_cls
    if kind == "rtf":
        return RtfFilter(
            channels,
            state_size=view.hyena_state_size,
            trunc_len=view.max_position_embeddings,
            init=view.hyena_rtf_init,
            constraint="no",
        )
    if kind == "implicit":
        return ImplicitHyenaFilter(
            channels,
            order=view.hyena_filter_order,
            emb_dim=view.hyena_filter_emb_dim,
            max_length=view.max_position_embeddings,
            skip=False,
            stored_decay=True,
        )
    raise ValueError(f"hyena_filter_cls must be 'implicit' or 'rtf', got {kind!r}")


def cached_positions(cache_layer: LongConvLayer | None) -> int:
    """Positions a cache layer has already consumed (0 without one or before the first call)."""
    return cache_layer.seen_tokens if cache_layer is not None and cache_layer.has_state else 0


class GatedConvBase(nn.Module):
    """``in_proj`` (optionally tiled), the short causal filter and the cache bookkeeping the
    three operators share. Subclasses define ``_mix`` (the long convolution and the gating)."""

    def __init__(
        self,
        dim: int,
        channels: int,
        proj_groups: int,
        short_order: int,
        max_length: int,
        layer_idx: int | None,
    ) -> None:
        super().__init__()
        if channels % proj_groups:
            raise ValueError(
                f"the operator's {channels} projected channels are not divisible by "
                f"proj_groups ({proj_groups})"
            )
        self.layer_idx = layer_idx
        self.channels, self.proj_groups, self.short_order = channels, proj_groups, short_order
        self.max_length = max_length
        self.in_proj = nn.Linear(dim, channels // proj_groups)
        self.short_filter = nn.Conv1d(
            channels, channels, kernel_size=short_order, groups=channels, padding=short_order - 1
        )

    def make_cache_layer(self) -> LongConvLayer:
        """Ring of the last ``max_length`` long-convolution inputs plus the short-filter tail."""
        return LongConvLayer(self.max_length)

    def _check_length(self, past: int, length: int) -> None:
        if past + length > self.max_length:
            raise ValueError(
                f"{type(self).__name__} (layer {self.layer_idx}) is defined for at most "
                f"{self.max_length} positions (max_position_embeddings: its filter's length); "
                f"got {past + length}"
            )

    def _short(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache_layer: LongConvLayer | None,
    ) -> torch.Tensor:
        """The short filter's output ``[B, channels, L]`` (the tail carried in the cache)."""
        length = hidden_states.shape[1]
        p = self.in_proj(hidden_states)
        if attention_mask is not None:
            p = p * attention_mask[..., None].to(p.dtype)
        p = p.transpose(1, 2)  # [B, channels / groups, L]
        tail = self.short_order - 1
        has_past = cache_layer is not None and cache_layer.has_state
        if has_past:
            p = torch.cat([cache_layer.conv_state.to(p.dtype), p], dim=-1)
        if cache_layer is not None and tail:
            last = p[..., -tail:] if p.shape[-1] >= tail else F.pad(p, (tail - p.shape[-1], 0))
            if has_past:
                cache_layer.conv_state.copy_(last)
            else:
                cache_layer.conv_state = last.detach().clone()
        elif cache_layer is not None:
            cache_layer.conv_state = p[..., :0].detach().clone()
        full = p.repeat(1, self.proj_groups, 1)
        out = self.short_filter(full)  # padding short_order - 1 on both sides
        if has_past:
            # the first `tail` outputs of the padded conv read the cached tail; keep the new ones
            return out[..., tail : tail + length]
        return out[..., :length]

    def _order2(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache_layer: LongConvLayer | None,
    ) -> torch.Tensor:
        """The order-2 operator before ``out_proj``: ``x0 * (conv(x1 v, k) + D x1 v)``
        ``[B, inner, L]`` (needs ``self.inner`` and ``self.long_conv``; the single-head and
        experts operators share it)."""
        past = cached_positions(cache_layer)
        self._check_length(past, hidden_states.shape[1])
        x0, x1, v = self._short(hidden_states, attention_mask, cache_layer).split(self.inner, 1)
        w = v * x1
        if attention_mask is not None:
            w = w * attention_mask[:, None, :].to(w.dtype)
        return self._history_conv(w, self.long_conv, cache_layer, past).to(x0.dtype) * x0

    def _history_conv(
        self,
        w: torch.Tensor,
        long_conv: LongConv,
        cache_layer: LongConvLayer | None,
        past: int,
    ) -> torch.Tensor:
        """``conv(w, k) + D w`` over the whole history: ``w [B, C, L]`` are the new positions;
        the cache's ring holds the earlier ones (and receives the new ones). Float32."""
        length = w.shape[-1]
        if cache_layer is None:
            return long_conv(w)
        skip = w.float() * long_conv.bias.float()[:, None]
        if past == 0:
            y = long_conv(w)
            cache_layer.store(w.detach().float())
            return y
        cap = cache_layer.capacity
        if length == 1:
            cache_layer.append(w[..., 0].float())
            history = cache_layer.history()  # [B, C, cap], newest last
            k = long_conv.kernel(cap)  # lag j at index j
            return (history * k.flip(-1)).sum(-1, keepdim=True) + skip
        history = cache_layer.history()
        full = torch.cat([history, w.float()], dim=-1)  # [B, C, cap + L]
        k = F.pad(long_conv.kernel(cap), (0, length))  # lags >= cap hit only the zero pre-history
        y = ops.fft_conv(full, k)[..., cap:]
        cache_layer.store(full[..., -cap:].detach())
        return y + skip


@register_sequence_mixer("hyena", test_config=tiny_test_config("hyena"))
class HyenaOperator(GatedConvBase):
    """MAD's order-2, single-head Hyena operator (``filter_cls`` ``"implicit"`` or ``"rtf"``).

    Settings read by :meth:`from_config` (MAD's ``hyena`` defaults): ``hyena_inner_factor``,
    ``hyena_proj_groups``, ``hyena_short_filter_order``, ``hyena_filter_cls``,
    ``hyena_filter_order``, ``hyena_filter_emb_dim``, ``hyena_state_size``,
    ``hyena_rtf_init``, and ``hidden_size``, ``max_position_embeddings``.
    """

    def __init__(self, view: Any, layer_idx: int | None = None) -> None:
        dim = view.hidden_size
        self.inner = view.hyena_inner_factor * dim
        super().__init__(
            dim,
            3 * self.inner,
            view.hyena_proj_groups,
            view.hyena_short_filter_order,
            view.max_position_embeddings,
            layer_idx,
        )
        self.long_conv = LongConv(self.inner, make_long_filter(view, self.inner))
        self.out_proj = nn.Linear(self.inner, dim)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> HyenaOperator:
        """Build layer ``layer_idx`` from its settings (see :class:`~hazyzoo.MadConfig`)."""
        return cls(layer_config(config, layer_idx), layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: LongConvLayer | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``[B, L, dim]`` -> ``[B, L, dim]`` (causal; ``attention_mask`` 1 = token)."""
        return self.out_proj(
            self._order2(hidden_states, attention_mask, cache_layer).transpose(1, 2)
        )
