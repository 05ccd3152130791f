"""S4D: a diagonal state-space filter, the baseline that RTF is compared with.

:class:`S4DFilter` has the call interface of :class:`~hazyzoo.modeling.layers.rtf.RtfFilter`
(``forward(u [B, L, C]) -> y [B, L, C]``, ``kernel(length)``), so it can replace the filter of
an ``rtf`` mixer (``layer.mixer.filter = S4DFilter(...)``) to train the same block with an
S4D-style kernel. It is not a registered mixer.

The kernel is S4D-Lin ("On the parameterization and initialization of diagonal state space
models", Gu et al. 2022): per channel a complex diagonal state matrix with ``A_n = -1/2 +
i pi n`` at initialisation (real part kept negative through ``-exp(log_a_real)``), a learned
step ``dt = exp(log_dt)``, zero-order-hold discretisation ``A_bar = exp(dt A)``, ``B_bar =
(exp(dt A) - 1) / A B`` and readout ``C``. The state is real of size ``state_size``: its
``state_size // 2`` complex modes stand for conjugate pairs, hence the ``2 Re``. ``B`` is fixed
at 1 (its product with ``C`` is what the kernel sees, so a learned ``C`` covers both). The
kernel is one Vandermonde product, :func:`s4d_vandermonde_kernel`; the direct term ``D`` is added
at lag 0 of the causal kernel, where :class:`RtfFilter` keeps its ``h_0``.

Bidirectional: two independent sets of parameters (causal rows first), the anti-causal kernel
applied to the following tokens exactly as :func:`hazyzoo.kernels.rtf.bidirectional_conv` does.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as hf_init

from hazyzoo.kernels import rtf as ops

__all__ = ["S4DFilter", "s4d_vandermonde_kernel"]


def s4d_vandermonde_kernel(
    log_dt: torch.Tensor,
    a_real: torch.Tensor,
    a_imag: torch.Tensor,
    c_complex: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """The ZOH-discretised diagonal SSM kernel ``K [H, length]`` (real), by Vandermonde product::

        K[h, l] = 2 Re( sum_n C[h, n] (exp(dt_h A[h, n]) - 1) / A[h, n] * exp(dt_h A[h, n] l) )

    with ``A = a_real + i a_imag`` and ``dt = exp(log_dt)`` (``B = 1``; pass ``C * B`` for
    another ``B``). No direct term.

    Args:
        log_dt: ``[H]`` real, the log step size of each row.
        a_real: ``[H, M]`` real, the real parts of the ``M`` modes (negative for a stable SSM;
            must be nonzero where ``a_imag`` is zero).
        a_imag: ``[H, M]`` real, their imaginary parts.
        c_complex: ``[H, M]`` complex (``C B``), or real ``[H, M, 2]`` (real, imaginary).
        length: number of taps ``L``.

    Returns:
        ``[H, length]`` in the real dtype of ``a_real`` (float32 -> complex64 arithmetic,
        float64 -> complex128).
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if not torch.is_complex(c_complex):
        if c_complex.shape[-1] != 2:
            raise ValueError(
                "c_complex must be a complex tensor or a real one of shape [..., 2], got shape "
                f"{tuple(c_complex.shape)}"
            )
        c_complex = torch.view_as_complex(c_complex.contiguous())
    a = torch.complex(a_real, a_imag)  # [H, M]
    dt_a = a * torch.exp(log_dt).to(a_real.dtype)[:, None]
    coeff = c_complex.to(a.dtype) * torch.expm1(dt_a) / a  # C B_bar
    steps = torch.arange(length, device=a.device, dtype=a_real.dtype)
    vandermonde = torch.exp(dt_a[..., None] * steps)  # [H, M, L]: A_bar^l
    return 2 * torch.einsum("hm,hml->hl", coeff, vandermonde).real


class S4DFilter(nn.Module):
    """Per-channel diagonal SSMs (S4D-Lin init), causal or bidirectional, with a ``D`` skip.

    Parameters (``r = 2`` when bidirectional, causal rows first; ``M = state_size // 2``):
    ``log_dt [r * channels]``, ``log_a_real`` and ``a_imag [r * channels, M]``, ``c [r *
    channels, M, 2]`` (real and imaginary parts), ``d [channels]``. Input and output ``[batch,
    length, channels]``; with ``trunc_len`` set, ``length <= trunc_len`` per call (as for
    :class:`RtfFilter`), otherwise any length.
    """

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
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if state_size < 2 or state_size % 2:
            raise ValueError(
                f"state_size must be even and >= 2, got {state_size}: the real state holds "
                "state_size // 2 conjugate pairs of complex modes"
            )
        if trunc_len is not None and trunc_len < 1:
            raise ValueError(f"trunc_len must be >= 1 or None, got {trunc_len}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.channels = channels
        self.state_size = state_size
        self.trunc_len = trunc_len
        self.bidirectional = bidirectional
        self.dt_min = dt_min
        self.dt_max = dt_max
        self.directions = 2 if bidirectional else 1
        rows, modes = self.directions * channels, state_size // 2
        self.log_dt = nn.Parameter(torch.empty(rows))
        self.log_a_real = nn.Parameter(torch.empty(rows, modes))
        self.a_imag = nn.Parameter(torch.empty(rows, modes))
        self.c = nn.Parameter(torch.empty(rows, modes, 2))
        self.d = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    # --- parameters ------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """S4D-Lin: ``A_n = -1/2 + i pi n``, ``log dt ~ U(log dt_min, log dt_max)``, ``C`` standard
        complex normal (variance 1/2 per part), ``D ~ N(0, 1)``."""
        self._init_hazy_weights(None)

    @torch.no_grad()
    def _init_hazy_weights(self, config: PreTrainedConfig | None) -> None:
        hf_init.uniform_(self.log_dt, math.log(self.dt_min), math.log(self.dt_max))
        hf_init.constant_(self.log_a_real, math.log(0.5))
        modes = torch.arange(self.a_imag.shape[1], dtype=self.a_imag.dtype)
        hf_init.copy_(self.a_imag, (math.pi * modes).expand_as(self.a_imag))
        hf_init.normal_(self.c, 0.0, math.sqrt(0.5))
        hf_init.normal_(self.d, 0.0, 1.0)

    def ssm_kernel(self, length: int) -> torch.Tensor:
        """The SSM kernels without ``D``, ``[r * channels, length]`` float32 (causal rows first)."""
        return s4d_vandermonde_kernel(
            self.log_dt.float(),
            -torch.exp(self.log_a_real.float()),
            self.a_imag.float(),
            self.c.float(),
            length,
        )

    def kernel(self, length: int) -> torch.Tensor:
        """The time-domain kernels ``[r * channels, length]`` float32 (causal rows first), ``D``
        at lag 0 of the causal rows (like :meth:`RtfFilter.kernel`'s ``h_0``)."""
        k = self.ssm_kernel(length)
        if length == 0:
            return k
        direct = torch.zeros_like(k[:, 0])
        direct = direct.index_add(0, torch.arange(self.channels, device=k.device), self.d.float())
        return torch.cat([(k[:, 0] + direct)[:, None], k[:, 1:]], dim=1)

    # --- convolution -----------------------------------------------------------------------
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """The convolution of ``u [B, L, channels]`` (causal, or bidirectional)."""
        length = u.shape[1]
        if self.trunc_len is not None and length > self.trunc_len:
            raise ValueError(
                f"the input has {length} positions but trunc_len is {self.trunc_len}; build the "
                "filter with a larger trunc_len (or None)"
            )
        if u.shape[-1] != self.channels:
            raise ValueError(f"u has {u.shape[-1]} channels, the filter {self.channels}")
        k = self.kernel(length)
        x = u.float()
        if self.bidirectional:
            y = ops.bidirectional_conv(x, k[: self.channels], k[self.channels :])
        else:
            y = ops.causal_conv(x, k)
        return y.to(u.dtype)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, state_size={self.state_size}, trunc_len={self.trunc_len}, "
            f"bidirectional={self.bidirectional}, dt_min={self.dt_min}, dt_max={self.dt_max}"
        )
