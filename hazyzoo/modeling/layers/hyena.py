"""Hyena's operator (Poli et al. 2023) as MAD uses it: order 2, one head, with an implicit Hyena
filter or an RTF filter as the long convolution (MAD's ``HyenaOperator`` / ``HyenaConv``).

For ``u [B, L, d]`` with ``inner = inner_factor * d``::

    p = in_proj(u)                       [B, L, 3 inner / proj_groups]
    p = [p, p, ..., p]                   tiled proj_groups times along channels (not interleaved)
    x0, x1, v = short_conv(p)            depthwise, width short_filter_order, causal
    v = long_conv(v * x1) + D (v * x1)   the long filter, per-channel skip D (``long_conv.bias``)
    out_proj(v * x0)

Reference names: ``in_proj``, ``short_filter``, ``long_conv.bias``, ``long_conv.filter`` (the
long filter's parameters: the RTF filter's ``ab`` / ``h_0``, or the implicit filter's). MAD's
RTF variant never registers its filter (a bound method, so it is not trained and not saved);
here it is a submodule, trained and saved like any parameter. Not yet a registered mixer (MAD's
config, issue 10, will register it with a cache).
"""

from __future__ import annotations

import torch
from torch import nn

from hazyzoo.kernels import rtf as ops
from hazyzoo.modeling.layers.hyena_filter import ImplicitHyenaFilter
from hazyzoo.modeling.layers.rtf import RtfFilter

__all__ = ["HyenaOperator"]


class _LongConv(nn.Module):
    """The long convolution: ``filter`` (an :class:`RtfFilter` or the MLP of an implicit filter)
    gives the kernel; ``bias`` is the per-channel skip."""

    def __init__(self, channels: int, filt: nn.Module) -> None:
        super().__init__()
        self.filter = filt
        self.bias = nn.Parameter(torch.randn(channels))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``v [B, channels, L]`` -> ``conv(v, k) + bias v`` in float32."""
        x = v.float()
        # Through the filters' __call__, so accelerate's offload hooks load their parameters.
        if isinstance(self.filter, RtfFilter):
            y = self.filter(x.transpose(1, 2)).transpose(1, 2)
        else:
            kernel, _ = self.filter(length=x.shape[-1])  # its own skip is not used here
            y = ops.fft_conv(x, kernel)
        return y + x * self.bias.float()[:, None]


class HyenaOperator(nn.Module):
    """MAD's order-2 Hyena operator with ``filter_cls`` ``"rtf"`` or ``"implicit"``."""

    def __init__(
        self,
        dim: int,
        max_length: int,
        *,
        inner_factor: int = 4,
        proj_groups: int = 4,
        short_filter_order: int = 3,
        filter_cls: str = "implicit",
        state_size: int = 4,
        rtf_init: str = "xavier",
        filter_order: int = 64,
        emb_dim: int = 3,
    ) -> None:
        super().__init__()
        inner = inner_factor * dim
        if (3 * inner) % proj_groups:
            raise ValueError(
                f"3 * inner_factor * dim ({3 * inner}) must be divisible by proj_groups "
                f"({proj_groups})"
            )
        self.inner, self.proj_groups = inner, proj_groups
        self.in_proj = nn.Linear(dim, 3 * inner // proj_groups)
        self.short_filter = nn.Conv1d(
            3 * inner,
            3 * inner,
            kernel_size=short_filter_order,
            groups=3 * inner,
            padding=short_filter_order - 1,
        )
        if filter_cls == "rtf":
            filt: nn.Module = RtfFilter(
                inner, state_size=state_size, trunc_len=max_length, init=rtf_init, constraint="no"
            )
        elif filter_cls == "implicit":
            filt = ImplicitHyenaFilter(
                inner, order=filter_order, emb_dim=emb_dim, max_length=max_length
            )
        else:
            raise ValueError(f"filter_cls must be 'rtf' or 'implicit', got {filter_cls!r}")
        self.long_conv = _LongConv(inner, filt)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[B, L, dim]`` -> ``[B, L, dim]`` (causal)."""
        length = hidden_states.shape[1]
        p = self.in_proj(hidden_states).transpose(1, 2)  # [B, 3 inner / groups, L]
        p = p.repeat(1, self.proj_groups, 1)
        x0, x1, v = self.short_filter(p)[..., :length].split(self.inner, dim=1)
        v = self.long_conv(v * x1).to(x0.dtype)
        return self.out_proj((v * x0).transpose(1, 2))
