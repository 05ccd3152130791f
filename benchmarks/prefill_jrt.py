"""Prefill throughput: JrtForCausalLM (JRT-1.3B shape) vs transformers' LlamaForCausalLM (SDPA,
flash backend), and the prefix linear-attention mixer alone vs SDPA attention.

Random weights, bf16, one CUDA GPU, inference (``torch.no_grad``). A prefill is what
``generate`` runs first: ``forward(ids, use_cache=True, logits_to_keep=1)``, so JRT builds its
recurrent state and Llama its key/value cache. For each length the batch starts at
``--batch`` and halves on out-of-memory; the table shows the batch that ran. Timings are the
median of ``--repeats`` runs after one warm-up. Before timing, the script checks the Triton
path against the PyTorch reference (op and model) and step decoding against the parallel
forward.

    python benchmarks/prefill_jrt.py --lengths 2048 4096 8192 16384 32768 --batch 16 --out r.json
    python benchmarks/prefill_jrt.py --dry-run   # tiny shapes on the CPU, checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from hazyzoo import JrtConfig, JrtForCausalLM
from hazyzoo.kernels.linear_attention import taylor_prefix_linear_attention
from hazyzoo.modeling.cache import LinearAttentionStateLayer
from hazyzoo.modeling.layers import PrefixLinearAttention

PEAK_BF16_FLOPS = 790e12  # H200 dense bf16
PEAK_BYTES = 4.3e12  # H200 HBM bandwidth


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flash(device: str):
    """SDPA restricted to the flash backend on CUDA (a no-op context on the CPU)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.FLASH_ATTENTION if device == "cuda" else SDPBackend.MATH)


def llama_config(jrt: JrtConfig, dry_run: bool) -> LlamaConfig:
    """A Llama of the same size (~1.3B: d 2048, 24 layers, SwiGLU 5504, tied embedding)."""
    hidden, layers, inner, heads = (32, 2, 64, 2) if dry_run else (2048, 24, 5504, 16)
    return LlamaConfig(
        vocab_size=jrt.vocab_size,
        hidden_size=hidden,
        intermediate_size=inner,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=65536,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )


class SdpaAttention(nn.Module):
    """Projections + causal SDPA + output projection: the softmax mixer of the same width."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.o = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.o(y.transpose(1, 2).reshape(b, length, d))


def check_correctness(jrt: JrtConfig, device: str) -> dict[str, float]:
    """Triton vs the PyTorch reference (the op at the mixer's head shape, and a small model in
    fp32), and step decoding vs one parallel forward."""
    out: dict[str, float] = {}
    g = torch.Generator().manual_seed(0)
    b, h, length, prefix, f, dv = 2, 4, 300, 128, jrt.feature_dim, 112
    q, k, ke = (0.5 * torch.randn(b, h, n, f, generator=g) for n in (length, length, prefix))
    v, ve = (torch.randn(b, h, n, dv, generator=g) for n in (length, prefix))
    tensors = [t.to(device) for t in (q, k, v, ke, ve)]
    os.environ["HAZYZOO_KERNELS"] = "torch"
    o_ref, _, _ = taylor_prefix_linear_attention(*tensors)
    os.environ["HAZYZOO_KERNELS"] = "auto"
    o, _, _ = taylor_prefix_linear_attention(*tensors)
    out["op_fp32_rel_diff"] = ((o - o_ref).norm() / o_ref.norm()).item()
    o16, _, _ = taylor_prefix_linear_attention(*(t.bfloat16() for t in tensors))
    out["op_bf16_rel_diff"] = ((o16 - o_ref).norm() / o_ref.norm()).item()

    small = JrtConfig.tiny(vocab_size=256, hidden_size=128, num_attention_heads=4, enc_length=32)
    torch.manual_seed(0)
    model = JrtForCausalLM(small).to(device).eval()
    ids = torch.randint(1, 256, (2, 80), generator=g).to(device)
    with torch.no_grad():
        os.environ["HAZYZOO_KERNELS"] = "torch"
        ref = model(ids, use_cache=False).logits
        os.environ["HAZYZOO_KERNELS"] = "auto"
        got = model(ids, use_cache=False).logits
        prefill = model(ids[:, :40], use_cache=True)
        cache, steps = prefill.past_key_values, [prefill.logits]
        for t in range(40, 80):
            step = model(ids[:, t : t + 1], past_key_values=cache)
            steps.append(step.logits)
    out["model_fp32_max_abs_diff"] = (got - ref).abs().max().item()
    out["steps_vs_parallel_max_abs_diff"] = (torch.cat(steps, 1) - got).abs().max().item()
    return out


def prefill_rows(
    name: str,
    model: nn.Module,
    lengths: list[int],
    batch: int,
    device: str,
    repeats: int,
    vocab: int,
) -> list[dict[str, Any]]:
    rows = []
    for length in lengths:
        b = batch
        while b >= 1:
            ids = torch.randint(1, vocab, (b, length), device=device)
            try:
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()

                def run(ids: torch.Tensor = ids) -> None:
                    # Flash SDPA for the Llama baseline only (JRT's windowed layers need a mask).
                    context = flash(device) if name.startswith("llama") else nullcontext()
                    with torch.no_grad(), context:
                        model(ids, use_cache=True, logits_to_keep=1)

                seconds = timed(run, device, repeats)
                peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
                rows.append(
                    {
                        "length": length,
                        "batch": b,
                        "seconds": seconds,
                        "tokens_per_s": b * length / seconds,
                        "peak_gib": peak,
                    }
                )
                break
            except torch.OutOfMemoryError:
                del ids
                torch.cuda.empty_cache()
                b //= 2
        else:
            rows.append({"length": length, "batch": 0, "oom": True})
        print(name, rows[-1], flush=True)
    return rows


def mixer_rows(
    jrt: JrtConfig, lengths: list[int], batch: int, device: str, dtype: torch.dtype, repeats: int
) -> list[dict[str, Any]]:
    """The prefix mixer (projections + kernels + its state) vs projections + SDPA, and the bare
    ops (taylor_prefix_linear_attention vs flash SDPA) at the same heads and value width."""
    torch.manual_seed(0)
    mixer = PrefixLinearAttention.from_config(jrt, 0).to(device, dtype).eval()
    softmax = SdpaAttention(jrt.hidden_size, jrt.num_attention_heads).to(device, dtype).eval()
    rows = []
    for length in lengths:
        try:
            row = _mixer_row(mixer, softmax, jrt, length, batch, device, dtype, repeats)
        except torch.OutOfMemoryError:
            row = {"length": length, "batch": batch, "oom": True}
            torch.cuda.empty_cache()
        rows.append(row)
        print("mixer", row, flush=True)
    return rows


def _mixer_row(
    mixer: nn.Module,
    softmax: nn.Module,
    jrt: JrtConfig,
    length: int,
    batch: int,
    device: str,
    dtype: torch.dtype,
    repeats: int,
) -> dict[str, Any]:
    hidden, heads = jrt.hidden_size, jrt.num_attention_heads
    dv, f = hidden // heads, jrt.feature_dim
    prefix = min(jrt.enc_length, length)
    row: dict[str, Any] = {"length": length, "batch": batch}

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, device=device, dtype=dtype)

    x = randn(batch, length, hidden)
    q, k = randn(batch, heads, length, f, scale=0.5), randn(batch, heads, length, f, scale=0.5)
    ke, ve = randn(batch, heads, prefix, f, scale=0.5), randn(batch, heads, prefix, dv)
    v = randn(batch, heads, length, dv)
    qs, ks, vs = (randn(batch, heads, length, dv) for _ in range(3))
    with torch.no_grad():
        row["mixer_s"] = timed(
            lambda: mixer(x, cache_layer=LinearAttentionStateLayer()), device, repeats
        )
        row["prefix_op_s"] = timed(
            lambda: taylor_prefix_linear_attention(q, k, v, ke, ve, output_final_state=True),
            device,
            repeats,
        )
        with flash(device):
            row["sdpa_mixer_s"] = timed(lambda: softmax(x), device, repeats)
            row["sdpa_op_s"] = timed(
                lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True),
                device,
                repeats,
            )
    # Floors: the prefix op reads q, k, v, ke, ve and writes o (fp32) and z; flash SDPA does
    # 4 L^2 d / 2 FLOPs per head (causal).
    elem = torch.finfo(dtype).bits // 8
    moved = batch * heads * (length * (2 * f + dv) + prefix * (f + dv)) * elem
    moved += batch * heads * length * (dv + 1) * 4
    row["prefix_op_floor_s"] = moved / PEAK_BYTES
    row["sdpa_op_floor_s"] = batch * heads * 2 * length * length * dv / PEAK_BF16_FLOPS
    row["mixer_speedup"] = row["sdpa_mixer_s"] / row["mixer_s"]
    row["op_speedup"] = row["sdpa_op_s"] / row["prefix_op_s"]
    return row


def chunk_sweep(
    jrt: JrtConfig, length: int, batch: int, dtype: torch.dtype, repeats: int
) -> list[dict[str, Any]]:
    """The prefix op at one length with each chunk size of the chunked form (forced at this
    length whatever the threshold), and the tiled quadratic form (chunk "none"), forward only:
    how the chunk size was chosen."""
    from hazyzoo.kernels.linear_attention import chunked

    heads, f = jrt.num_attention_heads, jrt.feature_dim
    dv, prefix = jrt.hidden_size // heads, min(jrt.enc_length, length)
    q, k = (0.5 * torch.randn(batch, heads, length, f, device="cuda", dtype=dtype) for _ in "qk")
    ke = 0.5 * torch.randn(batch, heads, prefix, f, device="cuda", dtype=dtype)
    v = torch.randn(batch, heads, length, dv, device="cuda", dtype=dtype)
    ve = torch.randn(batch, heads, prefix, dv, device="cuda", dtype=dtype)
    saved = chunked.CHUNK_SIZE, chunked.CHUNKED_MIN_LENGTH
    saved_form = os.environ.pop(chunked.FORM_ENV, None)  # by length: the constants decide
    rows = []
    try:
        for chunk in (128, 256, 512, 1024, None):
            chunked.CHUNK_SIZE = chunk
            chunked.CHUNKED_MIN_LENGTH = 0 if chunk else 1 << 40
            with torch.no_grad():
                seconds = timed(
                    lambda: taylor_prefix_linear_attention(q, k, v, ke, ve), "cuda", repeats
                )
            rows.append({"length": length, "batch": batch, "chunk": chunk, "seconds": seconds})
            print("chunk sweep", rows[-1], flush=True)
    finally:
        chunked.CHUNK_SIZE, chunked.CHUNKED_MIN_LENGTH = saved
        if saved_form is not None:
            os.environ[chunked.FORM_ENV] = saved_form
    return rows


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["check", "models", "mixer", "chunks"]
    )
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    if args.dry_run:
        args.lengths, args.batch, args.repeats = [32, 64], 2, 1
        jrt = JrtConfig.tiny(vocab_size=128, pad_token_id=0, enc_length=16)
    else:
        jrt = JrtConfig.from_preset(
            "jrt-1.3b", pad_token_id=0, eos_token_id=None, bos_token_id=None
        )
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": _triton_version(),
        "dtype": str(dtype),
        "date": time.strftime("%Y-%m-%d"),
        "enc_length": jrt.enc_length,
    }

    def save() -> None:
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(results, fh, indent=2)

    if "check" not in args.skip:
        results["correctness"] = check_correctness(jrt, device)
        print("correctness", results["correctness"], flush=True)
        save()
    if "models" not in args.skip:
        results["models"] = {}
        builders = {
            "jrt": lambda: JrtForCausalLM(jrt),
            "llama-sdpa-flash": lambda: LlamaForCausalLM._from_config(
                llama_config(jrt, args.dry_run), attn_implementation="sdpa"
            ),
        }
        for name, build in builders.items():
            torch.manual_seed(0)
            with torch.device(device):  # initialise on the GPU (1.3B on the CPU is slow)
                model = build().to(dtype=dtype).eval()
            params = sum(p.numel() for p in model.parameters())
            print(f"{name}: {params / 1e9:.3f}B parameters", flush=True)
            rows = prefill_rows(
                name, model, args.lengths, args.batch, device, args.repeats, jrt.vocab_size
            )
            for row in rows:
                if not row.get("oom"):
                    tokens = row["batch"] * row["length"]
                    row["matmul_floor_s"] = 2 * params * tokens / PEAK_BF16_FLOPS
            results["models"][name] = {"parameters": params, "rows": rows}
            save()
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    if "mixer" not in args.skip:
        results["mixer"] = mixer_rows(jrt, args.lengths, args.batch, device, dtype, args.repeats)
        save()
    if "chunks" not in args.skip and device == "cuda":
        results["chunk_sweep"] = chunk_sweep(
            jrt, max(args.lengths), args.batch, dtype, args.repeats
        )
        save()

    if "models" in results:
        jrt_rows = {r["length"]: r for r in results["models"]["jrt"]["rows"]}
        llama_rows = {r["length"]: r for r in results["models"]["llama-sdpa-flash"]["rows"]}
        print(
            f"\n{'length':>7} {'JRT tok/s (B)':>18} {'Llama tok/s (B)':>18} {'ratio':>7} {'JRT floor %':>11}"
        )
        for length in args.lengths:
            a, b = jrt_rows[length], llama_rows[length]
            cell = lambda r: "OOM" if r.get("oom") else f"{r['tokens_per_s']:.0f} ({r['batch']})"  # noqa: E731
            ratio = (
                ""
                if a.get("oom") or b.get("oom")
                else f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}"
            )
            floor = "" if a.get("oom") else f"{100 * a['matmul_floor_s'] / a['seconds']:.0f}"
            print(f"{length:>7} {cell(a):>18} {cell(b):>18} {ratio:>7} {floor:>11}")
    if "mixer" in results:
        print(
            f"\n{'length':>7} {'mixer ms':>9} {'sdpa mixer ms':>14} {'x':>6} {'op ms':>8} {'sdpa op ms':>11} {'x':>6}"
        )
        for r in results["mixer"]:
            if r.get("oom"):
                print(f"{r['length']:>7} OOM")
                continue
            print(
                f"{r['length']:>7} {1e3 * r['mixer_s']:>9.2f} {1e3 * r['sdpa_mixer_s']:>14.2f} "
                f"{r['mixer_speedup']:>6.2f} {1e3 * r['prefix_op_s']:>8.2f} "
                f"{1e3 * r['sdpa_op_s']:>11.2f} {r['op_speedup']:>6.2f}"
            )
    save()


if __name__ == "__main__":
    main()
