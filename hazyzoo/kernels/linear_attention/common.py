"""Triton pieces the Taylor-attention kernels share (imported only when triton imports).

:mod:`.parallel`, :mod:`.state` and :mod:`.recurrent` use these: the fp32-accumulating dot, the
on-the-fly feature map rows, autotuning configurations, tile sizes and argument conversion.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import next_power_of_2
from hazyzoo.kernels.dispatch import triton_interpreting

# Whether the kernels of this op are defined for the CPU interpreter. Triton decides this when
# a kernel is decorated, so it is fixed when the kernel modules are imported (tests check it).
INTERPRETED = triton_interpreting()

MAX_TRITON_FEATURE_DIM = 64

# Widest Dv tile. Small when interpreting so that the tests' Dv = 24 exercises the several-Dv-
# blocks code paths (which on the GPU only run for Dv > 128).
MAX_BLOCK_DV = 16 if INTERPRETED else 128

Tiles = list[tuple[int, ...]]


def check_triton_feature_dim(feat: int) -> None:
    """The kernels keep a padded ``[block, F]`` tile of q or k in registers: F <= 64."""
    if feat > MAX_TRITON_FEATURE_DIM:
        raise ValueError(
            f"the Triton Taylor-attention kernels support feature dim F <= "
            f"{MAX_TRITON_FEATURE_DIM}, got F={feat}; use HAZYZOO_KERNELS=torch"
        )


def autotune_configs(half: Tiles, ieee: Tiles, names: tuple[str, ...], interpret: tuple) -> dict:
    """``@triton.autotune`` arguments. Each tile is ``(*block sizes, num_warps, num_stages)``
    named by ``names``. float32 inputs (IEEE dots run on FMA units, which hold far more in
    registers) and half inputs (tensor cores) get their own sets, chosen by ``pick`` from the
    kernel's ``IEEE`` argument. When interpreting: one config (the interpreter cannot autotune
    over several), small blocks."""
    if INTERPRETED:
        return {"configs": [triton.Config(dict(zip(names, interpret)), num_warps=4)]}

    def make(tiles: Tiles, tag: str) -> list:
        configs = []
        for *blocks, warps, stages in tiles:
            config = triton.Config(dict(zip(names, blocks)), num_warps=warps, num_stages=stages)
            config.precision = tag  # read by pick below; not passed to the kernel
            configs.append(config)
        return configs

    def pick(configs: list, named_args: dict, **kwargs: object) -> list:
        ieee = kwargs.get("IEEE", named_args.get("IEEE"))
        return [c for c in configs if c.precision == ("ieee" if ieee else "half")]

    return {
        "configs": make(half, "half") + make(ieee, "ieee"),
        "prune_configs_by": {"early_config_prune": pick},
    }


@triton.jit
def dot(a, b, IEEE: tl.constexpr):
    """``a @ b`` accumulated in fp32; IEEE fp32 (no TF32) when ``IEEE``."""
    if IEEE:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def load_tile(ptr, rows, cols, stride_r, stride_c, n_rows, n_cols):
    """The tile ``ptr[rows, cols]`` (``rows`` and ``cols`` are index ranges; a transposed tile
    is the same call with the two swapped), zero where ``rows >= n_rows`` or
    ``cols >= n_cols``."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0)


@triton.jit
def feature_index(r, F, D_PHI):
    """For flat feature rows ``r``: the two input coordinates each row multiplies and its
    kind. Row 0 is the constant, rows 1..F linear (``x[r-1]``), then ``x[i] * x[j]``."""
    in_r = r < D_PHI
    is_const = r == 0
    is_lin = (r >= 1) & (r <= F)
    rq = tl.maximum(r - 1 - F, 0)
    is_quad = r > F
    ia = tl.where(is_lin, r - 1, tl.where(is_quad, rq // F, 0))
    ib = tl.where(is_quad, rq % F, 0)
    return ia, ib, is_const, is_lin, in_r


@triton.jit
def feature_values(xa, xb, is_const, is_lin, c1, c2):
    """``phi`` rows from the gathered coordinates (fp32): 1, ``x c1`` or ``x_i x_j c2``.
    Cast back to fp32: under inductor the float scalars ``c1, c2`` arrive as fp64, which would
    make every accumulator built from ``phi`` fp64 (a loop-carried type error)."""
    xa = xa.to(tl.float32)
    xb = xb.to(tl.float32)
    return tl.where(is_const, 1.0, tl.where(is_lin, xa * c1, xa * xb * c2)).to(tl.float32)


def feature_scales(feat: int) -> tuple[float, float]:
    """``(c1, c2)`` of :func:`feature_values`: ``F^(-1/4)`` and ``1 / (sqrt(2) sqrt(F))``."""
    return feat**-0.25, 1.0 / (math.sqrt(2.0) * math.sqrt(feat))


def dv_block(dv: int) -> tuple[int, bool]:
    """Dv tile: the whole (padded) Dv up to 128 in one block, else 128-wide blocks; and
    whether one block covers Dv."""
    block = min(next_power_of_2(dv, 16), MAX_BLOCK_DV)
    return block, block >= dv


def l_bucket(length: int) -> int:
    """Autotune bucket for the sequence length (powers of two from 1k)."""
    return next_power_of_2(length, 1024)


def mask_arg(key_mask: Tensor | None, like: Tensor) -> tuple[Tensor, int, int]:
    """The key mask as float32 ``[B, L]`` (1 keep, 0 drop) and its strides, or a dummy."""
    if key_mask is None:
        return like, 0, 0
    m = key_mask.to(device=like.device, dtype=torch.bool).to(torch.float32).contiguous()
    return m, m.stride(0), m.stride(1)
