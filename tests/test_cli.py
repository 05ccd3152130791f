"""The hazyzoo command and the README's promises."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hazyzoo.cli import main
from hazyzoo.zoo import ZOO, zoo_markdown
from tests.conftest import REPO_ROOT, golden_dir

MISSION_PARTS = [
    "BASED",
    "JRT-RNN",
    "RTF",
    "MAD",
    "M2-BERT",
    "VQ-VAE rotation trick",
    "Prospector heads",
    "Hydragen",
    "Cookbook",
    "LoCoV1",
    "Repeated sampling",
]


def test_list_prints_every_part_with_its_status(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for part in MISSION_PARTS:
        assert part in out
    assert {e.status for e in ZOO} <= {"available", "planned", "partial"}


def test_readme_carries_the_same_zoo_table():
    readme = (REPO_ROOT / "README.md").read_text()
    assert zoo_markdown() in readme, (
        "README zoo table is out of date: paste `hazyzoo list --markdown`"
    )


def test_readme_names_the_two_commands_and_ci_runs_make_test():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_import_needs_neither_datasets_nor_evaluate():
    # Make the path finder behave as if the two packages were not installed (the GPU image).
    code = (
        "import sys, importlib.machinery as m\n"
        "orig = m.PathFinder.find_spec\n"
        "def find_spec(name, path=None, target=None):\n"
        "    if name.split('.')[0] in ('datasets', 'evaluate'):\n"
        "        return None\n"
        "    return orig(name, path, target)\n"
        "m.PathFinder.find_spec = staticmethod(find_spec)\n"
        "import hazyzoo, hazyzoo.cli, hazyzoo.datasets_scripts\n"
        "from transformers import AutoConfig\n"
        "assert AutoConfig.for_model('hazyzoo_based').model_type == 'hazyzoo_based'\n"
        "assert 'datasets' not in sys.modules and 'evaluate' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


# --- bad input: one line on stderr, exit status 1, no traceback ----------------------------

# A small reference (HazyResearch/based) config.json: BaseConv, linear and sliding layers.
REFERENCE_CONFIG = {
    "vocab_size": 61,
    "n_embd": 32,
    "n_head": 2,
    "n_layer": 3,
    "n_inner": 256,
    "alt_mixer_layers": [1],
    "alt_mixer_2_layers": [2],
    "mixer": {
        "_target_": "based.models.mixers.convolution.BaseConv",
        "l_max": 64,
        "use_bias": True,
        "expand_proj": 4,
        "kernel_sizes": 3,
    },
    "alt_mixer": {
        "_target_": "based.models.mixers.linear_attention.LinearAttention",
        "l_max": 64,
        "feature_map": {
            "_target_": "based.models.mixers.linear_attention.TaylorExp",
            "input_dim": 4,
        },
        "feature_dim": 4,
        "num_heads": 2,
    },
    "alt_mixer_2": {
        "_target_": "based.models.mixers.slide_attention.SlidingAttention",
        "window_size": 8,
        "num_heads": 2,
    },
    "rms_norm": True,
    "residual_in_fp32": True,
    "activation_function": "swiglu",
    "rotary_emb_fraction": 1,
    "max_position_embeddings": 0,
    "mlp_fc1_bias": False,
    "mlp_fc2_bias": False,
    "qkv_proj_bias": False,
    "out_proj_bias": False,
    "pad_vocab_size_multiple": 8,
}


def _reference_source(tmp_path, config=REFERENCE_CONFIG, weights=None):
    src = tmp_path / "src"
    src.mkdir()
    text = config if isinstance(config, str) else json.dumps(config)
    (src / "config.json").write_text(text)
    for name, data in (weights or {}).items():
        (src / name).write_bytes(data)
    return src


def _saved_checkpoint(tmp_path):
    from hazyzoo import BasedConfig, BasedForCausalLM

    BasedForCausalLM(BasedConfig.tiny()).save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _case_src_missing(tmp_path):
    return ["convert", "based", str(tmp_path / "nope"), str(tmp_path / "out")], "nope"


def _case_src_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return ["convert", "based", str(tmp_path / "file"), str(tmp_path / "out")], "file"


def _case_no_reference_config(tmp_path):
    (tmp_path / "src").mkdir()
    return ["convert", "based", str(tmp_path / "src"), str(tmp_path / "out")], "config.json"


def _case_config_not_json(tmp_path):
    src = _reference_source(tmp_path, config="{not json")
    return ["convert", "based", str(src), str(tmp_path / "out")], "config.json"


def _case_config_bool_n_layer(tmp_path):
    src = _reference_source(tmp_path, config=dict(REFERENCE_CONFIG, n_layer=True))
    return ["convert", "based", str(src), str(tmp_path / "out")], "n_layer = True"


def _case_config_string_number(tmp_path):
    src = _reference_source(tmp_path, config=dict(REFERENCE_CONFIG, layer_norm_epsilon="1e-5"))
    return ["convert", "based", str(src), str(tmp_path / "out")], "layer_norm_epsilon"


def _case_config_unsupported_value(tmp_path):
    src = _reference_source(tmp_path, config=dict(REFERENCE_CONFIG, activation_function="gelu"))
    return ["convert", "based", str(src), str(tmp_path / "out")], "activation_function = 'gelu'"


def _case_no_weights(tmp_path):
    src = _reference_source(tmp_path)
    return ["convert", "based", str(src), str(tmp_path / "out")], "pytorch_model.bin"


def _case_truncated_safetensors(tmp_path):
    src = _reference_source(tmp_path, weights={"model.safetensors": b"\x10\x00\x00\x00\x00"})
    return ["convert", "based", str(src), str(tmp_path / "out")], "model.safetensors"


def _case_corrupt_bin(tmp_path):
    src = _reference_source(tmp_path, weights={"pytorch_model.bin": b"PK\x03\x04broken"})
    return ["convert", "based", str(src), str(tmp_path / "out")], "pytorch_model.bin"


def _case_out_is_src(tmp_path):
    src = _reference_source(tmp_path)
    return ["convert", "based", str(src), str(src / ".")], "source directory"


def _case_out_not_empty(tmp_path):
    src = _reference_source(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    return ["convert", "based", str(src), str(tmp_path / "out")], "--overwrite"


def _case_tokenizer_missing(tmp_path):
    src = _reference_source(tmp_path)
    out = str(tmp_path / "out")
    return ["convert", "based", str(src), out, "--tokenizer", str(tmp_path / "tok")], "tok"


def _case_tokenizer_not_a_tokenizer(tmp_path):
    src = _reference_source(tmp_path)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer_config.json").write_text("[]")
    out = str(tmp_path / "out")
    return ["convert", "based", str(src), out, "--tokenizer", str(tmp_path / "tok")], "tok"


def _case_card_dir_missing(tmp_path):
    return ["card", str(tmp_path / "nope")], "nope"


def _case_card_no_config(tmp_path):
    return ["card", str(tmp_path)], "config.json"


def _case_card_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{")
    return ["card", str(tmp_path)], "config.json"


def _case_card_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    return ["card", str(tmp_path)], "'llama'"


def _case_card_no_weights(tmp_path):
    ckpt = _saved_checkpoint(tmp_path)
    (ckpt / "model.safetensors").unlink()
    return ["card", str(ckpt)], "safetensors"


def _case_card_corrupt_weights(tmp_path):
    ckpt = _saved_checkpoint(tmp_path)
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 20)
    return ["card", str(ckpt)], "model.safetensors"


def _case_card_handwritten_readme(tmp_path):
    ckpt = _saved_checkpoint(tmp_path)
    (ckpt / "README.md").write_text("# My model\n\nI wrote this.\n")
    return ["card", str(ckpt)], "README.md"


def _case_demo_output_is_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    return ["demo", "--quick", "--output-dir", str(tmp_path / "out")], "--output-dir"


def _case_jrt_demo_output_is_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    return ["demo", "jrt", "--quick", "--output-dir", str(tmp_path / "out")], "--output-dir"


def _case_convert_jrt_gets_a_based_checkpoint(tmp_path):
    return ["convert", "jrt", str(golden_dir("based")), str(tmp_path / "out")], "enc_length"


BAD_INPUT = [
    _case_src_missing,
    _case_src_is_a_file,
    _case_no_reference_config,
    _case_config_not_json,
    _case_config_bool_n_layer,
    _case_config_string_number,
    _case_config_unsupported_value,
    _case_no_weights,
    _case_truncated_safetensors,
    _case_corrupt_bin,
    _case_out_is_src,
    _case_out_not_empty,
    _case_tokenizer_missing,
    _case_tokenizer_not_a_tokenizer,
    _case_card_dir_missing,
    _case_card_no_config,
    _case_card_config_not_json,
    _case_card_unknown_model_type,
    _case_card_no_weights,
    _case_card_corrupt_weights,
    _case_card_handwritten_readme,
    _case_demo_output_is_a_file,
    _case_jrt_demo_output_is_a_file,
    _case_convert_jrt_gets_a_based_checkpoint,
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda f: f.__name__[len("_case_") :])
def test_bad_input_is_one_line_naming_the_culprit(case, tmp_path, capsys):
    argv, culprit = case(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    capsys.readouterr()  # what setting up the case printed
    assert main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith(f"hazyzoo {argv[0]}: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert culprit in err, err
    if argv[0] == "convert":  # a failed conversion leaves no output behind
        after = sorted(str(p) for p in tmp_path.rglob("*"))
        assert after == before


USAGE_ERRORS = [
    ["convert", "mamba", "a", "b"],
    ["convert", "based", "only-src"],
    ["demo", "--seed", "abc"],
    ["demo", "mamba"],
    ["card"],
    ["card", "d", "--no-such-flag"],
    ["frobnicate"],
    [],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda a: " ".join(a) or "nothing")
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert "usage: hazyzoo" in capsys.readouterr().err


# --- hazyzoo eval recall ------------------------------------------------------------------

RECALL_FIXTURES = REPO_ROOT / "tests" / "data" / "recall"


@pytest.fixture(scope="module")
def recall_checkpoint(tmp_path_factory):
    from tests.evaluation import tiny

    return tiny.save_checkpoint(tmp_path_factory.mktemp("recall-model"))


def test_eval_recall_synthetic_end_to_end(recall_checkpoint, tmp_path, capsys):
    out = tmp_path / "results" / "recall.json"
    argv = ["eval", "recall", "--model", str(recall_checkpoint), "--limit", "3"]
    argv += ["--max-new-tokens", "3", "--batch-size", "2", "--output", str(out), "--seed", "5"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["prompt", "accuracy", "n"]
    assert [line.split()[0] for line in lines[2:4]] == ["plain", "jrt"]
    assert all(line.split()[-1] == "3" for line in lines[2:4])
    payload = json.loads(out.read_text())
    assert payload["settings"]["task"] == "synthetic" and payload["settings"]["seed"] == 5
    for form in ("plain", "jrt"):
        result = payload["results"][form]
        assert result["count"] == 3 and len(result["records"]) == 3
        assert result["accuracy"] == sum(r["correct"] for r in result["records"]) / 3
    from hazyzoo.evaluation import synthetic_examples

    assert [r["prompt"] for r in payload["results"]["jrt"]["records"]] == [
        e.jrt_prompt for e in synthetic_examples(3, 8, seed=5)
    ]
    # The same file again needs --overwrite.
    assert main(argv) == 1
    assert main([*argv, "--overwrite"]) == 0


def test_eval_recall_on_a_local_hub_schema_file(recall_checkpoint, capsys):
    argv = ["eval", "recall", "--model", str(recall_checkpoint), "--task", "fda"]
    argv += [
        "--data",
        str(RECALL_FIXTURES / "fda.json"),
        "--prompt",
        "jrt",
        "--max-new-tokens",
        "2",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].split()[0] == "jrt" and lines[2].split()[-1] == "3"


def _eval_case_model_missing(tmp_path, ckpt):
    return ["eval", "recall", "--model", str(tmp_path / "nope")], "--model"


def _eval_case_data_missing(tmp_path, ckpt):
    argv = ["eval", "recall", "--model", str(ckpt), "--task", "swde"]
    return [*argv, "--data", str(tmp_path / "missing.jsonl")], "missing.jsonl"


def _eval_case_data_for_synthetic(tmp_path, ckpt):
    argv = ["eval", "recall", "--model", str(ckpt), "--data"]
    return [*argv, str(RECALL_FIXTURES / "swde.jsonl")], "--data"


def _eval_case_missing_columns(tmp_path, ckpt):
    argv = ["eval", "recall", "--model", str(ckpt), "--task", "squad", "--data"]
    return [*argv, str(RECALL_FIXTURES / "swde.jsonl")], "'context', 'question'"


def _eval_case_empty_data(tmp_path, ckpt):
    (tmp_path / "empty.jsonl").write_text("")
    argv = ["eval", "recall", "--model", str(ckpt), "--task", "fda", "--data"]
    return [*argv, str(tmp_path / "empty.jsonl")], "has no rows"


def _eval_case_bad_limit(tmp_path, ckpt):
    return ["eval", "recall", "--model", str(ckpt), "--limit", "0"], "--limit"


def _eval_case_bad_batch_size(tmp_path, ckpt):
    return ["eval", "recall", "--model", str(ckpt), "--batch-size", "-1"], "--batch-size"


def _eval_case_output_is_a_directory(tmp_path, ckpt):
    return ["eval", "recall", "--model", str(ckpt), "--output", str(tmp_path)], "--output"


def _eval_case_too_many_facts(tmp_path, ckpt):
    return ["eval", "recall", "--model", str(ckpt), "--facts-per-doc", "500"], "facts_per_doc"


EVAL_BAD_INPUT = [
    _eval_case_model_missing,
    _eval_case_data_missing,
    _eval_case_data_for_synthetic,
    _eval_case_missing_columns,
    _eval_case_empty_data,
    _eval_case_bad_limit,
    _eval_case_bad_batch_size,
    _eval_case_output_is_a_directory,
    _eval_case_too_many_facts,
]


@pytest.mark.parametrize("case", EVAL_BAD_INPUT, ids=lambda f: f.__name__[len("_eval_case_") :])
def test_eval_bad_input_is_one_line_naming_the_culprit(case, recall_checkpoint, tmp_path, capsys):
    argv, culprit = case(tmp_path, recall_checkpoint)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("hazyzoo eval: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert culprit in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval"],
        ["eval", "recall"],
        ["eval", "recall", "--model", "m", "--task", "nq"],
        ["eval", "recall", "--model", "m", "--prompt", "twice"],
        ["eval", "recall", "--model", "m", "--limit", "ten"],
        ["eval", "monkeys", "--model", "m"],
    ],
    ids=" ".join,
)
def test_eval_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert "usage: hazyzoo eval" in capsys.readouterr().err
