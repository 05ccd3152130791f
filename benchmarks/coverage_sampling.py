"""Repeated sampling throughput: ``hazyzoo eval coverage``'s sampler with Hydragen vs plain
``generate``, 100 samples per problem, on a Llama-shaped model (random bf16 weights).

Each problem is a prompt of ``--prompt-len`` random words (one token each, a word-level
tokenizer of the model's vocabulary size) and gets ``--samples`` completions of
``--new-tokens`` tokens (temperature 1, no eos, no stop string: every sequence runs to the end),
through :func:`hazyzoo.evaluation.sampling.sample_problems` itself, so the figure includes
what a user's run pays (tokenisation, decoding, the JSONL writes):

- ``generate``: ``model.generate`` over the prompt replicated per sample (SDPA, default cache);
- ``hydragen``: :func:`hazyzoo.hydragen.generate`: the prompt prefilled and stored once and its
  attention computed once per step for all samples.

Samples/s = problems x samples / seconds, after one warm-up problem per backend. Both backends
draw from the same seeds; the fraction of identical completions is printed as a check (bf16
rounding makes the two diverge after a while; the exactness tests are in tests/).

    python benchmarks/coverage_sampling.py --out r.json
    python benchmarks/coverage_sampling.py --dry-run     # tiny shapes on the CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hazyzoo.evaluation.sampling import SamplingConfig, load_samples, sample_problems

PEAK_BYTES = 4.3e12


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(vocab_size - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt-len", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.dry_run:
        args.layers, args.hidden, args.heads, args.kv_heads = 2, 64, 4, 4
        args.intermediate, args.vocab, args.prompt_len = 128, 200, [16]
        args.samples, args.new_tokens, args.problems = 6, 4, 2
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.prompt_len) + args.new_tokens + 16,
        pad_token_id=0,
        eos_token_id=None,
        bos_token_id=None,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):  # initialised in place: no 27 GB float32 copy on the host
        model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(default_dtype)
    tokenizer = word_tokenizer(args.vocab)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, {device} "
        f"{torch.cuda.get_device_name() if device == 'cuda' else platform.processor()}; "
        f"Llama {params / 1e9:.2f}B params, {args.layers} layers, bf16={dtype == torch.bfloat16}"
    )
    rows = []
    generator = torch.Generator().manual_seed(1)
    for plen in args.prompt_len:
        problems = []
        for i in range(args.problems + 1):  # the first one warms up
            ids = torch.randint(3, args.vocab, (plen,), generator=generator).tolist()
            problems.append(
                {"problem_id": f"p{plen}-{i}", "prompt": " ".join(f"w{j - 3}" for j in ids)}
            )
        texts = {}
        for backend in ("generate", "hydragen"):
            cfg = SamplingConfig(
                num_samples=args.samples,
                batch_size=args.samples,
                max_new_tokens=args.new_tokens,
                temperature=1.0,
                seed=0,
                stop=(),
                backend=backend,
                add_special_tokens=False,
            )
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "s.jsonl"
                sample_problems(
                    model, tokenizer, problems[:1], cfg, output_path=out, progress=False
                )
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                try:
                    sample_problems(
                        model, tokenizer, problems, cfg, output_path=out, progress=False
                    )
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append({"prompt_len": plen, "backend": backend, "oom": True})
                    print(f"prompt {plen:5d}  {backend:9s}  out of memory (timed run)", flush=True)
                    continue
                if device == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                records = [
                    r for r in load_samples(out) if r["problem_id"] != problems[0]["problem_id"]
                ]
                texts[backend] = {
                    (r["problem_id"], r["sample_index"]): r["completion"] for r in records
                }
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
            n = args.problems * args.samples
            rows.append(
                {
                    "prompt_len": plen,
                    "backend": backend,
                    "samples": n,
                    "seconds": seconds,
                    "samples_per_s": n / seconds,
                    "tokens_per_s": n * args.new_tokens / seconds,
                    "peak_gib": peak,
                }
            )
            print(
                f"prompt {plen:5d}  {backend:9s}  {n} samples in {seconds:7.2f} s  "
                f"{n / seconds:8.1f} samples/s  {n * args.new_tokens / seconds:9.0f} tok/s  "
                f"peak {peak:6.1f} GiB",
                flush=True,
            )
        if len(texts) < 2:
            continue
        same = sum(texts["generate"][k] == texts["hydragen"][k] for k in texts["generate"])
        ratio = rows[-1]["samples_per_s"] / rows[-2]["samples_per_s"]
        # decode floor: weights once per step + the prompt's KV once (Hydragen) per step
        kv = 2 * args.layers * args.kv_heads * (args.hidden // args.heads) * plen * 2
        floor_step = (params * 2 + kv) / PEAK_BYTES
        print(
            f"prompt {plen}: hydragen / generate = {ratio:.2f}x; identical completions "
            f"{same}/{len(texts['generate'])}; per-step floor (weights + one prompt KV) "
            f"{floor_step * 1e3:.2f} ms -> {args.samples / (floor_step * args.new_tokens):.0f} "
            "samples/s per problem at the floor"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
