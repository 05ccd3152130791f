"""Contract tests every registered hazyzoo model passes, encoders and causal LMs alike
(DESIGN.md contract 1): safetensors round trip, Auto classes, init, gradient checkpointing,
LoRA, accelerate's disk offload, the config's output switches. Generative behaviour is in
``test_causal_lm_contract.py``; a model joins both by being listed in hazyzoo's registries.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
import transformers
from safetensors import safe_open
from transformers import AutoConfig, AutoModel

from tests.modeling.zoo_models import ALL_MODELS, main_output, make_model

_HEAD_AUTO_CLASSES = (
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForSequenceClassification",
    "AutoModelForTextEncoding",
    "AutoModelForImageClassification",
    "AutoModel",
)


def head_auto_class(model) -> type:
    """The Auto class that maps this model's config to its class."""
    for name in _HEAD_AUTO_CLASSES:
        auto = getattr(transformers, name, None)
        if auto is None:
            continue
        try:
            mapped = auto._model_mapping[type(model.config)]
        except KeyError:
            continue
        if mapped is type(model):
            return auto
    raise AssertionError(f"{type(model).__name__} is registered with no Auto class")


@pytest.fixture(params=ALL_MODELS)
def model_type(request) -> str:
    return request.param


def test_save_load_bit_exact_through_safetensors(model_type, tmp_path):
    model = make_model(model_type)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert not any(f.endswith(".bin") for f in files)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    tied = getattr(model, "_tied_weights_keys", None) or {}
    if getattr(model.config, "tie_word_embeddings", False):
        assert not set(tied) & stored, "tied weights must not be duplicated on disk"
    inputs = model.example_inputs(2, 17, seed=1)
    for loader in (type(model), head_auto_class(model)):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is type(model)
        ref_state, new_state = model.state_dict(), loaded.state_dict()
        assert ref_state.keys() == new_state.keys()
        for key in ref_state:
            assert torch.equal(ref_state[key], new_state[key]), key
        with torch.no_grad():
            assert torch.equal(main_output(model(**inputs)), main_output(loaded(**inputs)))


def test_auto_classes_round_trip(model_type, tmp_path):
    model = make_model(model_type)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is type(model.config)
    volatile = {"_name_or_path", "transformers_version"}
    saved = {k: v for k, v in config.to_dict().items() if k not in volatile}
    assert saved == {k: v for k, v in model.config.to_dict().items() if k not in volatile}
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, type(getattr(model, model.base_model_prefix)))
    assert isinstance(base, type(model).__mro__[1])  # <Name>PreTrainedModel
    fresh = head_auto_class(model).from_config(config)
    assert type(fresh) is type(model)


def test_every_class_derives_from_its_pretrained_base(model_type):
    model = make_model(model_type)
    base_cls = type(model).__mro__[1]
    assert base_cls.__name__.endswith("PreTrainedModel")
    assert isinstance(getattr(model, model.base_model_prefix), base_cls)
    assert base_cls.config_class is type(model.config)


def test_init_after_loading_keeps_weights_and_dtype(model_type, tmp_path):
    """``from_pretrained`` builds on the meta device and must not re-initialise what it loads,
    in float32 and when asked for bfloat16 (modules a model keeps in float32 through
    transformers' ``_keep_in_fp32_modules_strict`` stay float32 and exact); a fresh model's
    weights are finite and random."""
    model = make_model(model_type)
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
    model.save_pretrained(tmp_path)
    half = type(model).from_pretrained(tmp_path, dtype=torch.bfloat16)
    kept = [re.compile(p) for p in getattr(model, "_keep_in_fp32_modules_strict", None) or ()]
    for key, value in model.state_dict().items():
        got = half.state_dict()[key]
        want = torch.float32 if any(p.search(key) for p in kept) else torch.bfloat16
        assert got.dtype == want, key
        assert torch.equal(got, value.to(want)), key
    fresh = type(model)(model.config)
    for name, p in fresh.named_parameters():
        assert torch.isfinite(p).all(), name
        if p.dim() >= 2:
            assert p.std() > 0, f"{name} was not initialised"


def _accepts(model, argument: str) -> bool:
    return argument in inspect.signature(model.forward).parameters


def _loss(model, inputs) -> torch.Tensor:
    """The model's loss on its own inputs as labels, or the sum of its main output (models
    without a ``labels`` argument, e.g. text encoders)."""
    if "input_ids" in inputs and _accepts(model, "labels"):
        labels = inputs["input_ids"]
        if hasattr(model, "num_labels"):  # a sequence classifier: one label per row
            labels = torch.arange(labels.shape[0], device=labels.device) % model.num_labels
        out = model(**inputs, labels=labels)
    else:
        out = model(**inputs)
    return out.loss if getattr(out, "loss", None) is not None else main_output(out).float().sum()


def _grads(model, inputs) -> dict[str, torch.Tensor]:
    model.zero_grad()
    _loss(model, inputs).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_same_gradients(model_type):
    model = make_model(model_type).train()
    inputs = model.example_inputs(2, 16, seed=1)
    plain = _grads(model, inputs)
    enable = (
        getattr(model, "activation_checkpointing_enable", None)
        or model.gradient_checkpointing_enable
    )
    enable()
    on = getattr(type(model), "is_activation_checkpointing", None)  # 5.23+; 5.17 lacks it
    assert model.is_activation_checkpointing if on is not None else model.is_gradient_checkpointing
    checkpointed = _grads(model, inputs)
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_peft_lora_trains_saves_and_reloads(model_type, tmp_path):
    peft = pytest.importorskip("peft")
    model = make_model(model_type)
    model.save_pretrained(tmp_path / "base")
    targets = type(model).lora_target_modules
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    lora = peft.get_peft_model(model, config)
    wrapped = {n.split(".")[-1] for n, m in lora.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(targets) & {n.split(".")[-1] for n, _ in model.named_modules()}
    lora.train()
    inputs = model.example_inputs(2, 12, seed=1)
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    _loss(lora, inputs).backward()
    opt.step()
    lora.eval()
    with torch.no_grad():
        after = main_output(lora(**inputs))
        base_out = main_output(type(model).from_pretrained(tmp_path / "base")(**inputs))
    assert not torch.equal(after, base_out)
    lora.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base = head_auto_class(model).from_pretrained(tmp_path / "base")
    # is_trainable=True: the adapter comes back as it was saved, trainable. (PyTorch's CPU
    # F.linear takes another GEMM path for weights with requires_grad=True, so a frozen reload
    # would differ from the trainable original in the last bit while holding the same weights.)
    reloaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter", is_trainable=True)
    reloaded.eval()
    trained_state, reloaded_state = lora.state_dict(), reloaded.state_dict()
    assert trained_state.keys() == reloaded_state.keys()
    for key in trained_state:
        assert torch.equal(trained_state[key], reloaded_state[key]), key
    with torch.no_grad():
        assert torch.equal(main_output(reloaded(**inputs)), after)


def test_disk_offload_with_device_map_gives_the_same_outputs(model_type, tmp_path):
    """accelerate's hooks load an offloaded module's weights in its forward; a mixer that read
    a submodule's weight directly would see the meta tensor. Every block alternates between
    the disk and the CPU."""
    pytest.importorskip("accelerate")
    model = make_model(model_type)
    model.save_pretrained(tmp_path / "ckpt")
    blocks = [
        name
        for name, module in model.named_modules()
        if type(module).__name__ in set(model._no_split_modules)
    ]
    device_map = {name: ("disk" if i % 2 == 0 else "cpu") for i, name in enumerate(blocks)}
    for name, _ in model.named_parameters(remove_duplicate=False):
        if not any(name.startswith(block + ".") for block in blocks):
            parts = name.split(".")
            unit = ".".join(parts[:2] if parts[0] == model.base_model_prefix else parts[:1])
            device_map.setdefault(unit, "cpu")
    assert "disk" in device_map.values()
    offloaded = (
        type(model)
        .from_pretrained(
            tmp_path / "ckpt", device_map=device_map, offload_folder=str(tmp_path / "offload")
        )
        .eval()
    )
    inputs = model.example_inputs(2, 11, seed=3)
    if _accepts(model, "use_cache"):  # encoders keep no cache and take no such argument
        inputs["use_cache"] = False
    with torch.no_grad():
        expected = main_output(model(**inputs))
        got = main_output(offloaded(**inputs))
    assert torch.isfinite(got).all()
    assert torch.equal(got, expected)


def test_config_switches_are_honoured(model_type):
    model = make_model(model_type)
    inputs = model.example_inputs(2, 7, seed=2)
    with torch.no_grad():
        assert model(**inputs).hidden_states is None
        model.config.output_hidden_states = True
        out = model(**inputs)
        assert out.hidden_states is not None
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1
        assert model(**inputs, output_hidden_states=False).hidden_states is None
        model.config.output_hidden_states = False
        model.config.return_dict = False
        as_tuple = model(**inputs)
        assert isinstance(as_tuple, tuple)
        model.config.return_dict = True
        assert torch.equal(as_tuple[0], main_output(model(**inputs)))
