"""JRT-RNN specifics: the non-causal prefix, padding semantics, the JRT objective and its
collator, and bad inputs. (The contract tests run on JRT through the registry.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hazyzoo
from hazyzoo import JrtConfig, JrtDataCollator, JrtForCausalLM
from tests.modeling.zoo_models import left_padded, make_model, random_ids

ATOL = 1e-4
ENC = 4  # JrtConfig.tiny's enc_length


def _logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, use_cache=False, **kwargs).logits


@pytest.mark.parametrize("semantics", ["exact", "reference"])
def test_prefix_sees_later_prefix_tokens_and_nothing_else_sees_the_future(semantics):
    model = make_model("hazyzoo_jrt", mask_semantics=semantics)
    ids = random_ids(model, 1, 12)
    base = _logits(model, ids)
    inside = ids.clone()
    inside[0, ENC - 1] = (inside[0, ENC - 1] % 50) + 1  # the last prefix token
    changed = (_logits(model, inside) - base).abs().amax(-1)[0]
    assert changed[: ENC - 1].min() > 1e-6, "prefix positions must see later prefix tokens"
    after = ids.clone()
    after[0, 7] = (after[0, 7] % 50) + 1
    changed = (_logits(model, after) - base).abs().amax(-1)[0]
    assert changed[:7].max() == 0, "no position may see a later token outside the prefix"
    assert changed[7] > 0


def test_short_input_is_the_whole_prefix_and_stays_it_when_decoding():
    model = make_model("hazyzoo_jrt")
    ids = random_ids(model, 2, 8)
    short = ids[:, :2]
    changed = _logits(model, torch.cat([short[:, :1], short[:, 1:] % 50 + 1], 1))
    assert (changed[:, 0] - _logits(model, short)[:, 0]).abs().max() > 1e-6
    # Prefill of 2 tokens then steps: the prefix is those 2 tokens; a parallel forward over
    # all 8 would read 4. Steps equal one-by-one feeding of the same cache.
    with torch.no_grad():
        out = model(short, use_cache=True)
        stepped, cache = [out.logits], out.past_key_values
        for t in range(2, 8):
            out = model(ids[:, t : t + 1], past_key_values=cache)
            stepped.append(out.logits)
        chunk = model(short, use_cache=True)
        rest = model(ids[:, 2:], past_key_values=chunk.past_key_values).logits
    stepped = torch.cat(stepped, 1)
    torch.testing.assert_close(stepped[:, 2:], rest, atol=ATOL, rtol=0)
    assert (stepped - _logits(model, ids)).abs().max() > 1e-6


def test_changing_pad_tokens_changes_nothing_in_exact_mode():
    model = make_model("hazyzoo_jrt")
    ids, mask, _ = left_padded(model, [10, 3, 6])
    other = torch.where(mask.bool(), ids, torch.randint_like(ids, 1, 60))
    real = mask.bool()
    torch.testing.assert_close(
        _logits(model, other, attention_mask=mask)[real],
        _logits(model, ids, attention_mask=mask)[real],
    )
    right = torch.zeros_like(mask)
    right[:, :3], right[0] = 1, 1
    junk = torch.where(right.bool(), ids, torch.randint_like(ids, 1, 60))
    torch.testing.assert_close(
        _logits(model, junk, attention_mask=right)[1, :3], _logits(model, ids[1:, :3])[0]
    )


def test_reference_mode_reads_the_mask_only_for_inputs_within_the_prefix():
    model = make_model("hazyzoo_jrt", mask_semantics="reference")
    ids = random_ids(model, 2, 9)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    # L > enc_length: the reference ignores the mask entirely.
    torch.testing.assert_close(_logits(model, ids, attention_mask=mask), _logits(model, ids))
    short, short_mask = ids[:, :ENC], mask[:, :ENC]
    differs = (_logits(model, short, attention_mask=short_mask) - _logits(model, short)).abs()
    assert differs[0].max() > 1e-6 and differs[1].max() == 0
    with pytest.raises(ValueError, match="attention_mask.*left"):
        model(short, attention_mask=torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]))


def test_generate_widens_a_small_prefill_chunk_to_hold_the_prefix():
    model = make_model("hazyzoo_jrt")
    ids, mask, _ = left_padded(model, [9, 5])
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, attention_mask=mask)
    plain = model.generate(ids, **kwargs)
    assert torch.equal(model.generate(ids, prefill_chunk_size=1, **kwargs), plain)


def test_loss_skips_targets_inside_the_prefix_and_adds_the_weighted_mlm_loss():
    model = make_model("hazyzoo_jrt")
    ids = random_ids(model, 2, 10)
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, 1] = ids[:, 1]
    masked = ids.clone()
    masked[:, 1] = model.config.mask_token_id
    out = model(masked, labels=ids, mlm_labels=mlm_labels)
    logits = out.logits
    targets = ids.clone()
    targets[:, :ENC] = -100
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, 61), targets[:, 1:].reshape(-1))
    mlm = F.cross_entropy(logits[:, 1], ids[:, 1])
    torch.testing.assert_close(out.mlm_loss, mlm)
    torch.testing.assert_close(out.loss, lm + 0.25 * mlm)
    plain = make_model("hazyzoo_jrt", loss_on_prefix=True)(masked, labels=ids).loss
    full = F.cross_entropy(logits[:, :-1].reshape(-1, 61), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(plain, full)


def test_collator_masks_prefix_tokens_deterministically():
    features = [{"input_ids": list(range(1, 30))}, {"input_ids": list(range(5, 15))}]
    kwargs = dict(enc_length=20, mask_token_id=60, pad_token_id=0, seed=3)
    a, b = JrtDataCollator(**kwargs)(features), JrtDataCollator(**kwargs)(features)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = JrtDataCollator(**{**kwargs, "seed": 4})(features)
    assert not torch.equal(a["mlm_labels"], c["mlm_labels"])
    masked = a["mlm_labels"] != -100
    assert masked.sum(1).tolist() == [3, 2]  # round(0.15 * 20), round(0.15 * 10)
    assert masked[:, 20:].sum() == 0 and masked[1, 10:].sum() == 0  # prefix, real tokens
    assert torch.all(a["input_ids"][masked] == 60)
    assert torch.equal(a["mlm_labels"][masked], a["labels"][masked])  # the original ids
    assert a["labels"][1, 10:].eq(-100).all() and a["attention_mask"][1, 10:].eq(0).all()
    with pytest.raises(ValueError, match="mlm_probability"):
        JrtDataCollator(**{**kwargs, "mlm_probability": 1.5})
    with pytest.raises(ValueError, match="padding_side"):
        JrtDataCollator(**{**kwargs, "padding_side": "middle"})


def test_trainer_trains_with_the_collator_unchanged(tmp_path):
    from transformers import Trainer, TrainingArguments

    config = JrtConfig.tiny(pad_token_id=0)
    torch.manual_seed(0)
    model = JrtForCausalLM(config)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(1, 60, (12,), generator=g).tolist()} for _ in range(8)]
    seen = {}

    def spy(module, args, kwargs):
        seen["mlm_labels"] = kwargs.get("mlm_labels")

    model.register_forward_pre_hook(spy, with_kwargs=True)
    args = TrainingArguments(
        tmp_path, per_device_train_batch_size=4, max_steps=3, report_to=[], use_cpu=True,
        logging_steps=1, save_strategy="no", learning_rate=1e-2,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=JrtDataCollator.from_config(config, seed=1),
    )
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert seen["mlm_labels"] is not None and (seen["mlm_labels"] != -100).any()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"enc_length": 0}, "enc_length"),
        ({"enc_length": -3}, "enc_length"),
        ({"mask_token_id": 61}, "mask_token_id"),
        ({"mask_semantics": "loose"}, "mask_semantics"),
        ({"mlm_loss_weight": -1.0}, "mlm_loss_weight"),
        ({"mlm_probability": 2.0}, "mlm_probability"),
    ],
)
def test_bad_configs_name_the_field(overrides, field):
    with pytest.raises((ValueError, TypeError), match=field):
        JrtConfig.tiny(**overrides)


def test_bad_mlm_labels_are_refused():
    model = make_model("hazyzoo_jrt")
    ids = random_ids(model, 2, 6)
    with pytest.raises(ValueError, match="mlm_labels"):
        model(ids, mlm_labels=ids[:, :3])
    with pytest.raises(ValueError, match="mlm_labels"):
        model(ids, mlm_labels=torch.full_like(ids, 99))
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, mlm_labels=ids, logits_to_keep=1)


def test_presets_have_the_released_shapes():
    small = JrtConfig.from_preset("jrt-360m")
    assert (small.hidden_size, small.num_hidden_layers, small.enc_length) == (1024, 26, 1024)
    assert small.linear_attention_layers == [1, 6, 11, 16, 21]
    big = JrtConfig.from_preset("jrt-1.3b")
    assert (big.hidden_size, big.num_hidden_layers, big.mask_token_id) == (1792, 36, 50263)
    assert hazyzoo.JRT_PRESETS["jrt-1.3b"]["sliding_window"] == 129
    with pytest.raises(ValueError, match="jrt-2b"):
        JrtConfig.from_preset("jrt-2b")
