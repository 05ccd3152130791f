"""BASED-specific behaviour beyond the shared causal-LM contract."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hazyzoo import BasedConfig, BasedForCausalLM, BasedModel, BasedPreTrainedModel
from tests.conftest import REPO_ROOT

# A tiny checkpoint saved by hazyzoo 0.1.0 (before the shared-stack refactor), with its logits
# and greedy continuation: checkpoints saved before keep loading and computing the same.
CHECKPOINT_0_1_0 = REPO_ROOT / "tests" / "data" / "based_0.1.0_tiny"


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


def test_checkpoint_saved_by_0_1_0_loads_and_computes_the_same():
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT_0_1_0).eval()
    stored = load_file(str(CHECKPOINT_0_1_0 / "model.safetensors"))
    state = model.state_dict()
    assert set(stored) | {"lm_head.weight"} == set(state)
    for key, value in stored.items():
        assert torch.equal(state[key], value), key
    expected = load_file(str(CHECKPOINT_0_1_0 / "outputs.safetensors"))
    ids = expected["input_ids"]
    with torch.no_grad():
        # Recorded with torch 2.13's CPU kernels: other builds may differ in the last bits.
        torch.testing.assert_close(model(ids).logits, expected["logits"], atol=1e-6, rtol=0)
    generated = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, expected["generated"])


def test_classes_derive_from_based_pretrained_model_and_accept_sdpa(tmp_path):
    assert issubclass(BasedModel, BasedPreTrainedModel)
    assert issubclass(BasedForCausalLM, BasedPreTrainedModel)
    from transformers import GenerationMixin

    assert GenerationMixin in BasedForCausalLM.__bases__
    _model().save_pretrained(tmp_path)
    for implementation in ("sdpa", "eager"):
        model = BasedForCausalLM.from_pretrained(tmp_path, attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
