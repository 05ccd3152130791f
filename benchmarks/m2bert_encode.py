# Closures over loop variables are timed inside the same iteration that defines them.
"""M2-BERT encoding on the GPU: throughput and peak memory of the 80M 32k-token retrieval
shape (``m2-bert-80M-32k-retrieval``, random weights, loaded in bfloat16 through
``from_pretrained`` as a user would: the Hyena filters stay float32) against a BERT-base-shaped
transformers encoder with SDPA attention (768 wide, 12 layers, 12 heads, 3072 MLP, positions
extended to 32k, random weights, bfloat16), at 2k, 8k and 32k tokens per sequence.

For each length: batch 1 (equal batch) and each model's largest batch that fits (doubling
until an out-of-memory error, up to ``--max-batch``); eager, and with ``--compile`` also under
``torch.compile`` (warmed up at the timed shape). Timing: CUDA events around whole forwards
under ``torch.inference_mode``, median of ``--repeats`` after two warm-ups. Before timing, on
the GPU: the bfloat16 model against a float32 copy (cosine of the embeddings), and the
dispatch's Triton block-diagonal kernel against the PyTorch reference path
(``HAZYZOO_KERNELS=torch``) on the same model.

Physical floors printed with each row: the matmul + FFT FLOPs over 790 TFLOP/s, and for M2 the
bytes its float32 FFT convolutions must move at least (input read, spectrum written and read,
the 2L-point inverse written and the first L read back) over 4.3 TB/s.

    python benchmarks/m2bert_encode.py --out m2bert_encode.json [--compile]
    python benchmarks/m2bert_encode.py --dry-run   # tiny shapes on the CPU, checks the script
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import transformers
from transformers import BertConfig, BertModel

import hazyzoo
from hazyzoo import M2BertConfig, M2BertForTextEncoding

PEAK_FLOPS = 790e12  # H200 dense bf16
PEAK_BYTES = 4.3e12  # H200 HBM


def emit(rows: list, row: dict) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn()`` (CUDA events on the GPU) after two warm-ups."""
    fn()
    fn()
    if not torch.cuda.is_available():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def m2_flops(config: M2BertConfig, tokens: int, length: int) -> float:
    """Matmul FLOPs (block-diagonal MLP at its real size) + FFT FLOPs of one forward."""
    d, inter, nb = config.hidden_size, config.intermediate_size, config.monarch_mlp_nblocks
    per_token = 2 * (d * 3 * d + d * d + d * 2 * inter / nb + inter * d / nb) + 2 * d * d / length
    n = 2 * length  # FFT size; a real FFT of n points ~ 2.5 n log2 n FLOPs
    convs = 2 * (2 if config.residual_long_conv else 1)  # forward and inverse, per conv
    fft = convs * 2.5 * n * math.log2(n) * d / length  # per token
    return config.num_hidden_layers * tokens * (per_token + fft)


def m2_fft_bytes(config: M2BertConfig, tokens: int) -> float:
    """Least bytes the float32 FFT convolutions move per forward (see the module docstring)."""
    convs = 2 if config.residual_long_conv else 1
    per_channel_token = 4 + 2 * 8 + 8 + 4  # u read, spectrum w+r, 2L inverse written, L read
    return config.num_hidden_layers * convs * config.hidden_size * tokens * per_channel_token


def bert_flops(config: BertConfig, tokens: int, length: int) -> float:
    d, inter = config.hidden_size, config.intermediate_size
    per_token = 2 * (4 * d * d + 2 * d * inter) + 4 * length * d  # projections, MLP, QK^T + PV
    return config.num_hidden_layers * tokens * per_token


def build_m2(device: str, dtype: torch.dtype, dry: bool) -> M2BertForTextEncoding:
    config = M2BertConfig.tiny() if dry else M2BertConfig.from_preset("m2-bert-80M-32k-retrieval")
    torch.manual_seed(0)
    model = M2BertForTextEncoding(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        loaded = M2BertForTextEncoding.from_pretrained(tmp, dtype=dtype)
    return loaded.to(device).eval()


def build_bert(device: str, dtype: torch.dtype, dry: bool, max_len: int) -> BertModel:
    size = (
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        if dry
        else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    )
    config = BertConfig(
        vocab_size=30528, max_position_embeddings=max_len, attn_implementation="sdpa", **size
    )
    torch.manual_seed(0)
    return BertModel(config).to(device=device, dtype=dtype).eval()


def inputs(vocab: int, batch: int, length: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 100003 + length)
    ids = torch.randint(1, vocab, (batch, length), generator=g).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def run_once(model: Any, feed: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        out = model(**feed)
    return out.sentence_embedding if hasattr(out, "sentence_embedding") else out.pooler_output


def fits(model: Any, vocab: int, batch: int, length: int, device: str) -> bool:
    try:
        run_once(model, inputs(vocab, batch, length, device))
        if device == "cuda":
            torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()


def largest_batch(model: Any, vocab: int, length: int, device: str, cap: int) -> int:
    batch = 1
    while batch * 2 <= cap and fits(model, vocab, batch * 2, length, device):
        batch *= 2
    return batch


@contextlib.contextmanager
def kernel_mode(mode: str):
    old = os.environ.get("HAZYZOO_KERNELS")
    os.environ["HAZYZOO_KERNELS"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HAZYZOO_KERNELS")
        else:
            os.environ["HAZYZOO_KERNELS"] = old


def checks(rows: list, device: str, dry: bool) -> None:
    """bf16 vs fp32 embeddings; the dispatched (Triton) path vs the PyTorch reference."""
    fp32 = build_m2(device, torch.float32, dry)
    bf16 = build_m2(device, torch.bfloat16, dry)
    length = 64 if dry else 2048
    feed = inputs(fp32.config.vocab_size, 4, length, device)
    want = run_once(fp32, feed).float()
    got = run_once(bf16, feed).float()
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=-1).min().item()
    with kernel_mode("torch"):
        reference = run_once(bf16, feed).float()
    bert32 = build_bert(device, torch.float32, dry, length)
    bert16 = build_bert(device, torch.bfloat16, dry, length)
    bert_cosine = torch.nn.functional.cosine_similarity(
        run_once(bert16, feed).float(), run_once(bert32, feed), dim=-1
    )
    emit(
        rows,
        {
            "check": "m2 bf16 vs fp32, dispatch vs torch reference",
            "length": length,
            "min_cosine_bf16_vs_fp32": cosine,
            "bert_min_cosine_bf16_vs_fp32": bert_cosine.min().item(),
            "max_abs_dispatch_vs_reference": (got - reference).abs().max().item(),
            "max_abs_embedding": want.abs().max().item(),
        },
    )


def measure(
    rows: list,
    name: str,
    model: Any,
    length: int,
    batch: int,
    label: str,
    device: str,
    repeats: int,
    flops: float,
    floor_bytes: float | None,
) -> None:
    vocab = model.config.vocab_size
    feed = inputs(vocab, batch, length, device)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    seconds = timed(lambda: run_once(model, feed), repeats)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if device == "cuda" else float("nan")
    floor = flops / PEAK_FLOPS
    if floor_bytes is not None:
        floor = max(floor, floor_bytes / PEAK_BYTES)
    emit(
        rows,
        {
            "model": name,
            "length": length,
            "batch": batch,
            "batch_kind": label,
            "ms": round(seconds * 1e3, 3),
            "tokens_per_s": round(batch * length / seconds),
            "sequences_per_s": round(batch / seconds, 2),
            "peak_activation_gib": round(peak, 3),
            "tflops": round(flops / seconds / 1e12, 1),
            "floor_ms": round(floor * 1e3, 3),
            "x_floor": round(seconds / floor, 1),
        },
    )


def profile(model: Any, length: int, batch: int, device: str) -> None:
    """The CUDA kernels of one forward, by total time (and how many launches)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    feed = inputs(model.config.vocab_size, batch, length, device)
    run_once(model, feed)
    run_once(model, feed)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        run_once(model, feed)
        if device == "cuda":
            torch.cuda.synchronize()
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile'd models, at each one's largest eager batch",
    )
    parser.add_argument("--compile-only", action="store_true", help="only the compiled models")
    parser.add_argument(
        "--largest",
        type=lambda text: [
            ((n, int(length)), int(b))
            for n, length, b in (item.split(":") for item in text.split(","))
        ],
        default=None,
        help="with --compile-only: model:length:batch,... (the eager run's largest batches)",
    )
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--models", default="m2bert,bert_sdpa", help="comma-separated")
    parser.add_argument(
        "--batches", type=int, nargs="*", default=None, help="time these batch sizes instead"
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs=2,
        default=None,
        metavar=("LENGTH", "BATCH"),
        help="print the top CUDA kernels of one M2 forward at this shape and exit",
    )
    args = parser.parse_args()
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    lengths = args.lengths or ([16, 64] if dry else [2048, 8192, 32768])
    rows: list = []
    emit(
        rows,
        {
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "hazyzoo": hazyzoo.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
    )
    if not args.skip_checks:
        checks(rows, device, dry)
    m2 = build_m2(device, torch.bfloat16, dry)
    if args.profile:
        profile(m2, *args.profile, device)
        return
    bert = build_bert(device, torch.bfloat16, dry, max(lengths))
    emit(
        rows,
        {
            "params_m2": sum(p.numel() for p in m2.parameters()),
            "params_bert": sum(p.numel() for p in bert.parameters()),
        },
    )
    variants = [] if args.compile_only else [("eager", m2, bert)]
    if args.compile or args.compile_only:
        variants.append(("compiled", torch.compile(m2), torch.compile(bert)))
    largest: dict[tuple[str, int], int] = dict(args.largest or {})
    for length in lengths:
        for mode, m2_model, bert_model in variants:
            for name, model, cfg in (
                ("m2bert", m2_model, m2.config),
                ("bert_sdpa", bert_model, bert.config),
            ):
                if name not in args.models.split(","):
                    continue
                vocab = cfg.vocab_size
                if mode == "eager" and not args.batches:
                    best = largest_batch(model, vocab, length, device, args.max_batch)
                    largest[(name, length)] = best
                    plan = {(1, "equal"), (best, "largest")}
                else:  # compiled: one shape per length (each new shape recompiles)
                    plan = {(largest.get((name, length), 1), "largest (eager's)")}
                if args.batches:
                    plan = {(b, "given") for b in args.batches}
                for batch, label in sorted(plan):
                    tokens = batch * length
                    if name == "m2bert":
                        flops, floor_bytes = (
                            m2_flops(cfg, tokens, length),
                            m2_fft_bytes(cfg, tokens),
                        )
                    else:
                        flops, floor_bytes = bert_flops(cfg, tokens, length), None
                    measure(
                        rows,
                        f"{name} ({mode})",
                        model,
                        length,
                        batch,
                        label,
                        device,
                        args.repeats,
                        flops,
                        floor_bytes,
                    )
    if args.out or os.environ.get("OUT"):
        path = args.out or os.path.join(os.environ["OUT"], "m2bert_encode.json")
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
