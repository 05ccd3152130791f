"""Hydragen under transformers' compiled decode (``cache_implementation="static"``).

On a GPU, transformers compiles the decode step whenever the cache is compileable; here the
same compilation is forced on the CPU (``CompileConfig._compile_all_devices``), so the test
checks that the static shared-prefix cache and the hydragen attention trace into one graph
with no graph break and decode exactly as uncompiled. Slow (inductor compiles a C++ kernel set,
~1 min on 2 cores): marked ``slow``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import CompileConfig

import hazyzoo
from tests.modeling.test_hydragen import make_model, tokens


@pytest.mark.slow
def test_compiled_static_decode_is_one_graph_and_exact():
    """A user's `cache_implementation="static"` run compiles without graph breaks and gives
    the eager tokens and logits."""
    from torch._dynamo.utils import counters

    model = make_model("llama")
    (prefix,), suffixes = tokens(1, 11), tokens(2, 3, 1, 5, 2)
    kwargs = dict(
        max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_logits=True
    )
    eager = hazyzoo.hydragen.generate(model, prefix, suffix_ids=suffixes, **kwargs)
    compile_config = CompileConfig(fullgraph=False, mode=None)
    compile_config._compile_all_devices = True
    torch._dynamo.reset()
    counters.clear()
    compiled = hazyzoo.hydragen.generate(
        model,
        prefix,
        suffix_ids=suffixes,
        cache_implementation="static",
        compile_config=compile_config,
        **kwargs,
    )
    assert counters["stats"]["unique_graphs"] >= 1, "the decode step was not compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert torch.equal(compiled.sequences, eager.sequences)
    for a, b in zip(compiled.logits, eager.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
