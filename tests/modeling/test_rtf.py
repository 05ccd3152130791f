"""RTF models: config checks, the exact recurrence at the filter and model level, the
released recurrence as an option, and the bidirectional sequence classifier.

The causal LM also runs every shared contract test (it is in ``CAUSAL_LM_REGISTRY``) and the
``rtf`` mixer every mixer contract test.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, Trainer, TrainingArguments

import hazyzoo
from hazyzoo import RtfConfig, RtfForCausalLM, RtfForSequenceClassification
from hazyzoo.modeling.cache import HazyCache, SsmStateLayer
from hazyzoo.modeling.layers.rtf import RtfFilter

REL_TOL = 1e-5


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


# --- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(trunc_len=4, state_size=4), "trunc_len"),
        (dict(trunc_len=3, state_size=4), "trunc_len"),
        (dict(hidden_size=16, num_a=3), "num_a"),
        (dict(constraint="l2"), "constraint"),
        (dict(init="kaiming"), "init"),
        (dict(convention="rtf3"), "convention"),
        (dict(channel_mixer="moe"), "channel_mixer"),
        (dict(state_size=0), "state_size"),
        (dict(bidirectional=True, reference_recurrence=True), "reference_recurrence"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_configs_name_the_field(overrides, field):
    with pytest.raises((ValueError, TypeError), match=field):
        RtfConfig.tiny(**overrides)


def test_presets_and_auto_config():
    lm = RtfConfig.from_preset("rtf-wt103")
    assert (lm.hidden_size, lm.num_hidden_layers, lm.state_size, lm.constraint) == (
        768,
        12,
        64,
        "l1_montel",
    )
    lra = RtfConfig.from_preset("rtf-lra-listops")
    assert lra.bidirectional and lra.num_a == 1 and lra.channel_mixer == "none"
    assert isinstance(AutoConfig.for_model("hazyzoo_rtf"), RtfConfig)
    with pytest.raises(ValueError, match="unknown RTF preset"):
        RtfConfig.from_preset("rtf-huge")


def test_input_longer_than_trunc_len_is_an_error():
    model = RtfForCausalLM(RtfConfig.tiny(trunc_len=16)).eval()
    with pytest.raises(ValueError, match="trunc_len is 16"):
        model(torch.randint(1, 61, (1, 17)), use_cache=False)


def test_causal_lm_refuses_a_bidirectional_config_and_classifier_refuses_a_cache():
    config = RtfConfig.tiny(bidirectional=True, channel_mixer="none")
    with pytest.raises(ValueError, match="bidirectional must be False"):
        RtfForCausalLM(config)
    with pytest.raises(ValueError, match="no recurrent cache"):
        hazyzoo.RtfModel(config)(torch.randint(1, 61, (1, 5)), use_cache=True)
    with pytest.raises(ValueError, match="use_cache"):
        RtfForSequenceClassification(config)(torch.randint(1, 61, (1, 5)), use_cache=True)


# --- the exact recurrence --------------------------------------------------------------------
def make_filter(n: int, constraint: str, convention: str, seed: int = 0, **kw) -> RtfFilter:
    torch.manual_seed(seed)
    # "montel" keeps an unconstrained filter inside Montel's bound (stable); l1_montel always is
    filt = RtfFilter(
        12,
        n,
        trunc_len=kw.pop("trunc_len", 300),
        num_a=kw.pop("num_a", 3),
        init="montel" if constraint == "no" else "xavier",
        constraint=constraint,
        convention=convention,
        **kw,
    )
    return filt.eval()


@pytest.mark.parametrize("convention", ["rtf", "rtf2"])
@pytest.mark.parametrize("constraint", ["no", "l1_montel"])
@pytest.mark.parametrize("n", [4, 64])
def test_256_decode_steps_equal_one_parallel_forward(n, constraint, convention):
    """fp32, relative to the output's scale: stepping from a zero state == the FFT forward."""
    filt = make_filter(n, constraint, convention)
    u = torch.randn(2, 256, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = filt(u)
        state = torch.zeros(2, n, 12)
        stepped = torch.stack([filt.step(u[:, t], state) for t in range(256)], 1)
    assert rel_err(stepped, full) <= REL_TOL


@pytest.mark.parametrize("convention", ["rtf", "rtf2"])
def test_prefill_then_pieces_then_steps_past_trunc_len(convention):
    """A prompt, pieces of several tokens and single steps through the cache equal one forward
    (within trunc_len), and keep following the same recurrence past it."""
    filt = make_filter(4, "l1_montel", convention, trunc_len=40)
    u = torch.randn(2, 120, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = filt(u[:, :40])
        layer = SsmStateLayer()
        outs = []
        for lo, hi in ((0, 7), (7, 8), (8, 30), (30, 31), (31, 40)):
            outs.append(filt.recurrent(u[:, lo:hi], layer))
            layer.seen_tokens = hi
        assert rel_err(torch.cat(outs, 1), full) <= REL_TOL
        # past trunc_len: a long piece (split inside into pieces of n_fft - N) == single steps
        filt_layer = SsmStateLayer()
        filt.recurrent(u[:, :40], filt_layer)
        filt_layer.seen_tokens = 40
        state = filt_layer.ssm_state.clone()
        stepped = torch.stack([filt.step(u[:, t], state) for t in range(40, 80)], 1)
        piece = filt.recurrent(u[:, 40:80], filt_layer)
    assert rel_err(piece, stepped) <= REL_TOL
    torch.testing.assert_close(filt_layer.ssm_state, state, atol=1e-5, rtol=1e-5)


def test_realization_follows_weight_updates():
    """The cached correction is rebuilt after an optimizer step (version counters), so decoding
    after training equals the new parallel forward."""
    filt = make_filter(4, "l1_montel", "rtf", trunc_len=32).train()
    u = torch.randn(1, 20, 12, generator=torch.Generator().manual_seed(4))
    first = filt.realization()["readout"].clone()
    opt = torch.optim.SGD(filt.parameters(), lr=0.1)
    filt(u).square().mean().backward()
    opt.step()
    filt.eval()
    assert not torch.equal(filt.realization()["readout"], first)
    with torch.no_grad():
        state = torch.zeros(1, 4, 12)
        stepped = torch.stack([filt.step(u[:, t], state) for t in range(20)], 1)
        assert rel_err(stepped, filt(u)) <= REL_TOL


def test_unstable_filter_has_a_clear_recurrent_error():
    filt = make_filter(2, "no", "rtf", trunc_len=200, num_a=12)
    with torch.no_grad():
        filt.ab[:12] = torch.tensor([-2.5, 1.2])  # poles at 1.25 +- 0.35i: outside the disc
    assert torch.isfinite(filt(torch.randn(1, 10, 12))).all()  # the convolution is fine
    with pytest.raises(ValueError, match="outside the unit circle"):
        filt.realization()


def test_reference_recurrence_is_the_released_step_and_differs_from_the_convolution():
    config = RtfConfig.tiny(reference_recurrence=True, trunc_len=24)
    torch.manual_seed(0)
    model = RtfForCausalLM(config).eval()
    ids = torch.randint(1, 61, (1, 20))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = model.make_cache()
        stepped = torch.cat(
            [model(ids[:, t : t + 1], cache=cache).logits for t in range(20)], dim=1
        )
    assert (stepped - full).abs().max() > 1e-4  # the released step is not its own convolution
    exact = RtfForCausalLM(RtfConfig.tiny(trunc_len=24)).eval()
    exact.load_state_dict(model.state_dict())
    with torch.no_grad():
        cache = exact.make_cache()
        stepped = torch.cat(
            [exact(ids[:, t : t + 1], cache=cache).logits for t in range(20)], dim=1
        )
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)


def test_generate_past_trunc_len_matches_stepwise_and_chunked_prefill():
    model = RtfForCausalLM(RtfConfig.tiny(trunc_len=24)).eval()
    ids = torch.randint(1, 61, (2, 10), generator=torch.Generator().manual_seed(5))
    out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert out.shape == (2, 40)
    chunked = model.generate(ids, max_new_tokens=30, do_sample=False, prefill_chunk_size=3)
    assert torch.equal(out, chunked)
    with pytest.raises(ValueError, match="trunc_len is 24"):
        model.generate(torch.randint(1, 61, (1, 30)), max_new_tokens=2)
    # a long prompt goes through in chunks of at most trunc_len
    long = torch.randint(1, 61, (1, 30), generator=torch.Generator().manual_seed(6))
    assert model.generate(long, max_new_tokens=2, prefill_chunk_size=24).shape == (1, 32)


def test_cache_is_constant_size():
    model = RtfForCausalLM(RtfConfig.tiny()).eval()
    with torch.no_grad():
        cache = model(torch.randint(1, 61, (3, 9))).past_key_values
    assert isinstance(cache, HazyCache) and cache.constant_size
    states = [layer.ssm_state for layer in cache.layers]
    assert all(s.shape == (3, 4, 16) and s.dtype == torch.float32 for s in states)


def test_output_attentions_is_refused():
    model = RtfForCausalLM(RtfConfig.tiny()).eval()
    with pytest.raises(ValueError, match="none of this model's mixers"):
        model(torch.randint(1, 61, (1, 5)), output_attentions=True)


# --- the sequence classifier -----------------------------------------------------------------
def tiny_classifier(**overrides) -> RtfForSequenceClassification:
    torch.manual_seed(0)
    config = RtfConfig.tiny(
        bidirectional=True, channel_mixer="none", num_labels=3, use_cache=False, **overrides
    )
    model = RtfForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_classifier_padding_on_either_side_is_invisible(pooling):
    model = tiny_classifier(pooling=pooling)
    ids = torch.randint(1, 61, (1, 9), generator=torch.Generator().manual_seed(7))
    junk = torch.randint(1, 61, (1, 4), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        alone = model(ids).logits
        right = model(torch.cat([ids, junk], 1), attention_mask=torch.tensor([[1] * 9 + [0] * 4]))
        left = model(torch.cat([junk, ids], 1), attention_mask=torch.tensor([[0] * 4 + [1] * 9]))
    torch.testing.assert_close(right.logits, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left.logits, alone, atol=1e-5, rtol=0)


def test_classifier_reads_both_directions():
    """Changing the last token changes every position's features (the anti-causal half)."""
    model = tiny_classifier()
    ids = torch.randint(1, 61, (1, 9), generator=torch.Generator().manual_seed(9))
    other = ids.clone()
    other[0, -1] = (other[0, -1] % 60) + 1
    with torch.no_grad():
        a = model.model(ids).last_hidden_state[:, 0]
        b = model.model(other).last_hidden_state[:, 0]
    assert (a - b).abs().max() > 1e-4


def test_classifier_rejects_an_empty_row():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="without any real token"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.tensor([[1] * 5, [0] * 5]))


def test_classifier_save_load_and_auto_round_trip(tmp_path):
    model = tiny_classifier()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, RtfForSequenceClassification)
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    ids = torch.randint(1, 61, (2, 11))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    meta = (tmp_path / "README.md").read_text()
    assert "text-classification" in meta and "RTF sequence classifier" in meta


def test_classifier_trains_with_trainer(tmp_path):
    model = tiny_classifier().train()
    g = torch.Generator().manual_seed(10)
    rows = [
        {"input_ids": torch.randint(1, 61, (12,), generator=g), "labels": torch.tensor(i % 3)}
        for i in range(8)
    ]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    result = Trainer(model=model, args=args, train_dataset=rows).train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any("filter.ab" in n for n in changed) and any("score" in n for n in changed)
