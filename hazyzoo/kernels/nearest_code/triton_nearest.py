"""Nearest-code search in Triton: distances and argmin fused, no ``N x K`` matrix.

Imported only when triton imports (see :mod:`hazyzoo.kernels.nearest_code`). One program
takes ``BLOCK_M`` rows of ``x`` and walks the codebook ``BLOCK_K`` codes at a time; each code
block's dot products come from ``tl.dot`` over ``BLOCK_D``-wide slices of ``d`` (float32
accumulation; on the GPU float32 inputs use tf32x3, three TF32 products that keep
near-float32 accuracy at 3-5x the speed of IEEE float32 FMAs). The score
``||c||^2 - 2 x.c`` (cosine: ``-x.c`` of normalised vectors) of the block is reduced to its
minimum and lowest index of that minimum, and merged into the running ``(min, argmin)`` per
row with a strict ``<`` (an equal score in a later block, i.e. a higher index, never wins).
The distance ``||x||^2 + min`` (cosine ``1 + min``) is formed at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.dispatch import triton_interpreting
from hazyzoo.kernels.nearest_code.reference import DISTANCES, normalize_rows

# Whether the kernel below is defined for the CPU interpreter (fixed at import).
INTERPRETED = triton_interpreting()

_INT32_MAX = tl.constexpr(2**31 - 1)  # a Triton global must be a constexpr


@triton.jit
def _nearest_code_kernel(
    X,
    C,
    C2,
    OUT_IDX,
    OUT_DIST,
    N,
    K,
    D,
    stride_x,
    stride_c,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ONE_D: tl.constexpr,
    COSINE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Grid (row blocks,). ``ONE_D``: ``D <= BLOCK_D``, so the x tile is loaded once."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    offs_k = tl.arange(0, BLOCK_K)

    # ||x||^2 per row (float32), and the x tile itself when one slice covers d.
    x2 = tl.zeros([BLOCK_M], dtype=tl.float32)
    x_tile = tl.zeros([BLOCK_M, BLOCK_D], dtype=X.dtype.element_ty)
    if ONE_D:
        x_mask = row_ok[:, None] & (offs_d < D)[None, :]
        x_tile = tl.load(X + rows64[:, None] * stride_x + offs_d[None, :], mask=x_mask, other=0.0)
        if not COSINE:
            xf = x_tile.to(tl.float32)
            x2 = tl.sum(xf * xf, axis=1)
    elif not COSINE:
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + offs_d
            x_mask = row_ok[:, None] & (cols < D)[None, :]
            xf = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=x_mask, other=0.0)
            xf = xf.to(tl.float32)
            x2 += tl.sum(xf * xf, axis=1)

    best = tl.full([BLOCK_M], float("inf"), dtype=tl.float32)
    best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + offs_k
        code_ok = codes < K
        codes64 = codes.to(tl.int64)
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        if ONE_D:
            c_mask = code_ok[:, None] & (offs_d < D)[None, :]
            c_tile = tl.load(
                C + codes64[:, None] * stride_c + offs_d[None, :], mask=c_mask, other=0.0
            )
            acc = tl.dot(x_tile, tl.trans(c_tile), acc, input_precision=PRECISION)
        else:
            for d0 in range(0, D, BLOCK_D):
                cols = d0 + offs_d
                col_ok = cols < D
                x_mask = row_ok[:, None] & col_ok[None, :]
                xt = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=x_mask, other=0.0)
                c_mask = code_ok[:, None] & col_ok[None, :]
                ct = tl.load(
                    C + codes64[:, None] * stride_c + cols[None, :], mask=c_mask, other=0.0
                )
                acc = tl.dot(xt, tl.trans(ct), acc, input_precision=PRECISION)
        if COSINE:
            score = -acc
        else:
            c2 = tl.load(C2 + codes, mask=code_ok, other=0.0)
            score = c2[None, :] - 2.0 * acc
        score = tl.where(code_ok[None, :], score, float("inf"))
        block_min = tl.min(score, axis=1)
        # Lowest index attaining the block's minimum (ties inside the block).
        hit = (score == block_min[:, None]) & code_ok[None, :]
        block_idx = tl.min(tl.where(hit, codes[None, :], _INT32_MAX), axis=1)
        better = block_min < best  # strict: an equal later (higher-index) code never wins
        best_idx = tl.where(better, block_idx, best_idx)
        best = tl.where(better, block_min, best)

    if COSINE:
        dist = 1.0 + best
    else:
        dist = tl.maximum(x2 + best, 0.0)
    tl.store(OUT_IDX + rows, best_idx.to(tl.int64), mask=row_ok)
    tl.store(OUT_DIST + rows, dist, mask=row_ok)


def default_config(d: int, dtype: torch.dtype) -> dict[str, int]:
    """Block sizes and launch options for rows of width ``d`` in ``dtype`` (the kernel's
    input dtype). Tiny blocks when interpreting, so the tests' small shapes span several row
    blocks, code blocks and d slices (``tl.dot`` needs every block dim >= 16)."""
    if INTERPRETED:
        return {"BLOCK_M": 16, "BLOCK_K": 16, "BLOCK_D": 16, "num_warps": 1, "num_stages": 1}
    half = dtype != torch.float32
    block_d = min(next_power_of_2(d, 16), 128 if half else 64)
    if half:
        return {"BLOCK_M": 128, "BLOCK_K": 64, "BLOCK_D": block_d, "num_warps": 8, "num_stages": 3}
    # float32: three TF32 products per dot (tf32x3, near-float32 accuracy: 3-5e-7 relative
    # distance error, every index equal on random data) ran 3-5x faster than IEEE float32 FMA
    # on an H200 (benchmarks/RESULTS.md).
    return {
        "BLOCK_M": 128, "BLOCK_K": 64 if d <= 64 else 128, "BLOCK_D": block_d, "num_warps": 8,
        "num_stages": 3, "PRECISION": "tf32x3",
    }  # fmt: skip


def _rows(t: Tensor) -> Tensor:
    """``t`` with unit column stride (a copy only when needed)."""
    return t if t.stride(1) == 1 else t.contiguous()


@torch.no_grad()
def nearest_code_triton(
    x: Tensor,
    codebook: Tensor,
    distance: str = "euclidean",
    config: dict[str, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton version of :func:`~.reference.nearest_code_reference` (same results up to
    float32 summation order). ``x`` and ``codebook`` are brought to one dtype (their own if
    they share it, else float32); cosine normalises both in float32 first. ``config``
    overrides :func:`default_config` (benchmark sweeps; its ``PRECISION`` key picks
    ``tl.dot``'s input precision: ``"ieee"``, ``"tf32x3"`` or ``"tf32"``)."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    cosine = distance == "cosine"
    if cosine:
        x, codebook = normalize_rows(x), normalize_rows(codebook)
    elif x.dtype != codebook.dtype:
        x, codebook = x.float(), codebook.float()
    x, codebook = _rows(x), _rows(codebook)
    n, d = x.shape
    k = codebook.shape[0]
    indices = torch.empty(n, dtype=torch.int64, device=x.device)
    distances = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return indices, distances
    c2 = distances if cosine else codebook.float().pow(2).sum(1)  # unused when cosine
    cfg = dict(default_config(d, x.dtype), **(config or {}))
    block_m = cfg.pop("BLOCK_M")
    precision = cfg.pop("PRECISION", "ieee" if x.dtype == torch.float32 else "tf32")
    block_d = cfg["BLOCK_D"]
    with device_guard(x):
        _nearest_code_kernel[(triton.cdiv(n, block_m),)](
            x, codebook, c2, indices, distances, n, k, d, x.stride(0), codebook.stride(0),
            BLOCK_M=block_m, ONE_D=d <= block_d, COSINE=cosine,
            PRECISION=precision, **cfg,
        )  # fmt: skip
    return indices, distances
