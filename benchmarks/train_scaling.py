"""Data-parallel scaling of ``hazyzoo train``: DDP and FSDP, 1 vs N processes, one global batch.

What it measures, for each strategy in ``--strategies`` (the shipped accelerate configs
``ddp.yaml``/``fsdp.yaml``) and each process count in ``--gpus``, all at the same global batch
(``--global-batch``; each process gets ``global / N`` examples a step), the same seed and data
order, a fixed number of steps and a checkpoint every ``--save-steps``:

* **tokens/s**: non-padding tokens of all processes per wall-clock second over the steady
  steps (from the per-step ``tokens_seen`` and ``train_tokens_per_second`` of
  ``trainer_state.json``: the first ``--warmup-steps`` steps and each step right after a
  checkpoint save are left out), plus the whole run's figure (``train_tokens_per_second`` of
  the last step: start-up and checkpoint saves included);
* **scaling efficiency** ``tokens/s(N) / (N * tokens/s(1))``;
* **peak memory per GPU**: ``peak_memory_gib`` of ``train_results.json`` (the max over ranks
  of ``torch.cuda.max_memory_allocated()``);
* **loss agreement**: ``max_step |loss_N(step) - loss_1(step)|`` (and relative), against the
  bound ``--loss-rtol`` (relative to ``loss_1``). With ``--bf16`` the default bound is 2^-6
  (about 1.6%, four bf16 spacings of 2^-8): the two runs make the same steps on the same data,
  but their bf16 rounding differs (other GEMM shapes; FSDP reduces gradients in bf16), and a
  random-init trajectory amplifies that a little each step. The DDP vs FSDP difference at the
  smallest process count (same data, other bf16 numerics) is printed as an empirical measure of
  that noise. In float32 (the dry run) the default bound is 1e-4;
* **resume**: from the ``--save-steps`` checkpoint of the resume source run (FSDP at the
  largest process count; DDP in the dry run), one more step (``--max-steps save_steps + 1``)
  in a fresh output directory (``--resume CHECKPOINT``) on each process count; its loss is
  compared with the uninterrupted run's loss at that step (same bound);
* **from_pretrained**: the resume source run's final model loads with
  ``AutoModelForCausalLM.from_pretrained`` on one device (``cuda:0``, or the CPU) and gives a
  finite loss on one batch of the training data.

Model: the BASED ``--preset`` (default ``based-360m``), randomly initialised from a config file
written here (``BasedConfig.from_preset(preset, vocab_size=len(tokenizer))`` with the
tokenizer's bos/eos/pad ids) and passed as ``--model config:<dir>``: 312M parameters with the
1245-token tokenizer; ``--preset-vocab`` keeps the preset's 50264-row embedding (363M, the
released size). Data: the zoo ``cookbook`` builder (``--dataset-config``, default
``copy_span``; ``--template-params`` sets the template's generator parameters, by default
1024-word texts with a 32-word span: 1074 tokens an example, every example the same length,
so no run pads), exactly ``steps * global_batch`` training examples, so every run sees one
epoch in one order. The
tokenizer is the Cookbook word tokenizer (``cookbook_templates.build_word_tokenizer`` over
``default_vocabulary(--vocab-words)``, what ``tests/test_train.py`` uses), built here: nothing
is downloaded. DDP runs pass ``--training-arg ddp_find_unused_parameters=false`` (every BASED
parameter is used; Trainer's default True costs an extra autograd traversal a step).

Every launched process gets ``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` and
``NVSHMEM_DISABLE_NVLS=1`` (NVLink multicast off), ``HF_HUB_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1`` unless set, and ``PYTHONPATH`` starting with this checkout. The exact
commands are printed as they run and saved in ``--out`` (``commands``), with each run's
per-step losses, so ``benchmarks/RESULTS.md`` can quote them. Runs go to ``--work-dir`` (kept;
only the resume source keeps its checkpoints unless ``--keep-checkpoints``), by default to a
temporary directory removed at the end. The exit status is 1 when a loss check is outside its
bound or the from_pretrained loss is not finite (the JSON is written either way).

On two GPUs (the issue's run: H200s)::

    python benchmarks/train_scaling.py --out train_scaling.json
    python benchmarks/train_scaling.py --strategies fsdp --gpus 1 2 --steps 100 --save-steps 50 \\
        --global-batch 32 --work-dir /tmp/scaling --keep-checkpoints --out fsdp.json

Dry run on the CPU (``tests/test_train_scaling.py`` runs it; about 50 s on 2 cores)::

    python benchmarks/train_scaling.py --dry-run --out dry.json

What the dry run covers: the same pipeline end to end, on ``tiny:hazyzoo_based`` with
``ACCELERATE_USE_CPU=true`` (gloo, ``OMP_NUM_THREADS=1`` per process), float32, DDP on 1 and 2
processes, 6 steps with a checkpoint at step 3, 8 examples a step of the 36-token
``copy_span`` examples (32 words): the launch commands, the per-device batch split, the
log parsing, the 1 vs 2 process loss agreement, resuming from the 2-process DDP checkpoint on
1 and 2 processes, and from_pretrained. The shipped ``ddp.yaml`` runs on the CPU as it is once
``--mixed_precision no`` (its bf16 needs a GPU) and ``--dynamo_backend no`` are added to the
launch, which the dry run does. What it does not cover: FSDP (the shipped FSDP config needs
GPUs; ``--strategies fsdp`` with ``--dry-run`` is refused), bf16, NCCL, the peak memory figure
(``None`` on the CPU), the 360M model and any meaningful tokens/s or scaling efficiency
(two processes share two cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("ddp", "fsdp")
NVLINK_MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
_DRY_ENV = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
BF16_LOSS_RTOL = 2.0**-6
FP32_LOSS_RTOL = 1e-4

# Defaults of a GPU run and of --dry-run, for every flag left unset.
GPU_DEFAULTS: dict[str, Any] = dict(
    strategies=["ddp", "fsdp"],
    gpus=[1, 2],
    global_batch=32,
    steps=60,
    save_steps=30,
    learning_rate=3e-4,
    vocab_words=512,
    template_params='{"text_length": 1024, "span_length": 32}',
    warmup_steps=3,
    timeout=3600,
)
DRY_DEFAULTS: dict[str, Any] = dict(
    strategies=["ddp"],
    gpus=[1, 2],
    global_batch=8,
    steps=6,
    save_steps=3,
    learning_rate=3e-3,
    vocab_words=32,
    template_params="{}",
    warmup_steps=1,
    timeout=300,
)


# --------------------------------------------------------------------------------------------
# set-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with the GPU or the ``--dry-run`` defaults filled in and checked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, DDP only")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=None)
    parser.add_argument("--gpus", nargs="+", type=int, default=None, help="process counts")
    parser.add_argument("--global-batch", type=int, default=None, help="examples per step")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="based-360m", help="BASED preset (GPU runs)")
    parser.add_argument(
        "--preset-vocab",
        action="store_true",
        help="keep the preset's vocab_size (50264) instead of the tokenizer's",
    )
    parser.add_argument("--dataset-config", default="copy_span", help="cookbook config")
    parser.add_argument("--vocab-words", type=int, default=None, help="cookbook vocabulary size")
    parser.add_argument(
        "--template-params", default=None, help="JSON generator parameters of the template"
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=None, help="first steps left out of tokens/s"
    )
    parser.add_argument(
        "--loss-rtol",
        type=float,
        default=None,
        help=f"loss agreement bound, relative (default {BF16_LOSS_RTOL:g} bf16, "
        f"{FP32_LOSS_RTOL:g} float32)",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="keep the runs here (must be empty; default: a temporary directory, removed at the "
        "end unless a launch fails)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every run's checkpoints (default: only the resume source's)",
    )
    parser.add_argument("--timeout", type=int, default=None, help="seconds per launch")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    for key, value in (DRY_DEFAULTS if args.dry_run else GPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.bf16 = not args.dry_run
    if args.loss_rtol is None:
        args.loss_rtol = BF16_LOSS_RTOL if args.bf16 else FP32_LOSS_RTOL
    args.strategies = list(dict.fromkeys(args.strategies))
    args.gpus = sorted(set(args.gpus))

    if args.dry_run and "fsdp" in args.strategies:
        parser.error("--dry-run runs DDP only: the shipped FSDP config needs GPUs")
    if any(n < 1 for n in args.gpus):
        parser.error(f"--gpus must be process counts >= 1, got {args.gpus}")
    for name in ("global_batch", "steps", "save_steps", "vocab_words", "timeout"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    bad = [n for n in args.gpus if args.global_batch % n]
    if bad:
        parser.error(
            f"--global-batch {args.global_batch} is not divisible by the process count(s) {bad}: "
            "every process must get global_batch / N examples a step"
        )
    if args.save_steps >= args.steps:
        parser.error(
            f"--save-steps {args.save_steps} must be < --steps {args.steps}: the resume check "
            "compares the step after the checkpoint with the uninterrupted run's"
        )
    if not args.loss_rtol > 0:
        parser.error(f"--loss-rtol must be > 0, got {args.loss_rtol}")
    try:
        args.template_params = json.loads(args.template_params)
    except json.JSONDecodeError as err:
        parser.error(f"--template-params {args.template_params!r}: not JSON ({err})")
    if not isinstance(args.template_params, dict):
        parser.error(f"--template-params must be a JSON object, got {args.template_params!r}")
    if not args.dry_run:
        import torch

        available = torch.cuda.device_count()
        if available < max(args.gpus):
            parser.error(
                f"--gpus {max(args.gpus)} needs that many CUDA devices, {available} visible "
                "(use --dry-run on a machine without GPUs)"
            )
    return args


def prepare_work_dir(path: str | None) -> Path:
    """An empty directory for the runs: ``path`` (created; refused when it holds anything, so
    no earlier run's checkpoint is resumed by mistake) or a fresh temporary one."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="train_scaling_"))
    work = Path(path)
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise FileExistsError(f"--work-dir {work} exists and is not an empty directory")
    work.mkdir(parents=True, exist_ok=True)
    return work


def build_assets(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write the tokenizer (and, for GPU runs, the model config) into ``work``; returns the
    ``hazyzoo.train`` flags for the model and the data (shared by every launch)."""
    from hazyzoo.datasets_scripts.cookbook_templates import (
        build_word_tokenizer,
        default_vocabulary,
    )

    tokenizer = build_word_tokenizer(default_vocabulary(args.vocab_words))
    tok_dir = work / "tokenizer"
    tokenizer.save_pretrained(tok_dir)
    vocab_size = len(tokenizer)
    if args.dry_run:
        model_flags = ["--model", "tiny:hazyzoo_based", "--model-arg", f"vocab_size={vocab_size}"]
        model_desc = "tiny:hazyzoo_based"
    else:
        from hazyzoo import BasedConfig

        overrides: dict[str, Any] = dict(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        if not args.preset_vocab:
            overrides["vocab_size"] = vocab_size
        config = BasedConfig.from_preset(args.preset, **overrides)
        config_dir = work / "model_config"
        config.save_pretrained(config_dir)
        model_flags = ["--model", f"config:{config_dir}"]
        model_desc = f"{args.preset} (vocab_size {config.vocab_size}, random init)"
    dataset_args: dict[str, Any] = {
        "num_train_examples": args.steps * args.global_batch,
        "num_test_examples": 1,
        "vocab_size": args.vocab_words,
        "seed": args.seed,
    }
    if args.template_params:
        dataset_args["params"] = {args.dataset_config: args.template_params}
    data_flags = ["--dataset", "cookbook", "--dataset-config", args.dataset_config]
    for key, value in dataset_args.items():
        data_flags += ["--dataset-arg", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    data_flags += ["--prompt-column", "instruction", "--response-column", "response"]
    return {
        "tokenizer_dir": str(tok_dir),
        "tokenizer_size": vocab_size,
        "model": model_desc,
        "model_flags": model_flags,
        "dataset_args": dataset_args,
        "train_flags": [*model_flags, "--tokenizer", str(tok_dir), *data_flags],
    }


# --------------------------------------------------------------------------------------------
# launching


def _accelerate() -> list[str]:
    exe = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "accelerate.commands.launch"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_env(dry_run: bool) -> dict[str, str]:
    """The environment of every launch: NVLink multicast off, offline, this checkout first on
    ``PYTHONPATH``; on the dry run also the CPU (``ACCELERATE_USE_CPU``) and one thread."""
    env = {**os.environ, **NVLINK_MULTICAST_OFF}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
    )
    if dry_run:  # OMP_NUM_THREADS=1: the same float ops at 1 and 2 processes
        env.update(_DRY_ENV)
    return env


def launch_command(
    args: argparse.Namespace,
    assets: dict[str, Any],
    strategy: str,
    processes: int,
    output_dir: Path,
    cache_dir: Path,
    *,
    max_steps: int,
    save_steps: int,
    resume: str | None = None,
) -> list[str]:
    """``accelerate launch --config_file <shipped config> --num_processes N ... -m hazyzoo.train
    ...`` for one run at the global batch ``args.global_batch``."""
    from hazyzoo.train import accelerate_config

    if args.global_batch % processes:
        raise ValueError(f"global batch {args.global_batch} not divisible by {processes}")
    cmd = [*_accelerate(), "launch", "--config_file", accelerate_config(strategy)]
    cmd += ["--num_processes", str(processes), "--num_machines", "1"]
    cmd += ["--main_process_port", str(_free_port())]
    if args.dry_run:  # the configs' bf16 needs a GPU
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "hazyzoo.train", *assets["train_flags"]]
    cmd += ["--output-dir", str(output_dir), "--cache-dir", str(cache_dir)]
    cmd += ["--max-steps", str(max_steps), "--save-steps", str(save_steps)]
    cmd += ["--per-device-train-batch-size", str(args.global_batch // processes)]
    cmd += ["--learning-rate", f"{args.learning_rate:g}", "--logging-steps", "1"]
    cmd += ["--seed", str(args.seed), "--no-progress"]
    if args.bf16:
        cmd.append("--bf16")
    if strategy == "ddp":
        cmd += ["--training-arg", "ddp_find_unused_parameters=false"]
    if resume is not None:
        cmd += ["--resume", resume]
    return cmd


def run_launch(cmd: list[str], env: dict[str, str], log: Path, timeout: int) -> float:
    """Run one launch with its output in ``log``; its wall seconds. Raises ``RuntimeError``
    with the end of the log when it fails."""
    print(f"$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(
                cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"launch timed out after {timeout} s; log: {log}") from err
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"launch failed (exit {proc.returncode}); log {log}:\n{tail}")
    print(f"  done in {wall:.1f} s", flush=True)
    return wall


# --------------------------------------------------------------------------------------------
# reading a run


def step_losses(log_history: list[dict[str, Any]]) -> dict[int, float]:
    """``{step: loss}`` of the per-step log entries."""
    return {int(e["step"]): float(e["loss"]) for e in log_history if "loss" in e}


def steady_tokens_per_second(
    log_history: list[dict[str, Any]], *, warmup_steps: int, save_steps: int
) -> float | None:
    """Tokens per second over the steady steps of a run that was not resumed.

    A log entry's ``tokens_seen / train_tokens_per_second`` is the wall time since training
    began, so consecutive entries give each step's tokens and seconds. Steps ``<=
    warmup_steps`` (start-up, kernel warm-up) and each step that follows a checkpoint save
    (the save falls between the two log events) are left out; ``None`` when no step is left.
    """
    points = [
        (int(e["step"]), int(e["tokens_seen"]), float(e["train_tokens_per_second"]))
        for e in log_history
        if "loss" in e and "tokens_seen" in e and e.get("train_tokens_per_second")
    ]
    tokens = seconds = 0.0
    for (_, tok0, tps0), (step, tok1, tps1) in itertools.pairwise(points):
        if step <= warmup_steps or (save_steps and (step - 1) % save_steps == 0):
            continue
        dt = tok1 / tps1 - tok0 / tps0
        if dt > 0:
            tokens += tok1 - tok0
            seconds += dt
    return tokens / seconds if seconds > 0 else None


def read_run(output_dir: Path, stdout_log: Path) -> dict[str, Any]:
    """What a finished run wrote: ``train_results.json``, the log history, the parameter count
    (from the run's own log line)."""
    results = json.loads((output_dir / "train_results.json").read_text())
    state = json.loads((output_dir / "trainer_state.json").read_text())
    match = re.search(r"\((\w+), ([\d,]+) parameters\)", stdout_log.read_text(errors="replace"))
    return {
        "results": results,
        "log_history": state["log_history"],
        "parameters": int(match.group(2).replace(",", "")) if match else None,
    }


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def compare_curves(curve: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Max absolute and relative difference of two ``{step: loss}`` curves over their common
    steps (and at step 1, which tests the initialisation and the first batch alone)."""
    steps = sorted(set(curve) & set(reference))
    if not steps:
        raise ValueError("the two loss curves have no step in common")
    diffs = {s: abs(curve[s] - reference[s]) for s in steps}
    worst = max(steps, key=lambda s: _rel(curve[s], reference[s]))
    return {
        "steps_compared": len(steps),
        "max_abs_diff": max(diffs.values()),
        "max_rel_diff": _rel(curve[worst], reference[worst]),
        "worst_step": worst,
        "step1_abs_diff": diffs.get(1),
    }


# --------------------------------------------------------------------------------------------
# the from_pretrained check


def from_pretrained_loss(
    model_dir: Path, args: argparse.Namespace, assets: dict[str, Any], cache_dir: Path
) -> dict[str, Any]:
    """Load ``model_dir`` with ``AutoModelForCausalLM.from_pretrained`` on one device and
    compute the loss on the first ``min(global_batch, 8)`` training examples."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hazyzoo  # noqa: F401  (registers the zoo models with the Auto classes)
    from hazyzoo.train import CausalLMCollator, TrainConfig, load_raw_dataset, prepare_dataset

    device = torch.device("cuda:0" if torch.cuda.is_available() and not args.dry_run else "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(assets["tokenizer_dir"])
    config = TrainConfig(
        model=str(model_dir),
        dataset="cookbook",
        dataset_config=args.dataset_config,
        dataset_args=assets["dataset_args"],
        prompt_column="instruction",
        response_column="response",
        cache_dir=str(cache_dir),
    )
    n = min(args.global_batch, 8)
    data, _ = prepare_dataset(
        load_raw_dataset(config)["train"],
        tokenizer,
        config,
        vocab_size=model.get_input_embeddings().num_embeddings,
        limit=n,
    )
    batch = CausalLMCollator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    with torch.no_grad():
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss.item()
    return {
        "model_dir": str(model_dir),
        "class": type(model).__name__,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype),
        "examples": len(data),
        "loss": loss,
        "finite": math.isfinite(loss),
    }


# --------------------------------------------------------------------------------------------
# the pipeline


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every launch and check; returns the results (what ``--out`` holds)."""
    work = prepare_work_dir(args.work_dir)
    cache = work / "datasets_cache"
    env = launch_env(args.dry_run)
    assets = build_assets(args, work)
    print(
        f"train_scaling: {'DRY RUN (CPU) ' if args.dry_run else ''}model {assets['model']}, "
        f"tokenizer {assets['tokenizer_size']} tokens, strategies {args.strategies}, processes "
        f"{args.gpus}, global batch {args.global_batch}, {args.steps} steps, checkpoint every "
        f"{args.save_steps}, work dir {work}",
        flush=True,
    )
    commands: list[str] = []
    runs: dict[str, dict[str, Any]] = {}
    resume_strategy = "fsdp" if "fsdp" in args.strategies else args.strategies[0]
    source_n = max(args.gpus)

    def launch(name: str, cmd: list[str]) -> float:
        commands.append(shlex.join(cmd))
        return run_launch(cmd, env, work / f"{name}.log", args.timeout)

    for strategy in args.strategies:
        for n in args.gpus:
            name = f"{strategy}_n{n}"
            out = work / name
            cmd = launch_command(
                args,
                assets,
                strategy,
                n,
                out,
                cache,
                max_steps=args.steps,
                save_steps=args.save_steps,
            )
            wall = launch(name, cmd)
            run = read_run(out, work / f"{name}.log")
            history = run["log_history"]
            results = run["results"]
            runs[name] = {
                "strategy": strategy,
                "processes": n,
                "per_device_batch": args.global_batch // n,
                "world_size": results["world_size"],
                "global_step": results["global_step"],
                "parameters": run["parameters"],
                "tokens_seen": results["tokens_seen"],
                "tokens_per_second": steady_tokens_per_second(
                    history, warmup_steps=args.warmup_steps, save_steps=args.save_steps
                ),
                "tokens_per_second_overall": next(
                    (e["train_tokens_per_second"] for e in reversed(history) if "loss" in e),
                    None,
                ),
                "train_runtime_s": results["metrics"].get("train_runtime"),
                "launch_wall_s": round(wall, 2),
                "peak_memory_gib": results.get("peak_memory_gib"),
                "losses": step_losses(history),
                "output_dir": str(out),
            }
            keep = args.keep_checkpoints or (strategy == resume_strategy and n == source_n)
            if not keep:
                for checkpoint in out.glob("checkpoint-*"):
                    shutil.rmtree(checkpoint)

    # (a) scaling and loss agreement, per strategy, against the smallest process count
    base_n = min(args.gpus)
    scaling: dict[str, Any] = {}
    for strategy in args.strategies:
        base = runs[f"{strategy}_n{base_n}"]
        rows = {}
        for n in args.gpus:
            run = runs[f"{strategy}_n{n}"]
            tps, tps_base = run["tokens_per_second"], base["tokens_per_second"]
            row: dict[str, Any] = {
                "tokens_per_second": tps,
                "scaling_efficiency": (
                    tps * base_n / (n * tps_base) if tps and tps_base and base_n == 1 else None
                ),
                "peak_memory_gib": run["peak_memory_gib"],
                "global_step": run["global_step"],
            }
            if n != base_n:
                agreement = compare_curves(run["losses"], base["losses"])
                agreement["within_bound"] = agreement["max_rel_diff"] <= args.loss_rtol
                row["loss_vs_base"] = agreement
            rows[n] = row
        scaling[strategy] = rows
    noise = None
    if len(args.strategies) > 1:
        a, b = (runs[f"{s}_n{base_n}"]["losses"] for s in args.strategies[:2])
        noise = {"between": [f"{s}_n{base_n}" for s in args.strategies[:2]]}
        noise.update(compare_curves(a, b))

    # (b) resume from the source run's checkpoint at --save-steps on every process count
    source = runs[f"{resume_strategy}_n{source_n}"]
    checkpoint = Path(source["output_dir"]) / f"checkpoint-{args.save_steps}"
    next_step = args.save_steps + 1
    reference = source["losses"][next_step]
    resume: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "strategy": resume_strategy,
        "written_by_processes": source_n,
        "step": next_step,
        "uninterrupted_loss": reference,
        "runs": {},
    }
    for n in args.gpus:
        name = f"resume_{resume_strategy}_n{n}"
        out = work / name
        cmd = launch_command(
            args,
            assets,
            resume_strategy,
            n,
            out,
            cache,
            max_steps=next_step,
            save_steps=0,
            resume=str(checkpoint),
        )
        launch(name, cmd)
        run = read_run(out, work / f"{name}.log")
        loss = step_losses(run["log_history"]).get(next_step)
        if run["results"]["global_step"] != next_step or loss is None:
            raise RuntimeError(
                f"{name}: expected one logged step {next_step}, got global_step "
                f"{run['results']['global_step']} and loss {loss}"
            )
        resume["runs"][n] = {
            "resumed_from": run["results"]["resumed_from"],
            "loss": loss,
            "abs_diff": abs(loss - reference),
            "rel_diff": _rel(loss, reference),
            "within_bound": _rel(loss, reference) <= args.loss_rtol,
        }

    # (c) the final model of the source run on one device
    loaded = from_pretrained_loss(Path(source["output_dir"]), args, assets, cache)

    import torch
    import transformers

    return {
        "dry_run": args.dry_run,
        "bf16": args.bf16,
        "loss_rtol": args.loss_rtol,
        "model": assets["model"],
        "tokenizer_size": assets["tokenizer_size"],
        "dataset": {"name": "cookbook", "config": args.dataset_config, **assets["dataset_args"]},
        "global_batch": args.global_batch,
        "steps": args.steps,
        "save_steps": args.save_steps,
        "seed": args.seed,
        "learning_rate": args.learning_rate,
        "warmup_steps_excluded": args.warmup_steps,
        "env": {k: env[k] for k in (*NVLINK_MULTICAST_OFF, *_DRY_ENV) if k in env},
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gpus": [] if args.dry_run else _gpu_names(),
        },
        "work_dir": str(work),
        "commands": commands,
        "runs": runs,
        "scaling": scaling,
        "bf16_noise_reference": noise,
        "resume": resume,
        "from_pretrained": loaded,
    }


def _gpu_names() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _fmt(value: Any, spec: str) -> str:
    width = re.match(r"\d*", spec).group()
    return format("-", f">{width}") if value is None else format(value, spec)


def print_report(report: dict[str, Any]) -> None:
    """The table: one row per run, then the resume and from_pretrained checks."""
    rtol = report["loss_rtol"]
    print(
        f"\n{'run':<10} {'tok/s':>12} {'eff':>6} {'peak GiB':>9} {'max|dloss|':>11} "
        f"{'max rel':>9} ok(rtol {rtol:g})"
    )
    for strategy, rows in report["scaling"].items():
        for n, row in rows.items():
            agreement = row.get("loss_vs_base") or {}
            ok = agreement.get("within_bound")
            print(
                f"{strategy + '_n' + str(n):<10} {_fmt(row['tokens_per_second'], '12,.0f')} "
                f"{_fmt(row['scaling_efficiency'], '6.1%')} "
                f"{_fmt(row['peak_memory_gib'], '9.2f')} "
                f"{_fmt(agreement.get('max_abs_diff'), '11.2e')} "
                f"{_fmt(agreement.get('max_rel_diff'), '9.2e')} "
                f"{'-' if ok is None else ('yes' if ok else 'NO')}"
            )
    noise = report["bf16_noise_reference"]
    if noise:
        print(
            f"numerics reference {' vs '.join(noise['between'])}: max |dloss| "
            f"{noise['max_abs_diff']:.2e} (rel {noise['max_rel_diff']:.2e})"
        )
    resume = report["resume"]
    print(
        f"resume from {resume['strategy']} x{resume['written_by_processes']} checkpoint at step "
        f"{resume['step'] - 1}: uninterrupted loss at step {resume['step']} "
        f"{resume['uninterrupted_loss']:.6f}"
    )
    for n, row in resume["runs"].items():
        print(
            f"  on {n} process(es): {row['loss']:.6f} (|d| {row['abs_diff']:.2e}, rel "
            f"{row['rel_diff']:.2e}) {'ok' if row['within_bound'] else 'NOT within bound'}"
        )
    loaded = report["from_pretrained"]
    print(
        f"from_pretrained {loaded['class']} on {loaded['device']} ({loaded['dtype']}): loss "
        f"{loaded['loss']:.4f} on {loaded['examples']} examples"
        f"{'' if loaded['finite'] else ' NOT FINITE'}"
    )
    print("\nlaunch commands:")
    for cmd in report["commands"]:
        print(f"  {cmd}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a check fails (the JSON is written either way)."""
    args = parse_args(argv)
    start = time.perf_counter()
    report = run_all(args)
    report["total_wall_s"] = round(time.perf_counter() - start, 1)
    if args.work_dir is None:  # a temporary directory: the numbers are in the report
        shutil.rmtree(report["work_dir"], ignore_errors=True)
        report["work_dir"] = None
    print_report(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    failed = [
        f"{s} x{n} loss curve"
        for s, rows in report["scaling"].items()
        for n, row in rows.items()
        if row.get("loss_vs_base") and not row["loss_vs_base"]["within_bound"]
    ]
    failed += [
        f"resume on {n}" for n, r in report["resume"]["runs"].items() if not r["within_bound"]
    ]
    if not report["from_pretrained"]["finite"]:
        failed.append("from_pretrained loss")
    print(f"total {report['total_wall_s']} s; " + (f"FAILED: {failed}" if failed else "all ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
