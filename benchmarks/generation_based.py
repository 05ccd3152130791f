"""End-to-end generation throughput: BasedForCausalLM vs transformers' LlamaForCausalLM (SDPA).

Random weights, bf16, on one CUDA GPU. For each batch size: a 1024-token prompt, then 1024 new
tokens by greedy ``generate`` (``min_new_tokens`` forces the full length). Reports tokens/s
(new tokens only, prefill included in the time, as a user of ``generate`` sees it), time per
decode step, and peak memory; a batch that does not fit is reported as OOM.

    python benchmarks/generation_based.py --batches 1 16 64 256 --out results.json
    python benchmarks/generation_based.py --dry-run   # tiny shapes on the CPU, checks the script
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from hazyzoo import BasedConfig, BasedForCausalLM


def llama_like(based: BasedConfig, hidden: int, layers: int, intermediate: int) -> LlamaConfig:
    """A Llama config with BASED's vocabulary and tied head."""
    return LlamaConfig(
        vocab_size=based.vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )


def build_models(dry_run: bool) -> dict[str, Any]:
    if dry_run:
        based = BasedConfig.tiny(vocab_size=128, pad_token_id=0)
        llama = llama_like(based, 32, 2, 64)
        llama.num_attention_heads = llama.num_key_value_heads = 2
    else:
        based = BasedConfig.from_preset(
            "based-1.3b", pad_token_id=0, eos_token_id=None, bos_token_id=None
        )
        # ~1.3B parameters like BASED-1.3B: d 2048, 24 layers, SwiGLU 5504, tied embedding.
        llama = llama_like(based, 2048, 24, 5504)
    return {"based": based, "based-graph": based, "llama": llama}


def make(name: str, config: Any, device: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("based"):
        model = BasedForCausalLM(config)
        if name == "based-graph":
            model.enable_cuda_graph_decode()
    else:
        model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    return model.to(device=device, dtype=dtype).eval()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_generate(
    model, batch: int, prompt: int, new: int, device: str, vocab: int
) -> dict[str, Any]:
    g = torch.Generator(device="cpu").manual_seed(batch)
    ids = torch.randint(1, vocab, (batch, prompt), generator=g).to(device)
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        model.generate(ids[:, : min(prompt, 64)], max_new_tokens=4, min_new_tokens=4, **kwargs)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        sync(device)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kwargs)
        sync(device)
        total = time.perf_counter() - t0
    assert out.shape == (batch, prompt + new)
    time_generate.last_output = out
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {
        "batch": batch,
        "seconds": total,
        "tokens_per_s": batch * new / total,
        "prefill_s": prefill,
        "ms_per_decode_step": 1e3 * (total - prefill) / max(new - 1, 1),
        "peak_gib": peak,
    }


def graph_vs_eager_logits(
    model, batch: int, prompt: int, steps: int, device: str, vocab: int
) -> float:
    """Teacher-forced decode steps, eager and from the CUDA graph, on two copies of one prefill
    cache: the largest relative difference of the logits (random bf16 weights give near-uniform
    logits, so greedy tokens are too fragile a check)."""
    g = torch.Generator(device="cpu").manual_seed(7)
    ids = torch.randint(1, vocab, (batch, prompt + steps), generator=g).to(device)
    worst = 0.0
    with torch.no_grad():
        caches = [model(ids[:, :prompt], use_cache=True).past_key_values for _ in range(2)]
        for t in range(prompt, prompt + steps):
            decoder, model._graph_decoder = model._graph_decoder, None
            eager = model(ids[:, t : t + 1], cache=caches[0], use_cache=True).logits.float()
            model._graph_decoder = decoder
            graphed = model(ids[:, t : t + 1], cache=caches[1], use_cache=True).logits.float()
            worst = max(worst, ((graphed - eager).norm() / eager.norm()).item())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--new", type=int, default=1024)
    parser.add_argument("--models", nargs="+", default=["based", "based-graph", "llama"])
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    if args.dry_run:
        args.batches, args.prompt, args.new = [1, 2], 16, 8
    configs = build_models(args.dry_run)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": str(dtype),
        "prompt": args.prompt,
        "new_tokens": args.new,
        "date": time.strftime("%Y-%m-%d"),
        "runs": {},
    }
    outputs: dict[int, dict[str, torch.Tensor]] = {}
    for name in args.models:
        model = make(name, configs[name], device, dtype)
        params = sum(p.numel() for p in model.parameters())
        results["runs"][name] = {"parameters": params, "batches": []}
        print(f"{name}: {params / 1e9:.3f}B parameters", flush=True)
        if name == "based-graph":
            rel = graph_vs_eager_logits(model, 4, 64, 16, device, configs[name].vocab_size)
            results["runs"][name]["graph_vs_eager_logits_rel_diff"] = rel
            print(f"graph vs eager decode logits, relative difference: {rel:.2e}", flush=True)
        for batch in args.batches:
            try:
                row = time_generate(
                    model, batch, args.prompt, args.new, device, configs[name].vocab_size
                )
            except torch.OutOfMemoryError:
                row = {"batch": batch, "oom": True}
                torch.cuda.empty_cache()
            results["runs"][name]["batches"].append(row)
            print(name, row, flush=True)
            if args.out:  # written after every row, so a run cut short keeps what it measured
                with open(args.out, "w") as f:
                    json.dump(results, f, indent=2)
            if not row.get("oom") and name.startswith("based"):
                outputs.setdefault(batch, {})[name] = time_generate.last_output.cpu()
                same = outputs[batch]
                if len(same) == 2:
                    row["graph_tokens_equal_eager"] = torch.equal(*same.values())
                    print("graph == eager tokens:", row["graph_tokens_equal_eager"], flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()

    print(
        f"\n{'batch':>6} "
        + " ".join(f"{m + ' tok/s':>14} {m + ' ms/step':>14}" for m in args.models)
    )
    for i, batch in enumerate(args.batches):
        cells = []
        for m in args.models:
            row = results["runs"][m]["batches"][i]
            if row.get("oom"):
                cells.append(f"{'OOM':>14} {'':>14}")
            else:
                cells.append(f"{row['tokens_per_s']:>14.0f} {row['ms_per_decode_step']:>14.2f}")
        print(f"{batch:>6} " + " ".join(cells))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
