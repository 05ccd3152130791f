"""S4D: the diagonal state-space kernel, the baseline RTF is measured against.

S4D-Lin (Gu et al. 2022, "On the parameterization and initialization of diagonal state space
models"): each channel is a diagonal SSM with ``N / 2`` complex modes ``A_n = -1/2 + i pi n``
(conjugate pairs make the output real), a learned step ``dt`` per channel, zero-order-hold
discretisation and a skip ``D``. Its kernel is a Vandermonde product, materialised as a
``[channels, N / 2, L]`` complex tensor, so generating it costs O(N L) per channel where RTF's
costs O(L log L) for any N.

:class:`S4DFilter` has :class:`~hazyzoo.modeling.layers.rtf.RtfFilter`'s call interface
(``forward(u [B, L, C])``, ``kernel(L)``), so it can be swapped into an ``RtfMixer`` for a like
for like comparison (``hazyzoo demo rtf``, ``benchmarks/rtf_kernels.py``). It has no recurrent
cache here and is not a registered mixer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hazyzoo.kernels import rtf as ops


def s4d_vandermonde_kernel(
    log_dt: torch.Tensor,
    log_a_real: torch.Tensor,
    a_imag: torch.Tensor,
    c: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """``K [C, length]`` with ``K[l] = 2 Re(sum_n c_n (exp(dt A_n) - 1) / A_n exp(dt A_n l))``,
    ``A_n = -exp(log_a_real) + i a_imag`` (ZOH with ``B = 1``).

    Args:
        log_dt: ``[C]``; log_a_real, a_imag: ``[C, M]`` (M = N / 2 modes); c: ``[C, M]`` complex.
    """
    a = torch.complex(-torch.exp(log_a_real), a_imag)
    dt_a = a * torch.exp(log_dt).unsqueeze(-1)  # [C, M]
    weight = c * (torch.exp(dt_a) - 1.0) / a
    steps = torch.arange(length, device=a.device, dtype=log_dt.dtype)
    vandermonde = torch.exp(dt_a.unsqueeze(-1) * steps)  # [C, M, L]
    return 2 * torch.einsum("cm,cml->cl", weight, vandermonde).real


class S4DFilter(nn.Module):
    """S4D-Lin long filter over ``channels`` (``state_size`` = 2 x the complex modes), causal
    or bidirectional (a second, anti-causal set of parameters, combined as RTF's)."""

    def __init__(
        self,
        channels: int,
        state_size: int,
        trunc_len: int | None = None,
        bidirectional: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        if state_size < 2 or state_size % 2:
            raise ValueError(f"state_size must be an even number >= 2, got {state_size}")
        self.channels = channels
        self.state_size = state_size
        self.trunc_len = trunc_len
        self.bidirectional = bidirectional
        rows = (2 if bidirectional else 1) * channels
        modes = state_size // 2
        self.log_dt = nn.Parameter(
            torch.rand(rows) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        self.log_a_real = nn.Parameter(torch.full((rows, modes), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(modes).float().expand(rows, -1).clone())
        self.c = nn.Parameter(torch.view_as_real(torch.randn(rows, modes, dtype=torch.cfloat)))
        self.D = nn.Parameter(torch.randn(channels))

    def kernel(self, length: int) -> torch.Tensor:
        """``[r * channels, length]`` kernels (causal rows first)."""
        return s4d_vandermonde_kernel(
            self.log_dt, self.log_a_real, self.a_imag, torch.view_as_complex(self.c), length
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u [B, L, channels]`` -> ``y`` (the convolution plus ``D u``)."""
        length = u.shape[1]
        if self.trunc_len is not None and length > self.trunc_len:
            raise ValueError(f"the input has {length} positions but trunc_len is {self.trunc_len}")
        k = self.kernel(length)
        x = u.float()
        if self.bidirectional:
            y = ops.bidirectional_conv(x, k[: self.channels], k[self.channels :])
        else:
            y = ops.causal_conv(x, k)
        return (y + self.D * x).to(u.dtype)
