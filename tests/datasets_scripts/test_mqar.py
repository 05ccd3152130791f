"""Tests of the MQAR builder and of ``hazyzoo.datasets_scripts.load``."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from hazyzoo.datasets_scripts import BUILDERS, load  # noqa: E402
from hazyzoo.datasets_scripts.mqar import (  # noqa: E402
    IGNORE_INDEX,
    PAD_TOKEN_ID,
    Mqar,
    MqarConfig,
    generate_mqar,
)

SMALL = {"num_train_examples": 300, "num_test_examples": 100}


def _generate(num_examples: int = 200, seed: int = 0, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    settings = {"vocab_size": 64, "seq_len": 40, "num_kv_pairs": 6, **kwargs}
    return generate_mqar(num_examples, rng=np.random.default_rng(seed), **settings)


def _build(tmp_path, config: str = "tiny", **overrides) -> datasets.DatasetDict:
    builder = Mqar(config_name=config, cache_dir=str(tmp_path), **{**SMALL, **overrides})
    builder.download_and_prepare()
    return builder.as_dataset()


def test_registry_and_configs() -> None:
    assert BUILDERS["mqar"] is Mqar
    names = {c.name for c in Mqar.BUILDER_CONFIGS}
    assert {"tiny", "zoology"} <= names
    zoology = Mqar.builder_configs["zoology"]
    assert (zoology.vocab_size, zoology.seq_len, zoology.num_kv_pairs) == (8192, 256, 64)
    assert (zoology.num_train_examples, zoology.num_test_examples) == (100_000, 3_000)
    assert isinstance(Mqar.VERSION, datasets.Version)


@pytest.mark.parametrize("num_queries", [None, 3])
def test_layout_and_label_alignment(num_queries: int | None) -> None:
    kv, vocab = 6, 64
    input_ids, labels = _generate(num_queries=num_queries)
    queries = kv if num_queries is None else num_queries
    assert input_ids.dtype == np.int32 and labels.dtype == np.int64
    assert input_ids.shape == labels.shape == (200, 40)
    for ids, lab in zip(input_ids, labels):
        keys, values = ids[0 : 2 * kv : 2], ids[1 : 2 * kv : 2]
        assert len(set(keys.tolist())) == kv and len(set(values.tolist())) == kv
        assert ((keys >= 1) & (keys < vocab // 2)).all()
        assert ((values >= vocab // 2) & (values < vocab)).all()
        assert (lab[: 2 * kv] == IGNORE_INDEX).all()
        answers = np.flatnonzero(lab != IGNORE_INDEX)
        assert len(answers) == queries
        pairs = dict(zip(keys.tolist(), values.tolist()))
        for t in answers:
            assert lab[t] == ids[t]  # HF alignment: the label is the token at t
            query_key = int(ids[t - 1])
            assert query_key in pairs  # the key appeared in the kv region
            assert lab[t] == pairs[query_key]
        asked = {int(ids[t - 1]) for t in answers}
        assert len(asked) == queries  # each pair is asked at most once
        # Everything in the query region other than query keys and answers is filler.
        query_region = np.ones(len(ids), dtype=bool)
        query_region[: 2 * kv] = False
        query_region[answers] = query_region[answers - 1] = False
        assert (ids[query_region] == PAD_TOKEN_ID).all()


def test_power_law_favours_short_gaps() -> None:
    _, labels = _generate(num_examples=2000, seq_len=200, num_kv_pairs=4)
    slots = (np.argwhere(labels != IGNORE_INDEX)[:, 1] - 2 * 4 - 1) // 2
    counts = np.bincount(slots, minlength=(200 - 8) // 2)
    assert counts[:10].sum() > counts[-10:].sum() * 2


def test_generator_deterministic_in_seed() -> None:
    a, la = _generate(seed=3)
    b, lb = _generate(seed=3)
    c, _ = _generate(seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_builder_features_splits_and_determinism(tmp_path) -> None:
    ds = _build(tmp_path / "a")
    assert set(ds) == {"train", "test"}
    assert ds["train"].num_rows == 300 and ds["test"].num_rows == 100
    features = ds["train"].features
    assert features["input_ids"] == datasets.List(datasets.Value("int32"), length=32)
    assert features["labels"] == datasets.List(datasets.Value("int64"), length=32)
    ds.set_format("numpy")
    again = _build(tmp_path / "b").with_format("numpy")
    other_seed = _build(tmp_path / "c", seed=1).with_format("numpy")
    for split in ("train", "test"):
        np.testing.assert_array_equal(ds[split]["input_ids"], again[split]["input_ids"])
        np.testing.assert_array_equal(ds[split]["labels"], again[split]["labels"])
        assert not np.array_equal(ds[split]["input_ids"], other_seed[split]["input_ids"])
    # Train and test come from different streams.
    assert not np.array_equal(ds["train"]["input_ids"][:100], ds["test"]["input_ids"])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_kv_pairs": 20}, "seq_len"),
        ({"vocab_size": 16, "num_kv_pairs": 8, "seq_len": 64}, "vocab_size"),
        ({"num_kv_pairs": 0}, "num_kv_pairs"),
        ({"num_queries": 9}, "num_queries"),
        ({"power_a": 0.0}, "power_a"),
        ({"num_train_examples": -1}, "num_train_examples"),
        ({"seq_len": 32.5}, "seq_len"),
    ],
)
def test_bad_config_names_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MqarConfig(name="bad", **overrides)
    with pytest.raises(ValueError, match=field):
        Mqar(config_name="tiny", **overrides)


def test_load_through_cache_dir(tmp_path) -> None:
    ds = load("mqar", "tiny", cache_dir=tmp_path, num_train_examples=64, num_test_examples=16)
    assert isinstance(ds, datasets.DatasetDict)
    assert (ds["train"].num_rows, ds["test"].num_rows) == (64, 16)
    assert any(tmp_path.iterdir())
    default = load("mqar", cache_dir=tmp_path, **SMALL)  # default config is "tiny"
    assert len(default["train"][0]["input_ids"]) == 32


def test_load_unknown_name_or_config(tmp_path) -> None:
    with pytest.raises(ValueError, match="mqar"):
        load("no-such-dataset", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="tiny"):
        load("mqar", "no-such-config", cache_dir=tmp_path)


def test_import_without_datasets(monkeypatch) -> None:
    # The GPU image has no `datasets`: this package and the demo module must still import.
    import hazyzoo

    monkeypatch.setitem(sys.modules, "datasets", None)
    for name in list(sys.modules):
        if name == "hazyzoo.demo" or name.startswith("hazyzoo.datasets_scripts"):
            monkeypatch.delitem(sys.modules, name)
    for attribute in ("datasets_scripts", "demo"):
        if hasattr(hazyzoo, attribute):
            monkeypatch.setattr(hazyzoo, attribute, getattr(hazyzoo, attribute))
    module = importlib.import_module("hazyzoo.datasets_scripts")
    assert module.BUILDERS == {}
    with pytest.raises(ImportError, match="datasets"):
        module.load("mqar")
    importlib.import_module("hazyzoo.demo")
