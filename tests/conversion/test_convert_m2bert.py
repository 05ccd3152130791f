"""``hazyzoo convert m2bert``: the released layout (``bert.`` prefix, pickled bf16/fp32
``pytorch_model.bin`` read with ``weights_only=True``, shared ``freq`` copies, fixed buffers)
becomes a safetensors checkpoint that loads without remote code and reproduces the reference."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForTextEncoding

import hazyzoo  # noqa: F401  (registers the Auto classes)
from hazyzoo.cli import main
from hazyzoo.conversion.m2bert import convert_m2bert
from tests.conftest import golden_dir

FREQ = "encoder.layer.1.attention.filter_fn2.implicit_filter_rev.5.freq"


def _released_copy(tmp_path, *, dtype=None, extra=None, edit=None, config_edit=None):
    """The golden checkpoint as the released repositories store it: ``bert.``-prefixed keys
    (with the classification wrapper's ``classifier.*``) in a pickled ``pytorch_model.bin``."""
    src = golden_dir("m2_bert_tiny")
    out = tmp_path / "released"
    out.mkdir()
    config = json.loads((src / "config.json").read_text())
    config.update(
        architectures=["BertForSequenceClassification"],
        model_type="m2_bert",
        auto_map={"AutoModel": "bert_layers.BertModel"},
    )
    config.update(config_edit or {})
    (out / "config.json").write_text(json.dumps(config))
    state = {f"bert.{k}": v for k, v in load_file(src / "weights.safetensors").items()}
    state["classifier.weight"] = torch.randn(2, 32)
    state["classifier.bias"] = torch.randn(2)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    state.update(extra or {})
    if edit is not None:
        edit(state)
    torch.save(state, out / "pytorch_model.bin")
    return out


def test_cli_converts_the_golden_model_and_it_loads_with_auto(tmp_path, capsys):
    src = golden_dir("m2_bert_tiny")
    out = tmp_path / "converted"
    assert main(["convert", "m2bert", str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "padding_invariant=False" in printed and "model.safetensors" not in printed
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert (out / "modules.json").is_file()  # also a sentence-transformers model
    card = (out / "README.md").read_text()
    assert "released semantics" in card and 'padding="max_length"' in card
    model = AutoModelForTextEncoding.from_pretrained(out).eval()
    inputs = load_file(src / "inputs.safetensors")
    want = load_file(src / "outputs.safetensors")
    with torch.no_grad():
        got = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(got.sentence_embedding, want["pooled_output"], atol=1e-5, rtol=0)
    torch.testing.assert_close(got.last_hidden_state, want["last_hidden_state"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_released_pickled_layout_converts_exactly(tmp_path, dtype):
    src = _released_copy(tmp_path, dtype=dtype)
    conversion = convert_m2bert(src)
    assert conversion.prefix == "bert."
    assert conversion.ignored == ["classifier.bias", "classifier.weight"]
    assert any("not converted: 2 key(s)" in line for line in conversion.report())
    direct = convert_m2bert(golden_dir("m2_bert_tiny")).model.state_dict()
    for key, value in conversion.model.state_dict().items():
        assert value.dtype == torch.float32, key
        expected = direct[key] if dtype is None else direct[key].to(dtype).float()
        assert torch.equal(value, expected), key


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s[f"bert.{FREQ}"].add_(1.0), "differs from .*implicit_filter.1.freq"),
        (
            lambda s: s["bert.encoder.layer.0.attention.filter_fn.pos_emb.t"].mul_(2),
            "pos_emb.t does not hold the values",
        ),
        (
            lambda s: s["bert.encoder.layer.0.attention.filter_fn.modulation.deltas"].add_(1),
            "modulation.deltas does not hold the values",
        ),
        (lambda s: s.update(surprise=torch.ones(1)), "fit no part of M2-BERT.*surprise"),
        (
            lambda s: s.pop("bert.encoder.layer.1.mlp.wo.bias"),
            "missing .*encoder.layer.1.mlp.wo.bias",
        ),
    ],
    ids=["freq-copy", "pos_emb.t", "deltas", "unknown-key", "missing-key"],
)
def test_bad_weights_are_refused_by_name(tmp_path, edit, match):
    src = _released_copy(tmp_path, edit=edit)
    with pytest.raises(ValueError, match=match):
        convert_m2bert(src)


@pytest.mark.parametrize(
    ("config_edit", "error", "match"),
    [
        ({"model_type": "llama"}, ValueError, "model_type is 'llama'"),
        ({"monarch_mixer_sequence_mixing": False}, ValueError, "monarch_mixer_sequence_mixing"),
        ({"use_fancy_kernel": True}, ValueError, "does not know.*use_fancy_kernel"),
        ({"hidden_size": "32"}, TypeError, "hidden_size"),
        ({"hyena_filter_order": 8}, ValueError, "wrong shapes"),
    ],
)
def test_bad_configs_are_refused_by_name(tmp_path, config_edit, error, match):
    src = _released_copy(tmp_path, config_edit=config_edit)
    with pytest.raises(error, match=match):
        convert_m2bert(src)


def test_masked_lm_head_needs_its_weights_and_out_is_safe(tmp_path):
    src = _released_copy(tmp_path)
    with pytest.raises(ValueError, match="missing .*cls.predictions"):
        convert_m2bert(src, head="masked-lm")
    with pytest.raises(ValueError, match="head must be one of"):
        convert_m2bert(src, head="classifier")
    with pytest.raises(ValueError, match="source directory"):
        convert_m2bert(src, src)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_m2bert(src, tmp_path / "full")


def test_masked_lm_checkpoint_converts_with_its_tied_head(tmp_path):
    hidden, vocab = 32, 128

    def add_head(state):
        state.pop("bert.pooler.dense.weight")
        state.pop("bert.pooler.dense.bias")
        g = torch.Generator().manual_seed(3)
        state["cls.predictions.transform.dense.weight"] = torch.randn(hidden, hidden, generator=g)
        state["cls.predictions.transform.dense.bias"] = torch.randn(hidden, generator=g)
        state["cls.predictions.transform.LayerNorm.weight"] = torch.randn(hidden, generator=g)
        state["cls.predictions.transform.LayerNorm.bias"] = torch.randn(hidden, generator=g)
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
        state["cls.predictions.decoder.bias"] = torch.randn(vocab, generator=g)

    src = _released_copy(tmp_path, edit=add_head)
    model = convert_m2bert(src).model
    assert type(model).__name__ == "M2BertForMaskedLM"
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    shutil.rmtree(src)

    def untied(state):
        add_head(state)
        state["cls.predictions.decoder.weight"] = torch.randn(vocab, hidden)

    src = _released_copy(tmp_path, edit=untied)
    with pytest.raises(ValueError, match="differs from bert.embeddings.word_embeddings.weight"):
        convert_m2bert(src)


def test_cli_gives_the_tokenizer_the_models_input_limit(tmp_path, capsys):
    """bert-base-uncased's model_max_length (512) would truncate long documents: the converted
    checkpoint's tokenizer takes the model's limit."""
    from tests.evaluation.test_locov1_m2bert import fixture_tokenizer

    tokenizer = fixture_tokenizer(max_words=100)
    tokenizer.model_max_length = 16
    tokenizer.save_pretrained(tmp_path / "tok")
    assert len(tokenizer) <= 128  # fits the golden model's vocabulary
    src = _released_copy(tmp_path)
    out = tmp_path / "out"
    assert (
        main(["convert", "m2bert", str(src), str(out), "--tokenizer", str(tmp_path / "tok")]) == 0
    )
    assert "model_max_length 16 -> 64" in capsys.readouterr().out
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).model_max_length == 64
