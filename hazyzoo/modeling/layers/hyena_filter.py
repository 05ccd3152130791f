"""Hyena's implicit long filter: a kernel as a small sine-activated MLP of positional features.

"Hyena hierarchy" (Poli et al. 2023) parametrises a length-L convolution kernel of C channels
implicitly: complex-exponential positional features ``z(t)`` (time plus ``(emb_dim - 1) // 2``
bands) go through ``Linear -> Sin -> (Linear -> Sin) x num_inner_mlps -> Linear(no bias)``, with
``Sin(x) = sin(w_mod * freq * x)`` (one learned ``freq`` shared by every activation of the MLP,
as in the reference, and ``w_mod`` a fixed multiplier), and the result is modulated by an
exponential decay ``exp(-t |delta_c|)`` per channel. A bidirectional filter has a second MLP
for the anti-causal kernel (same features, same ``freq``). ``bias`` is a per-channel skip ``D``:
``y = conv(u, k) + D u``.

Used by M2-BERT's Monarch Mixer (and by MAD's Hyena operators). The convolution is the zoo's one
FFT long convolution (:mod:`hazyzoo.kernels.rtf`): causal, or bidirectional with the
anti-causal kernel acting on the following tokens (``y[t] += sum_j k_rev[j] u[t + 1 + j]``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init

from hazyzoo.kernels import rtf as ops

__all__ = [
    "ImplicitHyenaFilter",
    "hyena_decay_rates",
    "hyena_positional_features",
    "reference_filter_key",
]


def hyena_positional_features(length: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z [1, length, emb_dim], t [1, length, 1])``: ``t = linspace(0, 1, L)`` and
    ``z = [t, Re exp(-i f w), Im exp(-i f w)]`` with ``w = 2 pi l / L`` and ``f`` the
    ``(emb_dim - 1) // 2`` bands ``linspace(1e-4, bands - 1, bands)`` (Hyena's initial value)."""
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"emb_dim must be odd and >= 3 (time, cosine, sine), got {emb_dim}")
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, length)[None, :, None]
    w = 2 * math.pi * torch.linspace(0, length - 1, length)[None, :, None] / length
    f = torch.linspace(1e-4, bands - 1, bands)[None, None]
    z = torch.exp(-1j * f * w)
    return torch.cat([t, z.real, z.imag], dim=-1), t


def hyena_decay_rates(
    channels: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5, target: float = 1e-2
) -> torch.Tensor:
    """``deltas [1, 1, channels]``: per-channel decay rates of the exponential modulation,
    ``linspace(log(target) / slow_decay_pct, log(target) / fast_decay_pct, channels)`` (a
    channel's kernel falls to ``target`` after that fraction of the maximum length)."""
    max_decay = math.log(target) / fast_decay_pct
    min_decay = math.log(target) / slow_decay_pct
    return torch.linspace(min_decay, max_decay, channels)[None, None]


class _PositionalFeatures(nn.Module):
    """Holds the learned features ``z`` (reference name ``pos_emb.z``); ``forward(L)`` returns
    the first ``L`` rows (called as a module, so accelerate's offload hooks see the read)."""

    def __init__(self, length: int, emb_dim: int) -> None:
        super().__init__()
        self.length, self.emb_dim = length, emb_dim
        self.z = nn.Parameter(hyena_positional_features(length, emb_dim)[0])

    def forward(self, length: int) -> torch.Tensor:
        return self.z[:, :length]

    @torch.no_grad()
    def _init_hazy_weights(self, config: object) -> None:
        """Hyena's initial value of ``z`` (kept when ``from_pretrained`` loaded it)."""
        if not getattr(self.z, "_is_hf_initialized", False):
            self.z.copy_(hyena_positional_features(self.length, self.emb_dim)[0])


class _StoredDecay(nn.Module):
    """The decay rates as a stored buffer ``deltas`` [1, 1, C] (MAD's ``modulation``)."""

    def __init__(self, channels: int, fast: float, slow: float, target: float) -> None:
        super().__init__()
        self.rates = (channels, fast, slow, target)
        self.register_buffer("deltas", hyena_decay_rates(channels, fast, slow, target))

    @torch.no_grad()
    def _init_hazy_weights(self, config: object) -> None:
        self.deltas.copy_(hyena_decay_rates(*self.rates))


class ImplicitHyenaFilter(nn.Module):
    """An implicit long filter over ``channels`` for inputs up to ``max_length`` tokens.

    Parameters: ``pos_emb.z`` ``[1, max_length, emb_dim]``, ``freq`` ``[order]``,
    ``implicit_filter`` (and ``implicit_filter_rev`` when bidirectional): ``num_inner_mlps + 2``
    Linear layers, the last without bias; ``bias`` ``[channels]`` (the skip ``D``). The times
    ``t = linspace(0, 1, max_length)`` and the decay rates (:func:`hyena_decay_rates`) are fixed
    functions of the shape, computed in float32 when used rather than stored (the reference's
    buffers ``pos_emb.t`` and ``modulation.deltas`` always hold exactly these values; keeping
    them out of the state means a bfloat16 checkpoint cannot round them).

    """

    def __init__(
        self,
        channels: int,
        order: int = 16,
        emb_dim: int = 3,
        max_length: int = 1024,
        w: float = 1.0,
        w_mod: float = 1.0,
        bidirectional: bool = False,
        num_inner_mlps: int = 2,
        modulate: bool = True,
        fast_decay_pct: float = 0.3,
        slow_decay_pct: float = 1.5,
        target: float = 1e-2,
        shift: float = 0.0,
        skip: bool = True,
        stored_decay: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.max_length = max_length
        self.bidirectional = bidirectional
        self.modulate = modulate
        self.w = w
        self.w_mod = w_mod
        self.shift = shift
        self.decay_pcts = (fast_decay_pct, slow_decay_pct, target)
        self.pos_emb = _PositionalFeatures(max_length, emb_dim)
        self.freq = nn.Parameter(w * torch.ones(order))
        self.implicit_filter = self._mlp(emb_dim, order, channels, num_inner_mlps)
        self.implicit_filter_rev = (
            self._mlp(emb_dim, order, channels, num_inner_mlps) if bidirectional else None
        )
        # ``skip=False``: no ``bias`` (a caller that applies its own skip, as MAD's Hyena does).
        self.bias = nn.Parameter(torch.randn(channels)) if skip else None
        # ``stored_decay=True``: the decay rates are a buffer ``modulation.deltas`` [1, 1, C]
        # (MAD's state dicts carry it), initialised to :func:`hyena_decay_rates`.
        self.modulation = _StoredDecay(channels, *self.decay_pcts) if stored_decay else None

    @staticmethod
    def _mlp(emb_dim: int, order: int, channels: int, inner: int) -> nn.ModuleList:
        layers = [nn.Linear(emb_dim, order)] + [nn.Linear(order, order) for _ in range(inner)]
        return nn.ModuleList([*layers, nn.Linear(order, channels, bias=False)])

    @torch.no_grad()
    def _init_hazy_weights(self, config: object) -> None:
        """Hyena's init of the filter's own parameters: ``freq = w``, ``D ~ N(0, 1)``."""
        init.constant_(self.freq, self.w)
        if self.bias is not None:
            init.normal_(self.bias)

    def _check_length(self, length: int) -> None:
        if length > self.max_length:
            raise ValueError(
                f"the input has {length} positions but the filter is defined for at most "
                f"{self.max_length} (its positional features' length)"
            )

    def _run(self, mlp: nn.ModuleList, length: int) -> torch.Tensor:
        h = self.pos_emb(length)
        for layer in mlp[:-1]:
            h = torch.sin(self.w_mod * self.freq * layer(h))
        h = mlp[-1](h)  # [1, L, C]
        if self.modulate:
            t = torch.linspace(0, 1, self.max_length, device=h.device)[:length, None]
            if self.modulation is not None:
                deltas = self.modulation.deltas.float()[0]
            else:
                deltas = hyena_decay_rates(self.channels, *self.decay_pcts).to(h.device)[0]
            h = h * (torch.exp(-t * deltas.abs()) + self.shift)
        return h[0].transpose(0, 1)  # [C, L]

    def kernels(self, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(k_fwd [C, length], k_rev [C, length] or None)``."""
        self._check_length(length)
        k_fwd = self._run(self.implicit_filter, length)
        k_rev = self._run(self.implicit_filter_rev, length) if self.bidirectional else None
        return k_fwd, k_rev

    def conv_kernel(self, length: int) -> torch.Tensor:
        """The kernel in :func:`hazyzoo.kernels.rtf.fft_conv`'s layout: ``k_fwd [C, L]``, or
        ``[k_fwd, flip(k_rev)] [C, 2L]`` when bidirectional."""
        k_fwd, k_rev = self.kernels(length)
        return k_fwd if k_rev is None else torch.cat([k_fwd, k_rev.flip(-1)], dim=-1)

    def forward(
        self, u: torch.Tensor | None = None, *, length: int | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``u [B, L, C]`` -> ``conv(u, k) + D u`` in float32, returned in ``u.dtype``.

        With only ``length``: ``(kernel, D)``, the kernel in :func:`conv_kernel`'s layout and
        the skip term, for a caller that batches several filters into one FFT convolution.
        (Reached through ``__call__``, so accelerate's offload hooks load this module's own
        ``freq`` and ``bias`` first.)
        """
        if u is None:
            if length is None:
                raise TypeError("give the input u, or length to get (kernel, skip)")
            return self.conv_kernel(length), self.bias
        x = u.transpose(1, 2).float()
        y = ops.fft_conv(x, self.conv_kernel(u.shape[1]))
        if self.bias is not None:
            y = y + x * self.bias.float()[:, None]
        return y.transpose(1, 2).to(u.dtype)


def reference_filter_key(key: str) -> str | None:
    """The hazyzoo name of a reference ``HyenaFilter`` key (relative to the filter), or None
    for keys hazyzoo does not store: the reference's MLP is an ``nn.Sequential`` with one
    shared ``Sin`` at the odd slots (``implicit_filter.{1,3,5}.freq`` and the reverse MLP's are
    copies of one parameter, kept here once as ``freq``) and Linears at the even ones; its
    buffers ``pos_emb.t`` and ``modulation.deltas`` are fixed functions of the shape. A
    converter checks that every key mapped to None holds the value hazyzoo assumes."""
    if key in ("pos_emb.t", "modulation.deltas"):
        return None
    for mlp in ("implicit_filter_rev", "implicit_filter"):
        if key.startswith(mlp + "."):
            index, rest = key[len(mlp) + 1 :].split(".", 1)
            if rest == "freq":
                return "freq" if (mlp, index) == ("implicit_filter", "1") else None
            return f"{mlp}.{int(index) // 2}.{rest}"
    return key
