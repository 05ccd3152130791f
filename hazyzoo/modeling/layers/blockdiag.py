"""Block-diagonal linear layers (Monarch Mixer's MLP matrices).

``BlockDiagonalLinear(in, out, nblocks)`` splits the input into ``nblocks`` contiguous blocks
and multiplies block ``k`` by its own ``[out / nblocks, in / nblocks]`` matrix; the outputs are
concatenated in block order (no shuffle). Weight layout ``[nblocks, out / nblocks, in /
nblocks]``, as M2's ``BlockdiagLinear``. ``nblocks`` times fewer parameters and FLOPs than a
dense layer of the same shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hazyzoo.kernels.blockdiag import block_diagonal_matmul

__all__ = ["BlockDiagonalLinear", "block_diagonal_linear"]


def block_diagonal_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x [..., in]`` times the block-diagonal matrix ``weight [nb, out/nb, in/nb]`` (plus
    ``bias``): :func:`hazyzoo.kernels.blockdiag.block_diagonal_matmul`, i.e. one Triton launch
    on CUDA tensors and the PyTorch reference elsewhere."""
    if weight.dim() == 3:  # other weights: the op's own checks name the problem
        nblocks, _, in_per = weight.shape
        if x.shape[-1] != nblocks * in_per:
            raise ValueError(
                f"the input's last dim is {x.shape[-1]} but the blocks take {nblocks} x {in_per}"
            )
    return block_diagonal_matmul(x, weight, bias)


class BlockDiagonalLinear(nn.Module):
    """A linear layer whose matrix is block diagonal with ``nblocks`` blocks."""

    def __init__(
        self, in_features: int, out_features: int, nblocks: int, bias: bool = True
    ) -> None:
        super().__init__()
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if size % nblocks:
                raise ValueError(f"{name} ({size}) must be divisible by nblocks ({nblocks})")
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        in_per = in_features // nblocks
        self.weight = nn.Parameter(torch.empty(nblocks, out_features // nblocks, in_per))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        bound = 1 / math.sqrt(in_per)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_diagonal_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"nblocks={self.nblocks}, bias={self.bias is not None}"
        )
