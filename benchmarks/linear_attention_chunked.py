"""Benchmark the chunked (state-passing) Taylor attention against the tiled kernels (GPU).

    python benchmarks/linear_attention_chunked.py             # H200: checks, then the table
    python benchmarks/linear_attention_chunked.py --dry-run   # CPU, TRITON_INTERPRET=1, tiny
    python benchmarks/linear_attention_chunked.py --chunk-sizes 128 256 512   # sweep C

Shape: BASED-1.3B's linear-attention layer (``BasedConfig.from_preset("based-1.3b")``: 16
heads, feature dim 16, head dim 1792 / 16 = 112), batch ``--batch``, L in ``--lengths``
(2k..16k), ``--dtype`` bfloat16 by default. Three implementations of
``taylor_linear_attention``:

* ``chunked``: :func:`hazyzoo.kernels.linear_attention.chunked.taylor_linear_attention_chunked`
  (one row per chunk size of ``--chunk-sizes``; ``default`` is ``default_chunk_size``),
* ``parallel``: the tiled kernels (``parallel.taylor_linear_attention_triton``: the parallel
  kernels, plus the state kernel for the final state), what runs below the threshold,
* ``reference``: the PyTorch reference (128-token chunks with state passing).

1. Agreement first, at every length (batch 2, one row left-padded by 100 tokens, a random
   initial state): o, z, the final state and the gradients of q, k, v and the initial state of
   ``chunked`` (every chunk size) and ``parallel`` against the reference run in float32 on the
   same (rounded) inputs, as max |diff| / max |reference|; FAIL above 1e-4 (float32) or 2e-2
   (half inputs; 1e-3 for z).
2. Timings: ``fwd`` is a prefill (``no_grad``, ``output_final_state=True``, what generate's
   first step runs), ``fwd+bwd`` a training step (``o``, ``z`` and their backward for random
   upstream gradients, no final state). Each: ``--warmup`` calls (compile, autotune), then the
   median of ``--repeats`` calls timed with CUDA events around each call (synchronised).
   Out-of-memory (or any error) is caught per configuration and shown in the table. ``x`` is
   the parallel kernel's time over this row's (> 1: faster than the tiled kernels); ``peak``
   the peak allocated GiB of fwd+bwd.

``--dry-run`` runs every code path on the CPU under the Triton interpreter at tiny shapes
(float32: the interpreter's bfloat16 ``tl.dot`` is broken), timing with ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import time
from collections.abc import Callable


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (interpreter)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--batch", type=int, default=4, help="batch of the timings")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument(
        "--chunk-sizes",
        nargs="+",
        default=["default"],
        help="chunk sizes of the chunked form (powers of two, or 'default')",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-checks", action="store_true", help="skip the agreement checks")
    parser.add_argument(
        "--reference-max-length",
        type=int,
        default=16384,
        help="time the reference only up to this length (it is slow)",
    )
    return parser.parse_args()


ARGS = parse_args()
if ARGS.dry_run:
    # Must be set before hazyzoo.kernels (and its @triton.jit kernels) is imported.
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hazyzoo.kernels.linear_attention import chunked, parallel, reference  # noqa: E402

DEVICE = "cpu" if ARGS.dry_run else "cuda"
if ARGS.dry_run:
    HEADS, FEAT, DV = 2, 4, 8
    LENGTHS, BATCH, DTYPE = [24, 40], 1, torch.float32
    CHUNKS: list[int | None] = [8, None]
    WARMUP, REPEATS, PAD = 1, 2, 5
else:
    from hazyzoo.configuration.configuration_based import BasedConfig

    CONFIG = BasedConfig.from_preset("based-1.3b")
    HEADS, FEAT = CONFIG.num_attention_heads, CONFIG.feature_dim
    DV = CONFIG.hidden_size // CONFIG.num_attention_heads
    LENGTHS, BATCH, DTYPE = ARGS.lengths, ARGS.batch, getattr(torch, ARGS.dtype)
    CHUNKS = [None if c == "default" else int(c) for c in ARGS.chunk_sizes]
    WARMUP, REPEATS, PAD = ARGS.warmup, ARGS.repeats, 100
TOL = 1e-4 if DTYPE == torch.float32 else 2e-2
Z_TOL = 1e-4 if DTYPE == torch.float32 else 1e-3


def chunk_name(chunk: int | None) -> str:
    size = chunked.default_chunk_size(FEAT, DV) if chunk is None else chunk
    return f"chunked C={size}" + (" (default)" if chunk is None else "")


def implementations() -> dict[str, Callable]:
    """name -> fn(q, k, v, key_mask, initial_state, output_final_state)."""
    impls: dict[str, Callable] = {}
    for chunk in CHUNKS:
        size = chunked.default_chunk_size(FEAT, DV) if chunk is None else chunk

        def run_chunked(*args, _size=size):
            return chunked.taylor_linear_attention_chunked(*args, chunk_size=_size)

        impls[chunk_name(chunk)] = run_chunked
    impls["parallel (tiled)"] = parallel.taylor_linear_attention_triton
    impls["reference"] = reference.taylor_linear_attention_reference
    return impls


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=DEVICE)


def make_inputs(batch: int, length: int, seed: int = 0):
    """q, k, v (unit-scale, like the projections feed in) and upstream gradients."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q, k = (randn(gen, batch, HEADS, length, FEAT).to(DTYPE) for _ in range(2))
    v = randn(gen, batch, HEADS, length, DV).to(DTYPE)
    grad_o, grad_z = randn(gen, batch, HEADS, length, DV), randn(gen, batch, HEADS, length)
    return q, k, v, grad_o, grad_z


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------------------------
# 1. Agreement
# ---------------------------------------------------------------------------------------------


def forward_backward(fn: Callable, q, k, v, key_mask, initial, grad_o, grad_z) -> list:
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, *initial)]
    o, z, final = fn(*leaves[:3], key_mask, tuple(leaves[3:]), True)
    grads = torch.autograd.grad((o, z), leaves, (grad_o, grad_z))
    return [o.detach(), z.detach(), final[0].detach(), final[1].detach(), *grads]


CHECK_NAMES = ("o", "z", "final kv", "final k", "dq", "dk", "dv", "d kv0", "d k0")


def check(length: int) -> list[str]:
    """Error lines of every implementation against the float32 reference at ``length``."""
    batch = 2
    q, k, v, grad_o, grad_z = make_inputs(batch, length, seed=1)
    key_mask = torch.ones(batch, length, dtype=torch.bool, device=DEVICE)
    key_mask[1, : min(PAD, length - 1)] = False  # left padding of row 1
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    d_phi = 1 + FEAT + FEAT * FEAT
    initial = (randn(gen, batch, HEADS, d_phi, DV) * 0.1, randn(gen, batch, HEADS, d_phi).abs())
    want = forward_backward(
        reference.taylor_linear_attention_reference,
        q.float(), k.float(), v.float(), key_mask, initial, grad_o, grad_z,
    )  # fmt: skip
    lines = []
    for name, fn in implementations().items():
        if name == "reference":
            continue
        got = forward_backward(fn, q, k, v, key_mask, initial, grad_o, grad_z)
        errs = {n: max_rel(a, b) for n, a, b in zip(CHECK_NAMES, got, want, strict=True)}
        bad = [n for n, e in errs.items() if e > (Z_TOL if n == "z" else TOL)]
        worst = max(errs, key=errs.get)
        status = "ok" if not bad else "FAIL (" + ", ".join(bad) + ")"
        lines.append(
            f"L={length:6d} {name:26s} max err {errs[worst]:.2e} ({worst}); "
            + " ".join(f"{n}={e:.1e}" for n, e in errs.items())
            + f"  {status}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# 2. Timings
# ---------------------------------------------------------------------------------------------


def time_ms(fn: Callable[[], object]) -> float:
    """Median ms of ``fn`` over REPEATS calls after WARMUP calls, each call synchronised."""
    for _ in range(WARMUP):
        fn()
    synchronize()
    times = []
    for _ in range(REPEATS):
        if DEVICE == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return statistics.median(times)


def guarded(fn: Callable[[], float]) -> float | str:
    """``fn()`` or what went wrong (out of memory, or any error) as a short string."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        return "OOM"
    except Exception as exc:  # a compile error of one configuration must not end the run
        print(f"    error: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        return "error"
    finally:
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def time_one(fn: Callable, length: int) -> tuple[float | str, float | str, float | str]:
    """(fwd ms, fwd+bwd ms, fwd+bwd peak GiB) of ``fn`` at ``length``."""
    q, k, v, grad_o, grad_z = make_inputs(BATCH, length)

    def prefill() -> None:
        with torch.no_grad():
            fn(q, k, v, None, None, True)

    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]

    def train_step() -> None:
        o, z, _ = fn(*leaves, None, None, False)
        torch.autograd.grad((o, z), leaves, (grad_o, grad_z))

    fwd = guarded(lambda: time_ms(prefill))
    peak: list[float] = []

    def timed_train() -> float:
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ms = time_ms(train_step)
        if DEVICE == "cuda":
            peak.append(torch.cuda.max_memory_allocated() / 2**30)
        return ms

    both = guarded(timed_train)
    return fwd, both, (peak[0] if peak else "-")


def fmt(x: float | str, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def ratio(base: float | str, x: float | str) -> str:
    if isinstance(base, float) and isinstance(x, float) and x > 0:
        return f"{base / x:.2f}"
    return "-"


def main() -> None:
    import triton

    print(f"# Chunked Taylor attention, {datetime.date.today()}")
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (interpreter, dry run)"
    print(f"device {device}; torch {torch.__version__}, triton {triton.__version__}")
    print(
        f"shape B={BATCH} H={HEADS} F={FEAT} Dv={DV}, {DTYPE}; lengths {LENGTHS}; "
        f"threshold CHUNKED_MIN_LENGTH={chunked.CHUNKED_MIN_LENGTH}; "
        f"state per chunk {(1 + FEAT + FEAT**2) * (DV + 1) * 4 / 1024:.0f} KiB per (batch, head)"
    )
    failed = False
    if not ARGS.skip_checks:
        print("\n## 1. Agreement with the reference (batch 2, left padding, initial state)")
        for length in LENGTHS:
            result = guarded(lambda length=length: check(length))
            if isinstance(result, str):
                print(f"L={length:6d} check: {result}")
                failed = True
                continue
            for line in result:
                print(line, flush=True)
                failed |= "FAIL" in line
    print(f"\n## 2. Timings, median ms of {REPEATS} after {WARMUP} warm-up calls")
    print("| L | implementation | fwd (prefill) | x | fwd+bwd | x | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for length in LENGTHS:
        rows = {}
        for name, fn in implementations().items():
            if name == "reference" and length > ARGS.reference_max_length:
                rows[name] = ("not run", "not run", "-")
                continue
            rows[name] = time_one(fn, length)
        base = rows["parallel (tiled)"]
        for name, (fwd, both, peak) in rows.items():
            print(
                f"| {length} | {name} | {fmt(fwd)} | {ratio(base[0], fwd)} | {fmt(both)} | "
                f"{ratio(base[1], both)} | {fmt(peak, 2)} |",
                flush=True,
            )
    print(
        f"\nx = parallel (tiled) ms / this row's ms. At L={max(LENGTHS)} and the default chunk, "
        f"{math.ceil(max(LENGTHS) / chunked.default_chunk_size(FEAT, DV))} chunk states per "
        "(batch, head)."
    )
    if failed:
        print("\nAGREEMENT CHECK FAILED (see section 1)")
        sys.exit(1)


if __name__ == "__main__":
    main()
