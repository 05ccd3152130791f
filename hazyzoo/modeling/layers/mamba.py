"""Mamba's mixer (Gu & Dao 2023) as MAD uses it: input projection to ``x`` and the gate ``z``,
a causal depthwise convolution and SiLU on ``x``, input-dependent ``dt, B, C``, the selective
scan, ``y * silu(z)``, output projection (reference parameter names: ``in_proj``, ``conv1d``,
``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``).

Decoding keeps a fixed-size state per sequence: the last ``d_conv - 1`` inputs of the
convolution and the scan state ``[d_inner, d_state]``; :meth:`MambaMixer.step` advances both by
one position and equals the parallel forward (tested). Registered as the shared-stack mixer
``mamba`` (MAD's ``mamba`` layer; settings ``mamba_*`` of :class:`~hazyzoo.MadConfig`), with
:class:`~hazyzoo.modeling.cache.MambaStateLayer` as its cache. Padding positions (mask 0) get
``dt = 0`` and a zero convolution input, so they leave the state unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers import initialization as init

from hazyzoo.kernels.selective_scan import selective_scan, selective_step
from hazyzoo.modeling.cache import MambaStateLayer
from hazyzoo.modeling.layers.registry import layer_config, register_sequence_mixer

__all__ = ["MambaMixer"]


class _DtProjection(nn.Linear):
    """``dt_rank -> d_inner`` with Mamba's init (its own hook, so a hazyzoo model's
    ``_init_weights`` keeps it): weight uniform +-``dt_rank**-0.5 * dt_scale``, bias the inverse
    softplus of ``dt = exp(U(log dt_min, log dt_max))`` floored at ``dt_init_floor``."""

    def __init__(
        self, rank: int, channels: int, dt_min: float, dt_max: float, floor: float, scale: float
    ) -> None:
        super().__init__(rank, channels, bias=True)
        self.dt_range, self.dt_scale = (dt_min, dt_max, floor), scale
        self._init_hazy_weights(None)

    @torch.no_grad()
    def _init_hazy_weights(self, config: object) -> None:
        dt_min, dt_max, floor = self.dt_range
        std = self.in_features**-0.5 * self.dt_scale
        init.uniform_(self.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=floor)
        if not getattr(self.bias, "_is_hf_initialized", False):
            self.bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def _tiny() -> PreTrainedConfig:
    from hazyzoo.configuration.configuration_mad import MadConfig

    return MadConfig.tiny(layers=["mamba"] * 4)  # the contract builds layers 0 and 3


@register_sequence_mixer("mamba", test_config=_tiny)
class MambaMixer(nn.Module):
    """``[batch, seq, d_model] -> same``: Mamba's selective SSM block (the reference's slow path).

    Init as the reference: ``A_log = log(1..d_state)`` per channel, ``D = 1``, ``dt_proj``'s
    bias the inverse softplus of ``dt ~ logUniform(dt_min, dt_max)`` (floored), its weight
    uniform +-``dt_rank**-0.5 * dt_scale``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = _DtProjection(
            self.dt_rank, self.d_inner, dt_min, dt_max, dt_init_floor, dt_scale
        )
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self._init_hazy_weights(None)

    @torch.no_grad()
    def _init_hazy_weights(self, config: object) -> None:
        """The S4D-real ``A_log`` and the unit skip ``D`` (kept when loaded)."""
        if not getattr(self.A_log, "_is_hf_initialized", False):
            a = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
            self.A_log.copy_(torch.log(a))
        init.ones_(self.D)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(delta [.., d_inner], B [.., N], C [.., N])`` from the convolved input; ``delta``
        includes ``dt_proj``'s bias (the reference adds it inside the scan: the same sum)."""
        dt, b, c = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return self.dt_proj(dt), b, c

    @classmethod
    def from_config(cls, config: PreTrainedConfig, layer_idx: int) -> MambaMixer:
        """Build layer ``layer_idx`` from its ``mamba_*`` settings (MAD's ``mamba`` defaults)."""
        v = layer_config(config, layer_idx)
        if v.mamba_dt_init != "random":
            raise ValueError(f"mamba_dt_init must be 'random', got {v.mamba_dt_init!r}")
        return cls(
            v.hidden_size,
            d_state=v.mamba_d_state,
            d_conv=v.mamba_d_conv,
            expand=v.mamba_expand,
            dt_rank=v.mamba_dt_rank,
            dt_min=v.mamba_dt_min,
            dt_max=v.mamba_dt_max,
            dt_scale=v.mamba_dt_scale,
            dt_init_floor=v.mamba_dt_init_floor,
            conv_bias=v.mamba_conv_bias,
            bias=v.mamba_bias,
            layer_idx=layer_idx,
        )

    def make_cache_layer(self) -> MambaStateLayer:
        """A fresh cache layer: the convolution tail and the scan state."""
        return MambaStateLayer()

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_layer: MambaStateLayer | None = None,
        return_state: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``[B, L, d_model]`` -> same, continuing ``cache_layer``'s state when it has one; with
        ``return_state`` also the state after the input (``conv_state [B, d_inner, d_conv - 1]``,
        ``ssm_state [B, d_inner, d_state]`` float32)."""
        has_past = cache_layer is not None and cache_layer.has_state
        length = hidden_states.shape[1]
        if has_past and length == 1 and attention_mask is None:
            out = self.step(hidden_states[:, 0], cache_layer.conv_state, cache_layer.ssm_state)
            out = out[:, None]
            state = (cache_layer.conv_state, cache_layer.ssm_state)
            return (out, state) if return_state else out
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        if attention_mask is not None:
            x = x * attention_mask[..., None].to(x.dtype)
        x_t = x.transpose(1, 2)  # [B, d_inner, L]
        tail = self.d_conv - 1
        if has_past:
            conv_in = torch.cat([cache_layer.conv_state.to(x_t.dtype), x_t], dim=-1)
        else:
            conv_in = F.pad(x_t, (tail, 0))
        conv_state = conv_in[..., conv_in.shape[-1] - tail :]
        # conv1d pads by tail on both sides: output i is the window ending at input i
        x_c = F.silu(self.conv1d(conv_in)[..., tail : tail + length])  # [B, d_inner, L]
        delta, b, c = self._project(x_c.transpose(1, 2))
        dt = F.softplus(delta.float())
        if attention_mask is not None:
            dt = dt * attention_mask[..., None].float()  # pads: decay 1, no input
        a = -torch.exp(self.A_log.float())
        y, state = selective_scan(
            x_c,
            dt.transpose(1, 2),
            a,
            b.transpose(1, 2),
            c.transpose(1, 2),
            D=self.D,
            z=z.transpose(1, 2),
            delta_softplus=False,
            initial_state=cache_layer.ssm_state if has_past else None,
            return_last_state=True,
        )
        if cache_layer is not None:
            if has_past:  # in place, so a captured CUDA graph keeps updating the same buffers
                cache_layer.conv_state.copy_(conv_state)
                cache_layer.ssm_state.copy_(state)
            else:
                cache_layer.conv_state = conv_state.detach().contiguous()
                cache_layer.ssm_state = state.detach()
        out = self.out_proj(y.transpose(1, 2))
        return (out, (conv_state.contiguous(), state)) if return_state else out

    def step(
        self, hidden_state: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> torch.Tensor:
        """One position ``[B, d_model]``; ``conv_state`` and ``ssm_state`` are updated in place."""
        x, z = self.in_proj(hidden_state).chunk(2, dim=-1)  # [B, d_inner]
        window = torch.cat([conv_state, x[..., None]], dim=-1)  # [B, d_inner, d_conv]
        # the convolution's output at the window's last position (called as a module)
        x_c = F.silu(self.conv1d(window)[..., self.d_conv - 1])
        conv_state.copy_(window[..., 1:])
        delta, b, c = self._project(x_c)
        y = selective_step(
            ssm_state,
            x_c,
            delta,
            -torch.exp(self.A_log.float()),
            b,
            c,
            D=self.D,
            z=z,
            delta_softplus=True,
        )
        return self.out_proj(y)
