"""Gated linear attention (GLA; Yang et al. 2023) as MAD uses it (``gated-linear-attention`` /
``mh-gated-linear-attention``), in plain PyTorch.

Per head, with a data-dependent forget gate per key channel
``alpha_t = exp(g_t)``, ``g_t = logsigmoid(gk_proj(x_t)) / gate_logit_normalizer`` (``gk_proj``
low rank: ``hidden -> gate_low_rank_dim -> key dim``, bias on the second map)::

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t          [dk, dv], float32
    o_t = (q_t / sqrt(dk)) S_t

then the per-head RMS norm ``g_norm`` of ``o_t``, the output gate ``swish(g_proj(x_t))`` and
``o_proj`` -- MAD's ``GatedLinearAttention`` with ``fuse_norm: false`` (its layer configs) and no
``clamp_min``. Reference parameter names: ``q_proj``, ``k_proj``, ``v_proj``, ``g_proj``,
``gk_proj.0``, ``gk_proj.1``, ``o_proj``, ``g_norm.weight``.

Training and prefill use :func:`gla_chunked` (exact chunked parallel form; within a chunk the
decays are applied pairwise, so nothing overflows however strong the gate); decoding uses
:func:`gla_step` on the state in a :class:`GatedLinearAttentionStateLayer`; both equal
:func:`gla_recurrent`, the step-by-step definition (tested). Padding positions (attention_mask
0) get gate 1 and key 0, so they leave the state as it is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers import initialization as init
from transformers.activations import ACT2FN

from hazyzoo.modeling.cache import HazyCacheLayer
from hazyzoo.modeling.layers.norm import RMSNorm
from hazyzoo.modeling.layers.registry import layer_config, register_sequence_mixer

__all__ = [
    "GatedLinearAttention",
    "GatedLinearAttentionStateLayer",
    "gla_chunked",
    "gla_recurrent",
    "gla_step",
]

# Tokens per chunk of :func:`gla_chunked`. Within a chunk the pairwise decays are a
# [chunk, chunk, dk] tensor per head; the state is carried from chunk to chunk.
GLA_CHUNK_SIZE = 32
# The reference's init: xavier_uniform with this gain on every projection.
GLA_INIT_GAIN = 2**-2.5


class GatedLinearAttentionStateLayer(HazyCacheLayer):
    """GLA's recurrent state: ``kv_state`` [batch, heads, dk, dv] (float32), the decayed sum
    ``S_t`` of ``k_s^T v_s``."""

    batch_states = ("kv_state",)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half and float32 inputs; float64 stays float64 (for float64 tests)."""
    return torch.promote_types(dtype, torch.float32)


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


def gla_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, one position at a time (float32): ``S_t = exp(g_t)[:, None] * S_{t-1} +
    k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k, g: ``[B, H, L, dk]`` (``g`` the log forget gate, <= 0).
        v: ``[B, H, L, dv]``.
        initial_state: ``None`` (zero) or ``[B, H, dk, dv]``.
        scale: query scale (``dk ** -0.5`` when ``None``).

    Returns:
        ``(o [B, H, L, dv], final_state [B, H, dk, dv])``, float32.
    """
    acc = accumulate_dtype(q.dtype)
    q, k, v, g = (t.to(acc) for t in (q, k, v, g))
    batch, heads, length, dk = q.shape
    state = q.new_zeros(batch, heads, dk, v.shape[-1])
    if initial_state is not None:
        state = state + initial_state.to(acc)
    q = q * _scale(q, scale)
    outs = []
    for t in range(length):
        state = g[:, :, t, :, None].exp() * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], state))
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(v.shape)
    return o, state


def gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """One position: ``q, k, g [B, H, dk]``, ``v [B, H, dv]``; updates ``state`` [B, H, dk, dv]
    (float32) in place and returns ``o [B, H, dv]`` (float32)."""
    q, k, v, g = (t.to(state.dtype) for t in (q, k, v, g))
    state.mul_(g.exp()[..., None]).add_(k[..., None] * v[..., None, :])
    return torch.einsum("bhk,bhkv->bhv", q * _scale(q, scale), state)


def gla_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    scale: float | None = None,
    chunk_size: int = GLA_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gla_recurrent` in chunks of ``chunk_size`` tokens, all chunks at once (float32).

    With ``G`` the cumulative log gate inside a chunk, a query reads the state at the chunk's
    start decayed by ``exp(G_t)`` and the chunk's earlier keys ``s <= t`` decayed by
    ``exp(G_t - G_s)`` (formed pairwise, every exponent <= 0); the state then moves on by
    ``exp(G_last) * S + sum_s (exp(G_last - G_s) k_s)^T v_s``. Same arguments and returns as
    :func:`gla_recurrent`; differentiable w.r.t. every input.
    """
    acc = accumulate_dtype(q.dtype)
    q, k, v, g = (t.to(acc) for t in (q, k, v, g))
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    q = q * _scale(q, scale)
    chunk = max(1, min(chunk_size, length))
    n = math.ceil(length / chunk)
    pad = n * chunk - length
    if pad:  # zero keys and zero log gates: the state does not move
        q, k, v, g = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v, g))
    q, k, g = (t.reshape(batch, heads, n, chunk, dk) for t in (q, k, g))
    v = v.reshape(batch, heads, n, chunk, dv)
    cum = g.cumsum(3)  # [B, H, N, C, dk]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    exponent = cum[..., :, None, :] - cum[..., None, :, :]  # [B, H, N, C(t), C(s), dk]
    decay = exponent.masked_fill(~causal[..., None], float("-inf")).exp()
    scores = (q[..., :, None, :] * k[..., None, :, :] * decay).sum(-1)  # [B, H, N, C, C]
    o = scores @ v
    last = cum[..., -1, :]  # [B, H, N, dk]
    updates = (k * (last[..., None, :] - cum).exp()).transpose(-1, -2) @ v  # [B, H, N, dk, dv]
    state = q.new_zeros(batch, heads, dk, dv)
    if initial_state is not None:
        state = state + initial_state.to(acc)
    starts = []
    for c in range(n):
        starts.append(state)
        state = last[:, :, c, :, None].exp() * state + updates[:, :, c]
    o = o + (q * cum.exp()) @ torch.stack(starts, dim=2)
    o = o.reshape(batch, heads, n * chunk, dv)[:, :, :length]
    return o, state


class _ReferenceInitLinear(nn.Linear):
    """``nn.Linear`` with the reference's init (xavier_uniform, gain ``2**-2.5``; bias zero, as
    MAD's model zeroes every bias); its own init hook keeps that under a hazyzoo model."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_hazy_weights(None)

    @torch.no_grad()
    def _init_hazy_weights(self, config: object) -> None:
        init.xavier_uniform_(self.weight, gain=GLA_INIT_GAIN)
        if self.bias is not None:
            init.zeros_(self.bias)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


def _positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _expanded_dim(name: str, hidden_size: int, expand: object) -> int:
    if isinstance(expand, bool) or not isinstance(expand, (int, float)):
        raise TypeError(f"{name} must be a number, got {expand!r}")
    dim = hidden_size * expand
    if not dim > 0 or dim != int(dim):
        raise ValueError(
            f"{name} = {expand!r} must make hidden_size * {name} ({hidden_size} * {expand!r}) "
            "a positive integer"
        )
    return int(dim)


def _gla_test_config() -> PreTrainedConfig:
    from hazyzoo.configuration.configuration_mad import MadConfig

    return MadConfig.tiny(layers=["mh-gated-linear-attention"] * 4)  # the contract builds 0 and 3


@register_sequence_mixer("gated_linear_attention", test_config=_gla_test_config)
class GatedLinearAttention(nn.Module):
    """MAD's ``GatedLinearAttention`` (see the module docstring).

    Keys have ``hidden_size * expand_k / num_heads`` entries per head, values ``hidden_size *
    expand_v / num_heads``. Settings read by :meth:`from_config` (a MAD layer's):
    ``num_attention_heads``, ``expand_k``, ``expand_v``, ``gate_fn`` (a transformers activation
    name, MAD's ``swish``), ``gate_logit_normalizer``, ``gate_low_rank_dim``, ``gla_norm_eps``
    (MAD's ``layernorm_eps``).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int = 4,
        expand_k: float = 1,
        expand_v: float = 1,
        gate_fn: str = "swish",
        gate_logit_normalizer: float = 16,
        gate_low_rank_dim: int = 16,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
        chunk_size: int = GLA_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_attention_heads must be a positive integer, got {num_heads!r}")
        if not isinstance(gate_fn, str) or gate_fn not in ACT2FN:
            raise ValueError(
                f"gate_fn must be a transformers activation name (e.g. 'swish'), got {gate_fn!r}"
            )
        self.gate_logit_normalizer = _positive_float("gate_logit_normalizer", gate_logit_normalizer)
        self.norm_eps = _positive_float("gla_norm_eps", norm_eps)
        gate_low_rank_dim = _positive_int("gate_low_rank_dim", gate_low_rank_dim)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.key_dim = _expanded_dim("expand_k", hidden_size, expand_k)
        self.value_dim = _expanded_dim("expand_v", hidden_size, expand_v)
        dims = {"key": (self.key_dim, "expand_k"), "value": (self.value_dim, "expand_v")}
        for what, (dim, expand) in dims.items():
            if dim % num_heads:
                raise ValueError(
                    f"num_attention_heads ({num_heads}) must divide the {what} dim "
                    f"hidden_size * {expand} = {dim}"
                )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_qk_dim = self.key_dim // num_heads
        self.head_v_dim = self.value_dim // num_heads
        self.gate_fn_name = gate_fn
        self.gate_act = ACT2FN[gate_fn]
        self.layer_idx = layer_idx
        self.q_proj = _ReferenceInitLinear(hidden_size, self.key_dim)
        self.k_proj = _ReferenceInitLinear(hidden_size, self.key_dim)
        self.v_proj = _ReferenceInitLinear(hidden_size, self.value_dim)
        self.g_proj = _ReferenceInitLinear(hidden_size, self.value_dim)
        self.gk_proj = nn.Sequential(
            _ReferenceInitLinear(hidden_size, gate_low_rank_dim),
            _ReferenceInitLinear(gate_low_rank_dim, self.key_dim, bias=True),
        )
        self.o_proj = _ReferenceInitLinear(self.value_dim, hidden_size)
        self.g_norm = RMSNorm(self.head_v_dim, eps=self.norm_eps)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> GatedLinearAttention:
        """Build layer ``layer_idx`` of a model with ``config`` (its layer's settings)."""
        config = layer_config(config, layer_idx)
        return cls(
            config.hidden_size,
            num_heads=config.num_attention_heads,
            expand_k=config.expand_k,
            expand_v=config.expand_v,
            gate_fn=config.gate_fn,
            gate_logit_normalizer=config.gate_logit_normalizer,
            gate_low_rank_dim=config.gate_low_rank_dim,
            norm_eps=config.gla_norm_eps,
            layer_idx=layer_idx,
        )

    def make_cache_layer(self) -> GatedLinearAttentionStateLayer:
        """A fresh cache layer: ``kv_state [B, H, dk, dv]`` (float32)."""
        return GatedLinearAttentionStateLayer()

    def qkvg(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v, g)`` per head ``[B, H, L, d]``: queries, keys, values and the log forget
        gate ``logsigmoid(gk_proj(x)) / gate_logit_normalizer``; at padding positions (mask 0)
        the key and the log gate are 0 (no input, no decay)."""
        batch, length, _ = hidden_states.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)

        q, k, v = (heads(p(hidden_states)) for p in (self.q_proj, self.k_proj, self.v_proj))
        gk = self.gk_proj(hidden_states)
        g = heads(F.logsigmoid(gk.to(accumulate_dtype(gk.dtype))) / self.gate_logit_normalizer)
        if attention_mask is not None:
            keep = attention_mask.to(device=k.device, dtype=torch.bool)[:, None, :, None]
            k = k * keep.to(k.dtype)
            g = g * keep.to(g.dtype)
        return q, k, v, g

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: GatedLinearAttentionStateLayer | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``attention_mask`` [batch, seq] (1 = token)."""
        batch, length, _ = hidden_states.shape
        q, k, v, g = self.qkvg(hidden_states, attention_mask)
        has_past = cache_layer is not None and cache_layer.has_state
        if has_past and length == 1:  # decode: advance the state in place, read it
            o = gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], cache_layer.kv_state)
            o = o[:, :, None]
        else:
            initial = cache_layer.kv_state if has_past else None
            o, final = gla_chunked(q, k, v, g, initial, chunk_size=self.chunk_size)
            if cache_layer is not None:
                final = final.detach()
                if has_past:  # in place: a captured CUDA graph keeps reading the same buffer
                    cache_layer.kv_state.copy_(final)
                else:
                    cache_layer.kv_state = final
        o = self.g_norm(o.transpose(1, 2))  # [B, L, H, dv], normalised per head
        o = o.reshape(batch, length, self.value_dim)
        gate = self.gate_act(self.g_proj(hidden_states))
        return self.o_proj((o * gate).to(self.o_proj.weight.dtype))

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, gate_fn={self.gate_fn_name!r}, "
            f"gate_logit_normalizer={self.gate_logit_normalizer}"
        )
