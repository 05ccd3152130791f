"""Config hygiene for every registered model's config class: wrong types are refused with an
error naming the field, unknown keywords get a suggestion, validation runs once per build, and a
config changed after construction is checked again when a model is built from it."""

from __future__ import annotations

import math
import sys
import types
import typing

import pytest

from tests.modeling.zoo_models import ALL_MODELS, model_class

CONFIG_CLASSES = sorted({model_class(m).config_class for m in ALL_MODELS}, key=lambda c: c.__name__)


def own_fields(config_class: type) -> dict[str, typing.Any]:
    """``config_class.own_fields()`` (the fields hazyzoo declares), with their types."""
    annotations, namespaces = {}, {}
    for klass in config_class.__mro__:
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            annotations.setdefault(name, annotation)
            namespaces.setdefault(name, vars(sys.modules[klass.__module__]))
    return {
        name: eval(annotations[name], namespaces[name])
        if isinstance(annotations[name], str)
        else annotations[name]
        for name in sorted(config_class.own_fields())
    }


def bad_values(annotation) -> list[tuple[object, type]]:
    """Values of the wrong type for a field of ``annotation``, and the error each must raise."""
    if annotation is int:
        return [(True, TypeError), (2.5, TypeError), ("3", TypeError), (None, TypeError)]
    if annotation is float:
        return [
            ("1e-5", TypeError),
            (True, TypeError),
            (math.nan, ValueError),
            (math.inf, ValueError),
        ]
    if annotation is bool:
        return [(1, TypeError), ("true", TypeError), (None, TypeError)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if list[int] in args:
            return [([1.7], TypeError), (["1"], TypeError), ([True], TypeError), ("1", TypeError)]
    return []


CASES = [
    (cls, name, value, error)
    for cls in CONFIG_CLASSES
    for name, annotation in own_fields(cls).items()
    for value, error in bad_values(annotation)
]


@pytest.mark.parametrize(
    ("config_class", "field", "value", "error"),
    CASES,
    ids=[f"{c.__name__}.{f}={v!r}" for c, f, v, _ in CASES],
)
def test_wrong_types_are_refused_naming_the_field(config_class, field, value, error):
    with pytest.raises(error, match=field):
        config_class.tiny(**{field: value})


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_field_kind_is_covered(config_class):
    """Each own field of type int/float/bool/list is exercised above (so a new field of those
    types joins the table by being declared)."""
    covered = {f for c, f, _, _ in CASES if c is config_class}
    checked = {n for n, a in own_fields(config_class).items() if bad_values(a)}
    assert covered == checked and len(checked) >= 5


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_unknown_keywords_are_refused_with_a_suggestion(config_class):
    field = next(n for n, a in own_fields(config_class).items() if a is int)
    typo = field[:-1] + ("x" if field[-1] != "x" else "y")
    with pytest.raises(TypeError, match=f"{typo}.*did you mean '{field}'"):
        config_class.tiny(**{typo: 3})
    with pytest.raises(TypeError, match="generation setting"):
        config_class.tiny(max_new_tokens=5)


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_validation_runs_once_per_build(config_class, monkeypatch):
    calls = []
    original = config_class.check_architecture
    monkeypatch.setattr(
        config_class, "check_architecture", lambda self: calls.append(1) or original(self)
    )
    config = config_class.tiny()
    assert len(calls) == 1
    model_type = next(m for m in ALL_MODELS if model_class(m).config_class is config_class)
    model_class(model_type)(config)
    assert len(calls) == 2  # once more for the model: the config may have changed since


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_a_config_changed_after_construction_is_rechecked(config_class):
    config = config_class.tiny()
    model_type = next(m for m in ALL_MODELS if model_class(m).config_class is config_class)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        # refused when the model is built, or already when set (MAD derives it from layers)
        config.num_hidden_layers = 0
        model_class(model_type)(config)


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_token_ids_must_be_in_the_vocabulary(config_class):
    vocab = config_class.tiny().vocab_size
    with pytest.raises(ValueError, match="eos_token_id"):
        config_class.tiny(eos_token_id=vocab)
    with pytest.raises(ValueError, match="pad_token_id"):
        config_class.tiny(pad_token_id=-1)
    with pytest.raises(TypeError, match="bos_token_id"):
        config_class.tiny(bos_token_id=1.0)
