"""The decode step of the zoo's recurrent LMs on its own: GPU time, launches, state precision.

Three measurements, one CUDA GPU, random bf16 weights at the BASED-1.3B / JRT-1.3B presets:

1. **Step time** (``--batches``): after a ``--prompt``-token prefill into the zoo cache, the
   CUDA-graph decode step is replayed ``--steps`` times back to back and timed with CUDA events
   (ms per step: the GPU's time for one token of every row, without ``generate``'s per-token
   Python work). Variants: ``eager`` (no graph), ``graph`` (``enable_cuda_graph_decode()``),
   ``graph+compile`` (``enable_cuda_graph_decode(compile=True)``: inductor's fused step in the
   graph), each with the float32 and, where asked, the bfloat16 linear-attention state. The
   floor is the bytes one step must move (weights once; the linear-attention state read and
   written, in its dtype; the sliding-window ring and convolution tails read, in bf16) over
   4.3 TB/s, and the FLOPs (2 per weight per row) over 790 TFLOP/s; the larger one is printed.
2. **Where the time goes** (``--profile-batches``): ``torch.profiler`` over three eager and
   three compiled steps: kernel launches per step, GPU kernel time per step and the kernels that
   take most of it.
3. **Precision of a reduced-precision state** (``--error-steps``): the same weights with a
   float32, a bfloat16 and a float16 linear-attention state (and the float32 state perturbed by
   1e-6 relative after the prefill, the model's own noise floor; ``--error-weights float32``
   removes the bf16 activations' share of it), fed the same random tokens
   (teacher forcing, so the sequences cannot diverge) for ``--error-steps`` decode steps after
   the prompt; reported per checkpoint step: max |logit difference| over batch and vocabulary,
   the relative difference ``||dl|| / ||l||`` and the share of rows whose argmax agrees.

    python benchmarks/decode_step.py --out decode.json
    python benchmarks/decode_step.py --dry-run       # tiny shapes on the CPU (eager only)
    python benchmarks/decode_step.py --cpu --parts error --preset based=based-360m \
        --preset jrt=jrt-360m --error-batch 2 --error-prompt 256   # the precision check, CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from typing import Any

import torch
import transformers

from hazyzoo import BasedConfig, BasedForCausalLM, JrtConfig, JrtForCausalLM

PEAK_BYTES = 4.3e12
PEAK_FLOPS = 790e12
MODELS = {"based": (BasedConfig, BasedForCausalLM, "based-1.3b"),
          "jrt": (JrtConfig, JrtForCausalLM, "jrt-1.3b")}  # fmt: skip


PRESETS = {name: preset for name, (_, _, preset) in MODELS.items()}


def build(name: str, state_dtype: str, device: str, dtype: torch.dtype, dry_run: bool) -> Any:
    """The model ``name`` at ``PRESETS[name]`` (seed 0: the same weights for every state
    dtype)."""
    config_class, model_class, _ = MODELS[name]
    preset = PRESETS[name]
    common = dict(pad_token_id=0, eos_token_id=None, bos_token_id=None)
    common["linear_attention_state_dtype"] = state_dtype
    if dry_run:
        config = config_class.tiny(vocab_size=128, **common)
    else:
        config = config_class.from_preset(preset, **common)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def step_bytes(model: Any, batch: int) -> float:
    """Bytes one decode step must move: weights once, the linear-attention states read and
    written, the sliding-window ring and the convolution tails read (activations ignored)."""
    cfg = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    item = next(model.parameters()).element_size()
    d, h, f = cfg.hidden_size, cfg.num_attention_heads, cfg.feature_dim
    feat, head = 1 + f + f * f, d // h
    kv_item = torch.empty(0, dtype=getattr(torch, cfg.linear_attention_state_dtype)).element_size()
    la = len(cfg.linear_attention_layers) * h * feat * (head * kv_item + 4) * 2
    sw = len(cfg.sliding_window_layers) * cfg.sliding_window * d * 2 * item
    conv_layers = cfg.num_hidden_layers - len(cfg.linear_attention_layers)
    conv_layers -= len(cfg.sliding_window_layers)
    conv = conv_layers * (cfg.conv_kernel_size - 1) * d * cfg.conv_expansion * item
    return weights + batch * (la + sw + conv)


def prefill(model: Any, batch: int, prompt: int, device: str) -> tuple[Any, torch.Tensor]:
    """A cache holding ``prompt`` random tokens per row, and the next tokens."""
    g = torch.Generator(device="cpu").manual_seed(batch)
    ids = torch.randint(1, model.config.vocab_size, (batch, prompt + 1), generator=g).to(device)
    cache = model.make_cache()
    with torch.no_grad():
        model(input_ids=ids[:, :prompt], cache=cache, use_cache=True)
    return cache, ids[:, prompt:]


def time_steps(
    model: Any, variant: str, batch: int, prompt: int, steps: int, device: str
) -> dict[str, Any]:
    """ms per decode step of ``variant`` (eager / graph / graph+compile) at ``batch``."""
    cache, ids = prefill(model, batch, prompt, device)
    position = torch.full_like(ids, prompt)
    if variant == "eager":

        def step() -> torch.Tensor:
            return model.decode_step(ids, position, cache)
    else:
        model.enable_cuda_graph_decode(compile=variant == "graph+compile")
        decoder = model._graph_decoder

        def step() -> torch.Tensor:
            return decoder(ids, position, cache)

    with torch.no_grad():
        t0 = time.perf_counter()
        step()  # capture (and compile) here
        if device == "cuda":
            torch.cuda.synchronize()
        setup = time.perf_counter() - t0
        for _ in range(3):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end) / steps
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            ms = 1e3 * (time.perf_counter() - t0) / steps
    model.enable_cuda_graph_decode(False)
    moved = step_bytes(model, batch)
    flops = 2 * sum(p.numel() for p in model.parameters()) * batch
    floor = max(moved / PEAK_BYTES, flops / PEAK_FLOPS) * 1e3
    return {
        "variant": variant,
        "batch": batch,
        "ms_per_step": ms,
        "tokens_per_s": batch * 1e3 / ms,
        "floor_ms": floor,
        "memory_floor_ms": 1e3 * moved / PEAK_BYTES,
        "of_floor": floor / ms,
        "setup_s": setup,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0,
    }


def profile_steps(model: Any, batch: int, prompt: int, compiled: bool) -> dict[str, Any]:
    """Kernel launches and GPU time per step of the eager (or compiled, not graphed) step."""
    from torch.profiler import ProfilerActivity, profile

    cache, ids = prefill(model, batch, prompt, "cuda")
    position = torch.full_like(ids, prompt)
    fn = model.decode_step
    if compiled:
        fn = torch.compile(model.decode_step, fullgraph=True, dynamic=False)
    with torch.no_grad():
        for _ in range(3):
            fn(ids, position, cache)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                fn(ids, position, cache)
            torch.cuda.synchronize()
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = per_kernel[event.name[:90]]
            entry[0] += 1
            entry[1] += event.device_time
    launches = sum(c for c, _ in per_kernel.values()) / 3
    gpu_us = sum(t for _, t in per_kernel.values()) / 3
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][1])[:12]
    return {
        "batch": batch,
        "compiled": compiled,
        "launches_per_step": launches,
        "kernel_us_per_step": gpu_us,
        "top": [{"kernel": k, "per_step": c / 3, "us_per_step": t / 3} for k, (c, t) in top],
    }


ERROR_VARIANTS = ("float32", "float32+jitter", "bfloat16", "float16")


def state_error(
    name: str, batch: int, prompt: int, steps: int, checkpoints: list[int], device: str, **kw: Any
) -> dict[str, Any]:
    """Logit differences of bf16 / fp16 linear-attention states against the float32 state,
    and a control: the float32 state with a relative perturbation of 1e-6 after the prefill
    (far below any half-precision rounding), which shows how much of a difference the model
    itself amplifies any tiny change of its state into (its noise floor at these weights)."""
    g = torch.Generator(device="cpu").manual_seed(7)
    vocab = MODELS[name][0].from_preset(PRESETS[name]).vocab_size if not kw["dry_run"] else 128
    ids = torch.randint(1, vocab, (batch, prompt + steps), generator=g).to(device)
    logits: dict[str, list[torch.Tensor]] = {}
    for variant in ERROR_VARIANTS:
        state_dtype = variant.removesuffix("+jitter")
        model = build(name, state_dtype, device, kw["dtype"], kw["dry_run"])
        if device == "cuda":
            model.enable_cuda_graph_decode()
        cache = model.make_cache()
        kept = []
        with torch.no_grad():
            out = model(input_ids=ids[:, :prompt], cache=cache, use_cache=True)
            if variant.endswith("+jitter"):
                jitter = torch.Generator(device=device).manual_seed(3)
                for layer in cache.layers:
                    kv = getattr(layer, "kv_state", None)
                    if kv is not None:
                        noise = torch.randn(kv.shape, generator=jitter, device=device)
                        kv.mul_(1 + 1e-6 * noise)
            for t in range(steps):
                out = model(input_ids=ids[:, prompt + t : prompt + t + 1], cache=cache)
                if t + 1 in checkpoints:
                    kept.append(out.logits[:, -1].float().cpu())
        logits[variant] = kept
        del model, cache
        if device == "cuda":
            torch.cuda.empty_cache()
    rows = []
    for i, step in enumerate(checkpoints):
        ref = logits["float32"][i]
        row: dict[str, Any] = {"step": step, "logit_abs_max": ref.abs().max().item()}
        for variant in ERROR_VARIANTS[1:]:
            got = logits[variant][i]
            diff = got - ref
            row[variant] = {
                "max_abs": diff.abs().max().item(),
                "rel": (diff.norm() / ref.norm()).item(),
                "argmax_agree": (got.argmax(-1) == ref.argmax(-1)).float().mean().item(),
                "finite": bool(torch.isfinite(got).all()),
            }
        rows.append(row)
    return {"model": name, "batch": batch, "prompt": prompt, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["based", "jrt"], choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=["eager", "graph", "graph+compile"])
    parser.add_argument("--state-dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 512, 1024, 2048])
    parser.add_argument("--compile-batches", type=int, nargs="+", default=None,
                        help="batches of the graph+compile variant (default: --batches)")  # fmt: skip
    parser.add_argument("--profile-batches", type=int, nargs="*", default=[1, 1024])
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--error-steps", type=int, default=1024)
    parser.add_argument("--error-batch", type=int, default=8)
    parser.add_argument("--error-prompt", type=int, default=1024)
    parser.add_argument("--error-weights", choices=["bfloat16", "float32"], default=None,
                        help="weights dtype of the precision check (default: the run's)")  # fmt: skip
    parser.add_argument("--parts", nargs="+", default=["steps", "profile", "error"])
    parser.add_argument("--preset", action="append", default=[], metavar="MODEL=PRESET",
                        help="another size, e.g. based=based-360m (repeatable)")  # fmt: skip
    parser.add_argument("--cpu", action="store_true",
                        help="run on the CPU with float32 weights (eager steps; for --parts "
                        "error where no GPU is at hand)")  # fmt: skip
    parser.add_argument("--out", default=None)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    for item in args.preset:
        name, _, preset = item.partition("=")
        if name not in MODELS or not preset:
            raise SystemExit(f"--preset wants MODEL=PRESET with MODEL in {sorted(MODELS)}")
        PRESETS[name] = preset
    device = "cpu" if args.dry_run or args.cpu else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if args.cpu:
        args.variants = ["eager"]
    if args.dry_run:
        args.variants = ["eager"]
        args.batches, args.profile_batches, args.prompt, args.steps = [1, 2], [], 8, 3
        args.error_steps, args.error_batch, args.error_prompt = 8, 2, 8
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "args": vars(args),
        "steps": [],
        "profile": [],
        "error": [],
    }

    def save() -> None:
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)

    print(f"{results['device']}, torch {torch.__version__}", flush=True)
    for name in args.models:
        for state_dtype in args.state_dtypes if "steps" in args.parts else []:
            model = build(name, state_dtype, device, dtype, args.dry_run)
            for variant in args.variants:
                batches = args.batches
                if variant == "graph+compile" and args.compile_batches is not None:
                    batches = args.compile_batches
                for batch in batches:
                    torch._dynamo.reset()
                    try:
                        row = time_steps(model, variant, batch, args.prompt, args.steps, device)
                    except torch.OutOfMemoryError:
                        row = {"variant": variant, "batch": batch, "oom": True}
                    except Exception as err:  # a variant that fails must not stop the others
                        row = {"variant": variant, "batch": batch, "oom": True,
                               "error": f"{type(err).__name__}: {str(err)[:400]}"}  # fmt: skip
                    row.update(model=name, state_dtype=state_dtype)
                    results["steps"].append(row)
                    print(json.dumps(row), flush=True)
                    save()
                    if device == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    if row.get("oom"):
                        break
            if "profile" in args.parts and state_dtype == args.state_dtypes[0]:
                for batch in args.profile_batches:
                    for compiled in (False, True):
                        torch._dynamo.reset()
                        row = profile_steps(model, batch, args.prompt, compiled)
                        row.update(model=name)
                        results["profile"].append(row)
                        print(json.dumps(row), flush=True)
                        save()
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
        if "error" in args.parts:
            checkpoints = sorted({1, 16, 64, 256, 512, args.error_steps} & set(
                range(1, args.error_steps + 1)))  # fmt: skip
            row = state_error(name, args.error_batch, args.error_prompt, args.error_steps,
                              checkpoints, device, dry_run=args.dry_run,
                              dtype=getattr(torch, args.error_weights or "") if args.error_weights
                              else dtype)  # fmt: skip
            row["weights_dtype"] = args.error_weights or str(dtype).removeprefix("torch.")
            results["error"].append(row)
            print(json.dumps(row), flush=True)
            save()
    print(f"\n{'model':>6} {'state':>9} {'variant':>14} {'batch':>6} {'ms/step':>9} "
          f"{'tok/s':>10} {'floor ms':>9} {'of floor':>9} {'setup s':>8} {'GiB':>6}")  # fmt: skip
    for row in results["steps"]:
        if row.get("oom"):
            print(f"{row['model']:>6} {row['state_dtype']:>9} {row['variant']:>14} "
                  f"{row['batch']:>6} {row.get('error', 'OOM')}")  # fmt: skip
            continue
        print(f"{row['model']:>6} {row['state_dtype']:>9} {row['variant']:>14} {row['batch']:>6} "
              f"{row['ms_per_step']:>9.3f} {row['tokens_per_s']:>10.0f} {row['floor_ms']:>9.3f} "
              f"{row['of_floor']:>9.0%} {row['setup_s']:>8.1f} {row['peak_gib']:>6.1f}")  # fmt: skip
    for row in results["profile"]:
        print(f"\nprofile {row['model']} batch {row['batch']} compiled={row['compiled']}: "
              f"{row['launches_per_step']:.0f} launches, {row['kernel_us_per_step']:.0f} us "
              "of kernels per step")  # fmt: skip
        for k in row["top"][:8]:
            print(f"  {k['us_per_step']:>9.1f} us {k['per_step']:>5.0f}x  {k['kernel']}")
    for run_ in results["error"]:
        print(f"\nstate precision, {run_['model']}, {run_['weights_dtype']} weights, batch "
              f"{run_['batch']}, prompt {run_['prompt']}")  # fmt: skip
        for row in run_["rows"]:
            parts = [f"step {row['step']:>5} |l|max {row['logit_abs_max']:.2f}"]
            for sd in ERROR_VARIANTS[1:]:
                e = row[sd]
                parts.append(f"{sd}: max {e['max_abs']:.2e} rel {e['rel']:.2e} "
                             f"agree {e['argmax_agree']:.3f}")  # fmt: skip
            print("  " + " | ".join(parts))


if __name__ == "__main__":
    main()
