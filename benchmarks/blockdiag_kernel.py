"""Benchmark and check the block-diagonal matmul (M2-BERT's MLP matrices) on a GPU.

    PYTHONPATH=. python benchmarks/blockdiag_kernel.py             # H200: checks, timings
    PYTHONPATH=. python benchmarks/blockdiag_kernel.py --dry-run   # CPU, tiny, via the reference

Shapes: M2-BERT-80M's two MLP matrices, ``gated_layers`` (768 -> 6144, 4 blocks, no bias) and
``wo`` (3072 -> 768, 4 blocks, bias), over ``--rows`` = batch * sequence rows (8192, 65536,
262144).

(a) Accuracy, bf16 inputs (and fp32 with ``--check-fp32``): every method's forward output and
    gradients (x, weight, bias) against the float32 reference run on float32 copies of the same
    inputs; the split-K Triton grad_W kernel too. Printed as the max absolute error and that
    error over the largest reference value.
(b) Speed, bf16: forward (under ``no_grad``) and forward+backward (grads of x, weight and
    bias) of

    - ``triton``: ``hazyzoo.kernels.blockdiag.block_diagonal_matmul`` (the Triton path on CUDA),
    - ``reference``: the float32-accumulating einsum spec (``reference.py``),
    - ``einsum``: einsum on the bf16 tensors (the layer's code before the kernel),
    - ``bmm``: ``torch.bmm`` on the transposed ``[nb, rows, in_per]`` layout and back (what a
      user would write),
    - ``dense_linear``: ``F.linear`` with the dense ``[out, in]`` matrix (nb times the FLOPs and
      weight bytes; for context),

    and the weight gradient alone, ``grad_W = grad_y_k^T x_k``: cuBLAS ``bmm`` on strided views
    (the backward's default) vs the split-K Triton kernel.

Each timing is the median over ``--repeats`` replays of a CUDA graph of several calls (warmed
up first, so autotuning and allocation are outside the graph), timed with CUDA events, per
call; eager CUDA-event timing where a graph cannot be captured (the row says which). Every row
carries the physical floor: bytes that must move (inputs read and outputs written once) over
4.3e12 B/s, and FLOPs over 7.9e14 FLOP/s (bf16 dense), whichever is larger.

One JSON row is printed per measurement as it is made; all rows go to ``$OUT/blockdiag.json``
when ``OUT`` is set (and to ``--out``). ``--dry-run`` runs every code path at tiny shapes on
the CPU through the reference (``--interpret`` additionally runs the Triton kernels in
Triton's interpreter, fp16), timing with ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument(
        "--interpret", action="store_true", help="with --dry-run: Triton interpreter, fp16"
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[8192, 65536, 262144])
    parser.add_argument("--check-rows", type=int, default=8192)
    parser.add_argument("--check-fp32", action="store_true", help="also check fp32 inputs")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--bandwidth", type=float, default=4.3e12, help="HBM bytes/s (H200)")
    parser.add_argument("--flops", type=float, default=7.9e14, help="bf16 FLOP/s (H200)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.dry_run and ARGS.interpret:
    # Must be set before hazyzoo.kernels (and its @triton.jit kernels) is imported.
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["HAZYZOO_KERNELS"] = "triton"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hazyzoo.kernels.blockdiag as bd  # noqa: E402
from hazyzoo.kernels.blockdiag.reference import block_diagonal_matmul_reference  # noqa: E402
from hazyzoo.kernels.dispatch import triton_available, use_triton  # noqa: E402

if triton_available():
    import triton

    from hazyzoo.kernels.blockdiag.grouped import grad_weight_bmm, grad_weight_triton
else:  # CPU dry runs still work without triton
    triton = grad_weight_triton = None

    def grad_weight_bmm(grad_y2: torch.Tensor, x2: torch.Tensor, nblocks: int) -> torch.Tensor:
        """The backward's default grad_W (as in grouped.py, which needs triton to import)."""
        gy = grad_y2.unflatten(1, (nblocks, -1)).permute(1, 2, 0)
        return torch.bmm(gy, x2.unflatten(1, (nblocks, -1)).permute(1, 0, 2))


DEVICE = "cpu" if ARGS.dry_run else "cuda"
INTERPRET = ARGS.dry_run and ARGS.interpret
DTYPE = torch.float16 if INTERPRET else torch.bfloat16

# (name, in_features, out_features, nblocks, bias)
LAYERS = (
    [("gated_layers", 32, 64, 4, False), ("wo", 48, 16, 4, True)]
    if ARGS.dry_run
    else [("gated_layers", 768, 6144, 4, False), ("wo", 3072, 768, 4, True)]
)
ROWS = [16, 40] if ARGS.dry_run else ARGS.rows
CHECK_ROWS = 24 if ARGS.dry_run else ARGS.check_rows
REPEATS = 2 if ARGS.dry_run else ARGS.repeats
RESULTS: list[dict[str, Any]] = []


def emit(row: dict[str, Any]) -> None:
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


# --- the methods ---------------------------------------------------------------------------
Method = Callable[..., torch.Tensor]


def einsum_bf16(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    nb, out_per, in_per = w.shape
    blocks = x.reshape(*x.shape[:-1], nb, in_per)
    y = torch.einsum("...ki,koi->...ko", blocks, w).reshape(*x.shape[:-1], nb * out_per)
    return y if b is None else y + b


def bmm_transposed(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    nb, out_per, in_per = w.shape
    xt = x.reshape(-1, nb, in_per).transpose(0, 1)  # [nb, rows, in_per] (a view)
    y = torch.bmm(xt, w.transpose(1, 2)).transpose(0, 1).reshape(*x.shape[:-1], nb * out_per)
    return y if b is None else y + b


def dense_from_blocks(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` with the dense block-diagonal matrix built from ``w`` (for the checks:
    gradients come back per block)."""
    return F.linear(x, torch.block_diag(*w), b)


METHODS: dict[str, Method] = {
    "triton": bd.block_diagonal_matmul,
    "reference": block_diagonal_matmul_reference,
    "einsum": einsum_bf16,
    "bmm": bmm_transposed,
}


# --- timing --------------------------------------------------------------------------------
def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def cpu_ms(fn: Callable[[], Any]) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def events_ms(fn: Callable[[], Any], inner: int) -> float:
    times = []
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def time_ms(fn: Callable[[], Any]) -> tuple[float, str]:
    """Median ms of one ``fn()`` and how it was timed."""
    if DEVICE != "cuda":
        return cpu_ms(fn), "perf_counter"
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up: autotuning, allocator, cuBLAS workspaces
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    sync()
    once = events_ms(fn, 1)
    inner = max(1, min(20, round(20.0 / max(once, 1e-3))))  # about 20 ms per replay
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(inner):
                fn()
    except Exception as err:  # an op that cannot be captured: time it eagerly
        sync()
        return events_ms(fn, inner), f"cuda_events ({type(err).__name__})"
    graph.replay()
    sync()
    ms = events_ms(graph.replay, 1) / inner
    del graph
    return ms, f"cuda_graph x{inner}"


# --- floors --------------------------------------------------------------------------------
def floor(rows: int, in_f: int, out_f: int, nb: int, bias: bool, bench: str, dense: bool) -> dict:
    """Bytes and FLOPs that the op must move / do, and the time they take at the peaks."""
    size = torch.empty((), dtype=DTYPE).element_size()
    weight = in_f * out_f // (1 if dense else nb)
    flops = 2 * rows * weight
    if bench == "forward":
        elements = rows * in_f + weight + rows * out_f + (out_f if bias else 0)
    elif bench == "forward_backward":
        flops *= 3
        fwd = rows * in_f + weight + rows * out_f + (out_f if bias else 0)
        # grad_y, x, weight read once; grad_x, grad_W (and grad_bias) written once
        bwd = rows * out_f + rows * in_f + weight + rows * in_f + weight + (out_f if bias else 0)
        elements = fwd + bwd
    else:  # grad_weight: grad_y and x read, grad_W written
        elements = rows * out_f + rows * in_f + weight
    bytes_ = elements * size
    t_bytes, t_flops = bytes_ / ARGS.bandwidth, flops / ARGS.flops
    return {
        "bytes": bytes_,
        "flops": flops,
        "floor_ms": max(t_bytes, t_flops) * 1e3,
        "floor_bound": "memory" if t_bytes >= t_flops else "compute",
    }


def measure(
    bench: str, layer: tuple, rows: int, method: str, fn: Callable[[], Any], dense: bool = False
) -> None:
    name, in_f, out_f, nb, bias = layer
    row: dict[str, Any] = {
        "bench": bench,
        "layer": f"{name} {in_f}->{out_f} nb{nb}" + (" bias" if bias else ""),
        "rows": rows,
        "method": method,
        "dtype": str(DTYPE).removeprefix("torch."),
    }
    fl = floor(rows, in_f, out_f, nb, bias, bench, dense)
    try:
        ms, how = time_ms(fn)
    except torch.OutOfMemoryError:
        emit({**row, "oom": True})
        return
    finally:
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    own = {"tflops": fl["flops"] / ms * 1e-9, "tb_per_s": fl["bytes"] / ms * 1e-9}
    if dense:  # the dense layer's own floor; floor_ms and x_floor are the block-diagonal op's
        fl = {f"dense_{k}": v for k, v in fl.items()}
        fl.update(floor(rows, in_f, out_f, nb, bias, bench, dense=False))
    emit({**row, "ms": ms, **own, **fl, "x_floor": ms / fl["floor_ms"], "timing": how})


# --- inputs --------------------------------------------------------------------------------
def make_inputs(layer: tuple, rows: int, dtype: torch.dtype, seed: int = 0) -> list:
    """``x [rows, in]``, ``weight [nb, out/nb, in/nb]``, ``bias [out]`` or None, ``grad_y``."""
    _, in_f, out_f, nb, bias = layer
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(rows, in_f, device=DEVICE, generator=gen)
    w = torch.randn(nb, out_f // nb, in_f // nb, device=DEVICE, generator=gen) * (nb / in_f) ** 0.5
    b = torch.randn(out_f, device=DEVICE, generator=gen) if bias else None
    gy = torch.randn(rows, out_f, device=DEVICE, generator=gen)
    return [None if t is None else t.to(dtype) for t in (x, w, b, gy)]


def forward_backward(
    fn: Method,
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    gy: torch.Tensor,
) -> list[torch.Tensor]:
    """``[y, dx, dweight(, dbias)]`` of ``fn`` for the upstream gradient ``gy``."""
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    y = fn(*leaves) if b is not None else fn(*leaves, None)
    return [y.detach(), *torch.autograd.grad(y, leaves, gy)]


# --- (a) checks ----------------------------------------------------------------------------
def checks() -> None:
    dtypes = [DTYPE] + ([torch.float32] if ARGS.check_fp32 else [])
    for layer in LAYERS:
        for dtype in dtypes:
            x, w, b, gy = make_inputs(layer, CHECK_ROWS, dtype)
            truth = forward_backward(
                block_diagonal_matmul_reference,
                *(None if t is None else t.float() for t in (x, w, b, gy)),
            )
            methods = {**METHODS, "dense_linear": dense_from_blocks}
            results = {m: forward_backward(fn, x, w, b, gy) for m, fn in methods.items()}
            if grad_weight_triton is not None and (DEVICE == "cuda" or INTERPRET):
                results["grad_weight_triton"] = [None, None, grad_weight_triton(gy, x, layer[3])]
            for method, got in results.items():
                for what, g, t in zip(("y", "dx", "dweight", "dbias"), got, truth):
                    if g is None:
                        continue
                    err = (g.float() - t).abs().max().item()
                    scale = t.abs().max().item()
                    emit(
                        {
                            "check": what,
                            "layer": layer[0],
                            "rows": CHECK_ROWS,
                            "dtype": str(dtype).removeprefix("torch."),
                            "method": method,
                            "max_abs_err": err,
                            "max_err_over_max_ref": err / max(scale, 1e-30),
                            "out_dtype": str(g.dtype).removeprefix("torch."),
                        }
                    )
            del truth, results
            if DEVICE == "cuda":
                torch.cuda.empty_cache()


# --- (b) timings ---------------------------------------------------------------------------
def time_case(layer: tuple, rows: int) -> None:
    """Every timing of one layer shape at one row count (inputs freed on return)."""
    x, w, b, gy = make_inputs(layer, rows, DTYPE)
    dense_w = torch.block_diag(*w).contiguous()
    for bench in ("forward", "forward_backward", "grad_weight"):
        fl = floor(rows, *layer[1:], bench, dense=False)
        emit({"bench": bench, "layer": layer[0], "rows": rows, "method": "floor", **fl})
    # forward, inference (no autograd bookkeeping on any path)
    for method, fn in METHODS.items():

        def fwd(fn=fn):
            with torch.no_grad():
                return fn(x, w, b)

        measure("forward", layer, rows, method, fwd)

    def dense_fwd():
        with torch.no_grad():
            return F.linear(x, dense_w, b)

    measure("forward", layer, rows, "dense_linear", dense_fwd, dense=True)
    # forward + backward: grads of x, weight and bias
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    for method, fn in METHODS.items():

        def fwd_bwd(fn=fn):
            y = fn(*leaves) if b is not None else fn(*leaves, None)
            return torch.autograd.grad(y, leaves, gy)

        measure("forward_backward", layer, rows, method, fwd_bwd)
    dense_leaves = [t.detach().requires_grad_() for t in (x, dense_w, b) if t is not None]

    def dense_fwd_bwd():
        return torch.autograd.grad(F.linear(*dense_leaves), dense_leaves, gy)

    measure("forward_backward", layer, rows, "dense_linear", dense_fwd_bwd, dense=True)
    # the weight gradient alone: cuBLAS on strided views vs the split-K Triton kernel
    impls = {"bmm": grad_weight_bmm}
    if grad_weight_triton is not None and (DEVICE == "cuda" or INTERPRET):
        impls["triton"] = grad_weight_triton
    for method, impl in impls.items():

        def grad_w(impl=impl):
            return impl(gy, x, layer[3])

        measure("grad_weight", layer, rows, method, grad_w)


def timings() -> None:
    for layer in LAYERS:
        for rows in ROWS:
            try:
                time_case(layer, rows)
            except torch.OutOfMemoryError:
                emit({"bench": "inputs", "layer": layer[0], "rows": rows, "oom": True})
            if DEVICE == "cuda":
                torch.cuda.empty_cache()


def summary() -> None:
    """A compact table of the timings (ms), to read next to the JSON rows."""
    timed = [r for r in RESULTS if "ms" in r and "bench" in r]
    print(f"\n{'bench':<17} {'layer':<34} {'rows':<7} {'method':<12} {'ms':>8} {'x_floor':>8}")
    for r in timed:
        print(
            f"{r['bench']:<17} {r['layer']:<34} {r['rows']:<7} {r['method']:<12} "
            f"{r['ms']:8.3f} {r['x_floor']:8.2f}"
        )


def main() -> None:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run for the CPU smoke test")
    x, w, _, _ = make_inputs(LAYERS[0], 1, DTYPE)
    emit(
        {
            "device": torch.cuda.get_device_name() if DEVICE == "cuda" else platform.processor(),
            "torch": torch.__version__,
            "triton": None if triton is None else triton.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "dtype": str(DTYPE).removeprefix("torch."),
            "interpreted": bd._INTERPRETED,
            "op_runs_triton": use_triton(x, w),
            "tf32_allowed": torch.get_float32_matmul_precision() != "highest",
        }
    )
    if not ARGS.skip_checks:
        checks()
    timings()
    summary()
    paths = [ARGS.out] if ARGS.out else []
    if os.environ.get("OUT"):
        paths.append(os.path.join(os.environ["OUT"], "blockdiag.json"))
    for path in paths:
        with open(path, "w") as f:
            json.dump(RESULTS, f, indent=1)
        print(f"wrote {len(RESULTS)} rows to {path}")


if __name__ == "__main__":
    main()
