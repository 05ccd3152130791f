"""BASED converter: golden parity with the reference implementation and input checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import hazyzoo
from hazyzoo.cli import main as cli_main
from hazyzoo.conversion.based import (
    MIXER_KEYS,
    REFERENCE_KEYS,
    based_config_from_reference,
    convert_based,
)
from hazyzoo.conversion.common import REQUIRED, check_output_directory
from hazyzoo.hub import is_hazyzoo_card
from tests.conftest import golden_dir
from tests.test_remote_code import tiny_tokenizer


@pytest.fixture(scope="module")
def golden():
    path = golden_dir("based")
    return (
        path,
        load_file(str(path / "inputs.safetensors")),
        load_file(str(path / "outputs.safetensors")),
    )


@pytest.fixture(scope="module")
def golden_config() -> dict:
    return json.loads((golden_dir("based") / "config.json").read_text())


def _source_copy(path, tmp_path, name="src"):
    """A writable copy of the golden source directory (config + weights)."""
    src = tmp_path / name
    src.mkdir()
    shutil.copy(path / "config.json", src / "config.json")
    shutil.copy(path / "weights.safetensors", src / "weights.safetensors")
    return src


def test_golden_logits_through_cli_and_auto_class(golden, tmp_path, capsys):
    path, inputs, outputs = golden
    out = tmp_path / "out"
    assert cli_main(["convert", "based", str(path), str(out), "--remote-code"]) == 0
    printed = capsys.readouterr().out
    assert "converted" in printed
    assert "tokenizer: none in" in printed  # said, not an error
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(model, hazyzoo.BasedForCausalLM)
    assert model.config.sliding_window == 5  # reference window_size 8 -> itself + 4 previous
    assert model.config.vocab_size == 256  # 251 padded to a multiple of 8
    with torch.no_grad():
        result = model(inputs["input_ids"], output_hidden_states=True)
    assert result.logits.dtype == torch.float32
    torch.testing.assert_close(result.logits, outputs["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(result.hidden_states[-1], outputs["final_hidden"], atol=1e-5, rtol=0)
    # Our fp32 sliding window stays fp32: far from the reference's bf16-cast variant.
    assert (result.logits - outputs["logits_ref_bf16_swa"]).abs().max() > 1e-3
    card = (out / "README.md").read_text()
    assert "library_name: hazyzoo" in card and "license: apache-2.0" in card
    assert "trust_remote_code=True" in card and "no tokenizer files" in card
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_based.BasedForCausalLM"
    assert (out / "modeling_based.py").is_file() and not list(path.glob("*.py"))


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
    with pytest.raises(FileNotFoundError, match="missing"):
        convert_based(tmp_path / "missing")
    untied = load_file(str(path / "weights.safetensors"))
    untied["lm_head.weight"] = untied["lm_head.weight"] + 1
    save_file(untied, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head"):
        convert_based(tmp_path)


@pytest.mark.parametrize("name", ["weights.safetensors", "pytorch_model.bin"])
def test_truncated_weights_name_the_file(golden, tmp_path, name):
    path, _, _ = golden
    shutil.copy(path / "config.json", tmp_path / "config.json")
    if name.endswith(".bin"):
        torch.save(load_file(str(path / "weights.safetensors")), tmp_path / name)
    else:
        shutil.copy(path / "weights.safetensors", tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        convert_based(tmp_path)


def test_reference_config_translation_for_released_360m(golden_config):
    ref = dict(
        golden_config,
        vocab_size=50257,
        n_embd=1024,
        n_layer=27,
        n_head=16,
        n_inner=2048,
        alt_mixer_layers=[1, 6, 11, 16, 21],
        alt_mixer_2_layers=[2, 7, 12, 17, 22],
        _padded_vocab_size=50264,
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
        "sliding_window_num_heads",
        "conv_kernel_size",
        "conv_expansion",
        "bos_token_id",
        "eos_token_id",
    ):
        assert getattr(config, field) == getattr(preset, field), field
    assert config.linear_attention_eps == 1e-6  # fla_parallel's epsilon
    with pytest.raises(ValueError, match="n_layer"):
        based_config_from_reference({k: v for k, v in ref.items() if k != "n_layer"})


# --- every reference key is classified -------------------------------------------------------


def test_every_golden_key_is_classified(golden_config):
    assert set(golden_config) <= set(REFERENCE_KEYS), set(golden_config) - set(REFERENCE_KEYS)
    for slot, kind in (
        ("mixer", "base_conv"),
        ("alt_mixer", "linear_attention"),
        ("alt_mixer_2", "sliding_window_attention"),
    ):
        assert set(golden_config[slot]) <= set(MIXER_KEYS[kind]), slot


def _bad_value(spec):
    """A value of the right type that the converter does not implement."""
    if spec.kind == "bool":
        return not spec.allowed[0]
    if spec.kind == "str":
        return "something-else"
    return 3  # int, int?, number, number?: none of the fixed keys allows 3


_FIXED = sorted(k for k, spec in REFERENCE_KEYS.items() if spec.role == "fixed")


@pytest.mark.parametrize("key", _FIXED)
def test_maths_changing_values_are_refused_naming_key_value_and_allowed(golden_config, key):
    spec = REFERENCE_KEYS[key]
    bad = _bad_value(spec)
    with pytest.raises(ValueError, match=rf"{key} = {bad!r}.*allowed"):
        based_config_from_reference(dict(golden_config, **{key: bad}))


@pytest.mark.parametrize(
    ("key", "absent_means"),
    [("rms_norm", "False"), ("activation_function", "'gelu_new'"), ("mlp_fc1_bias", "True")],
)
def test_absent_keys_mean_the_reference_default(golden_config, key, absent_means):
    ref = {k: v for k, v in golden_config.items() if k != key}
    with pytest.raises(ValueError, match=rf"{key} = {absent_means} \(the reference's default"):
        based_config_from_reference(ref)


def test_mixer_keys_are_checked_too(golden_config):
    def with_mixer(slot, **changes):
        return dict(golden_config, **{slot: dict(golden_config[slot], **changes)})

    with pytest.raises(ValueError, match="parallel_implementation = 'tk'"):
        based_config_from_reference(with_mixer("alt_mixer", parallel_implementation="tk"))
    with pytest.raises(ValueError, match="input_dim = 8"):
        feature_map = dict(golden_config["alt_mixer"]["feature_map"], input_dim=8)
        based_config_from_reference(with_mixer("alt_mixer", feature_map=feature_map))
    with pytest.raises(ValueError, match="not supported: allowed TaylorExp"):
        feature_map = {"_target_": "x.CosFormer", "input_dim": 16}
        based_config_from_reference(with_mixer("alt_mixer", feature_map=feature_map))
    with pytest.raises(ValueError, match=r"alt_mixer_2 has keys .*'l_max'"):
        based_config_from_reference(with_mixer("alt_mixer_2", l_max=2048))
    with pytest.raises(ValueError, match="cross_attn = True"):
        based_config_from_reference(with_mixer("alt_mixer_2", cross_attn=True))
    with pytest.raises(TypeError, match="window_size = '8'"):
        based_config_from_reference(with_mixer("alt_mixer_2", window_size="8"))


def test_harmless_keys_do_not_change_the_conversion(golden_config):
    base = based_config_from_reference(golden_config).to_dict()
    changed = dict(
        golden_config,
        attn_pdrop=0.1,
        embd_pdrop=0.1,
        resid_pdrop=0.1,
        fused_bias_fc=False,
        fused_dropout_add_ln=False,
        use_flash_attn=False,
        special_initializer=False,
        initializer_range=0.5,
        reorder_and_upcast_attn=True,
        n_positions=4096,  # max_position_embeddings 0 overrides it
        architectures=["GPTLMHeadModel"],
    )
    changed["alt_mixer_2"] = dict(golden_config["alt_mixer_2"], num_heads=2, causal=False)
    changed["mixer"] = dict(golden_config["mixer"], l_max=4096, kernel_sizes=5)
    assert based_config_from_reference(changed).to_dict() == base


def test_converted_keys_follow_the_reference(golden_config):
    ref = dict(golden_config, n_inner=300, n_head=2)
    ref["alt_mixer"] = dict(ref["alt_mixer"], eps=1e-9)
    ref["alt_mixer_2"] = dict(ref["alt_mixer_2"], window_size=16)
    config = based_config_from_reference(ref)
    assert config.intermediate_size == 512  # GatedMlp rounds up to a multiple of 256
    assert config.sliding_window_num_heads == 2  # n_head, whatever alt_mixer_2 says
    assert config.linear_attention_eps == 1e-9
    assert config.sliding_window == 9
    no_inner = {k: v for k, v in golden_config.items() if k != "n_inner"}
    assert based_config_from_reference(no_inner).intermediate_size == 512  # 8/3 * 128 -> 512
    # A layer in both lists is alt_mixer_2's, as in the reference.
    both = dict(golden_config, alt_mixer_layers=[1, 2], alt_mixer_2_layers=[2])
    config = based_config_from_reference(both)
    assert (config.linear_attention_layers, config.sliding_window_layers) == ([1], [2])


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"n_layer": True}, TypeError, "n_layer = True: expected an integer, got bool"),
        ({"n_embd": "128"}, TypeError, "n_embd = '128': expected an integer, got str"),
        ({"layer_norm_epsilon": "1e-5"}, TypeError, "layer_norm_epsilon = '1e-5'"),
        ({"residual_in_fp32": 1}, TypeError, "residual_in_fp32 = 1: expected true or false"),
        ({"alt_mixer_layers": ["1"]}, TypeError, "alt_mixer_layers"),
        ({"mixer": "BaseConv"}, TypeError, "mixer = 'BaseConv': expected an object"),
        ({"alt_mixer_layers": [7]}, ValueError, r"alt_mixer_layers \[7\]"),
        ({"surprise": 1}, ValueError, "does not know: \\['surprise'\\]"),
        ({"_padded_vocab_size": 300}, ValueError, "_padded_vocab_size = 300"),
    ],
)
def test_wrong_types_and_values_name_the_key(golden_config, change, error, pattern):
    with pytest.raises(error, match=pattern):
        based_config_from_reference(dict(golden_config, **change))


def test_required_keys_are_declared():
    required = {k for k, spec in REFERENCE_KEYS.items() if spec.default is REQUIRED}
    assert required == {"vocab_size", "n_embd", "n_layer", "mixer"}


# --- outputs and tokenizers ------------------------------------------------------------------


def test_never_writes_into_its_source(golden, tmp_path):
    path, _, _ = golden
    src = _source_copy(path, tmp_path)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    (tmp_path / "link").symlink_to(src)
    for out in (src, src / ".", tmp_path / "link", tmp_path / "src" / ".." / "src"):
        for extra in ([], ["--overwrite"]):
            assert cli_main(["convert", "based", str(src), str(out), *extra]) == 1
    with pytest.raises(ValueError, match="source directory"):
        convert_based(src, src / ".", overwrite=True)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_non_empty_output_needs_overwrite(golden, tmp_path, capsys):
    path, _, _ = golden
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli_main(["convert", "based", str(path), str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert cli_main(["convert", "based", str(path), str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="not empty"):
        check_output_directory(path, out)


def test_tokenizer_files_travel_with_the_checkpoint(golden, tmp_path, capsys):
    path, _, _ = golden
    src = _source_copy(path, tmp_path)
    tiny_tokenizer().save_pretrained(src)
    names = sorted(p.name for p in src.iterdir() if p.name.startswith(("tokenizer", "special")))
    assert cli_main(["convert", "based", str(src), str(tmp_path / "out")]) == 0
    assert "tokenizer: copied" in capsys.readouterr().out
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer("the cat sat").input_ids == tiny_tokenizer()("the cat sat").input_ids
    card = (tmp_path / "out" / "README.md").read_text()
    assert 'AutoTokenizer.from_pretrained("path/to/checkpoint")' in card
    assert "The tokenizer is included in this repository." in card


def test_tokenizer_option_saves_a_loaded_tokenizer(golden, tmp_path, capsys):
    path, _, _ = golden
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    out = tmp_path / "out"
    args = ["convert", "based", str(path), str(out), "--tokenizer", str(tmp_path / "tok")]
    assert cli_main(args) == 0
    assert "tokenizer: saved the tokenizer of" in capsys.readouterr().out
    assert AutoTokenizer.from_pretrained(out)("the dog").input_ids == [3, 6]
    assert is_hazyzoo_card(out / "README.md")


def test_tokenizer_larger_than_the_vocabulary_is_refused(golden, tmp_path, capsys):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    path, _, _ = golden
    vocab = {f"w{i}": i for i in range(300)}  # the golden model has 256 ids
    big = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "w0")))
    big.save_pretrained(tmp_path / "big")
    out = tmp_path / "out"
    assert cli_main(["convert", "based", str(path), str(out), "--tokenizer", str(tmp_path / "big")])
    assert "has 300 tokens but the model's vocabulary has 256" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_converted_card_keeps_base_model_when_rewritten(golden, tmp_path):
    path, _, _ = golden
    out = tmp_path / "out"
    base = ["--base-model", "hazyresearch/based-360m"]
    assert cli_main(["convert", "based", str(path), str(out), *base]) == 0
    assert cli_main(["card", str(out)]) == 0
    text = (out / "README.md").read_text()
    assert "base_model: hazyresearch/based-360m" in text
