# Closures over loop variables are timed inside the same iteration that defines them.
# ruff: noqa: B023
"""MAD primitives on the GPU: training throughput of each primitive, and Mamba's Triton scan.

1. **Selective scan check and timing.** Triton forward/backward against the PyTorch reference
   on random inputs (relative error of ``y``, the last state and every gradient), then the
   scan's forward and forward+backward time next to its memory floor (bytes read and written
   once over 4.3 TB/s) and the reference's time.
2. **Primitive throughput.** One pre-norm block ``x + layer(norm(x))`` of each primitive at
   width 128 (MAD's defaults, ``MadConfig.layer_config``), lengths 1k-8k, 32k tokens a step
   (batch = 32768 / length), bfloat16 autocast over float32 weights as MAD trains: forward,
   backward and an AdamW step, timed with CUDA events (median of ``--repeats``). Reported as
   tokens/s with the matmul floor (6 x parameters x tokens over 790 TFLOP/s) beside it.

    python benchmarks/mad_primitives.py --out mad_primitives.json
    python benchmarks/mad_primitives.py --dry-run   # tiny shapes on the CPU
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
import transformers

from hazyzoo import MadConfig
from hazyzoo.kernels import selective_scan as scan_ops
from hazyzoo.modeling.layers.decoder import DecoderLayer

PEAK_BYTES = 4.3e12
PEAK_BF16_FLOPS = 790e12
PRIMITIVES = [
    "attention",
    "mh-attention",
    "sliding-attention",
    "mh-sliding-attention",
    "linear-attention",
    "mh-linear-attention",
    "gated-linear-attention",
    "mh-gated-linear-attention",
    "hyena",
    "hyena-rtf",
    "mh-hyena",
    "hyena-experts",
    "mamba",
    "rtf",
    "base_conv",
    "linear_attention",
    "swiglu",
    "mlp",
    "moe-mlp",
]


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of ``fn()`` after two warm-ups."""
    fn()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
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


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


def scan_section(device: str, repeats: int, dry: bool) -> dict[str, Any]:
    """Triton scan vs reference: errors, then times for a few shapes."""
    out: dict[str, Any] = {}
    g = torch.Generator(device=device).manual_seed(0)
    batch, channels, length, n = (2, 8, 40, 4) if dry else (4, 256, 2048, 16)

    def inputs(b, d, L, N, dtype=torch.float32):
        u = torch.randn(b, d, L, device=device, generator=g, dtype=dtype)
        delta = 0.5 * torch.randn(b, d, L, device=device, generator=g, dtype=dtype)
        A = -torch.rand(d, N, device=device, generator=g) - 0.1
        B = torch.randn(b, N, L, device=device, generator=g, dtype=dtype)
        C = torch.randn(b, N, L, device=device, generator=g, dtype=dtype)
        D = torch.randn(d, device=device, generator=g)
        z = torch.randn(b, d, L, device=device, generator=g, dtype=dtype)
        bias = 0.1 * torch.randn(d, device=device, generator=g)
        return [u, delta, A, B, C, D, z, bias]

    args = [t.requires_grad_() for t in inputs(batch, channels, length, n)]
    kw = dict(delta_softplus=True, return_last_state=True)
    y_ref, s_ref = scan_ops.selective_scan_reference(*args[:7], delta_bias=args[7], **kw)
    grads_ref = torch.autograd.grad((y_ref.square().sum() + s_ref.sum()), args)
    y, s = scan_ops.selective_scan(*args[:7], delta_bias=args[7], **kw)
    grads = torch.autograd.grad((y.square().sum() + s.sum()), args)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    out["check"] = {
        "shape": [batch, channels, length, n],
        "y": rel(y, y_ref),
        "last_state": rel(s, s_ref),
        **{f"d{nm}": rel(a, b) for nm, a, b in zip(names, grads, grads_ref)},
    }
    print("scan check (max error / max |reference|):", json.dumps(out["check"]))
    shapes = [(2, 8, 64, 4)] if dry else [(16, 256, 1024, 4), (8, 256, 4096, 4), (4, 256, 8192, 16)]
    rows = []
    for b, d, L, N in shapes:
        t = [
            x.requires_grad_()
            for x in inputs(b, d, L, N, torch.bfloat16 if not dry else torch.float32)
        ]

        def fwd(fn=scan_ops.selective_scan):
            with torch.no_grad():
                fn(*t[:7], delta_bias=t[7], delta_softplus=True)

        def fwd_bwd(fn=scan_ops.selective_scan):
            y = fn(*t[:7], delta_bias=t[7], delta_softplus=True)
            y.float().sum().backward()

        elem = t[0].element_size()
        # read u, delta, z, B, C; write y (floor of the forward)
        floor_bytes = (4 * b * d * L) * elem + 2 * b * N * L * elem
        row = {
            "shape": [b, d, L, N],
            "dtype": str(t[0].dtype),
            "triton_fwd_ms": 1e3 * timed(fwd, device, repeats),
            "triton_fwd_bwd_ms": 1e3 * timed(fwd_bwd, device, repeats),
            "floor_fwd_ms": 1e3 * floor_bytes / PEAK_BYTES,
        }
        if L <= 4096:
            row["reference_fwd_ms"] = 1e3 * timed(
                lambda: fwd(scan_ops.selective_scan_reference), device, max(3, repeats // 4)
            )
        rows.append(row)
        print(json.dumps(row))
    out["timing"] = rows
    return out


def block_section(device: str, repeats: int, dry: bool, names: list[str]) -> list[dict[str, Any]]:
    """Forward + backward + AdamW of one pre-norm block per primitive."""
    rows = []
    lengths = [64] if dry else [1024, 2048, 4096, 8192]
    tokens = 256 if dry else 32768
    width = 32 if dry else 128
    for name in names:
        for L in lengths:
            batch = max(1, tokens // L)
            row: dict[str, Any] = {"primitive": name, "length": L, "batch": batch}
            try:
                config = MadConfig(
                    layers=[name] if name not in ("swiglu", "mlp", "moe-mlp") else ["hyena", name],
                    hidden_size=width,
                    max_position_embeddings=L,
                    vocab_size=16,
                )
                idx = 0 if name not in ("swiglu", "mlp", "moe-mlp") else 1
                block = DecoderLayer.from_config(config, idx).to(device)
                opt = torch.optim.AdamW(block.parameters(), lr=1e-4)
                x = torch.randn(batch, L, width, device=device)
                params = sum(p.numel() for p in block.parameters())

                def step():
                    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                        h = block(x)[0]
                    h.float().square().mean().backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)

                seconds = timed(step, device, repeats)
                row.update(
                    ms=1e3 * seconds,
                    tokens_per_s=batch * L / seconds,
                    params=params,
                    matmul_floor_ms=1e3 * 6 * params * batch * L / PEAK_BF16_FLOPS,
                    peak_gb=(torch.cuda.max_memory_allocated() / 1e9) if device == "cuda" else None,
                )
            except Exception as err:  # recorded, not hidden: e.g. out of memory
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--primitives", default=",".join(PRIMITIVES))
    parser.add_argument("--skip-scan", action="store_true")
    args = parser.parse_args()
    device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    env = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(env))
    result: dict[str, Any] = {"env": env}
    if not args.skip_scan:
        result["scan"] = scan_section(device, args.repeats, args.dry_run)
    result["blocks"] = block_section(
        device, args.repeats, args.dry_run, [p for p in args.primitives.split(",") if p]
    )
    print("\nprimitive                    " + "".join(f"{L:>12}" for L in (1024, 2048, 4096, 8192)))
    by_name: dict[str, dict[int, Any]] = {}
    for r in result["blocks"]:
        by_name.setdefault(r["primitive"], {})[r["length"]] = r
    for name, cols in by_name.items():
        cells = []
        for r in cols.values():
            cells.append("error" if "error" in r else f"{r['tokens_per_s'] / 1e6:.2f}M")
        print(f"{name:<28} " + "".join(f"{c:>12}" for c in cells))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
