"""hazyzoo.validation: good values pass through; bad ones name the field and the value."""

from __future__ import annotations

import contextlib
import json
import math
import struct

import numpy as np
import pytest
import torch
from huggingface_hub.dataclasses import strict
from safetensors.torch import save_file
from transformers import GenerationConfig, PreTrainedConfig

from hazyzoo.configuration import validation as config_validation
from hazyzoo.modeling.cache import (
    ConvStateLayer,
    HazyCache,
    LinearAttentionStateLayer,
    SlidingWindowLayer,
)
from hazyzoo.validation import (
    CacheLayerSpec,
    check_attention_mask,
    check_bool,
    check_cache_compatible,
    check_choice,
    check_divides,
    check_exactly_one,
    check_float,
    check_generation_config,
    check_generation_lengths,
    check_input_ids,
    check_inputs_embeds,
    check_int,
    check_json_file,
    check_labels,
    check_layer_indices,
    check_loading_info,
    check_logits_to_keep,
    check_model_type,
    check_position_ids,
    check_positive,
    check_safetensors_file,
    check_state_dtypes,
    check_token_id,
    known_config_names,
    reject_unknown_config_kwargs,
    values_checkable,
)


class Holder:
    """An object with one attribute ``x`` (what a config field looks like to the checks)."""

    def __init__(self, value):
        self.x = value


@contextlib.contextmanager
def raises_naming(exc, *parts):
    """``pytest.raises(exc)`` that also asserts each of ``parts`` appears in the message."""
    with pytest.raises(exc) as info:
        yield info
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ------------------------------------------------------------------------------------------
# Scalar config fields
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "kwargs"),
    [(5, {}), (0, {"minimum": 0}), (10, {"maximum": 10}), (None, {"allow_none": True})],
)
def test_check_int_accepts(value, kwargs):
    assert check_int(Holder(value), "x", **kwargs) == value


@pytest.mark.parametrize(
    ("value", "kwargs", "exc", "shown"),
    [
        (True, {}, TypeError, "True"),
        (2.0, {}, TypeError, "2.0"),
        (2.5, {}, TypeError, "2.5"),
        ("10", {}, TypeError, "'10'"),
        (None, {}, TypeError, "None"),
        (np.int64(3), {}, TypeError, "int64"),
        (float("nan"), {}, TypeError, "nan"),
        (0, {"minimum": 1}, ValueError, "0"),
        (-3, {"minimum": 0}, ValueError, "-3"),
        (11, {"minimum": 0, "maximum": 10}, ValueError, "11"),
    ],
)
def test_check_int_rejects(value, kwargs, exc, shown):
    with raises_naming(exc, "x", shown, "integer"):
        check_int(Holder(value), "x", **kwargs)


def test_check_int_reads_mappings_and_positive_is_minimum_one():
    assert check_int({"n": 3}, "n", minimum=1) == 3
    assert check_int({}, "n", allow_none=True) is None
    assert check_positive(Holder(1), "x") == 1
    with raises_naming(ValueError, "x", "0", ">= 1"):
        check_positive(Holder(0), "x")


@pytest.mark.parametrize(
    ("value", "kwargs"),
    [
        (1e-5, {"gt": 0}),
        (3, {"gt": 0}),
        (0.0, {"ge": 0}),
        (1.0, {"ge": 0, "le": 1}),
        (None, {"allow_none": True}),
        (np.float64(0.5), {"gt": 0, "lt": 1}),
    ],
)
def test_check_float_accepts(value, kwargs):
    assert check_float(Holder(value), "x", **kwargs) == value


@pytest.mark.parametrize(
    ("value", "kwargs", "exc", "shown"),
    [
        (float("nan"), {}, ValueError, "nan"),
        (float("inf"), {"gt": 0}, ValueError, "inf"),
        (-math.inf, {}, ValueError, "-inf"),
        (True, {}, TypeError, "True"),
        ("1e-5", {"gt": 0}, TypeError, "'1e-5'"),
        (None, {}, TypeError, "None"),
        ([0.1], {}, TypeError, "[0.1]"),
        (0.0, {"gt": 0}, ValueError, "0.0"),
        (-0.1, {"ge": 0}, ValueError, "-0.1"),
        (1.5, {"ge": 0, "le": 1}, ValueError, "1.5"),
        (1.0, {"lt": 1}, ValueError, "1.0"),
    ],
)
def test_check_float_rejects(value, kwargs, exc, shown):
    with raises_naming(exc, "x", shown, "finite number"):
        check_float(Holder(value), "x", **kwargs)


@pytest.mark.parametrize(("value", "allow_none"), [(True, False), (False, False), (None, True)])
def test_check_bool_accepts(value, allow_none):
    assert check_bool(Holder(value), "x", allow_none=allow_none) is value


@pytest.mark.parametrize(
    ("value", "shown"), [(1, "1"), (0, "0"), ("true", "'true'"), (None, "None"), (1.0, "1.0")]
)
def test_check_bool_rejects(value, shown):
    with raises_naming(TypeError, "x", shown, "True or False"):
        check_bool(Holder(value), "x")


@pytest.mark.parametrize(
    ("value", "choices", "exc", "parts"),
    [
        ("c", ("a", "b"), ValueError, ("'c'", "'a', 'b'")),
        ("rms_nrom", ("rms_norm", "layer_norm"), ValueError, ("did you mean 'rms_norm'",)),
        (1, ("a", "b"), TypeError, ("1",)),
        (True, (1, 2), TypeError, ("True",)),
        (3, (1, 2), ValueError, ("3",)),
    ],
)
def test_check_choice(value, choices, exc, parts):
    assert check_choice(Holder(choices[0]), "x", choices) == choices[0]
    with raises_naming(exc, "x", *parts):
        check_choice(Holder(value), "x", choices)


@pytest.mark.parametrize("value", [[0, 2], [], (1, 3), [3, 0]])
def test_check_layer_indices_accepts(value):
    assert check_layer_indices(Holder(value), "x", 4) == list(value)


@pytest.mark.parametrize(
    ("value", "exc", "shown"),
    [
        ([1.7], TypeError, "1.7"),
        (["1"], TypeError, "'1'"),
        ([True], TypeError, "True"),
        ([0, None], TypeError, "None"),
        ([1.0], TypeError, "1.0"),
        (1, TypeError, "1"),
        ("12", TypeError, "'12'"),
        (None, TypeError, "None"),
        ({1, 2}, TypeError, "{1, 2}"),
        ([4], ValueError, "[4]"),
        ([-1], ValueError, "[-1]"),
        ([1, 1], ValueError, "[1]"),
    ],
)
def test_check_layer_indices_rejects(value, exc, shown):
    with raises_naming(exc, "x", shown):
        check_layer_indices(Holder(value), "x", 4)


def test_check_layer_indices_names_the_position_of_a_bad_entry():
    with raises_naming(TypeError, "x[1]", "2.5", "[0, 4)"):
        check_layer_indices(Holder([0, 2.5]), "x", 4)


@pytest.mark.parametrize(
    ("value", "allow_list"), [(None, False), (0, False), (60, False), ([1, 2], True), (5, True)]
)
def test_check_token_id_accepts(value, allow_list):
    assert check_token_id(Holder(value), "x", 61, allow_list=allow_list) == value


@pytest.mark.parametrize(
    ("value", "allow_list", "exc", "shown"),
    [
        (61, False, ValueError, "61"),
        (-1, False, ValueError, "-1"),
        (1.0, False, TypeError, "1.0"),
        (True, False, TypeError, "True"),
        ("2", False, TypeError, "'2'"),
        ([1], False, TypeError, "[1]"),
        ([], True, ValueError, "empty"),
        ([1, 61], True, ValueError, "[1, 61]"),
        ([1, "2"], True, TypeError, "'2'"),
    ],
)
def test_check_token_id_rejects(value, allow_list, exc, shown):
    with raises_naming(exc, "x", shown):
        check_token_id(Holder(value), "x", 61, allow_list=allow_list)


@pytest.mark.parametrize(
    ("num", "den", "exc", "parts"),
    [
        (30, 4, ValueError, ("n (30)", "d (4)", "remainder is 2")),
        (32, 0, ValueError, ("d", "0")),
        (32, 2.0, TypeError, ("d", "2.0")),
        ("32", 2, TypeError, ("n", "'32'")),
    ],
)
def test_check_divides(num, den, exc, parts):
    check_divides({"n": 32, "d": 4}, "n", "d")
    with raises_naming(exc, *parts):
        check_divides({"n": num, "d": den}, "n", "d")


def test_configuration_validation_re_exports_the_shared_checks():
    assert config_validation.check_positive is check_positive
    assert config_validation.check_divides is check_divides
    assert config_validation.check_layer_indices is check_layer_indices


# ------------------------------------------------------------------------------------------
# Unknown config keywords and model types
# ------------------------------------------------------------------------------------------
@strict(accept_kwargs=True)
class ToyConfig(PreTrainedConfig):
    """A config wired the way hazyzoo configs call the checks."""

    model_type = "hazyzoo_toy"
    hidden_size: int = 8
    num_hidden_layers: int = 2
    linear_attention_layers: list[int] | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_config_kwargs(type(self), kwargs)
        super().__post_init__(**kwargs)
        check_positive(self, "hidden_size")


@pytest.mark.parametrize(
    ("kwargs", "parts"),
    [
        ({"hiden_size": 32}, ("'hiden_size'", "32", "did you mean 'hidden_size'")),
        ({"num_hidden_layer": 3}, ("'num_hidden_layer'", "did you mean 'num_hidden_layers'")),
        ({"linear_attn_layers": [1]}, ("'linear_attn_layers'", "'linear_attention_layers'")),
        ({"zzz": 1}, ("'zzz'", "(ToyConfig's own fields: hidden_size, num_hidden_layers")),
        ({"max_length": 20}, ("'max_length'", "generation setting", "generation_config")),
        ({"rope_scaling": {"type": "linear"}}, ("'rope_scaling'",)),
    ],
)
def test_unknown_config_kwargs_are_rejected_with_a_suggestion(kwargs, parts):
    with raises_naming(TypeError, "ToyConfig", *parts):
        ToyConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"torch_dtype": "float32"},
        {"dtype": "bfloat16"},
        {"num_labels": 3},
        {"name_or_path": "some/repo"},
        {"output_attentions": True},
        {"attn_implementation": "eager"},
        {"architectures": ["ToyModel"], "auto_map": {"AutoConfig": "x.ToyConfig"}},
        {"transformers_version": "5.17.0", "model_type": "hazyzoo_toy", "_name_or_path": "a"},
    ],
)
def test_transformers_bookkeeping_kwargs_are_known(kwargs):
    ToyConfig(**kwargs)


def test_saved_config_round_trips_through_the_unknown_kwarg_check(tmp_path):
    config = ToyConfig(hidden_size=16, linear_attention_layers=[1])
    config.save_pretrained(tmp_path)
    loaded = ToyConfig.from_pretrained(tmp_path)
    assert loaded.hidden_size == 16
    ToyConfig(**config.to_dict())
    reject_unknown_config_kwargs(ToyConfig, check_json_file(tmp_path / "config.json"))
    reject_unknown_config_kwargs(ToyConfig, loaded)
    assert {"hidden_size", "return_dict", "id2label", "dtype"} <= known_config_names(ToyConfig)


def test_unknown_names_on_an_instance_and_in_a_file_are_reported():
    config = ToyConfig()
    config.hiddensize = 4  # a typo made after construction
    with raises_naming(TypeError, "'hiddensize'", "'hidden_size'"):
        reject_unknown_config_kwargs(ToyConfig, config)
    with raises_naming(TypeError, "in cfg/config.json", "'hidden_sise'"):
        reject_unknown_config_kwargs(ToyConfig, {"hidden_sise": 3}, source="cfg/config.json")
    with raises_naming(TypeError, "'layers'"):
        reject_unknown_config_kwargs(ToyConfig, ["hidden_size", "layers"])


@pytest.mark.parametrize(
    ("config_dict", "parts"),
    [
        ({"model_type": "based"}, ("'based'", "'hazyzoo_based'", "hazyzoo convert", "m/cfg")),
        ({"model_type": "llama"}, ("'llama'", "'hazyzoo_based'", "m/cfg")),
        ({}, ("no model_type", "m/cfg")),
    ],
)
def test_check_model_type(config_dict, parts):
    assert check_model_type({"model_type": "hazyzoo_based"}, "hazyzoo_based", "m/cfg") == (
        "hazyzoo_based"
    )
    assert check_model_type({"model_type": "b"}, {"a", "b"}, "m/cfg") == "b"
    with raises_naming(ValueError, *parts):
        check_model_type(config_dict, "hazyzoo_based", "m/cfg")


# ------------------------------------------------------------------------------------------
# Forward inputs
# ------------------------------------------------------------------------------------------
def test_check_exactly_one():
    assert check_exactly_one(input_ids=1, inputs_embeds=None) == "input_ids"
    with raises_naming(ValueError, "input_ids and inputs_embeds", "neither"):
        check_exactly_one(input_ids=None, inputs_embeds=None)
    with raises_naming(ValueError, "got input_ids and inputs_embeds"):
        check_exactly_one(input_ids=1, inputs_embeds=2)


@pytest.mark.parametrize(
    "ids",
    [
        torch.tensor([[1, 2, 3]]),
        torch.tensor([[0], [9]], dtype=torch.int32),
        torch.tensor([[9, 0]], dtype=torch.uint8),
        torch.zeros(2, 5, dtype=torch.long, device="meta"),  # values unreadable: not checked
    ],
)
def test_check_input_ids_accepts(ids):
    check_input_ids(ids, 10)


@pytest.mark.parametrize(
    ("ids", "exc", "parts"),
    [
        (torch.tensor([[1.0, 2.0]]), TypeError, ("input_ids", "torch.float32")),
        (torch.tensor([[True, False]]), TypeError, ("input_ids", "torch.bool")),
        ([[1, 2]], TypeError, ("input_ids", "list")),
        (torch.tensor([1, 2, 3]), ValueError, ("input_ids", "(3,)", "input_ids[None]")),
        (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, ("input_ids", "(1, 2, 3)")),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, ("input_ids", "(1, 0)")),
        (torch.zeros(0, 4, dtype=torch.long), ValueError, ("input_ids", "(0, 4)")),
        (torch.tensor([[1, -1, 2]]), ValueError, ("input_ids[0, 1] = -1", "[0, 10)")),
        (torch.tensor([[1, 2], [3, 10]]), ValueError, ("input_ids[1, 1] = 10", "[0, 10)")),
        (torch.tensor([[50000]]), ValueError, ("50000", "vocabulary size is 10")),
    ],
)
def test_check_input_ids_rejects(ids, exc, parts):
    with raises_naming(exc, *parts):
        check_input_ids(ids, 10)


@pytest.mark.parametrize(
    ("embeds", "exc", "parts"),
    [
        (torch.zeros(1, 2, 8, dtype=torch.long), TypeError, ("inputs_embeds", "torch.int64")),
        (torch.zeros(2, 8), ValueError, ("inputs_embeds", "(2, 8)", "hidden_size=8")),
        (torch.zeros(1, 2, 7), ValueError, ("inputs_embeds", "(1, 2, 7)")),
        (torch.zeros(1, 0, 8), ValueError, ("inputs_embeds", "(1, 0, 8)")),
        (np.zeros((1, 2, 8)), TypeError, ("inputs_embeds", "ndarray")),
    ],
)
def test_check_inputs_embeds(embeds, exc, parts):
    check_inputs_embeds(torch.zeros(2, 3, 8, dtype=torch.bfloat16), 8)
    with raises_naming(exc, *parts):
        check_inputs_embeds(embeds, 8)


@pytest.mark.parametrize(
    ("mask", "past", "left"),
    [
        (torch.ones(2, 4, dtype=torch.long), 0, True),
        (torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), 0, True),
        (torch.tensor([[False, True, True, True], [True] * 4]), 0, True),
        (torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0] * 4]), 0, True),
        (torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6]), 2, True),  # past + length wide
        (torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1]]), 0, False),  # padding side not asked for
        (torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), 0, True),  # an all-padding row
    ],
)
def test_check_attention_mask_accepts(mask, past, left):
    assert check_attention_mask(mask, 2, 4, past, require_left_padding=left) is left


@pytest.mark.parametrize(
    ("mask", "past", "exc", "parts"),
    [
        (torch.tensor([[1, 2, 1, 1]] * 2), 0, ValueError, ("attention_mask[0, 1] = 2", "0 and 1")),
        (torch.tensor([[1.0, 0.5, 1.0, 1.0]] * 2), 0, ValueError, ("0.5",)),
        (torch.tensor([[1.0, math.nan, 1.0, 1.0]] * 2), 0, ValueError, ("nan",)),
        (torch.tensor([[1, 1, 1, 1], [-1, 1, 1, 1]]), 0, ValueError, ("[1, 0] = -1",)),
        (
            torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
            0,
            ValueError,
            ("row 1", "right-padded", "[1, 1, 0, 0]", "left padding", "padding_side"),
        ),
        (
            torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]]),
            0,
            ValueError,
            ("row 0", "middle-padded", "position 1", "left padding"),
        ),
        (
            torch.tensor([[True, True, True, False]] * 2),
            0,
            ValueError,
            ("right-padded", "recurrent states cannot skip"),
        ),
        (torch.ones(3, 4, dtype=torch.long), 0, ValueError, ("attention_mask", "(3, 4)")),
        (torch.ones(2, 5, dtype=torch.long), 0, ValueError, ("(2, 5)", "[2, 4]")),
        (torch.ones(2, 5, dtype=torch.long), 2, ValueError, ("(2, 5)", "[2, 4] or [2, 6]")),
        (torch.ones(4, dtype=torch.long), 0, ValueError, ("(4,)",)),
        (torch.ones(2, 4, dtype=torch.complex64), 0, TypeError, ("complex64",)),
        ([[1, 1, 1, 1]] * 2, 0, TypeError, ("attention_mask", "list")),
    ],
)
def test_check_attention_mask_rejects(mask, past, exc, parts):
    with raises_naming(exc, *parts):
        check_attention_mask(mask, 2, 4, past, require_left_padding=True)


@pytest.mark.parametrize(
    ("pos", "exc", "parts"),
    [
        (torch.zeros(2, 3), TypeError, ("position_ids", "torch.float32")),
        (torch.zeros(2, 4, dtype=torch.long), ValueError, ("position_ids", "(2, 4)", "[2, 3]")),
        (torch.zeros(3, dtype=torch.long), ValueError, ("(3,)",)),
        (torch.tensor([[0, 1, 2], [0, -1, 2]]), ValueError, ("position_ids[1, 1] = -1", ">= 0")),
    ],
)
def test_check_position_ids(pos, exc, parts):
    check_position_ids(torch.arange(3)[None].expand(2, -1), 2, 3)
    check_position_ids(torch.arange(3)[None], 2, 3)
    with raises_naming(exc, *parts):
        check_position_ids(pos, 2, 3)


@pytest.mark.parametrize(
    ("labels", "kwargs", "exc", "parts"),
    [
        (torch.zeros(2, 3), {}, TypeError, ("labels", "torch.float32")),
        (torch.zeros(2, 2, dtype=torch.long), {}, ValueError, ("labels", "(2, 2)", "[2, 3]")),
        (torch.tensor([[1, 2, 10]] * 2), {}, ValueError, ("labels[0, 2] = 10", "[0, 10)")),
        (torch.tensor([[1, -5, 2]] * 2), {}, ValueError, ("labels[0, 1] = -5", "-100")),
        (torch.tensor([[1, -100, 2]] * 2), {"ignore_index": -1}, ValueError, ("-100", "-1")),
    ],
)
def test_check_labels(labels, kwargs, exc, parts):
    check_labels(torch.tensor([[1, -100, 9], [0, 0, -100]]), 2, 3, 10)
    with raises_naming(exc, *parts):
        check_labels(labels, 2, 3, 10, **kwargs)


@pytest.mark.parametrize(
    ("keep", "exc", "parts"),
    [
        (-1, ValueError, ("logits_to_keep", "-1")),
        (True, TypeError, ("logits_to_keep", "True")),
        (1.5, TypeError, ("logits_to_keep", "1.5")),
        (torch.tensor([0.0, 1.0]), TypeError, ("logits_to_keep", "torch.float32")),
        (torch.tensor([[0, 1]]), ValueError, ("logits_to_keep", "(1, 2)")),
        (torch.tensor([0, 4]), ValueError, ("logits_to_keep", "0 to 4", "[-4, 4)")),
    ],
)
def test_check_logits_to_keep(keep, exc, parts):
    for good in (0, 3, torch.tensor([0, 3, -1])):
        check_logits_to_keep(good, 4)
    with raises_naming(exc, *parts):
        check_logits_to_keep(keep, 4)


def test_value_checks_are_skipped_under_compile_but_shape_checks_run():
    torch._dynamo.reset()

    def step(ids, mask):
        check_input_ids(ids, 10)
        check_attention_mask(mask, ids.shape[0], ids.shape[1], require_left_padding=True)
        return ids + mask

    compiled = torch.compile(step, fullgraph=True, backend="eager")  # any graph break fails
    out_of_vocab, right_padded = torch.tensor([[1, 20, 3]]), torch.tensor([[1, 1, 0]])
    assert compiled(out_of_vocab, right_padded).tolist() == [[2, 21, 3]]
    with pytest.raises(ValueError, match="input_ids"):
        step(out_of_vocab, right_padded)  # eager still checks values
    # A shape error raises inside the compiled region: fullgraph reports it as dynamo's
    # "Observed exception" naming the ValueError and the check that raised it (torch 2.13 also
    # renders our message, 2.11 does not); a plain compile raises the ValueError itself.
    with pytest.raises(Exception, match=r"(?s)ValueError.*check_input_ids") as info:
        compiled(torch.tensor([1, 2, 3]), torch.ones(1, 3, dtype=torch.long))
    assert "Observed exception" in str(info.value)
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, seq\]"):
        torch.compile(step, backend="eager")(torch.tensor([1, 2]), torch.ones(1, 2))
    with pytest.raises(TypeError, match="torch.float32"):
        torch.compile(step, backend="eager")(torch.ones(1, 3), torch.ones(1, 3))
    assert values_checkable(torch.ones(1))
    assert not values_checkable(torch.ones(1, device="meta"))


# ------------------------------------------------------------------------------------------
# Caches
# ------------------------------------------------------------------------------------------
def _filled_cache(batch=2, channels=8, heads=2, window=3, seen=4):
    conv, linear, sliding = (
        ConvStateLayer(),
        LinearAttentionStateLayer(),
        SlidingWindowLayer(window),
    )
    conv.conv_state = torch.zeros(batch, channels, 2)
    linear.kv_state = torch.zeros(batch, heads, 21, 4)
    linear.k_state = torch.zeros(batch, heads, 21)
    keys = torch.zeros(batch, heads, seen, 4)
    sliding.store(keys, keys.clone(), torch.ones(batch, seen, dtype=torch.bool))
    for layer in (conv, linear, sliding):
        layer.seen_tokens = seen
    return HazyCache([conv, linear, sliding])


KINDS = [ConvStateLayer, LinearAttentionStateLayer, SlidingWindowLayer]
SPECS = [
    CacheLayerSpec(ConvStateLayer, {"conv_state": (8, 2)}),
    CacheLayerSpec(LinearAttentionStateLayer, {"kv_state": (2, 21, 4), "k_state": (2, 21)}),
    CacheLayerSpec(SlidingWindowLayer, {"keys": (2, 3, 4), "valid": (None,)}),
]


def test_check_cache_compatible_accepts_its_own_cache():
    check_cache_compatible(_filled_cache(), KINDS, 2)
    check_cache_compatible(_filled_cache(), SPECS, 2)
    check_cache_compatible(
        HazyCache([k() if k is not SlidingWindowLayer else k(3) for k in KINDS]), SPECS, 5
    )


def _shallow_cache():
    cache = _filled_cache()
    cache.layers.pop()
    return cache


def _mixed_cache():
    cache = _filled_cache()
    cache.layers[0], cache.layers[1] = cache.layers[1], cache.layers[0]
    return cache


def _uneven_cache():
    cache = _filled_cache()
    cache.layers[2].seen_tokens = 5
    return cache


@pytest.mark.parametrize(
    ("make", "expected", "batch", "exc", "parts"),
    [
        (_shallow_cache, KINDS, 2, ValueError, ("2 layers", "has 3")),
        (
            _mixed_cache,
            KINDS,
            2,
            TypeError,
            ("layers[0]", "LinearAttentionStateLayer", "needs a ConvStateLayer"),
        ),
        (_filled_cache, KINDS, 3, ValueError, ("layers[0].conv_state", "batch 2", "batch 3")),
        (
            lambda: _filled_cache(channels=6),
            SPECS,
            2,
            ValueError,
            ("conv_state", "(6, 2)", "(8, 2)", "width"),
        ),
        (lambda: _filled_cache(window=4), SPECS, 2, ValueError, ("layers[2].keys", "(2, 4, 4)")),
        (_uneven_cache, KINDS, 2, ValueError, ("disagree", "2: 5")),
        (lambda: (torch.zeros(1), torch.zeros(1)), KINDS, 2, TypeError, ("cache", "tuple")),
    ],
)
def test_check_cache_compatible_rejects(make, expected, batch, exc, parts):
    with raises_naming(exc, *parts):
        check_cache_compatible(make(), expected, batch)


def test_check_cache_compatible_works_on_the_documented_protocol_alone():
    class Layer:
        counters = ("index",)

        def __init__(self, batch):
            self.state, self.index = torch.zeros(batch, 3), torch.zeros(1)

        def state_tensors(self):
            return {"state": self.state, "index": self.index}

        def get_seq_length(self):
            return 1

    class Cache:
        layers = [Layer(2), Layer(2)]

    check_cache_compatible(Cache(), [Layer, CacheLayerSpec(Layer, {"state": (3,)})], 2)
    with raises_naming(ValueError, "layers[0].state", "batch 2", "batch 1"):
        check_cache_compatible(Cache(), [Layer, Layer], 1)


# ------------------------------------------------------------------------------------------
# Generation arguments
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_new_tokens": 5, "min_new_tokens": 0, "num_return_sequences": 2},
        {"max_length": 20, "min_length": 20, "num_beams": 4, "top_k": 0},
        {"max_new_tokens": None, "temperature": 0.7, "top_p": 1.0, "streamer": object()},
        {"prefill_chunk_size": 256, "repetition_penalty": 1.2, "min_p": 0.0},
        {"min_length": 30, "max_length": 20, "max_new_tokens": 40},  # max_new_tokens decides
    ],
)
def test_check_generation_lengths_accepts(kwargs):
    check_generation_lengths(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "parts"),
    [
        ({"max_new_tokens": 2.5}, TypeError, ("max_new_tokens", "2.5")),
        ({"max_new_tokens": "10"}, TypeError, ("max_new_tokens", "'10'")),
        ({"max_new_tokens": True}, TypeError, ("max_new_tokens", "True")),
        ({"max_new_tokens": -1}, ValueError, ("max_new_tokens", "-1")),
        ({"max_length": 0}, ValueError, ("max_length", "0", ">= 1")),
        ({"num_return_sequences": 2.0}, TypeError, ("num_return_sequences", "2.0")),
        ({"num_beams": 0}, ValueError, ("num_beams", "0")),
        ({"prefill_chunk_size": 0}, ValueError, ("prefill_chunk_size", "0")),
        ({"top_k": -1}, ValueError, ("top_k", "-1", ">= 0")),
        ({"top_k": 1.5}, TypeError, ("top_k", "1.5")),
        ({"min_new_tokens": -1}, ValueError, ("min_new_tokens", "-1")),
        ({"min_length": "3"}, TypeError, ("min_length", "'3'")),
        ({"temperature": math.nan}, ValueError, ("temperature", "nan")),
        ({"temperature": 0.0}, ValueError, ("temperature", "0.0", "> 0")),
        ({"top_p": 1.5}, ValueError, ("top_p", "1.5")),
        ({"min_new_tokens": 6, "max_new_tokens": 5}, ValueError, ("min_new_tokens (6)", "(5)")),
        ({"min_length": 30, "max_length": 20}, ValueError, ("min_length (30)", "max_length (20)")),
    ],
)
def test_check_generation_lengths_rejects(kwargs, exc, parts):
    with raises_naming(exc, *parts):
        check_generation_lengths(**kwargs)


def test_check_generation_config():
    check_generation_config(GenerationConfig())
    check_generation_config(GenerationConfig(max_new_tokens=8, do_sample=True, top_k=0))
    with raises_naming(TypeError, "generation_config.max_new_tokens", "2.5"):
        check_generation_config(GenerationConfig(max_new_tokens=2.5))
    with raises_naming(ValueError, "generation_config.num_beams", "0"):
        check_generation_config({"num_beams": 0})


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
@pytest.fixture
def safetensors_path(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = {"a.weight": torch.ones(4, 3), "b.bias": torch.arange(5, dtype=torch.float16)}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def _raw_safetensors(path, header, data=b""):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_check_safetensors_file_reads_the_header(safetensors_path):
    header = check_safetensors_file(safetensors_path)
    assert header["a.weight"]["shape"] == [4, 3] and header["b.bias"]["dtype"] == "F16"
    assert header["__metadata__"] == {"format": "pt"}


@pytest.mark.parametrize("keep", [0, 4, 8, 20, -1, -30])
def test_truncated_safetensors_files_are_rejected(safetensors_path, keep):
    data = safetensors_path.read_bytes()
    safetensors_path.write_bytes(data[:keep])
    with raises_naming(ValueError, str(safetensors_path)):
        check_safetensors_file(safetensors_path)


@pytest.mark.parametrize(
    ("write", "parts"),
    [
        (lambda p: p.write_text("not a safetensors file at all"), ("not a safetensors file",)),
        (lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{oops"), ("header is not JSON",)),
        (lambda p: p.write_bytes(struct.pack("<Q", 2) + b"\xff\xfe"), ("header is not JSON",)),
        (lambda p: _raw_safetensors(p, [1, 2]), ("JSON list",)),
        (
            lambda p: _raw_safetensors(
                p, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8
            ),
            ("truncated", "'w'", "0..16", "8 bytes"),
        ),
        (
            lambda p: _raw_safetensors(
                p, {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16
            ),
            ("'w'", "needs 12 bytes", "span 16"),
        ),
        (
            lambda p: _raw_safetensors(
                p,
                {
                    "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            ("'v'", "overlapping"),
        ),
        (
            lambda p: _raw_safetensors(
                p, {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9
            ),
            ("trailing",),
        ),
        (
            lambda p: _raw_safetensors(p, {"w": {"dtype": "F32", "shape": [1]}}),
            ("'w'", "data_offsets"),
        ),
        (
            lambda p: _raw_safetensors(
                p, {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}
            ),
            ("'w'", "shape"),
        ),
    ],
)
def test_corrupt_safetensors_files_are_rejected(tmp_path, write, parts):
    path = tmp_path / "weights.safetensors"
    write(path)
    with raises_naming(ValueError, str(path), *parts):
        check_safetensors_file(path)


def test_missing_safetensors_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_safetensors_file(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    ("text", "kwargs", "parts"),
    [
        ('{\n  "a": 1,\n  "b": 2,\n}\n', {}, ("line 4", "column 1")),
        ('{"a": 1', {}, ("line 1",)),
        ("", {}, ("not valid JSON",)),
        ("[1, 2]", {}, ("JSON object", "list")),
    ],
)
def test_check_json_file(tmp_path, text, kwargs, parts):
    path = tmp_path / "config.json"
    path.write_text('{"a": [1, 2]}')
    assert check_json_file(path) == {"a": [1, 2]}
    path.write_text(text)
    with raises_naming(ValueError, str(path), *parts):
        check_json_file(path, **kwargs)


def test_check_json_file_non_utf8_and_non_objects(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"a": "\xff"}')
    with raises_naming(ValueError, str(path), "UTF-8"):
        check_json_file(path)
    path.write_text("[1, 2]")
    assert check_json_file(path, require_object=False) == [1, 2]


@pytest.mark.parametrize(
    ("info", "parts"),
    [
        (
            {"missing_keys": {"lm_head.weight", "model.norm.weight"}},
            ("missing_keys (2)", "lm_head.weight"),
        ),
        ({"unexpected_keys": ["extra.weight"]}, ("unexpected_keys (1)", "extra.weight")),
        (
            {"mismatched_keys": {("model.norm.weight", torch.Size([7]), torch.Size([32]))}},
            ("mismatched_keys (1)", "model.norm.weight (checkpoint (7,) vs model (32,))"),
        ),
        ({"error_msgs": ["size mismatch"]}, ("error_msgs (1)", "size mismatch")),
        ({"missing_keys": [f"k{i}" for i in range(9)]}, ("missing_keys (9)", "and 4 more")),
    ],
)
def test_check_loading_info_rejects(info, parts):
    with raises_naming(ValueError, "ckpt/dir", "ToyModel", *parts):
        check_loading_info(info, model_class="ToyModel", path="ckpt/dir")


def test_check_loading_info_accepts_clean_and_ignored_reports():
    clean = {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
    }
    check_loading_info(clean, model_class=ToyConfig, path="p")
    check_loading_info(
        {"missing_keys": {"rotary.inv_freq"}, "unexpected_keys": ["old.metrics"]},
        model_class=ToyConfig,
        path="p",
        ignore_missing=[r".*inv_freq"],
        ignore_unexpected=[r".*metrics.*"],
    )


def test_check_loading_info_on_a_real_from_pretrained_report(tmp_path):
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    state["transformer.extra"] = torch.zeros(2)
    del state["transformer.ln_f.weight"]
    save_file(state, str(weights), metadata={"format": "pt"})
    _, info = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    with raises_naming(
        ValueError, "transformer.ln_f.weight", "transformer.extra", "GPT2LMHeadModel"
    ):
        check_loading_info(info, model_class=GPT2LMHeadModel, path=tmp_path)


def test_check_state_dtypes(safetensors_path, tmp_path):
    check_state_dtypes({"w": torch.ones(2), "v": torch.ones(2, dtype=torch.bfloat16)})
    check_state_dtypes(safetensors_path)
    with raises_naming(TypeError, "state dict", "w (int64)", "v (bool)"):
        check_state_dtypes(
            {"w": torch.ones(2, dtype=torch.long), "v": torch.ones(1, dtype=torch.bool)}
        )
    check_state_dtypes({"pos": torch.arange(3)}, exempt=[r"pos"])
    check_state_dtypes({"pos": torch.arange(3)}, allowed=(torch.int64,))
    with raises_naming(TypeError, "'w'", "list"):
        check_state_dtypes({"w": [1.0]})
    path = tmp_path / "int.safetensors"
    save_file({"w": torch.ones(2), "step": torch.zeros(1, dtype=torch.int32)}, str(path))
    with raises_naming(TypeError, str(path), "step (I32)"):
        check_state_dtypes(path)
    with raises_naming(TypeError, "b.bias (F16)"):
        check_state_dtypes(safetensors_path, allowed=(torch.float32,))
