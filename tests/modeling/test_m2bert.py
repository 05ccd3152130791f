"""M2-BERT: golden parity with HazyResearch/m2 (converted weights, both ``hyena_w_mod`` cases,
padded and unpadded inputs), the padding-invariant mode, the heads, bad inputs.

Both heads also run every shared contract test (they are in ``hazyzoo.ENCODER_REGISTRY``):
safetensors round trip, Auto classes, init after loading, gradient checkpointing, LoRA,
disk offload, config switches.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import hazyzoo
from hazyzoo import M2BertConfig, M2BertForMaskedLM, M2BertForTextEncoding, M2BertModel
from hazyzoo.conversion.m2bert import convert_m2bert
from tests.conftest import golden_dir
from tests.modeling.zoo_models import make_model, random_ids

ATOL = 1e-5  # the golden outputs are of order 1-20; the conversion is bit-exact at full length


@pytest.fixture(scope="module")
def golden():
    path = golden_dir("m2_bert_tiny")
    model = convert_m2bert(path).model
    return model, load_file(path / "inputs.safetensors"), load_file(path / "outputs.safetensors")


def _wmod2(model: M2BertForTextEncoding) -> M2BertForTextEncoding:
    """The golden ``wmod2`` case: the same weights in a model built with ``hyena_w_mod=2``."""
    config = M2BertConfig(**{**model.config.to_diff_dict(), "hyena_w_mod": 2})
    other = M2BertForTextEncoding(config).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    return other


@pytest.mark.parametrize("case", ["", "wmod2_"])
def test_golden_parity_padded_and_unpadded(golden, case):
    model, inputs, want = golden
    if case:
        model = _wmod2(model)
    with torch.no_grad():
        out = model.bert(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            output_hidden_states=True,
        )
        short = model.bert(
            input_ids=inputs["input_ids_short"], attention_mask=inputs["attention_mask_short"]
        )
        encoded = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    checks = {
        "last_hidden_state": out.last_hidden_state,
        "pooled_output": out.pooler_output,
        "hidden_after_layer_0": out.hidden_states[1],
        "hidden_after_layer_1": out.hidden_states[2],
        "short_last_hidden_state": short.last_hidden_state,
        "short_pooled_output": short.pooler_output,
    }
    for name, got in checks.items():
        torch.testing.assert_close(got, want[case + name], atol=ATOL, rtol=0, msg=name)
    torch.testing.assert_close(out.hidden_states[0], want["embeddings_output"], atol=ATOL, rtol=0)
    torch.testing.assert_close(encoded.sentence_embedding, want[case + "pooled_output"])
    normalized = torch.nn.functional.normalize(encoded.sentence_embedding, dim=-1)
    torch.testing.assert_close(normalized, want[case + "sentence_embedding_normalized"])


def test_released_semantics_padding_changes_the_embedding(golden):
    """The released models read no mask: the same text padded differently is encoded
    differently (the golden data shows 0.23 on the pooled output); the mask changes nothing."""
    model, inputs, _ = golden
    ids, mask = inputs["input_ids"][:1], inputs["attention_mask"][:1]
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).sentence_embedding
        no_mask = model(input_ids=ids).sentence_embedding
        unpadded = model(input_ids=inputs["input_ids_short"]).sentence_embedding
    assert torch.equal(padded, no_mask)
    assert (padded - unpadded).abs().max() > 0.1


def test_normalize_embeddings_gives_the_golden_normalised_copy(golden):
    model, inputs, want = golden
    model.config.normalize_embeddings = True
    try:
        with torch.no_grad():
            got = model(**{k: inputs[k] for k in ("input_ids", "attention_mask")})
    finally:
        model.config.normalize_embeddings = False
    torch.testing.assert_close(
        got.sentence_embedding, want["sentence_embedding_normalized"], atol=ATOL, rtol=0
    )


def _invariant_model(**overrides) -> M2BertForTextEncoding:
    return make_model("hazyzoo_m2bert", padding_invariant=True, **overrides)


@pytest.mark.parametrize("pool_all", [False, True])
def test_padding_invariant_mode_ignores_any_padding(pool_all):
    """Right padding, left padding and batching with other texts give the embedding of the
    text alone (and its hidden states at the real positions)."""
    model = _invariant_model(pool_all=pool_all)
    texts = [random_ids(model, 1, n, seed=n)[0] for n in (9, 23, 40)]
    with torch.no_grad():
        alone = [model(input_ids=t[None]) for t in texts]
        width = 48
        for side in ("right", "left"):
            ids = torch.full((len(texts), width), 0)
            mask = torch.zeros_like(ids)
            for row, t in enumerate(texts):
                where = slice(0, len(t)) if side == "right" else slice(width - len(t), width)
                ids[row, where] = t
                mask[row, where] = 1
            batch = model(input_ids=ids, attention_mask=mask)
            for row in range(len(texts)):
                torch.testing.assert_close(
                    batch.sentence_embedding[row],
                    alone[row].sentence_embedding[0],
                    atol=1e-5,
                    rtol=0,
                )
                real = mask[row].bool()
                torch.testing.assert_close(
                    batch.last_hidden_state[row, real],
                    alone[row].last_hidden_state[0],
                    atol=1e-5,
                    rtol=0,
                )


def test_padding_invariant_mode_trains_without_reading_pads():
    """Gradients reach no padding position (a loss on the real tokens only)."""
    model = _invariant_model().train()
    model.config.hidden_dropout_prob = 0.0
    ids = random_ids(model, 2, 20)
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = model(inputs_embeds=embeds, attention_mask=mask)
    out.sentence_embedding.sum().backward()
    assert embeds.grad[0, 12:].abs().max() == 0
    assert embeds.grad[0, :12].abs().max() > 0


def test_bad_inputs_raise_clear_errors():
    model = make_model("hazyzoo_m2bert")
    limit = model.config.max_input_length
    with pytest.raises(ValueError, match=f"reads at most {limit}"):
        model(input_ids=random_ids(model, 1, limit + 1))
    with pytest.raises(ValueError, match="token_type_ids must be token ids in \\[0, 2\\)"):
        model(input_ids=random_ids(model, 1, 5), token_type_ids=torch.full((1, 5), 2))
    with pytest.raises(ValueError, match="no attention"):
        model(input_ids=random_ids(model, 1, 5), output_attentions=True)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(input_ids=random_ids(model, 2, 5), attention_mask=torch.ones(2, 6))
    invariant = _invariant_model()
    holes = torch.tensor([[1, 1, 0, 1, 1]])
    with pytest.raises(ValueError, match="padding between real tokens"):
        invariant(input_ids=random_ids(model, 1, 5), attention_mask=holes)
    with pytest.raises(ValueError, match="no real token"):
        invariant(input_ids=random_ids(model, 1, 5), attention_mask=torch.zeros(1, 5))


def test_config_refuses_what_m2_bert_is_not():
    with pytest.raises(ValueError, match="monarch_mixer_sequence_mixing=False"):
        M2BertConfig.tiny(monarch_mixer_sequence_mixing=False)
    with pytest.raises(ValueError, match="sequence_token_planting"):
        M2BertConfig.tiny(sequence_token_planting=True)
    with pytest.raises(ValueError, match="position_embedding_type"):
        M2BertConfig.tiny(position_embedding_type="relative_key")
    with pytest.raises(ValueError, match="hyena_emb_dim must be odd"):
        M2BertConfig.tiny(hyena_emb_dim=4)
    with pytest.raises(ValueError, match="intermediate_size .* divisible by monarch_mlp_nblocks"):
        M2BertConfig.tiny(intermediate_size=66)
    with pytest.raises(ValueError, match="unknown M2-BERT preset"):
        M2BertConfig.from_preset("m2-bert-80M-4k-retrieval")
    config = M2BertConfig.from_preset("m2-bert-80M-2k-retrieval")
    assert config.max_input_length == 2048 and config.hidden_size == 768


def test_a_checkpoint_of_another_size_is_refused(tmp_path):
    model = make_model("hazyzoo_m2bert")
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "hyena_filter_order": 8}))
    with pytest.raises(ValueError, match="implicit_filter"):
        M2BertForTextEncoding.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(use_monarch_mlp=False),
        dict(use_glu_mlp=False),
        dict(bidirectional=False, residual_long_conv=False),
        dict(hyena_training_additions=True),
        dict(use_positional_encodings=False),
        dict(use_cls_token=True),
    ],
    ids=lambda o: ",".join(o),
)
def test_variants_build_save_and_reload(overrides, tmp_path):
    """The config switches the reference has (not covered by the golden data) build models
    that run and round-trip exactly."""
    model = make_model("hazyzoo_m2bert", **overrides)
    inputs = model.example_inputs(2, 10, seed=4)
    with torch.no_grad():
        before = model(**inputs).sentence_embedding
    assert before.shape == (2, model.config.hidden_size) and torch.isfinite(before).all()
    model.save_pretrained(tmp_path)
    again = M2BertForTextEncoding.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(**inputs).sentence_embedding, before)


def test_plain_mlp_and_dense_variants_match_their_formulas():
    torch.manual_seed(0)
    model = make_model("hazyzoo_m2bert", use_glu_mlp=False, use_monarch_mlp=False)
    mlp = model.bert.encoder.layer[0].mlp
    assert isinstance(mlp.gated_layers, torch.nn.Linear) and mlp.gated_layers.out_features == 64
    h = torch.randn(2, 5, 32)
    want = mlp.layernorm(mlp.wo(torch.nn.functional.gelu(mlp.gated_layers(h))) + h)
    torch.testing.assert_close(mlp(h), want)


def test_masked_lm_loss_ties_and_labels():
    model = make_model("hazyzoo_m2bert/masked_lm")
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    ids = random_ids(model, 2, 12)
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    labels[1, 7] = ids[1, 7]
    out = model(input_ids=ids, labels=labels)
    assert out.logits.shape == (2, 12, model.config.vocab_size)
    kept = labels != -100
    want = torch.nn.functional.cross_entropy(out.logits[kept], labels[kept])
    torch.testing.assert_close(out.loss, want)
    with pytest.raises(ValueError, match="labels must have shape"):
        model(input_ids=ids, labels=labels[:, :5])
    with pytest.raises(ValueError, match="labels must be ids"):
        model(input_ids=ids, labels=torch.full_like(ids, model.config.vocab_size))


def test_base_model_loads_from_either_head(tmp_path):
    """AutoModel on a masked-LM checkpoint has no pooler (not a random one); on a text
    encoder's, the trained pooler."""
    mlm = make_model("hazyzoo_m2bert/masked_lm")
    mlm.save_pretrained(tmp_path / "mlm")
    base = M2BertModel.from_pretrained(tmp_path / "mlm")
    assert base.pooler is None
    inputs = mlm.example_inputs(1, 6)
    with torch.no_grad():
        assert base(**inputs).pooler_output is None
        torch.testing.assert_close(
            base(**inputs).last_hidden_state, mlm.bert(**inputs).last_hidden_state
        )
    encoder = make_model("hazyzoo_m2bert")
    encoder.save_pretrained(tmp_path / "enc")
    base = M2BertModel.from_pretrained(tmp_path / "enc")
    assert torch.equal(base.pooler.dense.weight, encoder.bert.pooler.dense.weight)
    with pytest.raises(ValueError, match="missing_keys.*pooler"):
        M2BertForTextEncoding.from_pretrained(tmp_path / "mlm")


def test_bfloat16_loading_keeps_the_filters_in_float32(tmp_path):
    model = make_model("hazyzoo_m2bert")
    model.save_pretrained(tmp_path)
    half = M2BertForTextEncoding.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    mixer = half.bert.encoder.layer[0].sequence_mixer
    assert mixer.filter_fn.freq.dtype == torch.float32
    assert mixer.in_linear.weight.dtype == torch.bfloat16
    inputs = model.example_inputs(2, 30, seed=2)
    with torch.no_grad():
        got = half(**inputs).sentence_embedding.float()
        want = model(**inputs).sentence_embedding
    assert (got - want).abs().max() < 0.05


def test_optimizer_groups_follow_the_reference():
    model = make_model("hazyzoo_m2bert")
    groups = model.optimizer_parameter_groups(1e-4, weight_decay=0.01)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    by_lr = {g["lr"]: g for g in groups}
    assert set(by_lr) == {1e-5, 1e-3, 1e-4}
    pos = {id(p) for p in by_lr[1e-5]["params"]}
    assert pos == {id(m.pos_emb.z) for m in model.modules() if hasattr(m, "pos_emb")}
    assert by_lr[1e-3]["weight_decay"] == model.config.hyena_wd
    torch.optim.AdamW(groups).step()  # a valid optimizer specification


def test_registered_with_the_auto_classes():
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForTextEncoding

    config = M2BertConfig.tiny()
    assert type(AutoConfig.for_model("hazyzoo_m2bert", hidden_size=32)) is M2BertConfig
    assert type(AutoModelForTextEncoding.from_config(config)) is M2BertForTextEncoding
    assert type(AutoModelForMaskedLM.from_config(config)) is M2BertForMaskedLM
    assert hazyzoo.ENCODER_REGISTRY["hazyzoo_m2bert"] is M2BertForTextEncoding


def test_trainer_trains_the_masked_lm_and_the_checkpoint_reloads(tmp_path):
    """transformers' Trainer (which writes use_cache into the config) with the MLM collator."""
    from transformers import Trainer, TrainingArguments

    model = make_model("hazyzoo_m2bert/masked_lm").train()
    ids = random_ids(model, 8, 24, seed=3)

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int) -> dict:
            labels = torch.full_like(ids[i], -100)
            labels[::3] = ids[i][::3]
            return {"input_ids": ids[i], "labels": labels}

    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    before = model.bert.encoder.layer[0].sequence_mixer.in_linear.weight.detach().clone()
    trainer = Trainer(model=model, args=args, train_dataset=Data())
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    after = model.bert.encoder.layer[0].sequence_mixer.in_linear.weight
    assert not torch.equal(before, after)
    trainer.save_model(str(tmp_path / "out"))
    again = M2BertForMaskedLM.from_pretrained(tmp_path / "out")
    assert torch.equal(again.bert.encoder.layer[0].sequence_mixer.in_linear.weight, after.detach())


@pytest.mark.slow
def test_torch_compile_gives_the_eager_embeddings():
    """``torch.compile`` of the text encoder (as in benchmarks/m2bert_encode.py) compiles
    without graph breaks and reproduces eager mode."""
    import torch._dynamo.utils

    model = make_model("hazyzoo_m2bert")
    inputs = model.example_inputs(2, 40, seed=5)
    with torch.inference_mode():
        want = model(**inputs).sentence_embedding
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        got = torch.compile(model)(**inputs).sentence_embedding
    assert not torch._dynamo.utils.counters["graph_break"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
