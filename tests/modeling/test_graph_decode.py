"""CUDA-graph decode is one mechanism of the shared stack: every zoo causal LM whose cache can be
replayed generates the same tokens with it as eagerly, with and without ``compile=True``
(inductor's fused step inside the graph), and BASED / JRT with a bfloat16 state as well.

GPU only (marked ``gpu``); on the CPU the models refuse nothing but the graph is never used,
which the last test checks.
"""

from __future__ import annotations

import pytest
import torch

from tests.modeling.zoo_models import CAUSAL_LMS, left_padded, make_model


def _replayable(model) -> bool:
    return model.make_cache().supports_graph_replay


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True], ids=["graph", "graph+compile"])
@pytest.mark.parametrize("model_type", CAUSAL_LMS)
def test_graph_decode_matches_eager_generation(model_type, compile):
    model = make_model(model_type).cuda()
    if not _replayable(model):
        pytest.skip(f"{model_type}'s cache grows (full attention): the graph cannot serve it")
    ids, mask, _ = left_padded(model, [7, 12, 12])
    kwargs = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
    kwargs.update(attention_mask=mask.cuda(), output_scores=True, return_dict_in_generate=True)
    eager = model.generate(ids.cuda(), **kwargs)
    model.enable_cuda_graph_decode(compile=compile)
    graphed = model.generate(ids.cuda(), **kwargs)
    assert model._graph_decoder.captures >= 1, "the graph was never replayed"
    assert torch.equal(eager.sequences, graphed.sequences)
    tol = 1e-4 if compile else 1e-5  # inductor reorders float32 reductions
    for a, b in zip(graphed.scores, eager.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("model_type", ["hazyzoo_based", "hazyzoo_jrt"])
def test_graph_decode_with_a_bfloat16_state(model_type):
    model = make_model(model_type, linear_attention_state_dtype="bfloat16").cuda()
    ids, mask, _ = left_padded(model, [7, 12])
    kwargs = dict(max_new_tokens=16, do_sample=False, pad_token_id=0, attention_mask=mask.cuda())
    eager = model.generate(ids.cuda(), **kwargs)
    model.enable_cuda_graph_decode()
    assert torch.equal(model.generate(ids.cuda(), **kwargs), eager)


def test_cpu_generation_ignores_the_graph_decoder():
    model = make_model("hazyzoo_based")
    ids, mask, _ = left_padded(model, [5, 8])
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, attention_mask=mask)
    eager = model.generate(ids, **kwargs)
    model.enable_cuda_graph_decode(compile=True)
    assert torch.equal(model.generate(ids, **kwargs), eager)
    assert model._graph_decoder.captures == 0
    with pytest.raises(TypeError, match="compile must be True or False, got 'yes'"):
        model.enable_cuda_graph_decode(compile="yes")
    with pytest.raises(TypeError, match="enabled must be True or False, got 1"):
        model.enable_cuda_graph_decode(1)
