"""BASED-specific behaviour beyond the shared causal-LM contract."""

from __future__ import annotations

import pytest
import torch

from hazyzoo import BasedConfig, BasedForCausalLM


def _model(**overrides) -> BasedForCausalLM:
    torch.manual_seed(0)
    return BasedForCausalLM(BasedConfig.tiny(**overrides)).eval()


def test_decode_step_equals_forward_step():
    model = _model()
    ids = torch.randint(1, 61, (3, 10))
    with torch.no_grad():
        cache_a = model(ids, use_cache=True).past_key_values
        cache_b = model(ids, use_cache=True).past_key_values
        nxt = torch.randint(1, 61, (3, 1))
        ref = model(nxt, past_key_values=cache_a, use_cache=True).logits
        pos = torch.full((3, 1), 10)
        out = model.decode_step(nxt, pos, cache_b)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_residual_stream_is_float32_under_bf16_weights():
    model = _model().to(torch.bfloat16)
    out = model(torch.randint(1, 61, (1, 6)), output_hidden_states=True)
    assert out.hidden_states[1].dtype == torch.float32  # residual after layer 0
    assert out.logits.dtype == torch.bfloat16


def test_wrong_cache_type_and_mask_shape_are_errors():
    from transformers import DynamicCache

    model = _model()
    ids = torch.randint(1, 61, (2, 5))
    with pytest.raises(TypeError, match="HazyCache"):
        model(ids, past_key_values=DynamicCache())
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="input_ids"):
        model()
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, logits_to_keep=-1)


def test_init_is_the_reference_scheme():
    model = BasedForCausalLM(BasedConfig.tiny(num_hidden_layers=8, linear_attention_layers=[1]))
    std = model.config.initializer_range
    emb = model.model.embed_tokens.weight
    assert abs(emb.std().item() - std) < 0.2 * std
    down = torch.cat([layer.mlp.down_proj.weight.flatten() for layer in model.model.layers])
    assert abs(down.std().item() - std / 4) < 0.2 * std / 4  # 1/sqrt(2 * 8 layers)
    assert all(torch.all(layer.input_layernorm.weight == 1) for layer in model.model.layers)


@pytest.mark.gpu
def test_cuda_graph_decode_matches_eager_generation():
    model = _model().cuda()
    ids = torch.randint(1, 61, (4, 12), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    kwargs = dict(max_new_tokens=24, do_sample=False, pad_token_id=0, attention_mask=mask)
    eager = model.generate(ids, **kwargs)
    model.enable_cuda_graph_decode()
    graphed = model.generate(ids, **kwargs)
    again = model.generate(ids, **kwargs)  # a new cache: captured anew
    assert torch.equal(eager, graphed) and torch.equal(eager, again)
    assert model._graph_decoder.captures == 2


def test_training_mode_builds_no_cache_unless_asked():
    model = _model().train()
    ids = torch.randint(1, 61, (2, 6))
    assert model(ids, labels=ids).past_key_values is None
    assert model(ids, use_cache=True).past_key_values is not None
    assert model.eval()(ids).past_key_values is not None
