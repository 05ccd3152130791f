# Closures over loop variables are timed inside the same iteration that defines them.
# ruff: noqa: B023
"""VQ nearest-code search on the GPU: the fused Triton kernel vs ``torch.cdist(x, c).argmin``
and vs the chunked PyTorch reference.

For each case (N rows, K codes, width d, input dtype, distance) the script first checks the
Triton result against the reference (index agreement rate; max distance error relative to
the largest ``||x||^2`` -- cosine: absolute), then times each method: median of ``--repeats``
runs after two warm-ups, CUDA events around the whole call, with the peak memory of one call
(``torch.cuda.max_memory_allocated`` above the inputs, reset between methods). The floor of
each case is ``max(bytes of x and codebook read once / 4.3 TB/s, 2*N*K*d FLOPs / peak)``
with peak 790 TFLOP/s (bf16 / fp16 tensor cores) or 132 TFLOP/s for float32 inputs (the
kernel's default float32 dot is tf32x3: three TF32 tensor-core products, each at about half the
bf16 rate, for near-float32 accuracy). ``torch.cdist`` gets float32 copies for half inputs (it has no
bfloat16 CUDA kernel at every size); its conversion is not timed.

    python benchmarks/vq_nearest_code.py --out vq.json
    python benchmarks/vq_nearest_code.py --sweep --out vq.json   # also time SWEEP_CONFIGS
    python benchmarks/vq_nearest_code.py --dry-run   # tiny shapes on the CPU, checks the script

``--sweep`` also times the Triton kernel under each launch configuration of
:data:`SWEEP_CONFIGS` (block sizes, warps, stages; float32 also with ``tf32x3`` dot
precision) and reports its agreement with the reference, so the defaults in
``triton_nearest.default_config`` can be chosen from measurements.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from hazyzoo.kernels.nearest_code.reference import nearest_code_reference

try:
    from hazyzoo.kernels.nearest_code.triton_nearest import nearest_code_triton
except ImportError:  # no triton (CPU dry runs still work)
    nearest_code_triton = None

PEAK_BYTES = 4.3e12  # H200 HBM bandwidth
# float32: tf32x3 = three TF32 products at ~395 TFLOP/s each (see the module docstring).
PEAK_FLOPS = {torch.bfloat16: 790e12, torch.float16: 790e12, torch.float32: 395e12 / 3}


# Launch configurations tried by --sweep, per input kind (merged over default_config).
SWEEP_CONFIGS: dict[str, list[dict[str, Any]]] = {
    "half": [
        {"BLOCK_M": 128, "BLOCK_K": 128, "num_warps": 8, "num_stages": 3},
        {"BLOCK_M": 64, "BLOCK_K": 128, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 128, "BLOCK_K": 64, "num_warps": 4, "num_stages": 4},
        {"BLOCK_M": 256, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3},
        {"BLOCK_M": 128, "BLOCK_K": 128, "num_warps": 8, "num_stages": 2},
        {"BLOCK_M": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 128, "BLOCK_K": 64, "BLOCK_D": 64, "num_warps": 8, "num_stages": 3},
    ],
    "float32": [
        {"BLOCK_M": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 2},
        {"BLOCK_M": 64, "BLOCK_K": 128, "num_warps": 8, "num_stages": 2},
        {"BLOCK_M": 32, "BLOCK_K": 64, "num_warps": 4, "num_stages": 2},
        {"BLOCK_M": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 64, "BLOCK_K": 64, "BLOCK_D": 32, "num_warps": 4, "num_stages": 3},
        {"BLOCK_M": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 2, "PRECISION": "tf32x3"},
        {"BLOCK_M": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3, "PRECISION": "tf32x3"},
        {"BLOCK_M": 128, "BLOCK_K": 128, "num_warps": 8, "num_stages": 3, "PRECISION": "tf32x3"},
    ],
}


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of ``fn()`` after two warm-ups (CUDA events on the GPU)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(fn: Callable[[], Any], device: str) -> int | None:
    """Bytes allocated at the peak of one ``fn()`` above what was allocated before."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def floor_seconds(n: int, k: int, d: int, dtype: torch.dtype) -> tuple[float, float]:
    """(memory floor, compute floor) in seconds."""
    size = torch.empty((), dtype=dtype).element_size()
    return (n + k) * d * size / PEAK_BYTES, 2.0 * n * k * d / PEAK_FLOPS[dtype]


def check(
    x: torch.Tensor, c: torch.Tensor, distance: str, config: dict[str, Any] | None = None
) -> dict[str, float]:
    """Triton vs the reference: index agreement and distance error (relative to the largest
    ``||x||^2``; cosine: absolute)."""
    ref_idx, ref_dist = nearest_code_reference(x, c, distance)
    idx, dist = nearest_code_triton(x, c, distance, config=config)
    scale = 1.0 if distance == "cosine" else x.float().pow(2).sum(1).max().item()
    return {
        "index_agreement": (idx == ref_idx).double().mean().item(),
        "dist_err": (dist - ref_dist).abs().max().item() / max(scale, 1e-12),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--cosine", action="store_true", help="also the cosine distance")
    parser.add_argument("--sweep", action="store_true", help="also time SWEEP_CONFIGS")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        n, ks, ds, repeats = 64, [48], [20], 2
    else:
        n, ks, ds, repeats = args.n, [1024, 16384], [32, 256], args.repeats
    distances = ["euclidean", "cosine"] if args.cosine or args.dry_run else ["euclidean"]
    # CPU dry runs only run Triton under TRITON_INTERPRET=1.
    run_triton = nearest_code_triton is not None and (device == "cuda" or _interpreting())
    # bf16 tl.dot is broken in the interpreter (triton-lang/triton#11584): fp16 on CPU.
    half = torch.float16 if args.dry_run else torch.bfloat16
    rows: list[dict[str, Any]] = []
    header = (
        f"{'dist':>9} {'dtype':>8} {'N':>6} {'K':>6} {'d':>4} {'method':>10} {'ms':>9} "
        f"{'x floor':>8} {'peak MiB':>9} {'agree':>7} {'dist err':>9}"
    )
    print(header)
    gen = torch.Generator(device=device).manual_seed(0)
    for distance in distances:
        for dtype in (torch.float32, half):
            for k in ks:
                for d in ds:
                    x = torch.randn(n, d, generator=gen, device=device).to(dtype)
                    c = torch.randn(k, d, generator=gen, device=device).to(dtype)
                    mem_floor, flop_floor = floor_seconds(n, k, d, dtype)
                    floor = max(mem_floor, flop_floor)
                    xf, cf = x.float(), c.float()
                    methods: dict[str, Callable[[], Any]] = {
                        "reference": lambda: nearest_code_reference(x, c, distance),
                    }
                    if distance == "euclidean":
                        methods["cdist"] = lambda: torch.cdist(xf, cf).argmin(-1)
                    stats: dict[str, dict[str, float]] = {}
                    configs: dict[str, dict[str, Any] | None] = {}
                    if run_triton:
                        configs["triton"] = None
                        if args.sweep:
                            kind = "float32" if dtype == torch.float32 else "half"
                            for i, cfg in enumerate(SWEEP_CONFIGS[kind]):
                                configs[f"sweep{i}"] = cfg
                        triton_methods = {
                            name: (lambda cfg=cfg: nearest_code_triton(x, c, distance, config=cfg))
                            for name, cfg in configs.items()
                        }
                        methods = {**triton_methods, **methods}
                        for name, cfg in list(configs.items()):
                            try:
                                stats[name] = check(x, c, distance, cfg)
                            except Exception as err:  # a sweep config the GPU cannot launch
                                if cfg is None:
                                    raise
                                print(f"{name}: skipped ({type(err).__name__})", flush=True)
                                del configs[name], methods[name]
                    for method, fn in methods.items():
                        try:
                            peak = peak_memory(fn, device)
                            seconds = timed(fn, device, repeats)
                        except torch.OutOfMemoryError:
                            seconds, peak = float("nan"), None
                            torch.cuda.empty_cache()
                        row = {
                            "distance": distance,
                            "dtype": str(dtype).removeprefix("torch."),
                            "N": n,
                            "K": k,
                            "d": d,
                            "method": method,
                            "seconds": seconds,
                            "mem_floor_s": mem_floor,
                            "flop_floor_s": flop_floor,
                            "x_floor": seconds / floor,
                            "peak_bytes": peak,
                            "config": configs.get(method),
                            **stats.get(method, {}),
                        }
                        rows.append(row)
                        mib = "-" if peak is None else f"{peak / 2**20:.1f}"
                        st = stats.get(method)
                        agree = f"{st['index_agreement']:.5f}" if st else "-"
                        err = f"{st['dist_err']:.2e}" if st else "-"
                        print(
                            f"{distance:>9} {row['dtype']:>8} {n:>6} {k:>6} {d:>4} {method:>10} "
                            f"{seconds * 1e3:>9.3f} {row['x_floor']:>8.1f} {mib:>9} {agree:>7} "
                            f"{err:>9}",
                            flush=True,
                        )
    if args.sweep:
        for kind, cfgs in SWEEP_CONFIGS.items():
            for i, cfg in enumerate(cfgs):
                print(f"sweep{i} ({kind}): {cfg}")
    if args.out:
        meta = {
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
            "torch": torch.__version__,
            "repeats": repeats,
        }
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


def _interpreting() -> bool:
    from hazyzoo.kernels.dispatch import triton_interpreting

    return triton_interpreting()


if __name__ == "__main__":
    main()
