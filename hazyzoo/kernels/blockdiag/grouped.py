"""Block-diagonal matmul in Triton: a grouped GEMM, its backward, and the autograd glue.

Imported only when triton imports (see :mod:`hazyzoo.kernels.blockdiag`).

Forward: one launch of :func:`_matmul_kernel` over (row tiles, output-column tiles, blocks).
A program owns one ``[BLOCK_M, BLOCK_N]`` tile of one block's output, walks that block's
``in_per`` columns ``BLOCK_K`` at a time with ``tl.dot`` into a float32 accumulator, adds the
bias and stores straight into ``y [M, nb * out_per]``. ``x`` and ``W`` are read through their
strides (no transposed or per-block copies). Program ids run output-column tile fastest, then
block, then row tile, so the programs that share a tile of ``x`` run together (``x`` is read
from HBM about once; ``W`` is a few MB and stays in L2).

Backward:

- ``grad_x`` is the same kernel on ``grad_y`` with ``W`` transposed per block, which is only a
  stride swap (``weight.transpose(1, 2)``), no bias.
- ``grad_W[k] = grad_y_k^T x_k`` reduces over all rows. By default it is one ``torch.bmm`` on
  strided views (``[nb, out_per, M] @ [nb, M, in_per]``; both views already have a unit stride
  in one of their two matrix dims, so cuBLAS takes them with leading dims ``nb * out_per`` and
  ``nb * in_per``: no copy). That is a plain strided-batched GEMM with a very long reduction,
  the case cuBLAS's split-K / stream-K kernels are tuned for, with no partial-sum buffer and no
  extra launch. :func:`grad_weight_triton` is a split-K Triton kernel for the same product
  (float32 partial sums per row chunk, summed by torch): ``benchmarks/blockdiag_kernel.py``
  times both, and :data:`GRAD_WEIGHT` switches the default if the Triton one wins there.
- ``grad_bias`` is ``grad_y.sum(rows)`` in float32 (torch).

Inputs: ``x [..., nb * in_per]`` with any strides. The leading dims are flattened with
``reshape``, which is a view (strides read as they are, e.g. a column slice of a wider tensor or
a transposed 2-D matrix) and copies only when the leading dims cannot be flattened into one row
stride (e.g. a permuted 3-D tensor). ``grad_y`` likewise.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from hazyzoo.kernels._utils import device_guard, next_power_of_2
from hazyzoo.kernels.dispatch import triton_interpreting

__all__ = [
    "GRAD_WEIGHT",
    "INTERPRETED",
    "block_diagonal_matmul_triton",
    "grad_weight_bmm",
    "grad_weight_triton",
    "matmul_forward",
]

# Whether the kernels below are defined for the CPU interpreter. Triton decides this when a
# kernel is decorated, so it is fixed when this module is imported (tests check it).
INTERPRETED = triton_interpreting()

# How the backward computes grad_W: "bmm" (cuBLAS on strided views) or "triton" (split-K).
GRAD_WEIGHT = "bmm"

# Forward tiles ``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)``, autotuned on the GPU
# per (out_per, in_per, row bucket, dtype, precision). Half inputs run on tensor cores
# (wgmma on sm_90): 128 x 128 x 64 tiles in 3-4 stages fit the H200's 227 KB of shared memory
# (128 x 256 x 64 in 3 stages uses 147 KB); the narrow ones are for out_per = 192 (M2's wo) and
# few rows. float32: TF32 tensor cores when torch allows them, else IEEE FMA dots, which hold
# far less per thread.
_HALF_TILES = [
    (128, 128, 64, 8, 3),
    (128, 128, 64, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (128, 256, 64, 8, 3),
    (64, 64, 64, 4, 4),
]
_TF32_TILES = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (64, 64, 32, 4, 3)]
_IEEE_TILES = [(64, 64, 32, 4, 3), (128, 64, 32, 8, 3), (64, 32, 32, 4, 3), (32, 64, 32, 4, 3)]
# One small tile when interpreting (the interpreter cannot autotune over several configs), so
# that the tests' sizes of 17-40 span several tiles and hit every mask.
_INTERPRET_TILE = 16
_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_K")
# Rows beyond this do not change the best tile (the grid already fills the GPU many times).
_MAX_M_BUCKET = 16384


def _precision_of(tag: str, tiles: list) -> list:
    configs = []
    for *blocks, warps, stages in tiles:
        config = triton.Config(dict(zip(_NAMES, blocks)), num_warps=warps, num_stages=stages)
        config.precision = tag  # read by _prune below; not passed to the kernel
        configs.append(config)
    return configs


def _forward_configs() -> list:
    if INTERPRETED:
        return [triton.Config(dict.fromkeys(_NAMES, _INTERPRET_TILE), num_warps=4)]
    return (
        _precision_of("half", _HALF_TILES)
        + _precision_of("tf32", _TF32_TILES)
        + _precision_of("ieee", _IEEE_TILES)
    )


def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
    """Keep the tiles of this call's precision that are not much larger than the problem
    (or the smallest of them when none is)."""
    args = {**named_args, **kwargs}
    if args["X"].dtype in (torch.float16, torch.bfloat16):
        tag = "half"
    else:
        tag = "ieee" if args["INPUT_PRECISION"] == "ieee" else "tf32"
    mine = [c for c in configs if c.precision == tag]
    caps = {
        "BLOCK_M": next_power_of_2(args["M_BUCKET"], 16),
        "BLOCK_N": next_power_of_2(args["N_PER"], 16),
        "BLOCK_K": next_power_of_2(args["K_PER"], 16),
    }
    fit = [c for c in mine if all(c.kwargs[name] <= cap for name, cap in caps.items())]
    if fit:
        return fit
    return [
        min(mine, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"])
    ]


@triton.autotune(
    configs=_forward_configs(),
    key=["N_PER", "K_PER", "M_BUCKET", "HAS_BIAS", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.heuristics({"EVEN_K": lambda args: args["K_PER"] % args["BLOCK_K"] == 0})
@triton.jit
def _matmul_kernel(
    X, W, B, Y,
    M, N_PER, K_PER, NB, M_BUCKET,
    stride_xm, stride_xk, stride_wb, stride_wn, stride_wk, stride_b, stride_ym,
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """1-D grid over (row tile, block, column tile), column tile fastest. Program computes
    ``Y[rows, blk * N_PER + cols] = X[rows, blk * K_PER + :] @ W[blk, cols, :]^T + B``."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(N_PER, BLOCK_N)
    pid_n = pid % n_tiles
    rest = pid // n_tiles
    blk = rest % NB
    pid_m = rest // NB
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < N_PER
    # 64-bit offsets: rows x row stride passes 2**31 at M2's sizes (262144 x 6144).
    rows64 = rows.to(tl.int64)
    blk64 = blk.to(tl.int64)
    x_ptrs = X + rows64[:, None] * stride_xm + (blk64 * K_PER + ks[None, :]) * stride_xk
    w_ptrs = W + blk64 * stride_wb + cols[None, :] * stride_wn + ks[:, None] * stride_wk
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K_PER, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs, mask=row_ok[:, None], other=0.0)
            b = tl.load(w_ptrs, mask=col_ok[None, :], other=0.0)
        else:
            k_ok = (k0 + ks) < K_PER
            a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    out_cols = blk64 * N_PER + cols
    if HAS_BIAS:
        bias = tl.load(B + out_cols * stride_b, mask=col_ok, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    y_ptrs = Y + rows64[:, None] * stride_ym + out_cols[None, :]
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _grad_weight_kernel(
    GY, X, P,
    M, N_PER, K_PER, NB, rows_per_split,
    stride_gm, stride_gn, stride_xm, stride_xk, stride_ps, stride_pb, stride_pn,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """1-D grid over (split, block, K tile, N tile), N tile fastest. Program sums
    ``GY[rows, blk * N_PER + n]^T X[rows, blk * K_PER + k]`` over its split's
    ``rows_per_split`` rows (a multiple of BLOCK_M) into ``P[split, blk, n, k]``."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(N_PER, BLOCK_N)
    k_tiles = tl.cdiv(K_PER, BLOCK_K)
    pid_n = pid % n_tiles
    rest = pid // n_tiles
    pid_k = rest % k_tiles
    rest = rest // k_tiles
    blk = (rest % NB).to(tl.int64)
    split = rest // NB
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    ms = tl.arange(0, BLOCK_M)
    n_ok = ns < N_PER
    k_ok = ks < K_PER
    row0 = split.to(tl.int64) * rows_per_split
    rows64 = row0 + ms
    # grad_y tile read transposed, [BLOCK_N, BLOCK_M], through its strides
    g_ptrs = GY + rows64[None, :] * stride_gm + (blk * N_PER + ns[:, None]) * stride_gn
    x_ptrs = X + rows64[:, None] * stride_xm + (blk * K_PER + ks[None, :]) * stride_xk
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for r0 in range(0, rows_per_split, BLOCK_M):
        row_ok = (row0 + r0 + ms) < M
        g = tl.load(g_ptrs, mask=n_ok[:, None] & row_ok[None, :], other=0.0)
        x = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(g, x, acc, input_precision=INPUT_PRECISION)
        g_ptrs += BLOCK_M * stride_gm
        x_ptrs += BLOCK_M * stride_xm
    p_ptrs = P + split * stride_ps + blk * stride_pb + ns[:, None] * stride_pn + ks[None, :]
    tl.store(p_ptrs, acc.to(P.dtype.element_ty), mask=n_ok[:, None] & k_ok[None, :])


def _input_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s precision for float32 inputs, as torch's own matmuls would run them: IEEE
    unless ``torch.set_float32_matmul_precision`` allows TF32 (ignored for half inputs)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def _fit_tile(n: int, options: tuple[int, ...]) -> int:
    """The tile from ``options`` that pads ``n`` least (ties: the largest)."""
    return min(options, key=lambda t: (triton.cdiv(n, t) * t, -t))


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def matmul_forward(x2: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``y [M, nb * out_per]`` (x2's dtype) for ``x2 [M, nb * in_per]`` and ``weight
    [nb, out_per, in_per]``, both with any strides; one launch."""
    rows = x2.shape[0]
    nb, n_per, k_per = weight.shape
    y = torch.empty(rows, nb * n_per, dtype=x2.dtype, device=x2.device)
    if rows == 0:
        return y

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(n_per, meta["BLOCK_N"]) * nb,)

    b = y if bias is None else bias
    with device_guard(x2):
        _matmul_kernel[grid](
            x2, weight, b, y,
            rows, n_per, k_per, nb, min(next_power_of_2(rows, 16), _MAX_M_BUCKET),
            x2.stride(0), x2.stride(1), weight.stride(0), weight.stride(1), weight.stride(2),
            b.stride(0), y.stride(0),
            HAS_BIAS=bias is not None, INPUT_PRECISION=_input_precision(x2.dtype),
        )  # fmt: skip
    return y


def grad_weight_bmm(grad_y2: Tensor, x2: Tensor, nblocks: int) -> Tensor:
    """``grad_W [nb, out_per, in_per]`` as one ``torch.bmm`` of strided views (no copies for
    unit-column-stride inputs): ``grad_y_k^T [out_per, M] @ x_k [M, in_per]``."""
    gy = grad_y2.unflatten(1, (nblocks, -1)).permute(1, 2, 0)
    xk = x2.unflatten(1, (nblocks, -1)).permute(1, 0, 2)
    return torch.bmm(gy, xk)


def grad_weight_triton(
    grad_y2: Tensor, x2: Tensor, nblocks: int, splits: int | None = None
) -> Tensor:
    """``grad_W [nb, out_per, in_per]`` by split-K over rows in Triton: ``splits`` row chunks
    (default: enough programs for two per SM) each sum into a float32 partial, which torch
    adds up (one chunk: written straight in the output dtype)."""
    rows = x2.shape[0]
    n_per, k_per = grad_y2.shape[1] // nblocks, x2.shape[1] // nblocks
    if rows == 0:
        return torch.zeros(nblocks, n_per, k_per, dtype=x2.dtype, device=x2.device)
    if INTERPRETED:
        block_m = block_n = block_k = _INTERPRET_TILE
        warps, stages = 4, 1
    elif x2.dtype in (torch.float16, torch.bfloat16):
        block_m, warps, stages = 64, 4, 4
        block_n, block_k = _fit_tile(n_per, (128, 64, 32, 16)), _fit_tile(k_per, (64, 32, 16))
    else:
        block_m, warps, stages = 32, 4, 2
        block_n, block_k = _fit_tile(n_per, (64, 32, 16)), _fit_tile(k_per, (64, 32, 16))
    tiles = nblocks * triton.cdiv(n_per, block_n) * triton.cdiv(k_per, block_k)
    row_blocks = triton.cdiv(rows, block_m)
    if splits is None:
        # two programs per SM; at least 8 row steps per program so partials stay cheap
        target = 2 * _sm_count(x2.device) if x2.is_cuda else 2
        splits = min(triton.cdiv(target, tiles), triton.cdiv(row_blocks, 8))
    splits = max(1, min(splits, row_blocks))
    rows_per_split = triton.cdiv(row_blocks, splits) * block_m
    splits = triton.cdiv(rows, rows_per_split)
    shape = (splits, nblocks, n_per, k_per)
    dtype = x2.dtype if splits == 1 else torch.float32
    partial = torch.empty(shape, dtype=dtype, device=x2.device)
    with device_guard(x2):
        _grad_weight_kernel[(tiles * splits,)](
            grad_y2, x2, partial,
            rows, n_per, k_per, nblocks, rows_per_split,
            grad_y2.stride(0), grad_y2.stride(1), x2.stride(0), x2.stride(1),
            partial.stride(0), partial.stride(1), partial.stride(2),
            INPUT_PRECISION=_input_precision(x2.dtype),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            num_warps=warps, num_stages=stages,
        )  # fmt: skip
    return partial[0] if splits == 1 else partial.sum(0).to(x2.dtype)


def _grad_weight(grad_y2: Tensor, x2: Tensor, nblocks: int) -> Tensor:
    if GRAD_WEIGHT == "triton":
        return grad_weight_triton(grad_y2, x2, nblocks)
    return grad_weight_bmm(grad_y2, x2, nblocks)


class _BlockDiagonalMatmul(torch.autograd.Function):
    """Autograd glue for the Triton path: saves ``x`` (as rows) and ``weight``."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor | None
    ) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        y = matmul_forward(x2, weight, bias)
        ctx.save_for_backward(x2, weight)
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        return y.view(*x.shape[:-1], y.shape[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_y: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x2, weight = ctx.saved_tensors
        nblocks = weight.shape[0]
        gy2 = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul_forward(gy2, weight.transpose(1, 2), None).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            grad_w = _grad_weight(gy2, x2, nblocks)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = gy2.sum(0, dtype=torch.float32).to(grad_y.dtype)
        return grad_x, grad_w, grad_b


def block_diagonal_matmul_triton(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Triton path of :func:`hazyzoo.kernels.blockdiag.block_diagonal_matmul` (differentiable
    w.r.t. x, weight and bias; one launch and no autograd bookkeeping when no gradient is
    needed)."""
    needs_grad = x.requires_grad or weight.requires_grad
    needs_grad = needs_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return _BlockDiagonalMatmul.apply(x, weight, bias)
    y = matmul_forward(x.reshape(-1, x.shape[-1]), weight, bias)
    return y.view(*x.shape[:-1], y.shape[1])
