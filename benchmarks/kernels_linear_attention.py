"""Benchmark and check the Taylor linear attention (BASED) Triton kernels on a GPU.

    python benchmarks/kernels_linear_attention.py             # H200: checks, timings, table
    python benchmarks/kernels_linear_attention.py --dry-run   # CPU, TRITON_INTERPRET=1, tiny

(a) Accuracy: each Triton kernel against the PyTorch reference at real sizes (B=2, H=16, F=16,
    Dv 64 / 112, L 2k..16k) in float32 and bfloat16, as ||out - ref|| / ||ref||, and
    ``taylor_linear_attention`` continuing from the state of a prefix (``init_o``: o with an
    initial state, ``final_kv``: its final state). The reference runs chunk by chunk with state
    passing, so its memory is linear in L.
(b) Speed of ``taylor_attention_parallel`` (forward, forward+backward) against the reference and,
    when importable, flash-linear-attention's ``fla.ops.based.parallel_based``. fla returns the
    *normalised* output ``o / z`` (ours returns o and z), so only its timing is comparable.
(c) Speed of the decode step against its memory-bandwidth floor: the step must read and write
    the whole fp32 state once, ``2 * (1+F+F^2) * (Dv+1) * 4`` bytes per (batch, head), at the
    H200's 4.3e12 B/s.
(d) ``taylor_prefix_linear_attention`` (JRT-RNN) at the JRT-1.3B mixer shape (H=16, F=16,
    Dv=112, P=1024 prefix positions, bf16, B = min(16, tokens // L)): first its accuracy
    against the reference at a small size (o, z and the gradients of q, k, v, k_enc, v_enc),
    then forward and forward+backward timings next to their HBM floors (inputs read and
    outputs written once: q, k, v, k_enc, v_enc, the fp32 o, z and prefix state; the backward
    also reads do, dz and the inputs again and writes the five gradients), and next to
    ``taylor_linear_attention`` alone (BASED, no prefix) and the reference. Both Triton ops run
    what the package registers: the tiled kernels below ``chunked.CHUNKED_MIN_LENGTH`` tokens,
    the chunked form from there on.

Timings are medians of ``triton.testing.do_bench`` (ms). ``--dry-run`` runs every code path on
the CPU under the Triton interpreter with tiny shapes (fp32 and fp16: the interpreter's bf16
``tl.dot`` is broken), timing with ``time.perf_counter``, so the script is known to work.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import time
from collections.abc import Callable


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (interpreter)")
    parser.add_argument("--skip-checks", action="store_true", help="skip the accuracy checks (a)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--check-batch", type=int, default=2, help="batch size of the checks")
    parser.add_argument(
        "--tokens", type=int, default=32768, help="timing batch = max(1, tokens // L)"
    )
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--bandwidth", type=float, default=4.3e12, help="HBM bytes/s (H200)")
    parser.add_argument(
        "--prefix-lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384, 32768]
    )
    parser.add_argument("--prefix", type=int, default=1024, help="JRT prefix positions P")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.dry_run:
    # Must be set before hazyzoo.kernels (and its @triton.jit kernels) is imported.
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hazyzoo.kernels.linear_attention import (  # noqa: E402
    chunked,
    parallel,
    recurrent,
    reference,
    state,
    taylor_feature_dim,
)

DEVICE = "cpu" if ARGS.dry_run else "cuda"
FEAT = 16
SUMMARY: list[tuple[str, ...]] = []


def bench(fn: Callable[[], object]) -> float:
    """Median time of ``fn`` in ms (do_bench on the GPU, a few perf_counter runs in dry mode)."""
    fn()  # compile / autotune outside the timing
    if ARGS.dry_run:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[1]
    import triton.testing

    return triton.testing.do_bench(fn, return_mode="median")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def inputs(batch: int, heads: int, length: int, dv: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=DEVICE).to(dtype)

    # Roughly what the model feeds in: q, k from a projection (unit-ish scale), any v.
    return (
        randn(batch, heads, length, FEAT),
        randn(batch, heads, length, FEAT),
        randn(batch, heads, length, dv),
    )


# ---------------------------------------------------------------------------------------------
# (a) accuracy
# ---------------------------------------------------------------------------------------------


def continuation_errors(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor
) -> list[float]:
    """``taylor_linear_attention`` on the second half of the sequence from the state of the
    first half: o and the final kv_state, Triton path against the reference."""
    half = q.shape[2] // 2
    with torch.no_grad():
        head = (k[:, :, :half], v[:, :, :half], key_mask[:, :half])
        initial = state.taylor_attention_state_triton(*head)
        rest = (q[:, :, half:], k[:, :, half:], v[:, :, half:], key_mask[:, half:])
        o, _, final = parallel.taylor_linear_attention_triton(*rest, initial, True)
        o_ref, _, final_ref = reference.taylor_linear_attention_reference(*rest, initial, True)
    return [rel_err(o, o_ref), rel_err(final[0], final_ref[0])]


def check(dtypes: list[torch.dtype], lengths: list[int], dvs: list[int], batch: int) -> None:
    print("== (a) accuracy: ||triton - reference|| / ||reference||")
    columns = "o z dq dk dv kv_state k_state step_o step_z init_o final_kv".split()
    header = f"{'dtype':>8} {'L':>6} {'Dv':>4} " + " ".join(f"{n:>9}" for n in columns)
    print(header)
    heads = ARGS.heads
    for dtype in dtypes:
        for length in lengths:
            for dv in dvs:
                q, k, v = inputs(batch, heads, length, dv, dtype)
                gen = torch.Generator(device=DEVICE).manual_seed(1)
                grad_o = torch.randn(batch, heads, length, dv, generator=gen, device=DEVICE)
                grad_z = torch.randn(batch, heads, length, generator=gen, device=DEVICE)
                key_mask = torch.ones(batch, length, dtype=torch.bool, device=DEVICE)
                key_mask[0, : length // 8] = False  # left padding in the first row

                leaves = [t.clone().requires_grad_() for t in (q, k, v)]
                o, z = parallel.taylor_attention_parallel_triton(*leaves, key_mask)
                grads = torch.autograd.grad((o, z), leaves, (grad_o, grad_z))

                ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
                o_ref, z_ref = reference.taylor_attention_parallel_reference(*ref_leaves, key_mask)
                ref_grads = torch.autograd.grad((o_ref, z_ref), ref_leaves, (grad_o, grad_z))
                ref = (o_ref.detach(), z_ref.detach(), *ref_grads)
                errs = [rel_err(a, b) for a, b in zip((o, z, *grads), ref, strict=True)]
                del o, z, grads, ref, o_ref, z_ref, ref_grads

                with torch.no_grad():
                    kv_state, k_state = state.taylor_attention_state_triton(k, v, key_mask)
                    kv_ref, k_ref = reference.taylor_attention_state_reference(k, v, key_mask)
                    errs += [rel_err(kv_state, kv_ref), rel_err(k_state, k_ref)]
                    token = (q[:, :, -1], k[:, :, -1], v[:, :, -1])
                    step_o, step_z = recurrent.taylor_attention_step_triton(
                        *token, kv_state, k_state
                    )
                    ref_o, ref_z = reference.taylor_attention_step_reference(*token, kv_ref, k_ref)
                    errs += [rel_err(step_o, ref_o), rel_err(step_z, ref_z)]
                    errs += continuation_errors(q, k, v, key_mask)
                name = str(dtype).removeprefix("torch.")
                print(f"{name:>8} {length:>6} {dv:>4} " + " ".join(f"{e:9.2e}" for e in errs))
                SUMMARY.append(("check", name, str(length), str(dv), f"max err {max(errs):.1e}"))


# ---------------------------------------------------------------------------------------------
# (b) parallel timing
# ---------------------------------------------------------------------------------------------


def load_fla() -> Callable | None:
    if ARGS.dry_run:
        return None
    try:
        from fla.ops.based import parallel_based
    except Exception as exc:
        print(f"   (flash-linear-attention not importable: {type(exc).__name__}: {exc})")
        return None
    params = inspect.signature(parallel_based).parameters

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if "head_first" in params:
            return parallel_based(q, k, v, use_norm=True, head_first=True)
        # Newer fla takes [B, T, H, K].
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return parallel_based(q, k, v, use_norm=True)

    return run


def reference_fits(batch: int, heads: int, length: int) -> bool:
    """Whether the chunked reference's forward + backward fits: per token and head it saves
    a few chunk-wide score rows and a few (1+F+F^2)-wide feature rows, in fp32."""
    width = reference.REFERENCE_CHUNK_SIZE + taylor_feature_dim(FEAT)
    needed = 4 * 8 * batch * heads * length * width
    if ARGS.dry_run:
        return True
    free, _ = torch.cuda.mem_get_info()
    return needed < 0.7 * free


def time_parallel_shape(
    dtype: torch.dtype, length: int, batch: int, dv: int, fla: Callable | None
) -> list[float]:
    """[fwd, fwd+bwd] for Triton, the reference and fla (nan where skipped)."""
    q, k, v = inputs(batch, ARGS.heads, length, dv, dtype)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    grad_o = torch.randn(batch, ARGS.heads, length, dv, device=DEVICE)
    grad_z = torch.randn(batch, ARGS.heads, length, device=DEVICE)
    grad_y = grad_o.to(dtype)

    def fwd(fn: Callable) -> object:
        with torch.no_grad():
            return fn(q, k, v)

    def fwd_bwd(fn: Callable) -> object:
        o, z = fn(*leaves)
        return torch.autograd.grad((o, z), leaves, (grad_o, grad_z))

    def fla_fwd_bwd() -> object:
        y = fla(*leaves)
        return torch.autograd.grad(y, leaves, grad_y.view_as(y))

    triton_fn = parallel.taylor_attention_parallel_triton
    row = [bench(lambda: fwd(triton_fn)), bench(lambda: fwd_bwd(triton_fn))]
    if reference_fits(batch, ARGS.heads, length):
        ref_fn = reference.taylor_attention_parallel_reference
        row += [bench(lambda: fwd(ref_fn)), bench(lambda: fwd_bwd(ref_fn))]
    else:
        row += [math.nan, math.nan]
    if fla is None:
        return [*row, math.nan, math.nan]
    try:
        return [*row, bench(lambda: fwd(fla)), bench(fla_fwd_bwd)]
    except Exception as exc:
        print(f"   (fla failed at L={length}, Dv={dv}: {type(exc).__name__}: {exc})")
        return [*row, math.nan, math.nan]


def time_parallel(dtype: torch.dtype, lengths: list[int], dvs: list[int]) -> None:
    print(f"== (b) taylor_attention_parallel timing, {dtype}, median ms")
    fla = load_fla()
    print(f"{'L':>6} {'B':>3} {'Dv':>4} {'fwd':>8} {'fwd+bwd':>8} {'ref fwd':>8} {'ref f+b':>8} "
          f"{'fla fwd':>8} {'fla f+b':>8}")  # fmt: skip
    name = str(dtype).removeprefix("torch.")
    for length in lengths:
        batch = max(1, ARGS.tokens // length)
        for dv in dvs:
            row = time_parallel_shape(dtype, length, batch, dv, fla)
            print(f"{length:>6} {batch:>3} {dv:>4} " + " ".join(f"{t:8.3f}" for t in row))
            SUMMARY.append(
                ("parallel", name, f"L={length} B={batch}", str(dv),
                 f"fwd {row[0]:.2f} / f+b {row[1]:.2f} ms; ref f+b {row[3]:.2f} ms; "
                 f"fla f+b {row[5]:.2f} ms")
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# (c) decode step timing
# ---------------------------------------------------------------------------------------------


def time_step_shape(dtype: torch.dtype, batch: int, dv: int) -> tuple[float, float]:
    """Median ms of the Triton and the reference decode step."""
    q, k, v = (t[:, :, 0] for t in inputs(batch, ARGS.heads, 1, dv, dtype))
    d_phi = taylor_feature_dim(FEAT)
    kv_state = torch.zeros(batch, ARGS.heads, d_phi, dv, device=DEVICE)
    k_state = torch.zeros(batch, ARGS.heads, d_phi, device=DEVICE)
    # The state grows by one token per call; harmless for timing.
    triton_ms = bench(lambda: recurrent.taylor_attention_step_triton(q, k, v, kv_state, k_state))
    ref_ms = bench(lambda: reference.taylor_attention_step_reference(q, k, v, kv_state, k_state))
    return triton_ms, ref_ms


def time_step(dtype: torch.dtype, batches: list[int], dv: int) -> None:
    print(f"== (c) taylor_attention_step, {dtype}, H={ARGS.heads}, Dv={dv}, median ms")
    d_phi = taylor_feature_dim(FEAT)
    print(f"{'B':>5} {'triton':>9} {'floor':>9} {'% floor':>8} {'GB/s':>8} {'reference':>9}")
    for batch in batches:
        ms, ref_ms = time_step_shape(dtype, batch, dv)
        state_bytes = 2 * batch * ARGS.heads * d_phi * (dv + 1) * 4
        floor_ms = state_bytes / ARGS.bandwidth * 1e3
        gbs = state_bytes / (ms * 1e-3) / 1e9
        print(f"{batch:>5} {ms:9.4f} {floor_ms:9.4f} {100 * floor_ms / ms:7.1f}% {gbs:8.1f} "
              f"{ref_ms:9.4f}")  # fmt: skip
        SUMMARY.append(
            ("step", str(dtype).removeprefix("torch."), f"B={batch}", str(dv),
             f"{ms:.4f} ms = {100 * floor_ms / ms:.0f}% of floor; ref {ref_ms:.4f} ms")
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# (d) prefix linear attention (JRT-RNN)
# ---------------------------------------------------------------------------------------------

PREFIX_DV = 112  # value dim per head of the JRT-1.3B mixer


def prefix_inputs(
    batch: int, length: int, prefix: int, dv: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """q, k, v ``[B, H, L, .]``, k_enc, v_enc ``[B, H, P, .]`` and a key mask with left
    padding in row 0 (keys and encoder keys)."""
    q, k, v = inputs(batch, ARGS.heads, length, dv, dtype, seed)
    k_enc, _, v_enc = inputs(batch, ARGS.heads, prefix, dv, dtype, seed + 1)
    key_mask = torch.ones(batch, length, dtype=torch.bool, device=DEVICE)
    key_mask[0, : length // 8] = False
    enc_mask = torch.ones(batch, prefix, dtype=torch.bool, device=DEVICE)
    enc_mask[0, : prefix // 8] = False
    return q, k, v, k_enc, v_enc, key_mask, enc_mask


def prefix_fwd_bwd(fn: Callable, tensors: tuple, grads: tuple) -> tuple[torch.Tensor, ...]:
    """o, z and the gradients of q, k, v, k_enc, v_enc for upstream ``grads``."""
    leaves = [t.clone().requires_grad_() for t in tensors[:5]]
    o, z, _ = fn(*leaves, *tensors[5:])
    return (o.detach(), z.detach(), *torch.autograd.grad((o, z), leaves, grads))


def check_prefix(dtypes: list[torch.dtype], length: int, prefix: int, batch: int) -> None:
    print(f"== (d) taylor_prefix_linear_attention accuracy, L={length}, P={prefix}, B={batch}")
    columns = "o z dq dk dv dk_enc dv_enc".split()
    print(f"{'dtype':>8} " + " ".join(f"{n:>9}" for n in columns))
    for dtype in dtypes:
        tensors = prefix_inputs(batch, length, prefix, PREFIX_DV, dtype)
        gen = torch.Generator(device=DEVICE).manual_seed(2)
        shape = (batch, ARGS.heads, length)
        grads = (
            torch.randn(*shape, PREFIX_DV, generator=gen, device=DEVICE),
            torch.randn(*shape, generator=gen, device=DEVICE),
        )
        got = prefix_fwd_bwd(chunked.taylor_prefix_linear_attention_triton, tensors, grads)
        want = prefix_fwd_bwd(reference.taylor_prefix_linear_attention_reference, tensors, grads)
        errs = [rel_err(a, b) for a, b in zip(got, want, strict=True)]
        name = str(dtype).removeprefix("torch.")
        print(f"{name:>8} " + " ".join(f"{e:9.2e}" for e in errs))
        SUMMARY.append(("prefix", name, f"L={length} P={prefix}", str(PREFIX_DV),
                        f"max err {max(errs):.1e}"))  # fmt: skip


def prefix_floor_ms(batch: int, length: int, prefix: int, dv: int, itemsize: int) -> tuple:
    """HBM floors (ms) of the forward and of forward+backward (see the module docstring)."""
    heads, d_phi = ARGS.heads, taylor_feature_dim(FEAT)
    ins = (length * (2 * FEAT + dv) + prefix * (FEAT + dv)) * itemsize
    outs = length * (dv + 1) * 4
    state_bytes = 2 * d_phi * (dv + 1) * 4  # written once, read once
    fwd = batch * heads * (ins + outs + state_bytes)
    fwd_bwd = fwd + batch * heads * (outs + 2 * ins + 2 * state_bytes)
    return fwd / ARGS.bandwidth * 1e3, fwd_bwd / ARGS.bandwidth * 1e3


def time_prefix_shape(
    dtype: torch.dtype, length: int, batch: int, prefix: int, dv: int
) -> list[float]:
    """Median ms of [prefix fwd, prefix fwd+bwd, BASED (no prefix) fwd+bwd, reference f+b]."""
    tensors = prefix_inputs(batch, length, prefix, dv, dtype)
    q, k, v, k_enc, v_enc, key_mask, enc_mask = tensors
    shape = (batch, ARGS.heads, length)
    grads = (torch.randn(*shape, dv, device=DEVICE), torch.randn(*shape, device=DEVICE))
    leaves = [t.clone().requires_grad_() for t in tensors[:5]]
    triton_fn = chunked.taylor_prefix_linear_attention_triton

    def fwd() -> object:
        with torch.no_grad():
            return triton_fn(q, k, v, k_enc, v_enc, key_mask, enc_mask)

    def fwd_bwd(fn: Callable = triton_fn) -> object:
        o, z, _ = fn(*leaves, key_mask, enc_mask)
        return torch.autograd.grad((o, z), leaves, grads)

    def based_fwd_bwd() -> object:
        o, z, _ = chunked.taylor_linear_attention_triton_by_length(*leaves[:3], key_mask)
        return torch.autograd.grad((o, z), leaves[:3], grads)

    row = [bench(fwd), bench(fwd_bwd), bench(based_fwd_bwd)]
    if reference_fits(batch, ARGS.heads, length + prefix):
        row.append(bench(lambda: fwd_bwd(reference.taylor_prefix_linear_attention_reference)))
    else:
        row.append(math.nan)
    return row


def time_prefix(dtype: torch.dtype, lengths: list[int], prefix: int, dv: int) -> None:
    print(f"== (d) taylor_prefix_linear_attention timing, {dtype}, H={ARGS.heads}, F={FEAT}, "
          f"Dv={dv}, P={prefix}, median ms")  # fmt: skip
    print(f"{'L':>6} {'B':>3} {'fwd':>8} {'floor':>7} {'%':>5} {'fwd+bwd':>8} {'floor':>7} "
          f"{'%':>5} {'based f+b':>9} {'ref f+b':>8}")  # fmt: skip
    name = str(dtype).removeprefix("torch.")
    for length in lengths:
        batch = max(1, min(16, ARGS.tokens // length))
        fwd_ms, fb_ms, based_ms, ref_ms = time_prefix_shape(dtype, length, batch, prefix, dv)
        floor_f, floor_fb = prefix_floor_ms(batch, length, prefix, dv, dtype.itemsize)
        print(f"{length:>6} {batch:>3} {fwd_ms:8.3f} {floor_f:7.3f} {100 * floor_f / fwd_ms:4.0f}% "
              f"{fb_ms:8.3f} {floor_fb:7.3f} {100 * floor_fb / fb_ms:4.0f}% {based_ms:9.3f} "
              f"{ref_ms:8.3f}")  # fmt: skip
        SUMMARY.append(
            ("prefix", name, f"L={length} B={batch}", str(dv),
             f"fwd {fwd_ms:.2f} / f+b {fb_ms:.2f} ms (floors {floor_f:.2f} / {floor_fb:.2f}); "
             f"based f+b {based_ms:.2f} ms; ref f+b {ref_ms:.2f} ms")
        )  # fmt: skip


def main() -> None:
    if not ARGS.dry_run and not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU (or --dry-run for a CPU smoke run)")
    if ARGS.dry_run:
        ARGS.heads, ARGS.tokens = 2, 32
        check([torch.float32, torch.float16], [32, 48], [24], batch=1)
        time_parallel(torch.float32, [32], [24])
        time_step(torch.float32, [1, 2], 24)
        check_prefix([torch.float32, torch.float16], 32, 8, batch=1)
        time_prefix(torch.float32, [32], 8, 24)
    else:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
        if not ARGS.skip_checks:
            check([torch.float32, torch.bfloat16], ARGS.lengths, [64, 112], ARGS.check_batch)
        time_parallel(torch.bfloat16, ARGS.lengths, [64, 112])
        time_step(torch.bfloat16, [1, 16, 64, 256], 112)
        if not ARGS.skip_checks:
            check_prefix([torch.float32, torch.bfloat16], 2048, ARGS.prefix, ARGS.check_batch)
        time_prefix(torch.bfloat16, ARGS.prefix_lengths, ARGS.prefix, PREFIX_DV)
    print("\n== summary")
    print(f"| {'what':<8} | {'dtype':<8} | {'shape':<14} | {'Dv':>3} | result")
    print(f"|{'-' * 10}|{'-' * 10}|{'-' * 16}|{'-' * 5}|{'-' * 60}")
    for row in SUMMARY:
        print(f"| {row[0]:<8} | {row[1]:<8} | {row[2]:<14} | {row[3]:>3} | {row[4]}")


if __name__ == "__main__":
    main()
