"""MAD's Hyena operators (Poli et al. 2023, 2024), order 2, as shared-stack sequence mixers.

Three registered mixers, all ``in_proj -> short causal conv -> gated long convolution ->
out_proj`` with the reference's parameter names (``in_proj``, ``short_filter``,
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
from hazyzoo.modeling.layers.mad_moe import mad_topk_gate
from hazyzoo.modeling.layers.registry import layer_config, register_sequence_mixer
from hazyzoo.modeling.layers.rtf import RtfFilter

__all__ = ["HyenaExpertsOperator", "HyenaOperator", "MultiHeadHyenaOperator"]


def _tiny(name: str):  # test configs for the mixer contract (imported lazily)
    def build() -> PreTrainedConfig:
        from hazyzoo.configuration.configuration_mad import MadConfig

        return MadConfig.tiny(layers=[name] * 4)  # the contract builds layers 0 and 3

    return build


class _LongConv(nn.Module):
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


def _make_filter(view: Any, channels: int) -> nn.Module:
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


def _past(cache_layer: LongConvLayer | None) -> int:
    return cache_layer.seen_tokens if cache_layer is not None and cache_layer.has_state else 0


class _GatedConvBase(nn.Module):
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

    def _history_conv(
        self,
        w: torch.Tensor,
        long_conv: _LongConv,
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


@register_sequence_mixer("hyena", test_config=_tiny("hyena"))
class HyenaOperator(_GatedConvBase):
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
        self.long_conv = _LongConv(self.inner, _make_filter(view, self.inner))
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
        past = _past(cache_layer)
        self._check_length(past, hidden_states.shape[1])
        x0, x1, v = self._short(hidden_states, attention_mask, cache_layer).split(self.inner, 1)
        w = v * x1
        if attention_mask is not None:
            w = w * attention_mask[:, None, :].to(w.dtype)
        y = self._history_conv(w, self.long_conv, cache_layer, past).to(x0.dtype)
        return self.out_proj((y * x0).transpose(1, 2))


@register_sequence_mixer("hyena_experts", test_config=_tiny("hyena-experts"))
class HyenaExpertsOperator(_GatedConvBase):
    """MAD's ``hyena-experts``: the order-2 operator over ``expert_size * num_experts``
    channels (channel ``num_experts * i + e`` is channel i of expert e), mixed over experts by
    MAD's top-k gate of ``router(u)`` (:func:`mad_topk_gate`), then ``out_proj``.

    Settings: ``hyena_expert_size``, ``num_experts``, ``num_experts_per_tok``,
    ``hyena_short_filter_order`` and the filter settings of :class:`HyenaOperator`.
    """

    def __init__(self, view: Any, layer_idx: int | None = None) -> None:
        dim = view.hidden_size
        self.expert_size, self.num_experts = view.hyena_expert_size, view.num_experts
        self.top_k = view.num_experts_per_tok
        self.inner = self.expert_size * self.num_experts
        super().__init__(
            dim,
            3 * self.inner,
            1,
            view.hyena_short_filter_order,
            view.max_position_embeddings,
            layer_idx,
        )
        self.long_conv = _LongConv(self.inner, _make_filter(view, self.inner))
        self.router = nn.Linear(dim, self.num_experts)
        self.out_proj = nn.Linear(self.expert_size, dim)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> HyenaExpertsOperator:
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
        """``[B, L, dim]`` -> ``[B, L, dim]`` (causal)."""
        past = _past(cache_layer)
        self._check_length(past, hidden_states.shape[1])
        x0, x1, v = self._short(hidden_states, attention_mask, cache_layer).split(self.inner, 1)
        w = v * x1
        if attention_mask is not None:
            w = w * attention_mask[:, None, :].to(w.dtype)
        y = self._history_conv(w, self.long_conv, cache_layer, past).to(x0.dtype) * x0
        y = y.transpose(1, 2).unflatten(-1, (self.expert_size, self.num_experts))
        gate = mad_topk_gate(self.router(hidden_states), self.top_k)  # [B, L, E]
        return self.out_proj((y * gate[..., None, :].to(y.dtype)).sum(-1))


@register_sequence_mixer("mh_hyena", test_config=_tiny("mh-hyena"))
class MultiHeadHyenaOperator(_GatedConvBase):
    """MAD's ``mh-hyena``: order 2, ``inner / head_size`` heads of ``head_size =
    hyena_num_heads`` channels, one long filter and skip per head over the outer products
    ``k_t v_t^T``, read out by ``q_t``; ``q, v, k`` are the short filter's three chunks in
    that order. Settings: those of :class:`HyenaOperator`, with ``hyena_num_heads`` the head
    size (MAD's convention).
    """

    def __init__(self, view: Any, layer_idx: int | None = None) -> None:
        dim = view.hidden_size
        self.inner = view.hyena_inner_factor * dim
        self.head_size = view.hyena_num_heads
        if self.inner % self.head_size:
            raise ValueError(
                f"mh-hyena: inner width {self.inner} is not divisible by hyena_num_heads "
                f"({self.head_size}, MAD's head size)"
            )
        self.heads = self.inner // self.head_size
        super().__init__(
            dim,
            3 * self.inner,
            view.hyena_proj_groups,
            view.hyena_short_filter_order,
            view.max_position_embeddings,
            layer_idx,
        )
        self.long_conv = _LongConv(self.heads, _make_filter(view, self.heads))
        self.out_proj = nn.Linear(self.inner, dim)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> MultiHeadHyenaOperator:
        """Build layer ``layer_idx`` from its settings (see :class:`~hazyzoo.MadConfig`)."""
        return cls(layer_config(config, layer_idx), layer_idx)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().unflatten(1, (self.heads, self.head_size))  # [B, G, hs, L]

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: LongConvLayer | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``[B, L, dim]`` -> ``[B, L, dim]`` (causal)."""
        past = _past(cache_layer)
        length = hidden_states.shape[1]
        self._check_length(past, length)
        q, v, k = self._short(hidden_states, attention_mask, cache_layer).split(self.inner, 1)
        if attention_mask is not None:
            keep = attention_mask[:, None, :].to(k.dtype)
            k, v = k * keep, v * keep
        dtype = q.dtype
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        skip = self.long_conv.bias.float()
        if cache_layer is None or past == 0:
            # FFT form: the outer products as G * hs * hs channels, each head's filter shared
            kv = k[:, :, :, None] * v[:, :, None]  # [B, G, hs, hs, L]
            kernel = self.long_conv.kernel(length)  # [G, L]
            kern = kernel[:, None, None].expand(-1, self.head_size, self.head_size, -1)
            s = ops.fft_conv(kv.flatten(1, 3), kern.flatten(0, 2)).unflatten(
                1, (self.heads, self.head_size, self.head_size)
            )
            s = s + kv * skip[None, :, None, None, None]
            y = (q[:, :, :, None] * s).sum(2)  # [B, G, hs(j), L]
            if cache_layer is not None:
                cache_layer.store(torch.cat([k, v], dim=1).flatten(1, 2).detach())
        else:
            y = self._attend(q, k, v, cache_layer, skip)
        y = y.flatten(1, 2).to(dtype)  # [B, inner, L]
        return self.out_proj(y.transpose(1, 2))

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cache_layer: LongConvLayer,
        skip: torch.Tensor,
    ) -> torch.Tensor:
        """New positions given the cached ``k``/``v`` history: ``y_t = sum_s f[t - s]
        (q_t . k_s) v_s + D (q_t . k_t) v_t``, an attention with Toeplitz weights."""
        length, cap = q.shape[-1], cache_layer.capacity
        history = cache_layer.history().unflatten(1, (2 * self.heads, self.head_size))
        k_all = torch.cat([history[:, : self.heads], k], dim=-1)  # [B, G, hs, cap + L]
        v_all = torch.cat([history[:, self.heads :], v], dim=-1)
        kernel = self.long_conv.kernel(cap)  # [G, cap]
        lag = (cap + torch.arange(length, device=q.device))[:, None] - torch.arange(
            cap + length, device=q.device
        )[None]  # [L, cap + L]
        weights = kernel[:, lag.clamp(0, cap - 1)] * ((lag >= 0) & (lag < cap)).float()
        weights = weights + skip[:, None, None] * (lag == 0).float()  # [G, L, cap + L]
        scores = torch.einsum("bgit,bgis->bgts", q, k_all) * weights
        y = torch.einsum("bgts,bgjs->bgjt", scores, v_all)
        new = torch.cat([k_all, v_all], dim=1).flatten(1, 2)[..., -cap:]
        if length == 1:
            cache_layer.append(new[..., -1])
        else:
            cache_layer.store(new.detach())
        return y
