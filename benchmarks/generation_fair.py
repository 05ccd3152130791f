"""Generation speed against the strongest HF-native baselines, in one run (issue 15, item 1).

Random weights, bf16, one CUDA GPU, greedy decoding of ``--new`` tokens after a ``--prompt``
token prompt (``min_new_tokens`` forces the full length). Methods:

- ``based`` / ``jrt``: BASED-1.3B and JRT-1.3B shapes (``from_preset``), ``generate`` with
  the zoo's fixed-size recurrent cache and CUDA-graph decode (``enable_cuda_graph_decode``).
  Suffixes select options, e.g. ``based+bf16+compile``: ``+bf16`` keeps the linear-attention
  state in bfloat16 (``linear_attention_state_dtype``), ``+compile`` captures inductor's
  compiled step in the graph (``enable_cuda_graph_decode(compile=True)``).
- ``llama``: a ~1.3B Llama (d 2048, 24 layers, SwiGLU 5504, tied head, BASED's vocabulary),
  SDPA and transformers' default dynamic cache.
- ``llama-static``: the same with ``cache_implementation="static"``: transformers compiles
  the decode step itself. Warmed up with two full-length calls per batch size before the timed
  call; dynamo's graph and frame counters are read around the timed call and reported
  (``recompiles`` must be 0).
- ``llama-flex``: ``attn_implementation="flex_attention"`` with the default cache, if the
  image runs it.

Every method runs the batch sizes in order and stops at its first out-of-memory, so its last
row is its largest batch that fits. ``--prefill-chunk N`` passes ``prefill_chunk_size=N`` to
every method's ``generate`` (the same for all: it bounds the prefill's activations, so large
batches fit). Reported: tokens/s (new tokens, prefill included, as a ``generate`` user sees it),
ms per decode step ((total - prefill) / (new - 1)) and the decode-only tokens/s it gives, the
prefill seconds and peak memory. The decode-step floor is printed per batch: the bytes a step
must move over 4.3 TB/s (weights once + each model's state/cache read and written once).

    python benchmarks/generation_fair.py --out fair.json
    python benchmarks/generation_fair.py --dry-run     # tiny shapes on the CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from typing import Any

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from hazyzoo import BasedConfig, BasedForCausalLM, JrtConfig, JrtForCausalLM

PEAK_BYTES = 4.3e12


def configs(dry_run: bool) -> dict[str, Any]:
    if dry_run:
        based = BasedConfig.tiny(vocab_size=128, pad_token_id=0)
        jrt = JrtConfig.tiny(vocab_size=128, pad_token_id=0)
        llama = LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            pad_token_id=0,
            bos_token_id=None,
            eos_token_id=None,
        )
    else:
        common = dict(pad_token_id=0, eos_token_id=None, bos_token_id=None)
        based = BasedConfig.from_preset("based-1.3b", **common)
        jrt = JrtConfig.from_preset("jrt-1.3b", **common)
        llama = LlamaConfig(
            vocab_size=based.vocab_size,
            hidden_size=2048,
            intermediate_size=5504,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            **common,
        )
    return {"based": based, "jrt": jrt, "llama": llama}


ZOO = {"based": BasedForCausalLM, "jrt": JrtForCausalLM}
OPTIONS = ("bf16", "compile")


def parse_method(method: str) -> tuple[str, set[str]]:
    """``"based+bf16+compile"`` -> ``("based", {"bf16", "compile"})``; options only on zoo
    models."""
    base, *options = method.split("+")
    known = {*ZOO, "llama", "llama-static", "llama-flex"}
    if base not in known or any(o not in OPTIONS for o in options) or (options and base not in ZOO):
        raise SystemExit(f"unknown method {method!r}: a base of {sorted(known)} (zoo models "
                         f"may add +{' +'.join(OPTIONS)})")  # fmt: skip
    return base, set(options)


def build(method: str, cfgs: dict[str, Any], device: str, dtype: torch.dtype) -> Any:
    base, options = parse_method(method)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if base in ZOO:
                config = cfgs[base]
                if "bf16" in options:
                    config = copy.deepcopy(config)
                    config.linear_attention_state_dtype = "bfloat16"
                model = ZOO[base](config)
            else:
                attn = "flex_attention" if base == "llama-flex" else "sdpa"
                model = LlamaForCausalLM._from_config(cfgs["llama"], attn_implementation=attn)
    finally:
        torch.set_default_dtype(default)
    if base in ZOO and device == "cuda":
        model.enable_cuda_graph_decode(compile="compile" in options)
    return model.eval()


def state_bytes(method: str, model: Any, batch: int, length: int, itemsize: int) -> float:
    """Bytes of recurrent state / KV cache a decode step reads (and, for a state, writes)."""
    cfg = model.config
    if parse_method(method)[0] in ZOO:
        # a step reads and writes every layer's state: linear attention (F^2+F+1) x head_dim
        # per head (kv in its dtype, k float32), the sliding-window ring (window x d x 2 in the
        # dtype), the convolution tails (kernel x expanded width in the dtype)
        d, h, f = cfg.hidden_size, cfg.num_attention_heads, cfg.feature_dim
        feat = 1 + f + f * f
        kv_item = 2 if cfg.linear_attention_state_dtype != "float32" else 4
        la = len(cfg.linear_attention_layers) * h * feat * (d // h * kv_item + 4) * 2
        sw = len(cfg.sliding_window_layers) * cfg.sliding_window * d * 2 * itemsize
        conv_layers = (
            cfg.num_hidden_layers
            - len(cfg.linear_attention_layers)
            - len(cfg.sliding_window_layers)
        )
        conv = conv_layers * cfg.conv_kernel_size * d * cfg.conv_expansion * itemsize * 2
        return batch * (la + sw + conv)
    layers, kvh = cfg.num_hidden_layers, cfg.num_key_value_heads
    head = cfg.hidden_size // cfg.num_attention_heads
    return batch * layers * 2 * kvh * head * length * itemsize


def dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return sum(counters["stats"].values()), sum(counters["frames"].values())


def run(
    method: str,
    model: Any,
    batch: int,
    prompt: int,
    new: int,
    device: str,
    prefill_chunk: int | None = None,
) -> dict:
    vocab = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(batch)
    ids = torch.randint(1, vocab, (batch, prompt), generator=g).to(device)
    kwargs: dict[str, Any] = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    if prefill_chunk:
        kwargs["prefill_chunk_size"] = prefill_chunk
    if method == "llama-static":
        kwargs["cache_implementation"] = "static"

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        warmups = 2 if method == "llama-static" else 1
        for _ in range(warmups):  # full-length: the timed call must not compile again
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kwargs)
        sync()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        sync()
        prefill = time.perf_counter() - t0
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before = dynamo_counts()
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kwargs)
        sync()
        total = time.perf_counter() - t0
        after = dynamo_counts()
    assert out.shape == (batch, prompt + new), out.shape
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    step = (total - prefill) / max(new - 1, 1)
    itemsize = next(model.parameters()).element_size()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moved = weights + state_bytes(method, model, batch, prompt + new // 2, itemsize)
    floor = moved / PEAK_BYTES
    return {
        "batch": batch,
        "tokens_per_s": batch * new / total,
        "ms_per_step": 1e3 * step,
        "decode_tokens_per_s": batch / step if step > 0 else float("nan"),
        "prefill_s": prefill,
        "seconds": total,
        "peak_gib": peak,
        "floor_ms": 1e3 * floor,
        "of_floor": floor / step if step > 0 else None,
        "dynamo_new_graphs": after[0] - before[0],
        "dynamo_new_frames": after[1] - before[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["based", "llama-static", "llama", "jrt"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 512, 1024])
    parser.add_argument("--llama-batches", type=int, nargs="+", default=[1, 64, 256, 512])
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--prefill-chunk", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    if args.dry_run:
        args.batches, args.llama_batches, args.prompt, args.new = [1, 2], [1, 2], 16, 8
    cfgs = configs(args.dry_run)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "prompt": args.prompt,
        "new_tokens": args.new,
        "prefill_chunk_size": args.prefill_chunk,
        "runs": {},
    }
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    for method in args.methods:
        try:
            model = build(method, cfgs, device, dtype)
        except Exception as err:  # e.g. an attention implementation the image lacks
            print(f"{method}: cannot build: {type(err).__name__}: {err}", flush=True)
            results["runs"][method] = {"error": f"{type(err).__name__}: {err}"}
            continue
        params = sum(p.numel() for p in model.parameters())
        results["runs"][method] = {"parameters": params, "rows": []}
        print(f"{method}: {params / 1e9:.3f}B parameters", flush=True)
        batches = args.batches if parse_method(method)[0] in ZOO else args.llama_batches
        for batch in batches:
            start = time.perf_counter()
            try:
                row = run(method, model, batch, args.prompt, args.new, device, args.prefill_chunk)
            except torch.OutOfMemoryError:
                row = {"batch": batch, "oom": True}
            except Exception as err:
                row = {"batch": batch, "error": f"{type(err).__name__}: {str(err)[:300]}"}
            if device == "cuda":
                torch.cuda.empty_cache()
            row["wall_s"] = time.perf_counter() - start
            results["runs"][method]["rows"].append(row)
            print(method, json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(results, f, indent=1)
            if row.get("oom") or row.get("error"):
                break
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    print(f"\n{'method':>20} {'batch':>6} {'tok/s':>10} {'ms/step':>9} {'decode tok/s':>13} "
          f"{'floor ms':>9} {'peak GiB':>9} {'prefill s':>9}")  # fmt: skip
    for method, run_ in results["runs"].items():
        for row in run_.get("rows", []):
            if "tokens_per_s" in row:
                print(
                    f"{method:>20} {row['batch']:>6} {row['tokens_per_s']:>10.0f} "
                    f"{row['ms_per_step']:>9.2f} {row['decode_tokens_per_s']:>13.0f} "
                    f"{row['floor_ms']:>9.2f} {row['peak_gib']:>9.1f} {row['prefill_s']:>9.2f}"
                )
            else:
                print(f"{method:>20} {row['batch']:>6} {'OOM' if row.get('oom') else 'error':>10}")


if __name__ == "__main__":
    main()
