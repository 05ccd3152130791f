"""Contract tests every registered hazyzoo causal LM passes (DESIGN.md contract 2): the cache,
step-by-step decoding, ``generate`` and the transformers generation features users reach for.

Parametrised over ``hazyzoo.CAUSAL_LM_REGISTRY``; model-generic tests (save/load, Auto classes,
LoRA, offload) are in ``test_model_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

from tests.modeling.zoo_models import CAUSAL_LMS, left_padded, make_model, random_ids

ATOL = 1e-4  # fp32 tolerance for parallel vs recurrent logits


@pytest.fixture(params=CAUSAL_LMS)
def model_type(request) -> str:
    return request.param


def test_step_by_step_decoding_matches_parallel_forward(model_type):
    model = make_model(model_type)
    prompt, steps = 8, 64
    ids = random_ids(model, 2, prompt + steps)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :prompt], use_cache=True)
        cache = out.past_key_values
        logits = [out.logits]
        for t in range(prompt, prompt + steps):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits.append(out.logits)
    stepped = torch.cat(logits, dim=1)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)
    assert cache.get_seq_length() == prompt + steps


def test_chunked_continuation_matches_parallel_forward(model_type):
    model = make_model(model_type)
    ids = random_ids(model, 2, 30)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = model.make_cache()
        parts = []
        for lo, hi in ((0, 7), (7, 19), (19, 20), (20, 30)):
            parts.append(model(ids[:, lo:hi], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=ATOL, rtol=0)


def test_constant_size_layers_do_not_grow(model_type):
    """Layers that promise a constant size keep it; any growing layer says so."""
    model = make_model(model_type)
    with torch.no_grad():
        cache = model(random_ids(model, 1, 40), use_cache=True).past_key_values
        sizes = [layer.nbytes() for layer in cache.layers]
        ids = random_ids(model, 1, 1, seed=3)
        for _ in range(10):
            cache = model(ids, past_key_values=cache, use_cache=True).past_key_values
    for layer, before in zip(cache.layers, sizes):
        if type(layer).constant_size:
            assert layer.nbytes() == before, type(layer).__name__
        else:
            assert not type(layer).supports_graph_replay, type(layer).__name__


def test_generate_cached_equals_uncached_and_argmax_loop(model_type):
    model = make_model(model_type)
    ids = random_ids(model, 2, 9)
    kwargs = dict(max_new_tokens=20, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, use_cache=True, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (2, 29)
    assert torch.equal(cached, uncached)
    seq = ids
    with torch.no_grad():
        for _ in range(20):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(cached, seq)


def test_generate_makes_its_own_cache_for_chunked_prefill_and_static(model_type):
    """``prefill_chunk_size`` and ``cache_implementation="static"`` need no user-built cache."""
    model = make_model(model_type)
    ids = random_ids(model, 2, 13)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    plain = model.generate(ids, **kwargs)
    assert torch.equal(model.generate(ids, prefill_chunk_size=4, **kwargs), plain)
    assert torch.equal(model.generate(ids, cache_implementation="static", **kwargs), plain)
    with pytest.raises(ValueError, match="cache_implementation='quantized'"):
        model.generate(ids, cache_implementation="quantized", **kwargs)


def test_beam_search_reorders_the_cache(model_type):
    model = make_model(model_type)
    ids = random_ids(model, 2, 6)
    kwargs = dict(max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=0)
    with_cache = model.generate(ids, **kwargs)
    without = model.generate(ids, use_cache=False, **kwargs)
    assert with_cache.shape == (2, 12)
    assert torch.equal(with_cache, without)


def test_left_padded_batch_generation_equals_one_by_one(model_type):
    model = make_model(model_type)
    ids, mask, prompts = left_padded(model, [11, 6, 3])
    width = ids.shape[1]
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    batched = model.generate(ids, attention_mask=mask, **kwargs)[:, width:]
    chunked = model.generate(ids, attention_mask=mask, prefill_chunk_size=4, **kwargs)[:, width:]
    assert torch.equal(chunked, batched)
    for row, p in enumerate(prompts):
        single = model.generate(p[None], **kwargs)[:, len(p) :]
        assert torch.equal(batched[row : row + 1], single), f"row {row} differs"


def test_right_padded_forward_is_fine_but_its_cache_cannot_continue(model_type):
    """Evaluation loops pad on the right: the logits of the real tokens are right. Continuing
    the cache would read trailing pads into the state, so it is refused with a clear error."""
    model = make_model(model_type)
    ids = random_ids(model, 2, 9)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
        alone = model(ids[1:, :6]).logits
        torch.testing.assert_close(out.logits[1:, :6], alone, atol=ATOL, rtol=0)
        with pytest.raises(ValueError, match="left"):
            model(ids[:, :1], past_key_values=out.past_key_values)
    with pytest.raises(ValueError, match="left"):
        model.generate(ids, attention_mask=mask, max_new_tokens=3, pad_token_id=0)


class _Collect(BaseStreamer):
    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.detach().clone().reshape(-1))

    def end(self) -> None:
        self.ended = True


def test_sampling_num_return_sequences_and_streamer(model_type):
    model = make_model(model_type)
    ids = random_ids(model, 1, 5)
    kwargs = dict(do_sample=True, top_k=20, temperature=1.3, max_new_tokens=10, pad_token_id=0)
    torch.manual_seed(123)
    a = model.generate(ids, num_return_sequences=3, **kwargs)
    torch.manual_seed(123)
    b = model.generate(ids, num_return_sequences=3, **kwargs)
    assert a.shape == (3, 15)
    assert torch.equal(a, b), "sampling with a fixed seed must be reproducible"
    assert torch.equal(a[:, :5], ids.expand(3, -1))
    assert len({tuple(r.tolist()) for r in a[:, 5:]}) > 1, "3 samples at T=1.3 should differ"
    streamer = _Collect()
    out = model.generate(ids, max_new_tokens=7, do_sample=False, pad_token_id=0, streamer=streamer)
    assert streamer.ended
    assert torch.equal(torch.cat(streamer.chunks), out[0])


def test_masked_forward_compiles_without_graph_breaks(model_type):
    """``torch.compile(fullgraph=True)`` (what ``Trainer(torch_compile=True)`` relies on) with
    an attention mask: no data-dependent Python branch in the masked path."""
    model = make_model(model_type)
    ids, mask, _ = left_padded(model, [9, 5])
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, use_cache=False).logits
        got = compiled(ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch._dynamo.reset()


def test_output_attentions_returns_weights_where_a_mixer_has_them(model_type):
    model = make_model(model_type)
    ids, mask, _ = left_padded(model, [8, 5])
    if not any(
        getattr(layer.mixer, "has_attention_weights", False) for layer in model.model.layers
    ):
        # A model without any attention mixer (RTF) says so instead of returning Nones.
        with pytest.raises(ValueError, match="none of this model's mixers"):
            model(ids, attention_mask=mask, output_attentions=True, use_cache=False)
        return
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_attentions=True, use_cache=False)
        # As for transformers' own models, the config switch needs the eager implementation.
        model.set_attn_implementation("eager")
        model.config.output_attentions = True
        from_config = model(ids, attention_mask=mask, use_cache=False)
        model.config.output_attentions = False
    # Keys after the query are the future, except inside a non-causal prefix (JRT reads each
    # row's first ``noncausal_prefix_length`` real tokens in both directions).
    prefix = model.model.noncausal_prefix_length
    real = mask.bool()
    in_prefix = real & (real.long().cumsum(-1) <= prefix)
    later = torch.ones(8, 8, dtype=torch.bool).triu(1)
    future = (later[None] & ~in_prefix[:, None, :])[:, None]  # [batch, 1, query, key]
    assert len(out.attentions) == model.config.num_hidden_layers
    assert any(a is not None for a in out.attentions)
    for layer, weights in enumerate(out.attentions):
        assert (weights is None) == (from_config.attentions[layer] is None)
        if weights is None:
            continue
        batch, _, length, keys = weights.shape
        assert (batch, length, keys) == (2, 8, 8), layer
        assert torch.all(weights.masked_fill(~future, 0) == 0), f"layer {layer} sees the future"
        assert torch.all(weights[1, :, 3:, :3] == 0), f"layer {layer} attends to padding"
        torch.testing.assert_close(weights[0].sum(-1), torch.ones(weights.shape[1], 8))
    with pytest.raises(ValueError, match="output_attentions"):
        cache = model(ids, attention_mask=mask).past_key_values
        model(ids[:, :1], past_key_values=cache, output_attentions=True)
