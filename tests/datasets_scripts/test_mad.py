"""The MAD task builder: the released generators reproduced instance for instance (golden
data of athms/mad-lab, all six tasks, train then test from one stream), the selective-copying
RNG fix, the difficulty configs, bad settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from hazyzoo.datasets_scripts import load  # noqa: E402
from hazyzoo.datasets_scripts.mad import MAD_TASKS, MadTaskConfig, mad_config_names  # noqa: E402
from hazyzoo.datasets_scripts.mad_tasks import memorization_kv_map  # noqa: E402
from tests.conftest import golden_dir  # noqa: E402

TASKS = sorted(MAD_TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_golden_instances_equal_the_reference(task, tmp_path):
    from safetensors.numpy import load_file

    path = golden_dir("mad_tasks") / task
    ref = json.loads((path / "config.json").read_text())
    want = load_file(path / "data.safetensors")
    settings = {
        k: ref[k]
        for k in (
            "vocab_size",
            "seq_len",
            "frac_noise",
            "noise_vocab_size",
            "num_tokens_to_copy",
            "k_motif_size",
            "v_motif_size",
            "multi_query",
            "seed",
        )
    }
    # the baseline config of the task holds the golden settings
    baseline = next(c for c in mad_configs() if c.name == task)
    assert {k: getattr(baseline, k) for k in settings} == settings
    data = load(
        "mad",
        task,
        cache_dir=tmp_path,
        num_train_examples=ref["num_train_generated"],
        num_test_examples=ref["num_test_generated"],
        reference_rng=True,
    )
    for split in ("train", "test"):
        assert np.array_equal(np.array(data[split]["input_ids"]), want[f"{split}_inputs"]), split
        assert np.array_equal(np.array(data[split]["labels"]), want[f"{split}_targets"]), split
    if task == "memorization":
        kv = memorization_kv_map(ref["vocab_size"], ref["seed"])
        keys = sorted(kv)
        assert np.array_equal(keys, want["kv_map_keys"])
        assert np.array_equal([kv[k] for k in keys], want["kv_map_values"])


def mad_configs() -> list[MadTaskConfig]:
    from hazyzoo.datasets_scripts.mad import Mad

    return Mad.BUILDER_CONFIGS


def test_selective_copying_without_the_global_rng_is_valid_and_seeded(tmp_path):
    """The fixed generator draws the blanks from the task's own generator: same seed, same
    data; a different stream from the reference's; every instance still a copying task."""
    kwargs = dict(cache_dir=tmp_path, num_train_examples=6, num_test_examples=2)
    fixed = load("mad", "selective-copying", **kwargs)["train"]
    again = load(
        "mad",
        "selective-copying",
        cache_dir=tmp_path / "b",
        num_train_examples=6,
        num_test_examples=2,
    )["train"]
    reference = load("mad", "selective-copying", reference_rng=True, **kwargs)["train"]
    assert fixed["input_ids"] == again["input_ids"]
    assert fixed["input_ids"] != reference["input_ids"]
    state = np.random.get_state()[1].copy()
    load(
        "mad",
        "selective-copying",
        reference_rng=True,
        cache_dir=tmp_path / "c",
        num_train_examples=2,
        num_test_examples=1,
    )
    assert np.array_equal(np.random.get_state()[1], state), "numpy's global RNG was touched"
    for ids, labels in zip(fixed["input_ids"], fixed["labels"], strict=True):
        ids, labels = np.array(ids), np.array(labels)
        n = 16
        content = ids[: 256 - n - 1][ids[: 256 - n - 1] != 14]  # blanks are 14, copy is 15
        assert ids[256 - n - 1] == 15 and np.array_equal(labels[-n:], content)
        assert (labels[:-n] == -100).all()


def test_difficulty_configs_follow_the_papers_task_configs():
    names = mad_config_names()
    assert len(names) == len(set(names)) == 66
    assert "noisy-in-context-recall-frac_noise-0.8" in names
    assert "memorization-vocab_size-8192" in names
    config = next(c for c in mad_configs() if c.name == "in-context-recall-seq_len-1024")
    assert (config.seq_len, config.vocab_size, config.num_train_examples) == (1024, 16, 12800)
    assert mad_config_names("compression")[0] == "compression"
    for config in mad_configs():  # every setting makes instances of the declared length
        make = config.instance_fn()
        inputs, targets = make(np.random.default_rng(0), True)
        assert inputs.shape == targets.shape
        assert len(inputs) in (config.seq_len - 1, config.seq_len)
        assert inputs.min() >= 0 and inputs.max() < config.vocab_size


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(task="parity"), "task must be one of"),
        (dict(seq_len=7), "seq_len must be even"),
        (dict(frac_noise=1.5), "frac_noise must be in"),
        (dict(vocab_size=-1), "vocab_size must be an int >= 0"),
        (dict(task="selective-copying", num_tokens_to_copy=200, seq_len=256), "selective-copying"),
        (dict(frac_noise=0.2, noise_vocab_size=0), "needs noise_vocab_size"),
    ],
)
def test_bad_settings_are_refused_by_name(overrides, match):
    with pytest.raises(ValueError, match=match):
        MadTaskConfig(name="x", **overrides)
    with pytest.raises(ValueError, match=match):  # as keyword overrides of a named config
        load("mad", "in-context-recall", **overrides)
