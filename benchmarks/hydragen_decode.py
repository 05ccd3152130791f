"""Shared-prefix decoding: hazyzoo.hydragen.generate vs transformers' generate with the prompt
replicated per sequence, on a CodeLlama-7B-shaped Llama (random bf16 weights).

Every sequence of a batch samples 128 new tokens from one shared prompt of ``--prefixes``
tokens (``num_return_sequences=B``, ``do_sample=True``, no eos so that every sequence runs to
the end). Methods, all in this one run:

- ``hydragen``: :func:`hazyzoo.hydragen.generate`, dynamic suffix cache, eager decode.
- ``hydragen-compiled``: the same with ``cache_implementation="static"``: transformers
  compiles the decode step (``torch.compile``, CUDA graphs) as it does for its static cache.
- ``hf-sdpa``: ``model.generate`` with SDPA attention and the default (dynamic) cache: the
  prompt is prefilled and stored once per sequence.
- ``hf-static-compiled``: ``model.generate(cache_implementation="static")``: transformers'
  compiled decode.

Compiled methods are warmed up with the same shapes first; the timed call must not compile
again (dynamo's frame counter is checked and reported). Batches double from the first one;
a method stops at its first out-of-memory, so its last row is its largest batch that fits.
Timings are one full ``generate`` call each (prefill included), tokens/s = B * new / seconds.

Before timing: the Triton kernels against the PyTorch reference at real sizes, and Hydragen's
logits against replicated-prompt SDPA on the model. ``--micro`` adds an attention-only decode
step microbenchmark against SDPA over replicated keys and the memory/compute floor.

    python benchmarks/hydragen_decode.py --layers 4 --out r.json
    python benchmarks/hydragen_decode.py --dry-run   # tiny shapes on the CPU, checks the script
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

import hazyzoo
from hazyzoo.kernels.attention import attention_with_lse, merge_attention
from hazyzoo.kernels.attention.reference import (
    attention_with_lse_reference,
    merge_attention_reference,
)

PEAK_BF16_FLOPS = 790e12  # H200 dense bf16
PEAK_BYTES = 4.3e12  # H200 HBM bandwidth


def codellama_7b(layers: int, dry_run: bool) -> LlamaConfig:
    """CodeLlama-7B's shape (MHA: 32 query and key/value heads of 128) with ``layers``."""
    if dry_run:
        return LlamaConfig(
            vocab_size=101,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=4096,
            pad_token_id=0,
            eos_token_id=None,
        )
    return LlamaConfig(
        vocab_size=32016,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=16384 + 4096,
        rope_theta=1e6,
        pad_token_id=0,
        eos_token_id=None,
    )


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def frames_compiled() -> int:
    """Frames dynamo has compiled so far (grows on every (re)compilation)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def graph_breaks() -> int:
    """Graph breaks dynamo has met so far."""
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# -- correctness -------------------------------------------------------------------------------
def check_kernels(device: str, dry_run: bool) -> dict[str, float]:
    """Triton vs reference: prefix-style (groups, GQA, key padding), suffix-style (causal
    mask, T > 1) and merge, each dtype; relative L2 errors of out and max |lse| errors."""
    results: dict[str, float] = {}
    n = 64 if dry_run else 4096
    d = 16 if dry_run else 128
    shapes = {
        "prefix": dict(b=8, bk=2, hq=8, hkv=2, t=1, n=n, mask="key"),
        "suffix": dict(b=4, bk=4, hq=8, hkv=8, t=5, n=n // 8 + 5, mask="full"),
    }
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for name, s in shapes.items():
            q = torch.randn(s["b"], s["hq"], s["t"], d, generator=gen).to(device, dtype)
            k = torch.randn(s["bk"], s["hkv"], s["n"], d, generator=gen).to(device, dtype)
            v = torch.randn(s["bk"], s["hkv"], s["n"], d, generator=gen).to(device, dtype)
            if s["mask"] == "key":
                mask = (torch.rand(s["bk"], 1, s["n"], generator=gen) > 0.2).to(device)
            else:
                mask = (torch.rand(s["b"], s["t"], s["n"], generator=gen) > 0.5).to(device)
            out, lse = attention_with_lse(q, k, v, mask)
            ref, ref_lse = attention_with_lse_reference(q, k, v, mask, d**-0.5)
            key = f"{name}/{str(dtype).removeprefix('torch.')}"
            results[f"{key}/out_rel"] = rel(out, ref)
            results[f"{key}/lse_abs"] = (lse - ref_lse).abs().max().item()
        outs = torch.randn(3, 4, 8, 2, d, generator=gen).to(device)
        lses = (torch.randn(3, 4, 8, 2, generator=gen) * 4).to(device)
        m, _ = merge_attention(outs, lses, dtype)
        r, _ = merge_attention_reference(outs, lses, dtype)
        results[f"merge/{str(dtype).removeprefix('torch.')}/out_rel"] = rel(m, r)
    return results


def check_model(model, vocab: int, device: str, prefix: int, batch: int) -> dict[str, float]:
    """Hydragen decoding vs replicated-prompt SDPA on the model: 4 ragged suffixes x batch/4
    sequences, greedy, a few steps. Relative L2 of the first step's logits between the two,
    and of each against an fp32 copy of the model (SDPA, replicated): at bf16 the two should
    be equally far from fp32; plus the fraction of identical greedy sequences."""
    gen = torch.Generator().manual_seed(3)
    shared = torch.randint(3, vocab, (prefix,), generator=gen).tolist()
    suffixes = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in (3, 1, 5, 2)]
    suffixes = [s for s in suffixes for _ in range(batch // 4)]
    kwargs = dict(
        max_new_tokens=8,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        pad_token_id=0,
    )
    prompts = [shared + s for s in suffixes]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.no_grad():
        out = hazyzoo.hydragen.generate(model, shared, suffix_ids=suffixes, **kwargs)
        ref = model.generate(ids, attention_mask=mask, **kwargs)
        exact = copy.deepcopy(model).float()
        truth = exact.generate(ids, attention_mask=mask, **kwargs).logits[0].float()
        del exact
    free()
    return {
        "first_step_logits_rel_hydragen_vs_sdpa": rel(out.logits[0], ref.logits[0]),
        "hydragen_vs_fp32": rel(out.logits[0], truth),
        "sdpa_vs_fp32": rel(ref.logits[0], truth),
        "greedy_identical_fraction": (out.sequences == ref.sequences).all(1).float().mean().item(),
    }


# -- end to end --------------------------------------------------------------------------------
def run_generate(method: str, model, prompt: torch.Tensor, batch: int, new: int) -> Any:
    kwargs = dict(
        do_sample=True,
        max_new_tokens=new,
        min_new_tokens=new,
        eos_token_id=None,
        pad_token_id=0,
        top_k=50,
    )
    if method.startswith("hydragen"):
        if method == "hydragen-compiled":
            kwargs["cache_implementation"] = "static"
        return hazyzoo.hydragen.generate(model, prompt, num_return_sequences=batch, **kwargs)
    if method == "hf-static-compiled":
        kwargs["cache_implementation"] = "static"
    return model.generate(prompt[None], num_return_sequences=batch, **kwargs)


_WARMED: set[str] = set()


def time_method(method: str, model, prompt: torch.Tensor, batch: int, new: int) -> dict:
    """One timed generate, after a same-shape warm-up for the compiled methods (the timed
    call must not compile) and one small warm-up per eager method (Triton's and cuBLAS's
    first-call costs)."""
    compiled = method.endswith("compiled")
    breaks = graph_breaks()
    if compiled:
        run_generate(method, model, prompt, batch, new)
        sync()
    elif method not in _WARMED:
        run_generate(method, model, prompt[:256], 8, new)
        sync()
    _WARMED.add(method)
    frames = frames_compiled()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = run_generate(method, model, prompt, batch, new)
    sync()
    seconds = time.perf_counter() - t0
    assert out.shape == (batch, prompt.shape[0] + new), out.shape
    del out
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return {
        "method": method,
        "prefix": int(prompt.shape[0]),
        "batch": batch,
        "seconds": seconds,
        "tokens_per_s": batch * new / seconds,
        "peak_gib": peak,
        "recompiled_in_timed_call": frames_compiled() - frames if compiled else None,
        "graph_breaks": graph_breaks() - breaks if compiled else None,
    }


def end_to_end(
    model,
    vocab: int,
    prefixes: list[int],
    batches: list[int],
    methods: list[str],
    new: int,
    compiled_batches: list[int],
    largest: dict[tuple[str, int], int],
) -> list[dict]:
    """Every method at every prefix over the doubling batches (stopping at the first OOM).
    A compiled method runs at ``compiled_batches`` and at the largest batch its eager twin
    fit (in this run, or as given by ``largest``)."""
    rows: list[dict] = []
    gen = torch.Generator().manual_seed(5)
    twin = {"hydragen-compiled": "hydragen", "hf-static-compiled": "hf-sdpa"}
    for prefix in prefixes:
        prompt = torch.randint(3, vocab, (prefix,), generator=gen).to(model.device)
        for method in methods:
            todo = batches
            if method in twin:
                fits = [
                    r["batch"]
                    for r in rows
                    if r["prefix"] == prefix and r["method"] == twin[method] and "tokens_per_s" in r
                ]
                top = largest.get((twin[method], prefix), max(fits, default=max(batches)))
                todo = sorted({b for b in compiled_batches if b <= top} | {top})
            for batch in todo:
                try:
                    row = time_method(method, model, prompt, batch, new)
                except torch.OutOfMemoryError:
                    row = {"method": method, "prefix": prefix, "batch": batch, "oom": True}
                except Exception as exc:  # recorded; the grid goes on
                    row = {
                        "method": method,
                        "prefix": prefix,
                        "batch": batch,
                        "error": repr(exc)[:2000],
                    }
                free()
                rows.append(row)
                print(json.dumps(row), flush=True)
                if "tokens_per_s" not in row:
                    break
    return rows


# -- attention only ----------------------------------------------------------------------------
def bench(fn: Callable[[], Any], repeats: int = 20) -> float:
    """Median milliseconds of ``fn()`` with CUDA events (after two warm-ups)."""
    fn()
    fn()
    sync()
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def micro(device: str, prefixes: list[int], batches: list[int], dry_run: bool) -> list[dict]:
    """One decode step's attention for one layer (CodeLlama-7B: 32 heads of 128), suffix of
    128 tokens: Hydragen (prefix once + suffix + merge), eagerly and replayed from a CUDA
    graph (GPU time alone), vs SDPA over the replicated keys (skipped where those would not
    fit in 60 GiB), with each one's floor."""
    heads, d, suffix = (4, 16, 8) if dry_run else (32, 128, 128)
    dtype = torch.float32 if dry_run else torch.bfloat16
    rows = []
    for prefix in prefixes:
        kp = torch.randn(1, heads, prefix, d, device=device, dtype=dtype)
        vp = torch.randn_like(kp)
        for batch in batches:
            q = torch.randn(batch, heads, 1, d, device=device, dtype=dtype)
            ks = torch.randn(batch, heads, suffix, d, device=device, dtype=dtype)
            vs = torch.randn_like(ks)

            def hydragen(q=q, kp=kp, vp=vp, ks=ks, vs=vs) -> torch.Tensor:
                o1, l1 = attention_with_lse(q, kp, vp)
                o2, l2 = attention_with_lse(q, ks, vs)
                return merge_attention(torch.stack([o1, o2]), torch.stack([l1, l2]), dtype)[0]

            if torch.cuda.is_available():  # the same step replayed from a CUDA graph
                hydragen()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    hydragen()
                graph_ms = bench(graph.replay)
            else:
                graph_ms = float("nan")
            item = kp.element_size()
            h_bytes = (
                2 * (prefix + batch * suffix) * heads * d * item + 2 * batch * heads * d * item
            )
            h_flops = 4 * batch * heads * (prefix + suffix) * d
            row = {
                "prefix": prefix,
                "batch": batch,
                "hydragen_ms": bench(hydragen),
                "hydragen_graph_ms": graph_ms,
                "hydragen_floor_ms": 1e3 * max(h_bytes / PEAK_BYTES, h_flops / PEAK_BF16_FLOPS),
            }
            rep_bytes = 2 * batch * (prefix + suffix) * heads * d * item
            row["sdpa_floor_ms"] = 1e3 * rep_bytes / PEAK_BYTES
            if rep_bytes < 60 * 2**30:
                k = torch.cat([kp.expand(batch, -1, -1, -1), ks], dim=2)
                v = torch.cat([vp.expand(batch, -1, -1, -1), vs], dim=2)
                ref = F.scaled_dot_product_attention(q, k, v)
                row["max_abs_err_vs_sdpa"] = (hydragen().float() - ref.float()).abs().max().item()
                row["sdpa_ms"] = bench(
                    lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v)
                )
                del k, v
            rows.append(row)
            print(json.dumps(row), flush=True)
            free()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prefixes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["hydragen", "hf-sdpa", "hydragen-compiled", "hf-static-compiled"],
    )
    parser.add_argument(
        "--compiled-batches",
        type=int,
        nargs="*",
        default=[32],
        help="batches for the compiled methods (plus the largest their eager twin fit)",
    )
    parser.add_argument(
        "--largest",
        nargs="*",
        default=[],
        metavar="METHOD:PREFIX:BATCH",
        help="largest batch an eager method fit at a prefix (from an earlier run), so that "
        "its compiled twin runs there without rerunning it",
    )
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--checks-only", action="store_true", help="correctness checks, no timing")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if args.dry_run:
        args.prefixes, args.batches, args.new = [16, 48], [2, 4], 4
    config = codellama_7b(args.layers, args.dry_run)
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = None
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hazyzoo": hazyzoo.__version__,
        "model": f"CodeLlama-7B shape, {config.num_hidden_layers} layers, random {dtype}",
        "new_tokens": args.new,
    }
    if not args.skip_checks:
        report["kernel_checks"] = check_kernels(device, args.dry_run)
        print(json.dumps(report["kernel_checks"]), flush=True)
        report["model_check"] = check_model(
            model, config.vocab_size, device, prefix=64 if args.dry_run else 1000, batch=8
        )
        print(json.dumps(report["model_check"]), flush=True)
    if args.checks_only:
        args.methods, args.micro = [], False
    if args.micro:
        report["micro"] = micro(device, args.prefixes, args.batches, args.dry_run)
    report["generate"] = end_to_end(
        model,
        config.vocab_size,
        args.prefixes,
        args.batches,
        args.methods,
        args.new,
        args.compiled_batches,
        {(m, int(p)): int(b) for m, p, b in (x.split(":") for x in args.largest)},
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
