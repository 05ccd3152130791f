"""Trainer under `accelerate launch` with two real (gloo, CPU) processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from transformers import Trainer, TrainingArguments
    import hazyzoo
    from hazyzoo import BasedConfig, BasedForCausalLM

    out = sys.argv[1]
    torch.manual_seed(0)
    model = BasedForCausalLM(BasedConfig.tiny())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 61, (64, 16), generator=g)
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=out, max_steps=6, per_device_train_batch_size=4, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    result = trainer.train()
    state = trainer.state
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"world": trainer.args.world_size,
                   "loss": result.training_loss, "steps": state.global_step}, f)
    trainer.save_model(os.path.join(out, "final"))
    """
)


@pytest.mark.slow  # tests/test_train.py runs hazyzoo.train under a two-process launch by default
def test_trainer_runs_under_accelerate_launch_with_two_processes(tmp_path):
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if launcher is None:
        pytest.skip("accelerate's launcher is not installed next to this Python")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("TRITON_INTERPRET", None)
    with socket.socket() as sock:  # a free port, so parallel runs do not collide on 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--main_process_port", str(port)]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for info in ranks:
        assert info["world"] == 2 and info["steps"] == 6
        assert 0 < info["loss"] < 10
    from transformers import AutoModelForCausalLM

    import hazyzoo

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert isinstance(model, hazyzoo.BasedForCausalLM)
