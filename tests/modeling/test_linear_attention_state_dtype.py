"""``linear_attention_state_dtype``: BASED and JRT keep the cached linear-attention state matrix
in bfloat16 / float16 when asked (issue 15), and nothing else changes.

What a user relies on: the cache holds ``kv_state`` in the chosen dtype and ``k_state`` in
float32 through prefill, chunked prefill and decoding (the graph decoder needs the buffers kept
in place); generation stays close to the float32-state model (tiny models, 24 steps: greedy
tokens equal, logits within 2e-3 of their scale); training forwards are bitwise unchanged; the
field round-trips through ``save_pretrained``; an unknown dtype is an error naming the field.
"""

from __future__ import annotations

import pytest
import torch

from hazyzoo import AutoModelForCausalLM, BasedConfig
from hazyzoo.modeling.cache import LinearAttentionStateLayer
from tests.modeling.zoo_models import left_padded, make_model, random_ids

MODELS = ["hazyzoo_based", "hazyzoo_jrt"]
STATE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _pair(model_type: str, state_dtype: str):
    """The float32-state model and the same weights with ``state_dtype``."""
    exact = make_model(model_type)
    reduced = make_model(model_type, linear_attention_state_dtype=state_dtype)
    reduced.load_state_dict(exact.state_dict())
    return exact, reduced


def _state_layers(cache) -> list[LinearAttentionStateLayer]:
    layers = [la for la in cache.layers if isinstance(la, LinearAttentionStateLayer)]
    assert layers, "the tiny config has a linear-attention layer"
    return layers


@pytest.mark.parametrize("model_type", MODELS)
@pytest.mark.parametrize("state_dtype", sorted(STATE_DTYPES))
def test_generation_close_to_the_float32_state(model_type, state_dtype):
    exact, reduced = _pair(model_type, state_dtype)
    ids, mask, _ = left_padded(exact, [9, 14])
    kwargs = dict(attention_mask=mask, max_new_tokens=24, min_new_tokens=24, do_sample=False)
    kwargs.update(pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    want = exact.generate(ids, **kwargs)
    got = reduced.generate(ids, **kwargs)
    torch.testing.assert_close(got.sequences, want.sequences, rtol=0, atol=0)
    for step, (a, b) in enumerate(zip(got.scores, want.scores, strict=True)):
        scale = b.abs().amax().item()
        assert (a - b).abs().amax().item() <= 2e-3 * scale, step
    assert any((a != b).any() for a, b in zip(got.scores, want.scores, strict=True)), (
        "a reduced-precision state should round somewhere"
    )


@pytest.mark.parametrize("model_type", MODELS)
def test_cache_dtypes_through_prefill_chunks_and_steps(model_type):
    _, model = _pair(model_type, "bfloat16")
    ids = random_ids(model, 2, 20)
    cache = model.make_cache()
    with torch.no_grad():
        model(input_ids=ids[:, :12], cache=cache, use_cache=True)
        buffers = [la.kv_state for la in _state_layers(cache)]
        model(input_ids=ids[:, 12:16], cache=cache, use_cache=True)  # a chunk continuing it
        for t in range(16, 20):
            model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
    for layer, buffer in zip(_state_layers(cache), buffers, strict=True):
        assert layer.kv_state.dtype == torch.bfloat16
        assert layer.k_state.dtype == torch.float32
        assert layer.kv_state is buffer, "continuing a cache must update it in place"
    # the cache's k_state equals the float32 model's (it never rounds)
    exact = make_model(model_type)
    exact.load_state_dict(model.state_dict())
    cache32 = exact.make_cache()
    with torch.no_grad():
        exact(input_ids=ids, cache=cache32, use_cache=True)
    for got, want in zip(_state_layers(cache), _state_layers(cache32), strict=True):
        torch.testing.assert_close(got.k_state, want.k_state, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.kv_state.float(), want.kv_state, rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("model_type", MODELS)
def test_training_forward_is_unchanged(model_type):
    exact, reduced = _pair(model_type, "float16")
    ids = random_ids(exact, 2, 17)
    a = exact(input_ids=ids, labels=ids)
    b = reduced(input_ids=ids, labels=ids)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=0)
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=0)


def test_field_round_trips_and_is_checked(tmp_path):
    model = make_model("hazyzoo_based", linear_attention_state_dtype="bfloat16")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.linear_attention_state_dtype == "bfloat16"
    mixers = [m for m in loaded.modules() if hasattr(m, "state_dtype")]
    assert mixers and all(m.state_dtype == torch.bfloat16 for m in mixers)
    with pytest.raises(ValueError, match="linear_attention_state_dtype must be one of"):
        BasedConfig.tiny(linear_attention_state_dtype="bf16")
    with pytest.raises(TypeError, match="linear_attention_state_dtype"):
        BasedConfig.tiny(linear_attention_state_dtype=torch.bfloat16)
