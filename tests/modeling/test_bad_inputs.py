"""Bad input to every registered model fails early with a TypeError/ValueError naming the
argument, the value and what is allowed (DESIGN.md contract 4): forward and generate inputs,
caches, files and configs on disk. Parametrised, so later models join by registering."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.modeling.zoo_models import ALL_MODELS, CAUSAL_LMS, make_model, model_class, random_ids


@pytest.fixture(scope="module")
def models():
    return {name: make_model(name) for name in CAUSAL_LMS}


def _ids(model):
    return random_ids(model, 2, 6)


# (case id, kwargs builder, exception, message pattern)
FORWARD_CASES = [
    ("float ids", lambda m, x: dict(input_ids=x.float()), TypeError, "input_ids.*integer dtype"),
    ("bool ids", lambda m, x: dict(input_ids=x > 3), TypeError, "input_ids.*integer dtype"),
    (
        "ids >= vocab",
        lambda m, x: dict(input_ids=x + m.config.vocab_size),
        ValueError,
        r"input_ids.*\[0, \d+\)",
    ),
    (
        "negative id",
        lambda m, x: dict(input_ids=x.index_fill(1, torch.tensor([2]), -3)),
        ValueError,
        "input_ids.*= -3",
    ),
    (
        "1-d ids",
        lambda m, x: dict(input_ids=x[0]),
        ValueError,
        r"input_ids.*\[batch, seq\].*input_ids\[None\]",
    ),
    ("3-d ids", lambda m, x: dict(input_ids=x[None]), ValueError, r"input_ids.*\(1, 2, 6\)"),
    ("empty sequence", lambda m, x: dict(input_ids=x[:, :0]), ValueError, "at least one token"),
    ("no input", lambda m, x: dict(), ValueError, "exactly one of input_ids and inputs_embeds"),
    (
        "ids and embeds",
        lambda m, x: dict(input_ids=x, inputs_embeds=torch.randn(2, 6, m.config.hidden_size)),
        ValueError,
        "exactly one",
    ),
    (
        "embeds width",
        lambda m, x: dict(inputs_embeds=torch.randn(2, 6, m.config.hidden_size + 1)),
        ValueError,
        "inputs_embeds.*hidden_size",
    ),
    (
        "mask of 2s",
        lambda m, x: dict(input_ids=x, attention_mask=torch.full_like(x, 2)),
        ValueError,
        "attention_mask.*only 0 and 1",
    ),
    (
        "mask -1",
        lambda m, x: dict(input_ids=x, attention_mask=-torch.ones_like(x)),
        ValueError,
        "attention_mask.*0 and 1",
    ),
    (
        "mask too wide",
        lambda m, x: dict(input_ids=x, attention_mask=torch.ones(2, 9)),
        ValueError,
        r"attention_mask.*\(2, 9\)",
    ),
    (
        "mask batch",
        lambda m, x: dict(input_ids=x, attention_mask=torch.ones(3, 6)),
        ValueError,
        r"attention_mask.*\(3, 6\)",
    ),
    (
        "mask rank",
        lambda m, x: dict(input_ids=x, attention_mask=torch.ones(2, 6, 1)),
        ValueError,
        "attention_mask",
    ),
    (
        "labels shape",
        lambda m, x: dict(input_ids=x, labels=x[:, :3]),
        ValueError,
        r"labels.*\(2, 3\)",
    ),
    (
        "float labels",
        lambda m, x: dict(input_ids=x, labels=x.float()),
        TypeError,
        "labels.*integer dtype",
    ),
    (
        "labels >= vocab",
        lambda m, x: dict(input_ids=x, labels=x + m.config.vocab_size),
        ValueError,
        r"labels.*-100",
    ),
    (
        "positions shape",
        lambda m, x: dict(input_ids=x, position_ids=torch.arange(5)[None]),
        ValueError,
        r"position_ids.*\(1, 5\)",
    ),
    (
        "float positions",
        lambda m, x: dict(input_ids=x, position_ids=torch.zeros(2, 6)),
        TypeError,
        "position_ids.*integer",
    ),
    (
        "negative positions",
        lambda m, x: dict(input_ids=x, position_ids=-torch.ones_like(x)),
        ValueError,
        "position_ids.*>= 0",
    ),
    (
        "logits_to_keep < 0",
        lambda m, x: dict(input_ids=x, logits_to_keep=-2),
        ValueError,
        "logits_to_keep.*-2",
    ),
    (
        "logits_to_keep float",
        lambda m, x: dict(input_ids=x, logits_to_keep=1.5),
        TypeError,
        "logits_to_keep.*1.5",
    ),
    (
        "cache of another kind",
        lambda m, x: dict(input_ids=x, past_key_values=object()),
        TypeError,
        "HazyCache",
    ),
]


@pytest.mark.parametrize("model_type", CAUSAL_LMS)
@pytest.mark.parametrize(
    ("case", "build", "error", "match"), FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES]
)
def test_bad_forward_inputs(models, model_type, case, build, error, match):
    model = models[model_type]
    with pytest.raises(error, match=match), torch.no_grad():
        model(**build(model, _ids(model)))


@pytest.mark.parametrize("model_type", CAUSAL_LMS)
def test_bad_caches(models, model_type):
    model = models[model_type]
    ids = _ids(model)
    with torch.no_grad():
        cache = model(ids).past_key_values
        with pytest.raises(ValueError, match="holds batch 2 but the input has batch 1"):
            model(ids[:1, :1], past_key_values=cache)
        with pytest.raises(ValueError, match="cache has already seen 6"):
            model(ids[:, :0], past_key_values=cache)
        with pytest.raises(ValueError, match="cache has already seen 6"):
            model.generate(
                ids[:, :3],
                past_key_values=model(ids).past_key_values,
                max_new_tokens=2,
                pad_token_id=0,
            )
        wider = type(model)(type(model.config).tiny(hidden_size=2 * model.config.hidden_size))
        with pytest.raises(ValueError, match="another shape"):
            wider.eval()(ids[:, :1], past_key_values=cache)
        model.config.output_hidden_states = True  # a switch, not the architecture
        try:
            assert (
                model(ids[:, :1], past_key_values=model(ids).past_key_values).logits.shape[1] == 1
            )
        finally:
            model.config.output_hidden_states = False
        shallow = type(model)(
            type(model.config).tiny(num_hidden_layers=model.config.num_hidden_layers + 1)
        )
        with pytest.raises(ValueError, match="layers but this model has"):
            shallow.eval()(ids[:, :1], past_key_values=cache)
        with pytest.raises(ValueError, match="attention_mask row 1"):
            mask = torch.ones(2, 7, dtype=torch.long)
            mask[1, 2:4] = 0
            model(ids[:, :1], attention_mask=mask, past_key_values=model(ids).past_key_values)


GENERATE_CASES = [
    (dict(max_new_tokens=2.5), TypeError, "max_new_tokens.*2.5"),
    (dict(max_new_tokens="10"), TypeError, "max_new_tokens.*'10'"),
    (dict(max_new_tokens=True), TypeError, "max_new_tokens.*True"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens.*>= 1"),
    (dict(max_length=7.0), TypeError, "max_length.*7.0"),
    (dict(num_return_sequences=0), ValueError, "num_return_sequences"),
    (dict(num_beams=1.5), TypeError, "num_beams"),
    (dict(prefill_chunk_size=-4), ValueError, "prefill_chunk_size"),
    (dict(min_new_tokens=-1), ValueError, "min_new_tokens"),
    (dict(cache_implementation="offloaded"), ValueError, "cache_implementation='offloaded'"),
]


@pytest.mark.parametrize("model_type", CAUSAL_LMS)
@pytest.mark.parametrize(
    ("kwargs", "error", "match"), GENERATE_CASES, ids=[str(c[0]) for c in GENERATE_CASES]
)
def test_bad_generate_arguments(models, model_type, kwargs, error, match):
    model = models[model_type]
    with pytest.raises(error, match=match):
        model.generate(_ids(model), pad_token_id=0, **kwargs)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved tiny checkpoint per registered model (read-only: tests copy what they break)."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for name in ALL_MODELS:
        make_model(name).save_pretrained(root / name)
        out[name] = root / name
    return out


def _copy(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def _copied_weights(saved, model_type, tmp_path):
    """A copy of the saved checkpoint: (directory, weights file, its state, its first key)."""
    ckpt = _copy(saved[model_type], tmp_path)
    weights = ckpt / "model.safetensors"
    state = load_file(str(weights))
    return ckpt, weights, state, sorted(state)[0]


@pytest.mark.parametrize("model_type", ALL_MODELS)
def test_truncated_weights_name_the_file(saved, model_type, tmp_path):
    ckpt = _copy(saved[model_type], tmp_path)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises((ValueError, OSError), match="model.safetensors"):
        model_class(model_type).from_pretrained(ckpt)


@pytest.mark.parametrize("model_type", ALL_MODELS)
def test_missing_unexpected_and_misshapen_weights_are_errors(saved, model_type, tmp_path):
    ckpt, weights, state, first = _copied_weights(saved, model_type, tmp_path)
    cls = model_class(model_type)
    missing = {k: v for k, v in state.items() if k != first}
    save_file(missing, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"missing.*{first}"):
        cls.from_pretrained(ckpt)
    save_file({**state, "surprise.weight": torch.ones(3)}, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="unexpected.*surprise.weight"):
        cls.from_pretrained(ckpt)
    wrong = dict(state)
    wrong[first] = torch.ones(*state[first].shape[:-1], state[first].shape[-1] + 1)
    save_file(wrong, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=first):
        cls.from_pretrained(ckpt)


@pytest.mark.parametrize("model_type", ALL_MODELS)
def test_weights_of_an_integer_dtype_are_errors(saved, model_type, tmp_path):
    ckpt, weights, state, first = _copied_weights(saved, model_type, tmp_path)
    state[first] = state[first].round().to(torch.int32)
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(TypeError, match=f"model.safetensors.*{first}|{first}.*model.safetensors"):
        model_class(model_type).from_pretrained(ckpt)


@pytest.mark.parametrize("model_type", ALL_MODELS)
def test_configs_on_disk_that_do_not_fit(saved, model_type, tmp_path):
    ckpt = _copy(saved[model_type], tmp_path)
    cls = model_class(model_type)
    path = ckpt / "config.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps({**good, "model_type": "llama"}))
    with pytest.raises(ValueError, match="llama"):
        cls.from_pretrained(ckpt)
    path.write_text(json.dumps({**good, "hidden_sise": 8}))
    with pytest.raises(TypeError, match="hidden_sise.*did you mean 'hidden_size'"):
        cls.from_pretrained(ckpt)
    path.write_text(json.dumps({**good, "num_hidden_layers": "4"}))
    with pytest.raises(TypeError, match="num_hidden_layers.*'4'"):
        cls.from_pretrained(ckpt)
    path.write_text(json.dumps(good)[:-5])
    with pytest.raises((ValueError, OSError), match="config.json"):
        cls.from_pretrained(ckpt)
