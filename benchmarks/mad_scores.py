"""MAD scores on GPUs: the MAD protocol (:func:`hazyzoo.evaluation.mad.run_mad`) for several
architectures, its training runs spread over worker processes, several per GPU.

Every architecture x task setting x (lr, weight decay) point is one job; each job is a
``run_mad`` call for that single point in a worker process that sees one GPU
(``CUDA_VISIBLE_DEVICES``, set before CUDA starts), so ``--jobs-per-gpu`` trainings share each
GPU concurrently (MAD's models are far too small to fill an H200 alone). The task instances are
generated once, in the parent, with the numpy generators (no ``datasets`` needed; the same
instances as the ``mad`` builder) and cached as ``.npz`` under ``--data-cache-dir``. Each
finished run is appended to ``OUT/runs.jsonl``; ``--resume`` skips the runs already there (the
full protocol is many hours of GPU time: run it in pieces). At the end (and with
``--summarize-only`` from ``runs.jsonl`` alone) it prints the table and writes
``mad_results.{json,txt,png}``.

    python benchmarks/mad_scores.py --output-dir mad_out --gpus 0 --jobs-per-gpu 6 \\
        --layers attention=mA-Sg-mA-Sg hyena=H-Sg-H-Sg hybrid=H-Sg-mA-Sg   # the paper's protocol
    python benchmarks/mad_scores.py --quick --output-dir mad_quick       # hazyzoo eval mad's
    python benchmarks/mad_scores.py --dry-run --output-dir /tmp/mad_dry  # tiny, CPU: checks it

Every flag of ``hazyzoo eval mad`` is accepted (``--tasks``, ``--all-settings``, ``--lrs``,
``--wds``, ``--epochs``, ...); here the default preset is the paper's (``--quick`` for the
reduced one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

RUNS_JSONL = "runs.jsonl"


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``hazyzoo eval mad`` plus the parallel-run ones."""
    from hazyzoo.evaluation.mad import add_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(full=True, output_dir="mad_scores")
    parser.add_argument(
        "--quick", action="store_true", help="the reduced preset of `hazyzoo eval mad`"
    )
    parser.add_argument(
        "--gpus",
        default=None,
        help="comma-separated GPU ids (default: every visible GPU; none: CPU workers)",
    )
    parser.add_argument(
        "--jobs-per-gpu", type=int, default=4, help="concurrent trainings per GPU (default 4)"
    )
    parser.add_argument(
        "--cpu-workers", type=int, default=1, help="workers when there is no GPU (default 1)"
    )
    parser.add_argument(
        "--data-cache-dir", default=None, metavar="DIR", help="default: OUT/data (npz files)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="skip the runs already in OUT/runs.jsonl"
    )
    parser.add_argument(
        "--summarize-only", action="store_true", help="no training: score OUT/runs.jsonl"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny sizes on the CPU (2 architectures, 2 tasks, 2 workers): checks the script",
    )
    return parser


def _gpu_ids(spec: str | None) -> list[str]:
    import torch

    if spec is not None:
        return [g.strip() for g in spec.split(",") if g.strip()]
    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


_WORKER: dict[str, Any] = {}


def _init_worker(slots: Any, threads: int) -> None:
    """Pin this worker to one GPU (before CUDA starts) and bound its CPU threads."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(max(1, threads))
    _WORKER["gpu"] = gpu


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One architecture x setting x grid point: ``run_mad`` for that point alone."""
    from hazyzoo.evaluation.mad import run_mad

    start = time.perf_counter()
    results = run_mad(
        {job["architecture"]: job["layers"]},
        [job["setting"]],
        lrs=[job["lr"]],
        wds=[job["weight_decay"]],
        progress=False,
        data_source="numpy",
        **job["run_kwargs"],
    )
    return {
        "job": job["key"],
        "gpu": _WORKER.get("gpu"),
        "runs": [r.to_dict() for r in results.runs],
        "protocol": results.protocol,
        "wall_s": time.perf_counter() - start,
    }


def _key(architecture: str, setting: str, lr: float, wd: float) -> str:
    return f"{architecture}|{setting}|{lr!r}|{wd!r}"


def _prepare_data(settings: list, knobs: dict, cache_dir: Path, seed: int | None) -> None:
    """Generate (or find cached) every setting's instances before the workers start."""
    from hazyzoo.evaluation.mad import load_setting_data

    for s in settings:
        start = time.perf_counter()
        data = load_setting_data(
            s,
            num_train_examples=knobs["num_train_examples"],
            num_test_examples=knobs["num_test_examples"],
            source="numpy",
            cache_dir=cache_dir,
            seed=seed,
        )
        print(
            f"data {s.name}: {len(data.train_inputs)} train / {len(data.test_inputs)} test, "
            f"length {data.train_inputs.shape[1]} ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the jobs, then print and write the results; returns the exit status."""
    args = build_parser().parse_args(argv)
    from hazyzoo.evaluation.mad import (
        EARLY_STOP_THRESHOLD,
        MadRun,
        parse_architectures,
        resolve_knobs,
        resolve_settings,
        results_from_runs,
    )

    if args.dry_run:
        args.quick, args.gpus, args.cpu_workers = True, "", 2
        args.layers = args.layers or ["mA-Sg", "H-Sg"]
        args.tasks = args.tasks or ["compression", "memorization"]
        args.epochs = args.epochs or 1
        args.num_train_examples = args.num_train_examples or 32
        args.num_test_examples = args.num_test_examples or 16
        args.hidden_size = args.hidden_size or 32
        args.batch_size = args.batch_size or 16
        args.device = "cpu"
    preset = "quick" if args.quick else "full"
    n_train = args.num_train_examples if args.num_train_examples is not None else "preset"
    knobs = resolve_knobs(
        preset,
        lrs=args.lrs,
        wds=args.wds,
        epochs=args.epochs,
        num_train_examples=n_train,
        num_test_examples=args.num_test_examples,
        batch_size=args.batch_size,
        hidden_size=args.hidden_size,
    )
    from hazyzoo.evaluation.mad import DEFAULT_ARCHITECTURES

    archs = parse_architectures(args.layers if args.layers is not None else DEFAULT_ARCHITECTURES)
    settings = resolve_settings(args.tasks, all_settings=args.all_settings)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / RUNS_JSONL
    if runs_file.exists() and not (args.resume or args.summarize_only or args.overwrite):
        raise SystemExit(f"{runs_file} exists: pass --resume to continue it or --overwrite")
    if args.overwrite and not (args.resume or args.summarize_only) and runs_file.exists():
        runs_file.unlink()
    done: dict[str, dict[str, Any]] = {}
    protocol: dict[str, Any] = {}
    if runs_file.exists():
        for line in runs_file.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["job"]] = record
                protocol = protocol or record.get("protocol", {})

    run_kwargs = dict(
        preset=preset,
        epochs=knobs["epochs"],
        num_train_examples=knobs["num_train_examples"],
        num_test_examples=knobs["num_test_examples"],
        batch_size=knobs["batch_size"],
        hidden_size=knobs["hidden_size"],
        device=args.device,
        seed=args.seed,
        precision=args.precision,
        early_stop_threshold=None if args.no_early_stop else EARLY_STOP_THRESHOLD,
        data_seed=args.data_seed,
        data_cache_dir=str(Path(args.data_cache_dir or out / "data").resolve()),
    )
    jobs = []
    for s in settings:
        for arch, layers in archs.items():
            for lr in knobs["lrs"]:
                for wd in knobs["wds"]:
                    key = _key(arch, s.name, lr, wd)
                    if key in done:
                        continue
                    jobs.append(
                        dict(
                            key=key,
                            architecture=arch,
                            layers=layers,
                            setting=s.name,
                            lr=lr,
                            weight_decay=wd,
                            cost=s.seq_len * (knobs["num_train_examples"] or 12800),
                            run_kwargs=run_kwargs,
                        )
                    )
    jobs.sort(key=lambda j: -j["cost"])  # longest first: the pool drains evenly
    total = len(jobs) + len(done)
    print(
        f"MAD ({preset}): {len(archs)} architectures x {len(settings)} settings x "
        f"{len(knobs['lrs'])} lr x {len(knobs['wds'])} wd = {total} runs; {len(done)} done, "
        f"{len(jobs)} to run",
        flush=True,
    )
    start = time.perf_counter()
    if jobs and not args.summarize_only:
        _prepare_data(settings, knobs, Path(run_kwargs["data_cache_dir"]), args.data_seed)
        _run_pool(args, jobs, runs_file, done, total)
    runs = [MadRun.from_dict(r) for record in done.values() for r in record["runs"]]
    if done and not protocol:
        protocol = next(iter(done.values())).get("protocol", {})
    protocol = dict(protocol)
    protocol.update(lrs=knobs["lrs"], wds=knobs["wds"], jobs_per_gpu=args.jobs_per_gpu)
    sizes: dict[str, Any] = {}
    for record in done.values():
        sizes.update(record.get("protocol", {}).get("split_sizes", {}))
    protocol["split_sizes"] = sizes
    results = results_from_runs(runs, archs, settings, protocol=protocol)
    results.wall_time_s = time.perf_counter() - start
    print(results.table())
    for path in results.write(out):
        print(f"wrote {path}")
    missing = total - len(done)
    if missing:
        print(f"{missing} runs not done yet (rerun with --resume)")
    return 0


def _run_pool(
    args: argparse.Namespace,
    jobs: list[dict[str, Any]],
    runs_file: Path,
    done: dict[str, dict[str, Any]],
    total: int,
) -> None:
    import multiprocessing as mp

    gpus = _gpu_ids(args.gpus)
    if args.jobs_per_gpu < 1 or args.cpu_workers < 1:
        raise SystemExit("--jobs-per-gpu and --cpu-workers must be >= 1")
    slots_list: list[str | None] = (
        [g for g in gpus for _ in range(args.jobs_per_gpu)] if gpus else [None] * args.cpu_workers
    )
    workers = min(len(slots_list), len(jobs))
    context = mp.get_context("spawn")
    slots = context.Manager().Queue()
    for slot in slots_list[:workers]:
        slots.put(slot)
    threads = max(1, (os.cpu_count() or 1) // workers)
    where = f"GPUs {','.join(gpus)} x {args.jobs_per_gpu}" if gpus else "CPU"
    print(f"{workers} workers ({where}), {threads} CPU threads each", flush=True)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(slots, threads),
    ) as pool:
        pending = {pool.submit(_run_job, job) for job in jobs}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                record = future.result()
                done[record["job"]] = record
                with runs_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                run = record["runs"][0]
                print(
                    f"[{len(done)}/{total}] {run['architecture']} {run['setting']} "
                    f"lr={run['lr']:g} wd={run['weight_decay']:g}: acc {run['accuracy']:.3f} "
                    f"({run['epochs_run']} epochs, {run['train_time_s']:.0f} s, "
                    f"gpu {record['gpu']})",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
