# Closures over loop variables are timed inside the same iteration that defines them.
# ruff: noqa: B023
"""RTF on the GPU: state-free kernel generation vs S4D's Vandermonde kernel, the layer's
forward+backward vs the same layer with an S4D kernel, FFT vs direct convolution at short
lengths, and the recurrent decode step (Triton) vs its memory floor.

Random parameters, float32 for the kernels and layers (as the reference trains), one CUDA
GPU. Each timing is the median of ``--repeats`` runs after a warm-up (CUDA events around the
whole call). Before timing, the script checks on the GPU: the Triton step against the
reference, 256 decode steps against the parallel forward, and the prefill state against
stepping.

    python benchmarks/rtf_kernels.py --out rtf.json
    python benchmarks/rtf_kernels.py --dry-run   # tiny shapes on the CPU, checks the script
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
import torch.nn.functional as F
import transformers

from hazyzoo import RtfConfig, RtfForCausalLM
from hazyzoo.kernels import rtf as ops
from hazyzoo.kernels.rtf.reference import recurrent_step_reference

try:
    from hazyzoo.kernels.rtf.recurrent import rtf_step_triton
except ImportError:  # no triton (CPU dry runs still work)
    rtf_step_triton = None
from hazyzoo.modeling.layers.rtf import RtfFilter, RtfMixer
from hazyzoo.modeling.layers.s4d import S4DFilter

PEAK_BYTES = 4.3e12  # H200 HBM bandwidth
PEAK_FP32_FLOPS = 60e12  # H200 fp32 (non-tensor-core) peak, for orientation only


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of ``fn()`` after two warm-ups."""
    fn()
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def graph_timed(fn: Callable[[], Any], device: str, repeats: int, inner: int = 20) -> float:
    """Median seconds of one ``fn()`` replayed from a CUDA graph of ``inner`` calls (no launch
    overhead: the GPU's own time); plain :func:`timed` on the CPU."""
    if device != "cuda":
        return timed(fn, device, repeats)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    graph.replay()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph.replay()
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def emit(rows: list, row: dict) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


# --- checks ----------------------------------------------------------------------------------
def checks(device: str, small: bool, rows: list) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    b, n, c = (3, 8, 40) if small else (64, 64, 1024)
    u = torch.randn(b, c, device=device, generator=g)
    state = torch.randn(b, n, c, device=device, generator=g)
    params = [torch.randn(n, c, device=device, generator=g) for _ in range(3)]
    d = torch.randn(c, device=device, generator=g)
    s1, s2 = state.clone(), state.clone()
    y1 = ops.rtf_step(u, s1, *params, d)
    y2 = recurrent_step_reference(u, s2, *params, d)
    emit(
        rows,
        {
            "check": "triton step vs reference",
            "y_rel": rel_err(y1, y2),
            "state_rel": rel_err(s1, s2),
            "shape": [b, n, c],
        },
    )
    for n_state in (4, 64):
        torch.manual_seed(1)
        filt = (
            RtfFilter(
                256 if not small else 16,
                n_state,
                512 if not small else 80,
                num_a=None,
                init="xavier",
                constraint="l1_montel",
            )
            .to(device)
            .eval()
        )
        length = 256 if not small else 40
        x = torch.randn(2, length, filt.channels, device=device)
        with torch.no_grad():
            full = filt(x)
            st = torch.zeros(2, n_state, filt.channels, device=device)
            stepped = torch.stack([filt.step(x[:, t], st) for t in range(length)], 1)
            _, pre = filt.prefill(x)
        emit(
            rows,
            {
                "check": f"{length} decode steps vs parallel forward, N={n_state}",
                "rel": rel_err(stepped, full),
                "prefill_state_rel": rel_err(pre, st),
            },
        )


# --- kernel generation -----------------------------------------------------------------------
def kernel_generation(
    device: str,
    lengths: list[int],
    states: list[int],
    channels: int,
    repeats: int,
    rows: list,
    with_s4d: bool = True,
) -> None:
    """Time to produce the [channels, L] kernel (forward, and forward+backward), RTF vs S4D."""
    for length in lengths:
        for n in states:
            if n >= length:
                continue
            torch.manual_seed(0)
            rtf_f = RtfFilter(channels, n, length, init="montel").to(device)
            s4d_f = S4DFilter(channels, n, length).to(device) if with_s4d else None
            filters = [("rtf", rtf_f), ("s4d", s4d_f)] if with_s4d else [("rtf", rtf_f)]
            for name, filt in filters:

                def fwd(f=filt):
                    with torch.no_grad():
                        return f.kernel(length)

                def fwd_bwd(f=filt):
                    f.zero_grad(set_to_none=True)
                    f.kernel(length).square().sum().backward()

                try:
                    t_f = timed(fwd, device, repeats)
                    t_fg = graph_timed(fwd, device, repeats, inner=10)
                    t_fb = timed(fwd_bwd, device, repeats)
                    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0
                    emit(
                        rows,
                        {
                            "bench": "kernel_generation",
                            "filter": name,
                            "L": length,
                            "N": n,
                            "channels": channels,
                            "fwd_ms": t_f * 1e3,
                            "fwd_gpu_ms": t_fg * 1e3,
                            "fwd_bwd_ms": t_fb * 1e3,
                            "peak_gib": round(peak, 2),
                        },
                    )
                except torch.OutOfMemoryError:
                    emit(
                        rows,
                        {
                            "bench": "kernel_generation",
                            "filter": name,
                            "L": length,
                            "N": n,
                            "channels": channels,
                            "oom": True,
                        },
                    )
                if device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()


# --- layer forward + backward ----------------------------------------------------------------
def layer_fwd_bwd(
    device: str, shapes: list[tuple[int, int, int, int]], repeats: int, rows: list
) -> None:
    """The LRA block (bidirectional, GELU, GLU), RTF kernel vs S4D kernel, fwd+bwd."""
    for batch, length, width, n in shapes:
        for name in ("rtf", "s4d"):
            torch.manual_seed(0)
            config = RtfConfig(
                hidden_size=width,
                num_hidden_layers=1,
                state_size=n,
                trunc_len=length,
                num_a=1,
                bidirectional=True,
                channel_mixer="none",
                init="zeros",
                constraint="no",
            )
            layer = RtfMixer.from_config(config, 0).to(device)
            if name == "s4d":
                layer.filter = S4DFilter(width, n, length, bidirectional=True).to(device)
            x = torch.randn(batch, length, width, device=device, requires_grad=True)

            def step(lay=layer, inp=x):
                lay.zero_grad(set_to_none=True)
                inp.grad = None
                lay(inp).float().square().mean().backward()

            try:
                t = timed(step, device, repeats)
                emit(
                    rows,
                    {
                        "bench": "layer_fwd_bwd",
                        "filter": name,
                        "B": batch,
                        "L": length,
                        "D": width,
                        "N": n,
                        "ms": t * 1e3,
                    },
                )
            except torch.OutOfMemoryError:
                emit(
                    rows,
                    {
                        "bench": "layer_fwd_bwd",
                        "filter": name,
                        "B": batch,
                        "L": length,
                        "D": width,
                        "N": n,
                        "oom": True,
                    },
                )
            if device == "cuda":
                torch.cuda.empty_cache()


# --- FFT vs direct convolution ---------------------------------------------------------------
def fft_vs_direct(
    device: str, lengths: list[int], batch: int, width: int, repeats: int, rows: list
) -> None:
    """The causal convolution of [B, L, D] with a [D, L] kernel: FFT (what the filter runs) vs
    cuDNN's direct depthwise convolution."""
    for length in lengths:
        u = torch.randn(batch, length, width, device=device)
        k = torch.randn(width, length, device=device)
        fft_out = ops.causal_conv(u, k)
        w = k.flip(-1).unsqueeze(1)  # conv1d is a cross-correlation

        def direct():
            return F.conv1d(F.pad(u.transpose(1, 2), (length - 1, 0)), w, groups=width)

        err = rel_err(direct().transpose(1, 2), fft_out)
        t_fft = timed(lambda: ops.causal_conv(u, k), device, repeats)
        t_dir = timed(direct, device, repeats)
        emit(
            rows,
            {
                "bench": "fft_vs_direct",
                "B": batch,
                "L": length,
                "D": width,
                "fft_ms": t_fft * 1e3,
                "direct_ms": t_dir * 1e3,
                "rel_err": err,
            },
        )


# --- decode ------------------------------------------------------------------------------------
STEP_CONFIGS = [(c, nb, w) for c in (32, 64, 128, 256) for nb in (16, 32, 64) for w in (2, 4, 8)]


def decode_step(
    device: str,
    batches: list[int],
    n: int,
    width: int,
    repeats: int,
    rows: list,
    configs: list | None = None,
) -> None:
    """One layer's recurrent step: Triton vs the PyTorch reference, against the floor (state
    read + written once, plus the [N, D] parameters)."""
    configs = configs if configs is not None else STEP_CONFIGS
    for batch in batches:
        g = torch.Generator(device=device).manual_seed(0)
        u = torch.randn(batch, width, device=device, generator=g)
        state = torch.randn(batch, n, width, device=device, generator=g) * 0.1
        params = [torch.randn(n, width, device=device, generator=g) * 0.01 for _ in range(3)]
        d = torch.randn(width, device=device, generator=g)
        floor = (2 * batch * n * width * 4 + 3 * n * width * 4 + 2 * batch * width * 4) / PEAK_BYTES
        t_call = timed(lambda: ops.rtf_step(u, state, *params, d), device, repeats)
        t_ref = graph_timed(lambda: recurrent_step_reference(u, state, *params, d), device, repeats)
        best = None
        for block_c, block_n, warps in configs:
            if device == "cuda":

                def fn(block_c=block_c, block_n=block_n, warps=warps):
                    return rtf_step_triton(
                        u, state, *params, d, block_c=block_c, block_n=block_n, num_warps=warps
                    )

            else:

                def fn():
                    return recurrent_step_reference(u, state, *params, d)

            t = graph_timed(fn, device, repeats)
            emit(
                rows,
                {
                    "bench": "decode_step_config",
                    "B": batch,
                    "block_c": block_c,
                    "block_n": block_n,
                    "num_warps": warps,
                    "us": t * 1e6,
                },
            )
            if best is None or t < best[0]:
                best = (t, block_c, block_n, warps)
        t_default = graph_timed(lambda: ops.rtf_step(u, state, *params, d), device, repeats)
        emit(
            rows,
            {
                "bench": "decode_step",
                "B": batch,
                "N": n,
                "D": width,
                "triton_default_us": t_default * 1e6,
                "best_us": best[0] * 1e6,
                "best_config": best[1:],
                "torch_us": t_ref * 1e6,
                "eager_call_us": t_call * 1e6,
                "floor_us": floor * 1e6,
            },
        )


def model_decode(device: str, batches: list[int], new_tokens: int, rows: list, small: bool) -> None:
    """The rtf-wt103 LM (random weights, bf16): ms per decode step with CUDA-graph replay,
    against the weight + state read floor."""
    config = RtfConfig.tiny() if small else RtfConfig.from_preset("rtf-wt103")
    torch.manual_seed(0)
    model = RtfForCausalLM(config).to(device=device, dtype=torch.bfloat16).eval()
    if device == "cuda":
        model.enable_cuda_graph_decode()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # CUDA-graph replay decodes the same tokens as eager decoding
    prompt = torch.randint(1, config.vocab_size, (2, 16), device=device)
    graphed = model.generate(prompt, max_new_tokens=32, do_sample=False)
    model._graph_decoder = None
    eager = model.generate(prompt, max_new_tokens=32, do_sample=False)
    if device == "cuda":
        model.enable_cuda_graph_decode()
    emit(
        rows,
        {
            "check": "graph decode == eager decode (greedy, 32 tokens)",
            "equal": bool(torch.equal(graphed, eager)),
        },
    )
    for batch in batches:
        prompt = torch.randint(
            1, config.vocab_size, (batch, 128 if not small else 8), device=device
        )
        try:

            def run(tokens):
                return model.generate(
                    prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
                )

            with torch.no_grad():
                cache = model(prompt, use_cache=True).past_key_values
                token = prompt[:, -1:]

                def replay_steps(steps: int = 64):
                    for _ in range(steps):
                        model(token, cache=cache)

                t_replay = timed(replay_steps, device, 3) / 64
            t_long = timed(lambda: run(new_tokens), device, 3)
            t_short = timed(lambda: run(1), device, 3)
            per_step = (t_long - t_short) / (new_tokens - 1)
            state = config.num_hidden_layers * batch * config.state_size * config.hidden_size * 4
            floor = (weight_bytes + 2 * state) / PEAK_BYTES
            emit(
                rows,
                {
                    "bench": "model_decode",
                    "model": "rtf-wt103" if not small else "tiny",
                    "B": batch,
                    "params": sum(p.numel() for p in model.parameters()),
                    "ms_per_step": per_step * 1e3,
                    "forward_ms_per_step": t_replay * 1e3,
                    "floor_ms": floor * 1e3,
                    "tokens_per_s": batch / per_step,
                },
            )
        except torch.OutOfMemoryError:
            emit(rows, {"bench": "model_decode", "B": batch, "oom": True})


def llama_decode(device: str, batches: list[int], new_tokens: int, rows: list, small: bool) -> None:
    """The baseline a transformers user would run at the same width and depth: a Llama (768
    wide, 12 layers, SwiGLU 2048 so the parameter count matches rtf-wt103's, tied embedding,
    SDPA, bf16) with the default dynamic cache and with ``cache_implementation="static"``
    (transformers compiles its decode step), each warmed up with two full-length runs so the
    timed call does not recompile. Same prompt (128 tokens) and per-step method as
    :func:`model_decode`."""
    from transformers import LlamaForCausalLM

    from benchmarks.generation_based import llama_like

    rtf = RtfConfig.tiny() if small else RtfConfig.from_preset("rtf-wt103")
    config = llama_like(rtf, rtf.hidden_size, rtf.num_hidden_layers, 64 if small else 2048)
    if small:
        config.num_attention_heads = config.num_key_value_heads = 2
    else:
        config.num_attention_heads = config.num_key_value_heads = 12
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    for method in ("default", "static-compiled"):
        for batch in batches:
            prompt = torch.randint(
                1, config.vocab_size, (batch, 128 if not small else 8), device=device
            )
            kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
            if method == "static-compiled":
                kwargs["cache_implementation"] = "static"
            try:

                def run(tokens, kw=kwargs, ids=prompt):
                    return model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **kw)

                run(new_tokens)
                run(new_tokens)  # warm-up: compiles for this shape
                run(1)
                t_long = timed(lambda: run(new_tokens), device, 3)
                t_short = timed(lambda: run(1), device, 3)
                per_step = (t_long - t_short) / (new_tokens - 1)
                emit(
                    rows,
                    {
                        "bench": "llama_decode",
                        "method": method,
                        "B": batch,
                        "params": params,
                        "ms_per_step": per_step * 1e3,
                        "tokens_per_s": batch / per_step,
                    },
                )
            except torch.OutOfMemoryError:
                emit(rows, {"bench": "llama_decode", "method": method, "B": batch, "oom": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="subset of: checks kernel layer conv step model llama",
    )
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    small = args.dry_run
    repeats = 1 if small else args.repeats
    parts = set(args.only or ["checks", "kernel", "layer", "conv", "step", "model", "llama"])
    rows: list = []
    emit(
        rows,
        {
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
    )
    if "checks" in parts:
        checks(device, small, rows)
    if "kernel" in parts:
        kernel_generation(
            device,
            [64] if small else [1024, 16384],
            [4, 16] if small else [4, 16, 64, 256, 512, 1024, 2048],
            8 if small else 128,
            repeats,
            rows,
        )
        # RTF alone at a model's width (S4D's Vandermonde tensor would not fit there)
        kernel_generation(
            device,
            [64] if small else [1024, 16384],
            [4, 16] if small else [4, 64, 512, 2048],
            16 if small else 1024,
            repeats,
            rows,
            with_s4d=False,
        )
    if "layer" in parts:
        shapes = (
            [(2, 64, 16, 4)]
            if small
            else [(32, 2048, 256, 4), (32, 2048, 256, 64), (4, 16384, 256, 4), (4, 16384, 256, 64)]
        )
        layer_fwd_bwd(device, shapes, repeats, rows)
    if "conv" in parts:
        fft_vs_direct(
            device,
            [16, 64] if small else [16, 32, 64, 128, 256, 512, 1024],
            2 if small else 16,
            8 if small else 768,
            repeats,
            rows,
        )
    if "step" in parts:
        decode_step(
            device,
            [1, 4] if small else [1, 8, 64, 256, 1024],
            4 if small else 64,
            16 if small else 768,
            repeats,
            rows,
            configs=STEP_CONFIGS[:2] if small else None,
        )
    if "model" in parts:
        model_decode(device, [1, 2] if small else [1, 64, 256], 8 if small else 128, rows, small)
    if "llama" in parts:
        llama_decode(device, [1, 2] if small else [1, 64, 256], 8 if small else 128, rows, small)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
