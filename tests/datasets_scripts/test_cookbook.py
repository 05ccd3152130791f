"""The Cookbook builder: every config builds checkable rows, mixtures have exact proportions,
builds are deterministic (rows and fingerprint), overrides are validated, load() by name."""

from __future__ import annotations

import json
from collections import Counter

import pytest

datasets = pytest.importorskip("datasets")

from hazyzoo.datasets_scripts import BUILDERS, load  # noqa: E402
from hazyzoo.datasets_scripts.cookbook import MIX, Cookbook, CookbookConfig  # noqa: E402
from hazyzoo.datasets_scripts.cookbook_templates import (  # noqa: E402
    TEMPLATES,
    CookbookExample,
    default_vocabulary,
)

CONFIGS = [*TEMPLATES, MIX]
SMALL = dict(num_train_examples=6, num_test_examples=3)


def build(tmp_path, config, **overrides):
    return load("cookbook", config, cache_dir=tmp_path, **overrides)


def example(row):
    return CookbookExample(
        row["template"], row["instruction"], row["response"], json.loads(row["meta"])
    )


def test_registered_with_one_config_per_template_plus_mix():
    assert BUILDERS["cookbook"] is Cookbook
    assert [c.name for c in Cookbook.BUILDER_CONFIGS] == CONFIGS
    assert Cookbook.DEFAULT_CONFIG_NAME == MIX
    for config in Cookbook.BUILDER_CONFIGS:
        assert config.template == (None if config.name == MIX else config.name)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_builds_checkable_rows(config, tmp_path):
    data = build(tmp_path, config, **SMALL)
    assert {split: len(ds) for split, ds in data.items()} == {"train": 6, "test": 3}
    features = data["train"].features
    assert list(features) == ["template", "instruction", "response", "text", "meta"]
    assert all(f == datasets.Value("string") for f in features.values())
    for split in ("train", "test"):
        for row in data[split]:
            assert config == MIX or row["template"] == config
            assert row["text"] == row["instruction"] + row["response"]
            assert TEMPLATES[row["template"]].check(example(row), row["response"])
            assert not TEMPLATES[row["template"]].check(example(row), row["response"] + " x")


def test_load_by_name(tmp_path):
    data = load("cookbook", "copy_span", num_train_examples=100, cache_dir=tmp_path)
    assert len(data["train"]) == 100 and len(data["test"]) == 1_000
    assert set(data["train"]["template"]) == {"copy_span"}


def test_mix_proportions_are_exact(tmp_path):
    weights = {"copy_span": 1, "count_occurrences": 2, "first_last": 0.5}
    data = build(tmp_path, MIX, num_train_examples=35, num_test_examples=7, weights=weights)
    assert Counter(data["train"]["template"]) == {
        "copy_span": 10,
        "count_occurrences": 20,
        "first_last": 5,
    }
    assert Counter(data["test"]["template"]) == {
        "copy_span": 2,
        "count_occurrences": 4,
        "first_last": 1,
    }
    # uniform default over every template: 30 = 13 * 2 + 4, extras by registry order
    data = build(tmp_path / "u", MIX, num_train_examples=30, num_test_examples=13)
    counts = Counter(data["train"]["template"])
    assert [counts[t] for t in TEMPLATES] == [3, 3, 3, 3] + [2] * 9
    assert Counter(data["test"]["template"]) == dict.fromkeys(TEMPLATES, 1)
    # the templates are interleaved, not in blocks
    names = data["train"]["template"]
    assert names != sorted(names, key=list(TEMPLATES).index)
    # a zero weight excludes a template
    data = build(tmp_path / "z", MIX, **SMALL, weights={"copy_span": 0, "first_last": 1})
    assert set(data["train"]["template"]) == {"first_last"}


def test_mix_rows_of_a_template_are_that_templates_config_rows(tmp_path):
    weights = {"copy_span": 1, "sort_alphabetical": 1}
    mix = build(tmp_path, MIX, num_train_examples=8, num_test_examples=4, weights=weights, seed=3)
    single = build(tmp_path, "sort_alphabetical", num_train_examples=4, num_test_examples=2, seed=3)
    for split in ("train", "test"):
        rows = [r for r in mix[split] if r["template"] == "sort_alphabetical"]
        assert rows == list(single[split])


def test_builds_are_deterministic_and_seeded(tmp_path):
    kwargs = dict(
        num_train_examples=12, num_test_examples=4, weights={"copy_span": 1, "first_last": 2}
    )
    a = build(tmp_path / "a", MIX, **kwargs)
    b = build(tmp_path / "b", MIX, **kwargs)
    # dict overrides name the same data whatever their key order
    c = build(tmp_path / "c", MIX, **{**kwargs, "weights": {"first_last": 2, "copy_span": 1}})
    other = build(tmp_path / "d", MIX, seed=1, **kwargs)
    for split in ("train", "test"):
        assert a[split]._fingerprint == b[split]._fingerprint == c[split]._fingerprint
        assert a[split].to_list() == b[split].to_list() == c[split].to_list()
        assert other[split]._fingerprint != a[split]._fingerprint
        assert other[split]["text"] != a[split]["text"]
    assert a["train"]["text"][:4] != a["test"]["text"]  # disjoint split seeds
    assert a["train"]._fingerprint != a["test"]._fingerprint


def test_vocabulary_and_params_overrides(tmp_path):
    words = default_vocabulary(30, 9)
    data = build(
        tmp_path,
        "copy_span",
        **SMALL,
        vocabulary=words,
        params={"copy_span": {"span_length": 5, "text_length": 8}},
    )
    for row in data["train"]:
        assert len(row["response"].split()) == 5
        text_words = row["instruction"].splitlines()[0].split()[1:]
        assert len(text_words) == 9 and set(text_words) - {"#"} <= set(words)
    vocab_default = build(tmp_path / "v", "copy_span", **SMALL)
    vocab_sized = build(tmp_path / "w", "copy_span", **SMALL, vocab_size=16, vocab_seed=2)
    assert vocab_default["train"]["text"] != vocab_sized["train"]["text"]
    used = {w for t in vocab_sized["train"]["instruction"] for w in t.splitlines()[0].split()[1:]}
    assert used - {"#"} <= set(default_vocabulary(16, 2))


@pytest.mark.parametrize(
    ("config", "overrides", "match"),
    [
        (MIX, dict(weights={"nope": 1.0}), r"unknown template\(s\) \['nope'\]"),
        (
            MIX,
            dict(weights={"copy_span": -1.0}),
            r"weights\['copy_span'\] must be finite and >= 0, got -1",
        ),
        (MIX, dict(weights={"copy_span": 0, "first_last": 0.0}), "positive weight"),
        (MIX, dict(weights={"copy_span": "1"}), "must be a number"),
        ("copy_span", dict(weights={"copy_span": 1}), "weights only applies to a mixture"),
        (MIX, dict(num_train_examples=0), "num_train_examples must be an int >= 1, got 0"),
        (MIX, dict(num_test_examples=-3), "num_test_examples must be an int >= 1, got -3"),
        (MIX, dict(num_train_examples=2.5), "num_train_examples must be an int"),
        (MIX, dict(seed=-1), "seed must be an int >= 0"),
        (MIX, dict(vocab_size=1), "vocab_size must be an int >= 2, got 1"),
        (MIX, dict(vocabulary=["dabo", "Answer"]), "vocabulary: vocabulary word 'Answer'"),
        (MIX, dict(params={"nope": {}}), "params has unknown template 'nope'"),
        (MIX, dict(params={"copy_span": {"span": 2}}), r"has no parameter\(s\) \['span'\]"),
        ("copy_span", dict(params={"copy_span": {"span_length": 99}}), "span_length must be"),
        ("copy_span", dict(template="first_last"), "is the 'copy_span' template's"),
        ("copy_span", dict(vocab_size=4, params={"copy_span": {}}), None),  # fine: replacement
        ("key_value_retrieval", dict(vocab_size=10), "needs 16 distinct words"),
    ],
)
def test_bad_overrides_are_refused_by_name(config, overrides, match, tmp_path):
    if match is None:
        build(tmp_path, config, **{**SMALL, **overrides})
        return
    with pytest.raises(ValueError, match=match):
        build(tmp_path, config, **{**SMALL, **overrides})


def test_config_validates_on_construction():
    with pytest.raises(ValueError, match="template must be None"):
        CookbookConfig(name="x", template="nope")
    with pytest.raises(ValueError, match="num_train_examples"):
        CookbookConfig(name="x", num_train_examples=0)
    config = CookbookConfig(name="custom", weights={"copy_span": 3, "first_last": 1})
    assert config.counts("train") == {"copy_span": 7_500, "first_last": 2_500}
    assert config.counts("test") == {"copy_span": 750, "first_last": 250}
