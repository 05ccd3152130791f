"""JRT converter: golden parity with HazyResearch/prefix-linear-attention and its checks."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import hazyzoo
from hazyzoo.cli import main as cli_main
from hazyzoo.conversion.jrt import convert_jrt, jrt_config_from_reference
from tests.conftest import golden_dir

ATOL = 1e-4  # the fp32 parity bound (logits are up to ~95)
CASES = ["", "_padded", "_long_padded", "_short", "_short_padded"]


@pytest.fixture(scope="module")
def golden():
    path = golden_dir("jrt")
    return (
        path,
        load_file(str(path / "inputs.safetensors")),
        load_file(str(path / "outputs.safetensors")),
    )


@pytest.fixture(scope="module")
def golden_config() -> dict:
    return json.loads((golden_dir("jrt") / "config.json").read_text())


@pytest.fixture(scope="module")
def converted(golden, tmp_path_factory):
    path, _, _ = golden
    out = tmp_path_factory.mktemp("jrt") / "out"
    assert cli_main(["convert", "jrt", str(path), str(out)]) == 0
    return AutoModelForCausalLM.from_pretrained(out).eval()


def _forward(model, inputs, suffix):
    ids = inputs["input_ids" + suffix]
    mask = inputs.get("mask" + suffix)
    with torch.no_grad():
        return model(ids, attention_mask=mask, use_cache=False).logits


@pytest.mark.parametrize("suffix", CASES)
def test_golden_logits_in_reference_semantics(golden, converted, suffix):
    _, inputs, outputs = golden
    assert isinstance(converted, hazyzoo.JrtForCausalLM)
    assert converted.config.mask_semantics == "reference"
    got = _forward(converted, inputs, suffix)
    torch.testing.assert_close(got, outputs["logits" + suffix], atol=ATOL, rtol=0)


def test_converted_config_and_weights(converted):
    config = converted.config
    assert (config.enc_length, config.linear_attention_layers) == (12, [1])
    assert config.sliding_window_layers == [2] and config.sliding_window == 5
    assert config.vocab_size == 256 and config.mask_token_id is None  # not GPT-2's vocabulary
    mixer = converted.model.layers[1].mixer
    assert isinstance(mixer, hazyzoo.modeling.layers.PrefixLinearAttention)
    assert tuple(mixer.k_enc_proj.weight.shape) == (64, 128)
    assert tuple(mixer.v_enc_proj.weight.shape) == (128, 128)
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()


def test_exact_semantics_agree_where_there_is_no_padding(golden, converted):
    """Unpadded inputs mean the same in both semantics."""
    _, inputs, outputs = golden
    exact = copy.deepcopy(converted)
    exact.config.mask_semantics = "exact"
    for layer in exact.model.layers:
        if hasattr(layer.mixer, "mask_semantics"):
            layer.mixer.mask_semantics = "exact"
    for suffix in ("", "_short"):
        got = _forward(exact, inputs, suffix)
        torch.testing.assert_close(got, outputs["logits" + suffix], atol=ATOL, rtol=0)
    # ...while padding is invisible there, unlike in the reference.
    padded = _forward(exact, inputs, "_short_padded")
    ids, mask = inputs["input_ids_short_padded"], inputs["mask_short_padded"]
    alone = _forward(exact, {"input_ids": ids[:1, 3:]}, "")
    torch.testing.assert_close(padded[:1, 3:], alone, atol=ATOL, rtol=0)
    assert mask[0, :3].sum() == 0


def test_golden_decoding_continues_the_reference_logits(golden, converted):
    """Prefill of the first 16 tokens (more than the 12-token prefix), then steps."""
    _, inputs, outputs = golden
    ids = inputs["input_ids"]
    with torch.no_grad():
        out = converted(ids[:, :16], use_cache=True)
        logits, cache = [out.logits], out.past_key_values
        for t in range(16, ids.shape[1]):
            out = converted(ids[:, t : t + 1], past_key_values=cache)
            logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), outputs["logits"], atol=ATOL, rtol=0)


def _source(path, tmp_path, ref):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(ref))
    shutil.copy(path / "weights.safetensors", src / "weights.safetensors")
    return src


def test_grouped_query_config_is_refused_naming_the_key(golden, golden_config, tmp_path, capsys):
    ref = copy.deepcopy(golden_config)
    ref["alt_mixer"]["num_key_value_heads"] = 2
    with pytest.raises(ValueError, match="num_key_value_heads = 2"):
        jrt_config_from_reference(ref)
    src = _source(golden[0], tmp_path, ref)
    assert cli_main(["convert", "jrt", str(src), str(tmp_path / "out")]) == 1
    assert "num_key_value_heads" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda r: r["alt_mixer"].update(enc_length=8), "differs from the top-level enc_length"),
        (lambda r: r.update(enc_length=0), "enc_length = 0"),
        (lambda r: r.pop("enc_length"), "enc_length"),
        (lambda r: r["alt_mixer"].update(feature_name="elu"), "feature_name"),
        (lambda r: r["alt_mixer"].update(use_mask=False), "use_mask"),
        (lambda r: r["alt_mixer"].update(bogus=1), "bogus"),
    ],
)
def test_bad_reference_configs_name_the_key(golden_config, change, pattern):
    ref = copy.deepcopy(golden_config)
    change(ref)
    with pytest.raises((ValueError, TypeError), match=pattern):
        jrt_config_from_reference(ref)


def test_each_converter_refuses_the_other_family(golden):
    from hazyzoo.conversion.based import convert_based

    with pytest.raises(ValueError, match="enc_length"):
        convert_based(golden[0])
    based = json.loads((golden_dir("based") / "config.json").read_text())
    with pytest.raises(ValueError, match="enc_length"):
        jrt_config_from_reference(based)
    with pytest.raises(ValueError, match="no PrefixLinearAttention mixer"):
        jrt_config_from_reference({**based, "enc_length": 12})


def test_released_shapes_get_the_mask_token(golden_config):
    ref = copy.deepcopy(golden_config)
    ref.update(vocab_size=50257, _padded_vocab_size=50264, n_embd=1024, n_head=16, n_inner=2048)
    ref["alt_mixer"].update(num_heads=16, num_key_value_heads=16)
    config = jrt_config_from_reference(ref)
    assert config.vocab_size == 50264 and config.mask_token_id == 50263


def test_convert_jrt_saves_and_refuses_its_source(golden, tmp_path):
    model = convert_jrt(golden[0], tmp_path / "out")
    assert (tmp_path / "out" / "config.json").is_file()
    assert isinstance(model, hazyzoo.JrtForCausalLM)
    with pytest.raises(ValueError):
        convert_jrt(golden[0], golden[0])
