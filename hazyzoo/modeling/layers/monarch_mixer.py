"""Monarch Mixer (M2) blocks: the gated long-convolution sequence mixer and the GLU MLP with
block-diagonal matrices, as M2-BERT uses them ("Monarch Mixer", Fu et al. 2023).

Sequence mixer, for ``u [B, L, d]``: ``[x1, x2, v] = short_conv(in_linear(u))`` (a depthwise
causal convolution of width 3 over the ``3d`` projections), ``y = hyena(v * x1) * x2 +
hyena2(u)`` (two bidirectional implicit Hyena filters; the second is the "residual long
convolution" of the input itself), ``out_linear(y)``. No norm or residual around it: M2-BERT's
layer is ``LayerNorm(mlp(mixer(h)) + mixer(h))``, the norm inside :class:`MonarchGluMlp`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hazyzoo.kernels import rtf as ops
from hazyzoo.modeling.layers.blockdiag import BlockDiagonalLinear
from hazyzoo.modeling.layers.hyena_filter import ImplicitHyenaFilter

__all__ = ["MonarchGluMlp", "MonarchMixerSequenceMixing"]


class MonarchMixerSequenceMixing(nn.Module):
    """M2's sequence mixer (reference parameter names: ``in_linear``, ``short_filter``,
    ``filter_fn``, ``filter_fn2``, ``out_linear``).

    Padding: the released models read no mask (pads are tokens). With ``attention_mask``
    given, positions where it is 0 are zeroed at the mixer's input and before each long
    convolution, so they reach no real position: with right padding the real positions then
    get exactly the outputs of the unpadded input.
    """

    def __init__(
        self,
        hidden_size: int,
        max_length: int,
        filter_order: int = 16,
        emb_dim: int = 3,
        w: float = 10.0,
        w_mod: float = 1.0,
        bidirectional: bool = True,
        residual_long_conv: bool = True,
        input_norm: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.residual_long_conv = residual_long_conv
        # The reference's ``hyena_training_additions``: a LayerNorm (eps 1e-5) on the input.
        self.layernorm = nn.LayerNorm(hidden_size) if input_norm else None

        def hyena() -> ImplicitHyenaFilter:
            return ImplicitHyenaFilter(
                hidden_size, filter_order, emb_dim, max_length, w, w_mod, bidirectional
            )

        self.filter_fn = hyena()
        self.filter_fn2 = hyena() if residual_long_conv else None
        self.in_linear = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_linear = nn.Linear(hidden_size, hidden_size)
        width = 3 * hidden_size
        self.short_filter = nn.Conv1d(width, width, kernel_size=3, groups=width, padding=2)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``hidden_states [B, L, d]`` -> ``[B, L, d]``; ``attention_mask [B, L]`` optional.

        Works channels first (``[B, channels, L]``, as the reference does) between the two
        linears, so the short convolution and the FFTs read contiguous rows, and runs both long
        convolutions (``filter_fn`` on ``v * x1``, ``filter_fn2`` on the input) as one FFT
        convolution over ``2 d`` channels.
        """
        length, width = hidden_states.shape[1], self.hidden_size
        u = hidden_states if self.layernorm is None else self.layernorm(hidden_states)
        keep = None
        if attention_mask is not None:
            keep = attention_mask[:, None, :].to(u.dtype)  # [B, 1, L]
            u = u * keep.transpose(1, 2)
        proj = self.in_linear(u).transpose(1, 2)  # [B, 3d, L]
        if keep is not None:
            proj = proj * keep
        mixed = self.short_filter(proj)[..., :length]
        x1, x2, v = mixed.split(width, dim=1)
        gated = v * x1
        if keep is not None:
            gated = gated * keep
        filters = [self.filter_fn] if self.filter_fn2 is None else [self.filter_fn, self.filter_fn2]
        inputs = [gated] if self.filter_fn2 is None else [gated, u.transpose(1, 2)]
        x = torch.cat([i.float() for i in inputs], dim=1)  # [B, d or 2d, L]
        kernels, skips = zip(*(f(length=length) for f in filters), strict=True)
        kernel = torch.cat(kernels)
        skip = torch.cat(skips).float()[:, None]
        y = (ops.fft_conv(x, kernel) + x * skip).to(gated.dtype)
        out = y[:, :width] * x2
        if self.filter_fn2 is not None:
            out = out + y[:, width:]
        return self.out_linear(out.transpose(1, 2))


class MonarchGluMlp(nn.Module):
    """``LayerNorm(wo(gelu(a) * b) + residual)`` with ``[a, b] = gated_layers(h)`` (reference
    names ``gated_layers`` (no bias), ``wo``, ``layernorm``; exact erf GELU on the first half).

    ``nblocks``: both matrices block diagonal with that many blocks (M2's Monarch MLP), or None
    for dense ``nn.Linear`` layers. ``glu=False`` is the reference's plain ``BertMLP``:
    ``LayerNorm(wo(gelu(gated_layers(h))) + h)`` with ``gated_layers`` of width
    ``intermediate_size``.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        nblocks: int | None = 4,
        eps: float = 1e-12,
        dropout: float = 0.0,
        glu: bool = True,
    ) -> None:
        super().__init__()
        self.intermediate_size = intermediate_size
        self.glu = glu
        width = 2 * intermediate_size if glu else intermediate_size
        if nblocks is None:
            self.gated_layers = nn.Linear(hidden_size, width, bias=False)
            self.wo = nn.Linear(intermediate_size, hidden_size)
        else:
            self.gated_layers = BlockDiagonalLinear(hidden_size, width, nblocks, bias=False)
            self.wo = BlockDiagonalLinear(intermediate_size, hidden_size, nblocks, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.layernorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        projected = self.gated_layers(hidden_states)
        if self.glu:
            gate, value = projected.split(self.intermediate_size, dim=-1)
            inner = F.gelu(gate) * value
        else:
            inner = F.gelu(projected)
        out = self.wo(self.dropout(inner))
        return self.layernorm(out + hidden_states)
