"""MAD's linear attention (``linear-attention`` / ``mh-linear-attention``): feature-mapped,
normalised causal linear attention with a choice of feature maps.

For each head, with feature maps ``phi_q`` / ``phi_k`` applied to the projected queries and keys
(optionally each normalised to sum one: ``norm_q`` / ``norm_k``), the output at position ``t`` is
what MAD's quadratic ``parallel_forward`` computes::

    y_t = sum_{s<=t} (phi_q(q_t) . phi_k(k_s)) v_s / (phi_q(q_t) . sum_{s<=t} phi_k(k_s) + eps)

(``eps = 1e-12``; the denominator is not made positive, exactly as in the reference, so maps
whose features can be negative -- ``elementwise_product``, ``identity``, ``t2r``'s bias-free
part, ``dpfp`` -- may divide by a small number). Padding keys (``attention_mask`` 0) are
dropped from every sum. Decoding keeps ``sum phi(k)^T v`` and ``sum phi(k)`` (float32) in a
:class:`~hazyzoo.modeling.cache.LinearAttentionStateLayer` and equals the parallel form.

Parameter names are the reference's: ``proj_q``, ``proj_k``, ``proj_v``, ``out_proj`` and the
feature maps' ``feature_map_q.<...>`` / ``feature_map_k.<...>`` (``layer1``/``layer2`` of the
Hadamard map, ``layer`` of Hedgehog and T2R). With ``tie_feature_map_qk`` one module serves
both and is stored once, as ``feature_map_q`` (the reference registers the shared module under
both names, so its state dict repeats it as ``feature_map_k.*``: drop those when converting; a
transformers checkpoint cannot hold the same tensor under two names).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers import initialization as init

from hazyzoo.modeling.cache import LinearAttentionStateLayer
from hazyzoo.modeling.layers.protocol import MixerOutput
from hazyzoo.modeling.layers.registry import layer_config, register_sequence_mixer

__all__ = [
    "FEATURE_MAPS",
    "DPFPFeatureMap",
    "EluFeatureMap",
    "HadamardFeatureMap",
    "HedgehogFeatureMap",
    "IdentityFeatureMap",
    "MadLinearAttention",
    "ReluFeatureMap",
    "T2RFeatureMap",
    "TaylorFeatureMap",
    "build_feature_map",
    "causal_linear_attention",
]

# Added to the denominator (the reference's default ``eps``).
LINEAR_ATTENTION_EPS = 1e-12
# Added to the sum of the features when ``norm_q`` / ``norm_k`` normalise them (the reference's).
FEATURE_NORM_EPS = 1e-4
# Tokens per chunk of the chunked parallel form (used when it needs less memory than the
# quadratic one, see :func:`_pick_chunk_size`).
CHUNK_SIZE = 64


# --------------------------------------------------------------------------------------------
# Feature maps (MAD's mad/model/layers/featurization/feature_map.py)
# --------------------------------------------------------------------------------------------


class HadamardFeatureMap(nn.Module):
    """``phi(x) = layer1(x) * layer2(x)`` (two affine maps, elementwise product): ``d -> d``."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(head_dim, head_dim)
        self.layer2 = nn.Linear(head_dim, head_dim)
        self.feature_dim = head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(x) * self.layer2(x)


class TaylorFeatureMap(nn.Module):
    """2nd-order Taylor map of ``exp(q.k / sqrt(d))``: ``d -> 1 + d + d(d+1)/2``.

    ``phi(x) = [1, x / d^(1/4), x_i^2 / (sqrt(2) sqrt(d)), x_i x_j / sqrt(d) (i < j)]``, so
    ``phi(q).phi(k) = 1 + s + s^2 / 2`` with ``s = q.k / sqrt(d)`` (the upper triangle of the
    outer product, diagonal first, then the off-diagonal pairs in row-major order).
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.feature_dim = 1 + head_dim + head_dim * (head_dim + 1) // 2
        rows, cols = torch.triu_indices(head_dim, head_dim, offset=1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rd = math.sqrt(self.head_dim)
        ones = torch.ones_like(x[..., :1])
        diag = x * x / (rd * math.sqrt(2.0))
        off = x[..., self._rows] * x[..., self._cols] / rd
        return torch.cat([ones, x / math.sqrt(rd), diag, off], dim=-1)


class _IdentityInitLinear(nn.Linear):
    """A square ``Linear`` that starts as the identity (weight ``I``, bias 0); its own init hook
    keeps that under a hazyzoo model's ``_init_weights``."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim)
        self._init_hazy_weights(None)

    @torch.no_grad()
    def _init_hazy_weights(self, config: object) -> None:
        init.eye_(self.weight)
        init.zeros_(self.bias)


class HedgehogFeatureMap(nn.Module):
    """Hedgehog (Zhang et al. 2024): ``softmax([2 W x, -2 W x])`` with ``W`` affine and
    identity at init: ``d -> 2d``."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.layer = _IdentityInitLinear(head_dim)
        self.feature_dim = 2 * head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer(x)
        return torch.cat([2 * x, -2 * x], dim=-1).softmax(-1)


class T2RFeatureMap(nn.Module):
    """T2R (Kasai et al. 2021): ``relu(W x + b)``: ``d -> d``."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.layer = nn.Linear(head_dim, head_dim)
        self.feature_dim = head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).relu()


class DPFPFeatureMap(nn.Module):
    """DPFP (Schlag et al. 2021) as MAD writes it, ``nu = 4``: ``d -> 2 d nu``.

    With ``r = [relu(x), -relu(x)]`` (the reference's ``-x.relu()``, i.e. minus ``relu(x)``,
    not the paper's ``relu(-x)``; reproduced as is), ``phi(x)`` concatenates
    ``r * roll(r, j)`` for ``j = 1 .. nu``.
    """

    def __init__(self, head_dim: int, nu: int = 4) -> None:
        super().__init__()
        self.nu = nu
        self.feature_dim = 2 * head_dim * nu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.cat([x.relu(), -x.relu()], dim=-1)
        rolled = torch.cat([r.roll(shifts=j, dims=-1) for j in range(1, self.nu + 1)], dim=-1)
        return torch.cat([r] * self.nu, dim=-1) * rolled


class EluFeatureMap(nn.Module):
    """``elu(x) + 1``: ``d -> d``."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.feature_dim = head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x) + 1


class ReluFeatureMap(nn.Module):
    """``relu(x)``: ``d -> d``."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.feature_dim = head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu()


class IdentityFeatureMap(nn.Module):
    """``x``: ``d -> d`` (plain, unnormalised-sign linear attention)."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.feature_dim = head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


FEATURE_MAPS: dict[str, type[nn.Module]] = {
    "elementwise_product": HadamardFeatureMap,
    "taylor": TaylorFeatureMap,
    "hedgehog": HedgehogFeatureMap,
    "t2r": T2RFeatureMap,
    "dpfp": DPFPFeatureMap,
    "elu": EluFeatureMap,
    "relu": ReluFeatureMap,
    "identity": IdentityFeatureMap,
}


def build_feature_map(name: str, head_dim: int) -> nn.Module:
    """The feature map ``name`` (one of :data:`FEATURE_MAPS`) for ``head_dim``-wide heads; its
    ``feature_dim`` attribute is the width of its output."""
    if name not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS)}, got {name!r}")
    return FEATURE_MAPS[name](head_dim)


# --------------------------------------------------------------------------------------------
# The attention op
# --------------------------------------------------------------------------------------------

State = tuple[torch.Tensor, torch.Tensor]


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half and float32 inputs; float64 stays float64 (for float64 tests)."""
    return torch.promote_types(dtype, torch.float32)


def _pick_chunk_size(length: int, feature_dim: int, value_dim: int) -> int:
    """The whole sequence in one chunk (MAD's quadratic form, an ``L x L`` matrix) unless chunks
    of :data:`CHUNK_SIZE` need less memory per head: ``L * C`` scores plus one
    ``feature_dim x value_dim`` state per chunk."""
    if length <= CHUNK_SIZE:
        return max(length, 1)
    chunked = length * CHUNK_SIZE + math.ceil(length / CHUNK_SIZE) * feature_dim * value_dim
    return CHUNK_SIZE if chunked < length * length else length


def causal_linear_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    initial_state: State | None = None,
    output_final_state: bool = False,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, State | None]:
    """Causal linear attention on features, continuing from a state (in float32, or float64
    for float64 inputs).

    Args:
        phi_q, phi_k: ``[B, H, L, F]`` features (zero a padding key's row to drop it).
        v: ``[B, H, L, Dv]``.
        initial_state: ``None`` or ``(kv_state [B, H, F, Dv], k_state [B, H, F])``: the sums
            over earlier keys. Not modified.
        output_final_state: also return the state after this call's keys.
        chunk_size: tokens per chunk (``None``: :func:`_pick_chunk_size`); the result does not
            depend on it beyond rounding.

    Returns:
        ``(o, z, final_state)``: the numerator ``o_t = phi_q_t @ (kv_0 + sum_{s<=t} phi_k_s^T
        v_s)`` [B, H, L, Dv] and the normaliser ``z_t = phi_q_t . (k_0 + sum_{s<=t} phi_k_s)``
        [B, H, L]; the caller divides ``o / (z + eps)``.
    """
    acc = accumulate_dtype(phi_q.dtype)
    phi_q, phi_k, v = phi_q.to(acc), phi_k.to(acc), v.to(acc)
    length = phi_q.shape[2]
    if chunk_size is None:
        chunk_size = _pick_chunk_size(length, phi_q.shape[-1], v.shape[-1])
    kv_state = k_state = None
    if initial_state is not None:
        kv_state, k_state = (t.to(acc) for t in initial_state)
    outs_o, outs_z = [], []
    for t0 in range(0, length, chunk_size):
        t1 = min(t0 + chunk_size, length)
        q_c, k_c, v_c = phi_q[:, :, t0:t1], phi_k[:, :, t0:t1], v[:, :, t0:t1]
        scores = (q_c @ k_c.transpose(-1, -2)).tril()
        o_c = scores @ v_c
        k_sum = k_c.cumsum(2)
        if kv_state is not None:
            o_c = o_c + q_c @ kv_state
            k_sum = k_sum + k_state[:, :, None]
        outs_o.append(o_c)
        outs_z.append((q_c * k_sum).sum(-1))
        if t1 < length or output_final_state:
            kv_c = k_c.transpose(-1, -2) @ v_c
            kv_state = kv_c if kv_state is None else kv_state + kv_c
            k_state = k_sum[:, :, -1]
    if output_final_state and kv_state is None:  # nothing seen (L = 0, no initial state)
        b, h, _, f = phi_k.shape
        kv_state = phi_k.new_zeros(b, h, f, v.shape[-1])
        k_state = phi_k.new_zeros(b, h, f)
    o = torch.cat(outs_o, dim=2) if outs_o else v.new_zeros(v.shape)
    z = torch.cat(outs_z, dim=2) if outs_z else v.new_zeros(v.shape[:-1])
    return o, z, ((kv_state, k_state) if output_final_state else None)


# --------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _expanded_dim(name: str, hidden_size: int, expand: object) -> int:
    """``hidden_size * expand`` when that is a positive integer, else a ``ValueError``."""
    if isinstance(expand, bool) or not isinstance(expand, (int, float)):
        raise TypeError(f"{name} must be a number, got {expand!r}")
    dim = hidden_size * expand
    if not dim > 0 or dim != int(dim):
        raise ValueError(
            f"{name} = {expand!r} must make hidden_size * {name} ({hidden_size} * {expand!r}) "
            "a positive integer"
        )
    return int(dim)


def _mad_linear_attention_test_config() -> PreTrainedConfig:
    from hazyzoo.configuration.configuration_mad import MadConfig

    # The contract builds layers 0 and 3. Hedgehog's features are positive, so the denominator
    # is well away from zero and the contract's float32 tolerance holds; maps with signed
    # features (MAD's default elementwise_product) are tested in float64 in
    # tests/modeling/test_mad_linear_attention.py.
    settings = {"num_attention_heads": 4, "feature_map": "hedgehog"}
    return MadConfig.tiny(layers=["mh-linear-attention"] * 4, layer_configs=[settings] * 4)


@register_sequence_mixer("mad_linear_attention", test_config=_mad_linear_attention_test_config)
class MadLinearAttention(nn.Module):
    """MAD's ``LinearAttention``: ``out_proj(causal normalised linear attention)`` over
    ``proj_q``/``proj_k``/``proj_v`` with a feature map (see the module docstring).

    Queries and keys have ``hidden_size * expand_k / num_heads`` entries per head before the
    feature map, values ``hidden_size * expand_v / num_heads``. Settings read by
    :meth:`from_config` (a MAD layer's): ``num_attention_heads``, ``feature_map``,
    ``expand_k``, ``expand_v``, ``tie_feature_map_qk``, ``norm_q``, ``norm_k``.
    """

    # returns attention weights when asked (output_attentions=True)
    has_attention_weights = True

    def __init__(
        self,
        hidden_size: int,
        num_heads: int = 16,
        feature_map: str = "elementwise_product",
        expand_k: float = 1,
        expand_v: float = 1,
        tie_feature_map_qk: bool = False,
        norm_q: bool = False,
        norm_k: bool = False,
        eps: float = LINEAR_ATTENTION_EPS,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        if feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"feature_map must be one of {sorted(FEATURE_MAPS)}, got {feature_map!r}"
            )
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_attention_heads must be a positive integer, got {num_heads!r}")
        for name, value in (
            ("tie_feature_map_qk", tie_feature_map_qk),
            ("norm_q", norm_q),
            ("norm_k", norm_k),
        ):
            _check_bool(name, value)
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
        self.feature_map_name = feature_map
        self.norm_q, self.norm_k = norm_q, norm_k
        self.eps = eps
        self.layer_idx = layer_idx
        self.tie_feature_map_qk = tie_feature_map_qk
        self.feature_map_q = build_feature_map(feature_map, self.head_qk_dim)
        if tie_feature_map_qk:  # the same module, not registered twice (see the module doc)
            object.__setattr__(self, "feature_map_k", self.feature_map_q)
        else:
            self.feature_map_k = build_feature_map(feature_map, self.head_qk_dim)
        self.feature_dim = self.feature_map_q.feature_dim
        self.proj_q = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.proj_k = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.proj_v = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.out_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> MadLinearAttention:
        """Build layer ``layer_idx`` of a model with ``config`` (its layer's settings)."""
        config = layer_config(config, layer_idx)
        return cls(
            config.hidden_size,
            num_heads=config.num_attention_heads,
            feature_map=config.feature_map,
            expand_k=config.expand_k,
            expand_v=config.expand_v,
            tie_feature_map_qk=config.tie_feature_map_qk,
            norm_q=config.norm_q,
            norm_k=config.norm_k,
            layer_idx=layer_idx,
        )

    def make_cache_layer(self) -> LinearAttentionStateLayer:
        """A fresh cache layer: ``kv_state [B, H, F, Dv]``, ``k_state [B, H, F]`` (float32)."""
        return LinearAttentionStateLayer()

    def features(
        self, hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(phi(q), phi(k), v)`` per head: ``[B, H, L, F]``, ``[B, H, L, F]``, ``[B, H, L,
        Dv]`` (after ``norm_q`` / ``norm_k``), in the parameters' dtype."""
        batch, length, _ = hidden_states.shape
        heads = self.num_heads
        q = self.proj_q(hidden_states).view(batch, length, heads, self.head_qk_dim)
        k = self.proj_k(hidden_states).view(batch, length, heads, self.head_qk_dim)
        v = self.proj_v(hidden_states).view(batch, length, heads, self.head_v_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = self.feature_map_q(q), self.feature_map_k(k)
        if self.norm_q:
            q = q / (q.sum(-1, keepdim=True) + FEATURE_NORM_EPS)
        if self.norm_k:
            k = k / (k.sum(-1, keepdim=True) + FEATURE_NORM_EPS)
        return q, k, v

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: LinearAttentionStateLayer | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | MixerOutput:
        """Mix ``hidden_states`` [batch, seq, hidden]; ``attention_mask`` [batch, seq] (1 = token)."""
        batch, length, _ = hidden_states.shape
        phi_q, phi_k, v = self.features(hidden_states)
        acc = accumulate_dtype(phi_q.dtype)
        phi_q, phi_k, v = phi_q.to(acc), phi_k.to(acc), v.to(acc)
        if attention_mask is not None:  # padding keys join no sum
            keep = attention_mask.to(device=phi_k.device, dtype=torch.bool)
            phi_k = phi_k * keep[:, None, :, None].to(phi_k.dtype)
        has_past = cache_layer is not None and cache_layer.has_state
        if has_past and length == 1:  # decode: add the key to the state in place, read it
            kv_state, k_state = cache_layer.kv_state, cache_layer.k_state
            kv_state.add_(phi_k[:, :, 0, :, None] * v[:, :, 0, None, :])
            k_state.add_(phi_k[:, :, 0])
            o = torch.einsum("bhf,bhfv->bhv", phi_q[:, :, 0], kv_state)[:, :, None]
            z = (phi_q[:, :, 0] * k_state).sum(-1)[:, :, None]
        else:
            initial = (cache_layer.kv_state, cache_layer.k_state) if has_past else None
            o, z, final = causal_linear_attention(
                phi_q, phi_k, v, initial, output_final_state=cache_layer is not None
            )
            if cache_layer is not None:
                kv_state, k_state = (s.detach() for s in final)
                if has_past:  # in place: a captured CUDA graph keeps reading the same buffers
                    cache_layer.kv_state.copy_(kv_state)
                    cache_layer.k_state.copy_(k_state)
                else:
                    cache_layer.kv_state, cache_layer.k_state = kv_state, k_state
        y = o / (z[..., None] + self.eps)
        y = y.transpose(1, 2).reshape(batch, length, self.value_dim)
        y = self.out_proj(y.to(self.out_proj.weight.dtype))
        if not output_attentions:
            return y
        if has_past:
            raise ValueError(
                "output_attentions=True needs the whole sequence in one call; it is not "
                "available when continuing from a cache (pass use_cache=False)"
            )
        weights = (phi_q @ phi_k.transpose(-1, -2)).tril() / (z[..., None] + self.eps)
        return MixerOutput(y, attentions=weights.to(hidden_states.dtype))

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, feature_map={self.feature_map_name!r}, "
            f"feature_dim={self.feature_dim}, norm_q={self.norm_q}, norm_k={self.norm_k}"
        )
