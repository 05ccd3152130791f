"""RTF converter: golden parity with ruke1ire/RTF's standalone layer, checkpoints, checks."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import hazyzoo
from hazyzoo.cli import main as cli_main
from hazyzoo.conversion.rtf import (
    convert_rtf,
    filter_from_reference,
    find_rtf_modules,
    reference_arguments,
)
from tests.conftest import golden_dir

GOLDEN = [
    "rtf_causal_l1montel",
    "rtf_causal_numa2_noconstraint",
    "rtf2_causal",
    "rtf_bidirectional",
]
TOL = 1e-5


def _golden(name):
    path = golden_dir(name)
    return (
        path,
        reference_arguments(path / "config.json"),
        load_file(str(path / "weights.safetensors")),
        load_file(str(path / "inputs.safetensors")),
        load_file(str(path / "outputs.safetensors")),
    )


def _check_filter_against_golden(filt, args, inputs, outputs):
    d = args["d_model"]
    u = inputs["u"]
    with torch.no_grad():
        k = filt.kernel(u.shape[1])
        if args["bidirectional"]:  # the reference's k: causal half, then flipped anti-causal
            k = torch.cat((k[:d], k[d:].flip(-1)), dim=-1)
        torch.testing.assert_close(k, outputs["k"], atol=TOL, rtol=0)
        torch.testing.assert_close(filt(u), outputs["y"], atol=TOL, rtol=0)
        # The reference's odd-length bidirectional y_short is a documented reference defect
        # (README of rtf_bidirectional); the even-length one is exact.
        short = "_short_even" if args["bidirectional"] else "_short"
        got = filt(inputs["u" + short])
        torch.testing.assert_close(got, outputs["y" + short], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", GOLDEN)
def test_filter_from_reference_matches_golden(name):
    _, args, weights, inputs, outputs = _golden(name)
    filt = filter_from_reference(weights, **args).eval()
    assert torch.equal(filt.ab, weights["ab"]) and torch.equal(filt.h_0, weights["h_0"])
    if "scalar" in weights:
        assert torch.equal(filt.scalar, weights["scalar"])
    else:
        assert filt.scalar is None
    assert filt.convention == ("rtf2" if name == "rtf2_causal" else "rtf")
    _check_filter_against_golden(filt, args, inputs, outputs)


@pytest.mark.parametrize("name", GOLDEN)
def test_cli_converts_golden_checkpoint(name, tmp_path, capsys):
    path, args, weights, inputs, outputs = _golden(name)
    out = tmp_path / "out"
    argv = ["convert", "rtf", str(path / "weights.safetensors"), str(out)]
    argv += ["--reference-config", str(path / "config.json"), "--filters-only"]
    assert cli_main(argv) == 0
    assert "not a trained model" in capsys.readouterr().out
    head = "AutoModelForSequenceClassification" if args["bidirectional"] else "AutoModelForCausalLM"
    model = getattr(transformers, head).from_pretrained(out).eval()
    filt = model.model.layers[0].mixer.filter
    assert torch.equal(filt.ab, weights["ab"]) and torch.equal(filt.h_0, weights["h_0"])
    assert (model.config.state_size, model.config.trunc_len) == (3, args["trunc_len"])
    _check_filter_against_golden(filt, args, inputs, outputs)
    card = (out / "README.md").read_text()
    assert "This is not a trained model" in card and "rtf-filters-only" in card


def test_flags_override_the_reference_config(tmp_path):
    path = golden_dir("rtf_causal_l1montel")
    args = reference_arguments(path / "config.json", {"trunc_len": 32, "class": "RTF2"})
    assert (args["trunc_len"], args["rtf_class"], args["constraint"]) == (32, "RTF2", "l1_montel")
    bad = tmp_path / "args.json"
    bad.write_text(json.dumps({"d_model": 4, "state_size": 3, "trunc_len": 8, "kernel": 1}))
    with pytest.raises(ValueError, match="kernel"):
        reference_arguments(bad)
    with pytest.raises(ValueError, match="trunc_len"):
        reference_arguments({"d_model": 4, "state_size": 3})


# --- synthetic checkpoints ------------------------------------------------------------------

D, N, T, NUM_A = 8, 3, 32, 2


def _layer(seed, *, bidirectional=False, num_a=NUM_A, scalar=True):
    g = torch.Generator().manual_seed(seed)
    r = 2 if bidirectional else 1
    out = {
        "ab": torch.rand(r * (num_a + D), N, generator=g) - 0.5,
        "h_0": torch.randn(r * D, generator=g),
    }
    if scalar:
        out["scalar"] = torch.rand(num_a, generator=g)
    return out


def _two_layer_state():
    """Two reference RTF modules (natural order: layers.2 before layers.10) and other keys."""
    state = {"embed.weight": torch.randn(5, D), "layers.2.norm.weight": torch.ones(D)}
    for i, seed in ((10, 1), (2, 2)):
        state.update({f"layers.{i}.layer.{k}": v for k, v in _layer(seed).items()})
    return state


FLAGS = ["--d-model", str(D), "--state-size", str(N), "--trunc-len", str(T)]
FLAGS += ["--num-a", str(NUM_A), "--constraint", "l1_montel", "--init", "montel"]


def test_cli_round_trip_of_a_prefixed_lightning_checkpoint(tmp_path, capsys):
    state = _two_layer_state()
    src = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, src)
    out = tmp_path / "out"
    assert cli_main(["convert", "rtf", str(src), str(out), *FLAGS, "--filters-only"]) == 0
    printed = capsys.readouterr().out
    assert "layers.2.layer, layers.10.layer" in printed and "not converted: 2 key(s)" in printed
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, hazyzoo.RtfForCausalLM) and model.config.num_hidden_layers == 2
    assert (model.config.num_a, model.config.init, model.config.constraint) == (
        2,
        "montel",
        "l1_montel",
    )
    for i, prefix in enumerate(("layers.2.layer.", "layers.10.layer.")):
        filt = model.model.layers[i].mixer.filter
        for name in ("ab", "h_0", "scalar"):
            assert torch.equal(getattr(filt, name), state[prefix + name]), (i, name)


def test_base_checkpoint_gives_every_other_weight(tmp_path, capsys):
    base_dir = tmp_path / "base"
    base = hazyzoo.RtfForCausalLM(hazyzoo.RtfConfig.tiny(hidden_size=D, num_a=4))
    base.save_pretrained(base_dir)
    state = {f"blocks.{i}.rtf.{k}": v for i in range(2) for k, v in _layer(i).items()}
    src = tmp_path / "weights.safetensors"
    save_file(state, str(src))
    out = tmp_path / "out"
    argv = ["convert", "rtf", str(src), str(out), *FLAGS, "--rtf-class", "RTF2"]
    assert cli_main([*argv, "--base", str(base_dir)]) == 0
    printed = capsys.readouterr().out
    assert "config: state_size 4 (base) -> 3 (reference)" in printed
    model = AutoModelForCausalLM.from_pretrained(out)
    config = model.config
    assert (config.state_size, config.trunc_len, config.num_a) == (N, T, NUM_A)
    assert config.convention == "rtf2" and config.intermediate_size == base.config.intermediate_size
    got, want = model.state_dict(), base.state_dict()
    for key, value in want.items():
        if ".mixer.filter." not in key:
            assert torch.equal(got[key], value), key
    for i in range(2):
        assert torch.equal(got[f"model.layers.{i}.mixer.filter.ab"], state[f"blocks.{i}.rtf.ab"])
    assert "comes from the hazyzoo checkpoint" in (out / "README.md").read_text()


def test_bidirectional_scalar_is_duplicated_for_one_denominator():
    layer = _layer(3, bidirectional=True, num_a=1)
    args = dict(d_model=D, state_size=N, trunc_len=T, num_a=1, bidirectional=True)
    filt = filter_from_reference(layer, **args, constraint="l1_montel")
    assert torch.equal(filt.scalar, layer["scalar"].repeat(2))
    # The reference's constraint: both a-rows divided with the one scalar.
    a = layer["ab"][:2]
    want = a / (a.abs().sum(-1) + layer["scalar"].abs() + 1e-6)[:, None]
    torch.testing.assert_close(filt.denominators(), want, atol=0, rtol=0)
    with pytest.raises(ValueError, match="cannot run"):
        filter_from_reference(
            _layer(3, bidirectional=True, num_a=2),
            **{**args, "num_a": 2},
            constraint="l1_montel",
        )


def test_find_rtf_modules_single_layer():
    modules, other = find_rtf_modules({**_layer(0), "extra": torch.zeros(1)})
    assert [p for p, _ in modules] == [""] and other == ["extra"]


def _bad(tmp_path, change):
    state = _two_layer_state()
    change(state)
    src = tmp_path / "src.safetensors"
    save_file(state, str(src))
    return src


@pytest.mark.parametrize(
    ("change", "extra", "pattern"),
    [
        (
            lambda s: s.update({"layers.2.layer.ab": torch.zeros(9, N)}),
            [],
            r"layers\.2\.layer\.ab has shape \(9, 3\).*\(10, 3\)",
        ),
        (
            lambda s: s.pop("layers.10.layer.h_0"),
            [],
            r"lacks layers\.10\.layer\.h_0 \(expected shape \(8,\)",
        ),
        (lambda s: s.pop("layers.10.layer.scalar"), [], r"lacks layers\.10\.layer\.scalar"),
        (lambda s: None, ["--constraint", "no"], "only constraint='l1_montel' has"),
        (lambda s: None, ["--rtf-class", "RTF3"], "rtf_class must be one of"),
        (
            lambda s: s.update({"layers.2.layer.h_0": torch.zeros(D, dtype=torch.float64)}),
            [],
            "different dtypes",
        ),
    ],
)
def test_bad_checkpoints_are_one_line_errors(tmp_path, capsys, change, extra, pattern):
    src = _bad(tmp_path, change)
    out = tmp_path / "out"
    assert cli_main(["convert", "rtf", str(src), str(out), *FLAGS, *extra, "--filters-only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hazyzoo convert: error: ") and err.count("\n") == 1, err
    assert re.search(pattern, err), err
    assert not out.exists()


def test_existing_output_needs_overwrite(tmp_path, capsys):
    src = _bad(tmp_path, lambda s: None)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["convert", "rtf", str(src), str(out), *FLAGS, "--filters-only"]
    assert cli_main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert cli_main([*argv, "--overwrite"]) == 0
    assert (out / "config.json").is_file()


def test_rest_of_the_model_must_be_named(tmp_path):
    src = _bad(tmp_path, lambda s: None)
    args = dict(d_model=D, state_size=N, trunc_len=T, num_a=NUM_A, constraint="l1_montel")
    with pytest.raises(ValueError, match="--base DIR .* or --filters-only"):
        convert_rtf(src, tmp_path / "out", **args)
    with pytest.raises(ValueError, match="not both"):
        convert_rtf(src, None, **args, base=tmp_path, filters_only=True)
    assert not (tmp_path / "out").exists()


def test_bidirectional_layers_refuse_a_causal_base(tmp_path):
    base_dir = tmp_path / "base"
    hazyzoo.RtfForCausalLM(
        hazyzoo.RtfConfig.tiny(hidden_size=D, num_hidden_layers=1)
    ).save_pretrained(base_dir)
    src = tmp_path / "w.safetensors"
    save_file(_layer(0, bidirectional=True, num_a=1, scalar=False), str(src))
    args = dict(d_model=D, state_size=N, trunc_len=T, num_a=1, bidirectional=True)
    with pytest.raises(ValueError, match="RtfForSequenceClassification base"):
        convert_rtf(src, None, **args, base=base_dir)


def test_rtf_flags_are_refused_by_other_converters(tmp_path, capsys):
    argv = ["convert", "based", str(tmp_path), str(tmp_path / "out"), "--d-model", "4"]
    assert cli_main(argv) == 1
    assert "--d-model: only for `hazyzoo convert rtf`" in capsys.readouterr().err
