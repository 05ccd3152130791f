"""BASED converter: golden parity with the reference implementation and input checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import hazyzoo
from hazyzoo.cli import main as cli_main
from hazyzoo.conversion.based import based_config_from_reference, convert_based
from tests.conftest import golden_dir


@pytest.fixture(scope="module")
def golden():
    path = golden_dir("based")
    return (
        path,
        load_file(str(path / "inputs.safetensors")),
        load_file(str(path / "outputs.safetensors")),
    )


def test_golden_logits_through_cli_and_auto_class(golden, tmp_path, capsys):
    path, inputs, outputs = golden
    assert cli_main(["convert", "based", str(path), str(tmp_path / "out")]) == 0
    assert "converted" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, hazyzoo.BasedForCausalLM)
    assert model.config.sliding_window == 5  # reference window_size 8 -> itself + 4 previous
    assert model.config.vocab_size == 256  # 251 padded to a multiple of 8
    with torch.no_grad():
        out = model(inputs["input_ids"], output_hidden_states=True)
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, outputs["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.hidden_states[-1], outputs["final_hidden"], atol=1e-5, rtol=0)
    # Our fp32 sliding window stays fp32: far from the reference's bf16-cast variant.
    assert (out.logits - outputs["logits_ref_bf16_swa"]).abs().max() > 1e-3
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: hazyzoo" in card


def test_golden_decoding_continues_the_reference_logits(golden):
    path, inputs, outputs = golden
    model = convert_based(path)
    ids = inputs["input_ids"]
    with torch.no_grad():
        out = model(ids[:, :10], use_cache=True)
        cache, logits = out.past_key_values, [out.logits]
        for t in range(10, ids.shape[1]):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), outputs["logits"], atol=1e-4, rtol=0)


def test_pytorch_bin_with_model_prefix_and_metrics(golden, tmp_path):
    path, inputs, outputs = golden
    state = load_file(str(path / "weights.safetensors"))
    state = {f"model.{k}": v for k, v in state.items()}
    state["model.train_metrics.acc"] = torch.tensor(0.5)
    torch.save(state, tmp_path / "pytorch_model.bin")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    model = convert_based(tmp_path)
    with torch.no_grad():
        logits = model(inputs["input_ids"]).logits
    torch.testing.assert_close(logits, outputs["logits"], atol=1e-4, rtol=0)


def test_unknown_keys_and_bad_sources_are_errors(golden, tmp_path):
    path, _, _ = golden
    state = load_file(str(path / "weights.safetensors"))
    state["transformer.layers.0.mixer.surprise.weight"] = torch.ones(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    shutil.copy(path / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match="surprise"):
        convert_based(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert_based(tmp_path / "missing")
    untied = load_file(str(path / "weights.safetensors"))
    untied["lm_head.weight"] = untied["lm_head.weight"] + 1
    save_file(untied, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head"):
        convert_based(tmp_path)


def test_reference_config_translation_for_released_360m():
    ref = json.loads((golden_dir("based") / "config.json").read_text())
    ref.update(
        vocab_size=50257,
        n_embd=1024,
        n_layer=27,
        n_head=16,
        n_inner=2048,
        alt_mixer_layers=[1, 6, 11, 16, 21],
        alt_mixer_2_layers=[2, 7, 12, 17, 22],
    )
    ref["alt_mixer"] = dict(ref["alt_mixer"], num_heads=16, parallel_implementation="fla_parallel")
    ref["alt_mixer_2"] = dict(ref["alt_mixer_2"], window_size=256, num_heads=16)
    config = based_config_from_reference(ref)
    preset = hazyzoo.BasedConfig.from_preset("based-360m")
    for field in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "num_attention_heads",
        "feature_dim",
        "linear_attention_layers",
        "sliding_window_layers",
        "sliding_window",
        "conv_kernel_size",
        "conv_expansion",
    ):
        assert getattr(config, field) == getattr(preset, field), field
    assert config.linear_attention_eps == 1e-6  # fla_parallel's epsilon
    assert config.eos_token_id == 50256
    with pytest.raises(ValueError, match="n_layer"):
        based_config_from_reference({k: v for k, v in ref.items() if k != "n_layer"})
    bad = dict(ref, rotary_emb_fraction=0.5)
    with pytest.raises(ValueError, match="rotary_emb_fraction"):
        based_config_from_reference(bad)
