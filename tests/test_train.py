"""hazyzoo.train: fine-tuning on Trainer, in-process, resumed, with LoRA, under accelerate."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from hazyzoo import BasedConfig
from hazyzoo.train import (
    IGNORE_INDEX,
    CausalLMCollator,
    TrainConfig,
    parse_key_values,
    tokenize_batch,
    train,
)
from tests.conftest import REPO_ROOT

pytest.importorskip("datasets")

WORDS = [f"w{i}" for i in range(40)]
SPECIALS = ["[PAD]", "[UNK]", "[EOS]", "Q:", "A:"]


def _tokenizer(directory, extra_words: int = 0):
    """A whitespace word-level tokenizer: 5 specials + 40 words (+ extra) = 45 <= 61 tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + WORDS + [f"x{i}" for i in range(extra_words)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    fast.save_pretrained(directory)
    return fast


def _pairs(path, n: int = 64, seed: int = 0, words: int = 3) -> None:
    """Prompt "Q: a b c A:" -> response "c b a" (reverse the words): learnable by a tiny LM."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            a = rng.sample(WORDS, words)
            row = {"prompt": "Q: " + " ".join(a) + " A:", "response": " ".join(reversed(a))}
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from hazyzoo.datasets_scripts.cookbook_templates import build_word_tokenizer, default_vocabulary

    root = tmp_path_factory.mktemp("train_assets")
    assert len(SPECIALS) + len(WORDS) <= BasedConfig.tiny().vocab_size
    _tokenizer(root / "tok")
    _pairs(root / "pairs.jsonl")
    build_word_tokenizer(default_vocabulary(COOKBOOK_VOCAB)).save_pretrained(root / "cookbook_tok")
    return root


COOKBOOK_VOCAB = 32
# copy_span over 32 words: every example is 35 tokens, + eos.
COOKBOOK_TOKENS = 36


def _cookbook(assets, num_train_examples: int = 64) -> dict:
    """TrainConfig fields for the Cookbook builder's copy_span config with its word tokenizer."""
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(assets / "cookbook_tok"))
    return dict(
        dataset="cookbook",
        dataset_config="copy_span",
        dataset_args={
            "num_train_examples": num_train_examples,
            "num_test_examples": 1,
            "vocab_size": COOKBOOK_VOCAB,
        },
        tokenizer=str(assets / "cookbook_tok"),
        model_args={"vocab_size": vocab_size},
        prompt_column="instruction",
        response_column="response",
        learning_rate=3e-3,
    )


def _config(assets, out, **overrides) -> TrainConfig:
    values = dict(
        model="tiny:hazyzoo_based",
        tokenizer=str(assets / "tok"),
        dataset=str(assets / "pairs.jsonl"),
        prompt_column="prompt",
        response_column="response",
        output_dir=str(out),
        cache_dir=str(out.parent / f"{out.name}_cache"),
        max_steps=30,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=0,
        seed=0,
        disable_tqdm=True,
    )
    return TrainConfig(**{**values, **overrides})


def _losses(history) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in history if "loss" in e}


# --- tokenize / collate --------------------------------------------------------------------


def test_prompt_labels_are_masked_and_eos_appended(assets):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "tok")
    batch = {"prompt": ["Q: w1 w2 A:", "Q: w3 A:"], "response": ["w2 w1", "w3"]}
    out = tokenize_batch(
        batch, tok, mode="prompt_response", prompt_column="prompt", response_column="response"
    )
    eos = tok.eos_token_id
    ids = tok.convert_tokens_to_ids
    assert out["input_ids"][0] == [*ids(["Q:", "w1", "w2", "A:", "w2", "w1"]), eos]
    assert out["labels"][0] == [IGNORE_INDEX] * 4 + ids(["w2", "w1"]) + [eos]
    assert out["labels"][1] == [IGNORE_INDEX] * 3 + ids(["w3"]) + [eos]
    assert out["num_tokens"] == [7, 5] and out["num_targets"] == [3, 2]

    cut = tokenize_batch(
        batch,
        tok,
        mode="prompt_response",
        prompt_column="prompt",
        response_column="response",
        max_length=4,
    )
    # The first prompt fills max_length: no target left (prepare_dataset drops and counts it).
    assert cut["input_ids"][0] == ids(["Q:", "w1", "w2", "A:"]) and cut["num_targets"][0] == 0
    assert cut["num_tokens"] == [7, 5] and cut["labels"][1] == [IGNORE_INDEX] * 3 + ids(["w3"])

    text = tokenize_batch({"t": ["w1 w2"]}, tok, mode="text", text_column="t")
    assert text["input_ids"] == [[*ids(["w1", "w2"]), eos]] == text["labels"]


def test_collator_pads_right_with_masked_labels():
    collate = CausalLMCollator(pad_token_id=0)
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pretokenized_ids_outside_the_vocabulary_are_an_error():
    with pytest.raises(ValueError, match=r"token id 70, outside .*\[0, 61\)"):
        tokenize_batch({"input_ids": [[1, 70]]}, None, mode="pretokenized", vocab_size=61)
    out = tokenize_batch({"input_ids": [[1, 2, 3]]}, None, mode="pretokenized", max_length=2)
    assert out["labels"] == [[1, 2]] and out["num_tokens"] == [3]


def test_peak_memory_is_none_off_cuda():
    from hazyzoo.train import peak_memory_gib

    assert peak_memory_gib("cpu") is None and peak_memory_gib(torch.device("cpu")) is None


def test_parse_key_values():
    assert parse_key_values(["a=1", "b=x", "c=[1, 2]", "d=true"], "--f") == {
        "a": 1,
        "b": "x",
        "c": [1, 2],
        "d": True,
    }
    for bad in (["novalue"], ["=3"], ["a=1", "a=2"]):
        with pytest.raises(ValueError, match="--f"):
            parse_key_values(bad, "--f")


# --- (a) in-process training ---------------------------------------------------------------


def test_train_loss_falls_reports_truncation_and_saves(assets, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    # A prompt is 5 tokens, a response 3 + eos: max_length 8 cuts the eos of every example.
    result = train(_config(assets, out, max_length=8, max_steps=60))
    printed = capsys.readouterr().out
    assert "TRUNCATED 64 examples to --max-length 8 (64 tokens cut" in printed
    report = result["data"]["train"]
    assert report["truncated_examples"] == 64 and report["truncated_tokens"] == 64
    assert report["dropped_examples_without_targets"] == 0

    losses = list(_losses(result["log_history"]).values())
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    logs = [e for e in result["log_history"] if "loss" in e]
    assert all("learning_rate" in e and "train_tokens_per_second" in e for e in logs)
    # 8 examples of 8 (non-pad) tokens per step.
    assert [e["tokens_seen"] for e in logs[:3]] == [64, 128, 192]
    assert result["tokens_seen"] == 60 * 64

    saved = json.loads((out / "train_results.json").read_text())
    assert saved["global_step"] == 60 and saved["data"]["train"]["truncated_examples"] == 64
    assert saved["tokens_seen"] == 60 * 64 and "train_loss" in saved["metrics"]
    # GPU memory peak: recorded on CUDA, None (not 0, not missing) on a CPU-only run
    if torch.cuda.is_available():
        assert saved["peak_memory_gib"] > 0
    else:
        assert "peak_memory_gib" in saved and saved["peak_memory_gib"] is None
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "BasedForCausalLM"
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    trained = result["model"].eval()
    batch = torch.tensor([[3, 10, 11, 12, 4]])
    with torch.no_grad():
        assert torch.equal(model(batch).logits, trained(batch).logits)
    assert len(AutoTokenizer.from_pretrained(out)) == len(SPECIALS) + len(WORDS)


def test_prompt_filling_max_length_is_dropped_and_counted(assets, tmp_path):
    data = tmp_path / "mixed.jsonl"
    _pairs(data, n=15)
    with open(data, "a") as f:  # a 10-token prompt: nothing of its response fits in 8 tokens
        f.write(json.dumps({"prompt": "Q: " + " ".join(WORDS[:8]) + " A:", "response": "w1"}))
    result = train(_config(assets, tmp_path / "run", dataset=str(data), max_length=8, max_steps=2))
    report = result["data"]["train"]
    assert report["examples"] == 16 and report["kept_examples"] == 15
    assert report["dropped_examples_without_targets"] == 1
    assert report["truncated_examples"] == 16
    with pytest.raises(ValueError, match="no example has a token to predict"):
        train(_config(assets, tmp_path / "run5", max_length=5, max_steps=2))


# --- (b) checkpoint + resume ---------------------------------------------------------------


def test_resume_from_checkpoint_reproduces_the_loss_trajectory(assets, tmp_path):
    steps, every = 12, 4
    cookbook = _cookbook(assets)
    full = train(_config(assets, tmp_path / "full", max_steps=steps, **cookbook))
    out = tmp_path / "killed"
    first = train(_config(assets, out, max_steps=steps, save_steps=every, **cookbook))
    # As if killed right after the first checkpoint: later checkpoints never happened.
    for k in range(2 * every, steps + 1, every):
        shutil.rmtree(out / f"checkpoint-{k}")
    resumed = train(
        _config(assets, out, max_steps=steps, save_steps=every, resume="last", **cookbook)
    )
    assert resumed["resumed_from"].endswith(f"checkpoint-{every}")
    reference, again = _losses(full["log_history"]), _losses(resumed["log_history"])
    assert sorted(again) == list(range(1, steps + 1))  # steps 1..k come from the checkpoint
    # Tolerance: exact up to 1e-6 relative (same CPU, same ops; logged losses are rounded).
    for step in range(1, steps + 1):
        assert again[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step
    assert _losses(first["log_history"]) == pytest.approx(reference, rel=1e-6)
    assert resumed["tokens_seen"] == full["tokens_seen"]


# --- (c) LoRA ------------------------------------------------------------------------------


def test_lora_adapter_reloads_onto_a_fresh_base_with_identical_logits(assets, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from hazyzoo import BASED_LORA_TARGET_MODULES

    out = tmp_path / "lora"
    cookbook = {**_cookbook(assets), "learning_rate": 2e-2}
    result = train(_config(assets, out, max_steps=10, lora=True, lora_r=4, **cookbook))
    losses = list(_losses(result["log_history"]).values())
    assert losses[-1] < losses[0]
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == sorted(BASED_LORA_TARGET_MODULES)
    assert adapter_config["base_model_name_or_path"] == str((out / "base_model").resolve())
    base = AutoModelForCausalLM.from_pretrained(out / "base_model")
    reloaded = peft.PeftModel.from_pretrained(base, out).eval()
    trained = result["model"].eval()
    batch = torch.tensor([[3, 10, 11, 12, 4, 9, 8]])
    with torch.no_grad():
        want, got = trained(input_ids=batch).logits, reloaded(input_ids=batch).logits
    assert torch.equal(want, got)
    # and the adapter changed the model
    fresh = AutoModelForCausalLM.from_pretrained(out / "base_model").eval()
    with torch.no_grad():
        assert not torch.equal(fresh(batch).logits, want)


# --- (d) two processes under accelerate launch -------------------------------------------


def test_accelerate_launch_two_processes(assets, tmp_path):
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if launcher is None:
        pytest.skip("accelerate's launcher is not installed next to this Python")
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
    out = tmp_path / "ddp"
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--main_process_port", str(port), "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "-m", "hazyzoo.train"]
    cookbook = _cookbook(assets, num_train_examples=96)
    cmd += ["--model", "tiny:hazyzoo_based", "--tokenizer", cookbook["tokenizer"]]
    cmd += ["--model-arg", f"vocab_size={cookbook['model_args']['vocab_size']}"]
    cmd += ["--dataset", "cookbook", "--dataset-config", "copy_span"]
    for key, value in cookbook["dataset_args"].items():
        cmd += ["--dataset-arg", f"{key}={value}"]
    cmd += ["--prompt-column", "instruction", "--response-column", "response"]
    cmd += ["--output-dir", str(out)]
    cmd += ["--cache-dir", str(tmp_path / "cache"), "--max-steps", "12", "--batch-size", "4"]
    cmd += ["--learning-rate", "3e-3", "--logging-steps", "1", "--save-steps", "0"]
    cmd += ["--seed", "0", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    # rank 0 alone prints and writes; both ranks ran (world size 2, tokens of both counted)
    assert proc.stdout.count("hazyzoo train: done") == 1, proc.stdout
    assert "2 process(es)" in proc.stdout
    results = json.loads((out / "train_results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 12
    assert "peak_memory_gib" in results and results["peak_memory_gib"] is None  # CPU (gloo)
    # 2 processes x 4 examples x 36 tokens per step
    assert results["tokens_seen"] == 12 * 2 * 4 * COOKBOOK_TOKENS
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]), losses
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    from transformers import AutoModelForCausalLM

    import hazyzoo

    assert isinstance(AutoModelForCausalLM.from_pretrained(out), hazyzoo.BasedForCausalLM)


# --- (e) bad inputs ------------------------------------------------------------------------


def test_bad_inputs_fail_early_with_a_clear_message(assets, tmp_path):
    from hazyzoo.cli import main

    with pytest.raises(ValueError, match="not a zoo builder .*mqar.*Hub lookup failed"):
        train(_config(assets, tmp_path / "a", dataset="no_such_dataset_xyz"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        train(_config(assets, tmp_path / "a", dataset=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match=r"--response-column 'answer' is not a column.*prompt"):
        train(_config(assets, tmp_path / "a", response_column="answer"))
    big = tmp_path / "bigtok"
    _tokenizer(big, extra_words=30)  # 75 tokens > 61
    with pytest.raises(ValueError, match="has 75 tokens but the model's embedding has 61"):
        train(_config(assets, tmp_path / "a", tokenizer=str(big)))
    with pytest.raises(ValueError, match="--dataset-arg no_such_field: not a field of MqarConfig"):
        train(_config(assets, tmp_path / "a", dataset="mqar", dataset_args={"no_such_field": 3}))
    with pytest.raises(ValueError, match="unknown zoo causal LM 'nope'"):
        train(_config(assets, tmp_path / "a", model="tiny:nope"))
    with pytest.raises(ValueError, match="--training-arg not_a_field"):
        train(_config(assets, tmp_path / "a", training_args={"not_a_field": 1}))
    # the command line: one line on stderr, exit status 1
    base = ["train", "--model", "tiny:hazyzoo_based", "--tokenizer", str(assets / "tok")]
    base += ["--output-dir", str(tmp_path / "cli")]
    assert main([*base, "--dataset", "mqar", "--dataset-arg", "vocab_size"]) == 1
    assert main([*base, "--dataset", "mqar", "--dataset-arg", "seq_len=-3"]) == 1
    assert main([*base, "--dataset", str(assets / "pairs.jsonl"), "--text-column", "x"]) == 1
    assert not (tmp_path / "cli").exists()


def test_pretokenized_zoo_dataset_trains_through_the_cli(tmp_path, capsys):
    from hazyzoo.cli import main

    out = tmp_path / "mqar"
    args = ["train", "--model", "tiny:hazyzoo_based", "--model-arg", "vocab_size=64"]
    args += ["--dataset", "mqar", "--dataset-config", "tiny", "--dataset-arg"]
    args += ["num_train_examples=64", "--dataset-arg", "num_test_examples=16"]
    args += ["--eval-split", "test", "--cache-dir", str(tmp_path / "cache")]
    args += ["--output-dir", str(out), "--max-steps", "4", "--batch-size", "8"]
    args += ["--save-steps", "2", "--no-progress", "--logging-steps", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "train split: 64 examples (pretokenized)" in printed and "eval_loss" in printed
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 4 and "eval_loss" in results["metrics"]
    # 8 examples x 32 tokens per step
    assert results["tokens_seen"] == 4 * 8 * 32
    # a second run into the same directory must ask for --resume or --overwrite-output-dir
    assert main(args) == 1
    assert "holds checkpoints" in capsys.readouterr().err
    assert main([*args, "--resume", "--max-steps", "6"]) == 0
    assert json.loads((out / "train_results.json").read_text())["global_step"] == 6


def test_shipped_accelerate_configs_load_as_accelerate_reads_them():
    from accelerate.commands.config.config_args import load_config_from_file

    from hazyzoo.train import accelerate_config

    ddp = load_config_from_file(accelerate_config("ddp"))
    assert (
        str(ddp.distributed_type) == "DistributedType.MULTI_GPU" and ddp.mixed_precision == "bf16"
    )
    fsdp = load_config_from_file(accelerate_config("fsdp"))
    assert str(fsdp.distributed_type) == "DistributedType.FSDP"
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "DecoderLayer"
    assert fsdp.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    # the wrapped class is the block every zoo causal LM on the shared stack declares
    from hazyzoo import BasedForCausalLM, JrtForCausalLM, MadForCausalLM, RtfForCausalLM

    for cls in (BasedForCausalLM, JrtForCausalLM, MadForCausalLM, RtfForCausalLM):
        assert cls._no_split_modules == ["DecoderLayer"], cls
    with pytest.raises(ValueError, match="unknown accelerate config"):
        accelerate_config("deepspeed")
