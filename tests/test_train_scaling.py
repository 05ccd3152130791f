"""benchmarks/train_scaling.py --dry-run: DDP on 1 and 2 CPU processes, resume, from_pretrained.

What is expected, and why. Both runs use one global batch (8 examples a step: 8 on one process,
4 + 4 on two), one seed and one data order: Trainer's sampler permutes the data set the same
way at every world size and accelerate hands process r the r-th per-device slice of each global
batch, so a step sees the same 8 examples whatever the process count. Every ``copy_span``
example has the same length (36 tokens), so nothing pads differently, and DDP averages the two
processes' gradients, which (equal target counts on both) is the one-process gradient of the
whole batch. The losses then
differ only by float32 rounding (other reduction order: two batches of 4, an all-reduce): about
1e-7 relative was seen (max over the 6 steps), and 1e-5 relative is asserted. A run that
breaks the equivalence fails by far: giving each of the 2 processes the whole global batch as
its per-device batch moved the curve by 1.8e-2 relative; another data order or unsynchronised
gradients change the examples or the update behind each step likewise. What is not expected:
bit-identical curves (the reduction order differs), nor anything about tokens/s (two processes
share two cores).

The resumed runs start from the two-process checkpoint at step 3 and take step 4: the weights
come from the checkpoint and the batch from the same data order, so the loss matches the
uninterrupted run's step 4 within the same float32 tolerance, on 1 and on 2 processes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

SCRIPT = REPO_ROOT / "benchmarks" / "train_scaling.py"
NVLINK_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
# float32, same examples per step, different reduction order (see the module docstring)
LOSS_RTOL = 1e-5


@pytest.mark.slow  # four accelerate launches, about a minute on 2 cores
def test_dry_run_ddp_curves_agree_resume_matches_and_model_loads(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TRITON_INTERPRET", None)  # the launched CPU runs use the PyTorch references
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)]
    cmd += ["--work-dir", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())

    assert report["dry_run"] is True and report["bf16"] is False
    steps, save = report["steps"], report["save_steps"]
    runs = report["runs"]
    assert sorted(runs) == ["ddp_n1", "ddp_n2"]
    one, two = runs["ddp_n1"], runs["ddp_n2"]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert (one["per_device_batch"], two["per_device_batch"]) == (8, 4)
    # both process counts ran the same steps, one logged loss per step
    assert one["global_step"] == two["global_step"] == steps
    assert (
        sorted(map(int, one["losses"])) == sorted(map(int, two["losses"])) == [*range(1, steps + 1)]
    )
    # the same global batch: the same tokens were seen (36-token examples, 8 a step)
    assert one["tokens_seen"] == two["tokens_seen"] == steps * 8 * 36
    # CPU: no GPU memory figure, but the field is there
    assert one["peak_memory_gib"] is None and two["peak_memory_gib"] is None

    for step, loss in one["losses"].items():
        assert two["losses"][step] == pytest.approx(loss, rel=LOSS_RTOL), step
    # the curve moved (else agreement would be trivial)
    assert one["losses"][str(steps)] < one["losses"]["1"] - 0.05
    agreement = report["scaling"]["ddp"]["2"]["loss_vs_base"]
    assert agreement["steps_compared"] == steps and agreement["within_bound"] is True
    assert agreement["max_rel_diff"] <= LOSS_RTOL

    resume = report["resume"]
    assert resume["step"] == save + 1 and resume["checkpoint"].endswith(f"checkpoint-{save}")
    assert resume["uninterrupted_loss"] == two["losses"][str(save + 1)]
    assert sorted(resume["runs"]) == ["1", "2"]
    for n, row in resume["runs"].items():
        assert row["resumed_from"].endswith(f"checkpoint-{save}"), n
        assert row["loss"] == pytest.approx(resume["uninterrupted_loss"], rel=LOSS_RTOL), n

    loaded = report["from_pretrained"]
    assert loaded["class"] == "BasedForCausalLM" and loaded["device"] == "cpu"
    assert loaded["finite"] is True and math.isfinite(loaded["loss"]) and loaded["loss"] > 0
    # every launch is recorded, with the environment it was given
    assert len(report["commands"]) == 4
    assert all("accelerate" in c and "--config_file" in c for c in report["commands"])
    assert report["env"] == {**NVLINK_OFF, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}


def _script():
    spec = importlib.util.spec_from_file_location("train_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_launch_environment_turns_nvlink_multicast_off(monkeypatch):
    script = _script()
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")  # a caller's setting must not leak through
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    for dry_run in (False, True):
        env = script.launch_env(dry_run)
        assert {k: env.get(k) for k in NVLINK_OFF} == NVLINK_OFF, dry_run
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)
        assert ("ACCELERATE_USE_CPU" in env) is dry_run


def test_bad_flags_are_refused_before_any_launch(tmp_path):
    for extra, message in (
        (["--global-batch", "9"], "not divisible by the process count"),
        (["--strategies", "fsdp"], "FSDP config needs GPUs"),
        (["--save-steps", "6"], "must be < --steps"),
    ):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--dry-run", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
