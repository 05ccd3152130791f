"""Every zoo causal LM compiles with ``torch.compile(fullgraph=True)`` and matches eager.

Two programs per model (issue 15, item 4), on the CPU, float32, tiny configs:

* the training step: ``model(input_ids, labels=...)``, its loss and logits, then
  ``loss.backward()``; loss, logits and every parameter's gradient are compared with eager;
* the decode step as ``generate`` calls it: ``model(input_ids=[batch, 1], attention_mask=[batch,
  past + 1], cache=..., use_cache=True)`` on a cache prefilled eagerly from a left-padded batch;
  three steps, each step's logits and the updated cache (every state tensor and position count)
  compared with the same steps run eagerly on a copy of the cache.

The models come from ``hazyzoo.CAUSAL_LM_REGISTRY`` (a new causal LM joins by registering). MAD
runs twice: its ``tiny()`` hybrid (Hyena, Mamba, attention, RTF, SwiGLU, MLP) and a hybrid of
every registered mixer that no zoo model's tiny config uses (plus MAD's ``hyena-rtf``), so every
mixer of the shared stack is compiled in some model.

Backends. ``fullgraph=True`` makes Dynamo raise at the first graph break whatever the backend,
so the backend does not change what is proven about graph breaks (or about recompilation): the
per-model tests use the ``eager`` backend (Dynamo's graph run by eager PyTorch, the fastest on
two CPU cores). AOTAutograd (functionalisation of the in-place cache updates, the traced
joint forward/backward graph: what inductor consumes) runs in ``make test`` on MAD's hybrid
training step, and on every case under the ``slow`` marker, with ``aot_eager_decomp_partition``:
plain ``aot_eager`` fails Mamba's backward on a PyTorch bug (pytorch/pytorch#120035: the
``softplus_backward`` decomposition and its CPU kernel disagree on output strides, then a
``view`` of the gradient raises) that neither inductor nor this backend, which uses inductor's
decompositions, meets. The default backend (inductor, generated C++) runs on RTF's two programs
under ``slow`` too: 45-50 s each on two CPU cores with a cold inductor cache. Dispatch is pinned
to the PyTorch references (``HAZYZOO_KERNELS=torch``): Dynamo cannot trace a Triton launch
running in the CPU interpreter.

Besides no graph break, the decode check allows at most two graphs over the three steps (one
for the first step's static shapes, one with the cache length dynamic): a graph per step means
a Python value (the cache's position count) was specialised, and ``fullgraph=True`` would fail
hard at the recompile limit (8) after a few tokens.

Tolerances (fp32): loss, logits and cache states ``atol=1e-5, rtol=1e-5`` under the eager-run
backends (the same aten ops as eager, up to decompositions); gradients ``atol=1e-5, rtol=1e-4``;
inductor (fused kernels, reordered reductions) ``1e-4``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

import hazyzoo
from hazyzoo.configuration.configuration_mad import MAD_LAYERS
from hazyzoo.modeling.decoder_lm import CACHE_FIELD
from hazyzoo.modeling.layers.registry import CHANNEL_MIXERS, NO_MIXER, SEQUENCE_MIXERS
from tests.modeling.zoo_models import CAUSAL_LMS, left_padded, make_model, random_ids

AOT_BACKEND = "aot_eager_decomp_partition"
# What Dynamo raises for a graph break under fullgraph=True (Unsupported), for a Python branch
# on a data-dependent size (GuardOnDataDependentSymNode) and at the recompile limit.
COMPILE_ERRORS = (
    torch._dynamo.exc.TorchDynamoException,
    torch._dynamo.exc.FailOnRecompileLimitHit,
    GuardOnDataDependentSymNode,
)


def _rest_of_the_mixers() -> list[str]:
    """MAD layers for the registered mixers no zoo model's tiny config uses: MAD's own name
    for the mixer where it has one (with MAD's settings), else the registry name."""
    used = set()
    for cls in hazyzoo.CAUSAL_LM_REGISTRY.values():
        config = cls.config_class.tiny()
        used |= {*config.mixer_types, *config.channel_mixer_types}
    mad_name = {}
    for name, spec in reversed(MAD_LAYERS.items()):  # the first MAD name of a mixer wins
        mad_name[spec.mixer] = name
    sequence = sorted(set(SEQUENCE_MIXERS) - used)
    channel = sorted(set(CHANNEL_MIXERS) - used - {NO_MIXER})
    # hyena-rtf is the MAD primitive that differs from a registered mixer only by its
    # settings (the RTF filter inside Hyena); it is also the sequence mixer a MAD model needs
    return [
        *(mad_name.get(n, n) for n in sequence),
        "hyena-rtf",
        *(mad_name.get(n, n) for n in channel),
    ]


# BASED and the every-other-mixer MAD hybrid run by default; the other models with -m slow
# (each compiles in a few seconds; together they were ~20 s of the default suite).
CASES = [
    pytest.param(t, {}, id=t, marks=() if t == "hazyzoo_based" else pytest.mark.slow)
    for t in CAUSAL_LMS
]
CASES.append(
    pytest.param(
        hazyzoo.MadConfig.model_type,
        {"layers": _rest_of_the_mixers()},
        id="hazyzoo_mad-rest_of_the_mixers",
    )
)


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch):
    monkeypatch.setenv("HAZYZOO_KERNELS", "torch")
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _build(model_type: str, overrides: dict) -> torch.nn.Module:
    model = make_model(model_type, **overrides)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert not dropouts, "the comparison with eager needs a model without dropout"
    return model


def _break_report(fn, *args) -> str:
    """Every graph break Dynamo finds in ``fn(*args)``, with where it happened."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    lines = [f"{explanation.graph_break_count} graph break(s):"]
    for item in explanation.break_reasons:
        frame = item.user_stack[-1] if item.user_stack else None
        where = f"{frame.filename}:{frame.lineno} `{(frame.line or '').strip()}`" if frame else "?"
        lines.append(f"- {str(item.reason).splitlines()[0]} at {where}")
    return "\n".join(lines)


def _compiled_call(fn, args, explain_args, backend):
    """``torch.compile(fn, fullgraph=True)(*args)``; on a graph break, fail with every break
    (found by ``torch._dynamo.explain`` on ``explain_args``, fresh copies of the inputs)."""
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    try:
        return compiled(*args)
    except COMPILE_ERRORS as error:
        pytest.fail(
            f"torch.compile(fullgraph=True) failed: {str(error).splitlines()[0]}\n"
            f"{_break_report(fn, *explain_args())}",
            pytrace=False,
        )


def _check_training(model, backend, atol, rtol, grad_rtol):
    model.train()
    ids = random_ids(model, 2, 12)
    labels = ids.clone()
    labels[0, :3] = -100  # ignored positions take part too

    def train_step(input_ids, labels):
        out = model(input_ids=input_ids, labels=labels)
        return out.loss, out.logits

    def grads():
        found = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return found

    loss, logits = train_step(ids, labels)
    loss.backward()
    eager_grads = grads()
    assert eager_grads, "no parameter received a gradient"

    compiled_loss, compiled_logits = _compiled_call(
        train_step, (ids, labels), lambda: (ids, labels), backend
    )
    compiled_loss.backward()
    compiled_grads = grads()
    assert not counters["graph_break"], dict(counters["graph_break"])

    torch.testing.assert_close(compiled_loss, loss, atol=atol, rtol=rtol)
    torch.testing.assert_close(compiled_logits, logits, atol=atol, rtol=rtol)
    # A parameter eager leaves without a gradient may get a zero one compiled (an MoE expert
    # no token chose runs densely under torch.compile): missing counts as zero.
    params = dict(model.named_parameters())
    for name in sorted(eager_grads.keys() | compiled_grads.keys()):
        zero = torch.zeros_like(params[name])
        torch.testing.assert_close(
            compiled_grads.get(name, zero),
            eager_grads.get(name, zero),
            atol=atol,
            rtol=grad_rtol,
            msg=lambda m, n=name: f"gradient of {n}: {m}",
        )


def _cache_state(cache) -> list:
    return [
        (idx, name, value)
        for idx, layer in enumerate(cache.layers)
        for name, value in [("seen_tokens", layer.seen_tokens), *layer.state_tensors().items()]
    ]


def _check_decode(model, backend, atol, rtol, steps=3):
    model.eval()
    ids, mask, _ = left_padded(model, [5, 8])
    with torch.no_grad():
        prefill = model(input_ids=ids, attention_mask=mask, use_cache=True)
    eager_cache = getattr(prefill, CACHE_FIELD)
    compiled_cache = copy.deepcopy(eager_cache)
    token = prefill.logits[:, -1:].argmax(-1)

    def decode_step(input_ids, attention_mask, cache):
        return model(
            input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=True
        ).logits

    compiled = None
    for step in range(steps):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        with torch.no_grad():
            logits = decode_step(token, mask, eager_cache)
            if compiled is None:
                compiled = torch.compile(decode_step, fullgraph=True, backend=backend)
            try:
                compiled_logits = compiled(token, mask, compiled_cache)
            except COMPILE_ERRORS as error:
                snapshot = copy.deepcopy(compiled_cache)
                pytest.fail(
                    f"torch.compile(fullgraph=True) failed in decode step {step}: "
                    f"{str(error).splitlines()[0]}\n"
                    f"{_break_report(decode_step, token, mask, snapshot)}",
                    pytrace=False,
                )
        torch.testing.assert_close(compiled_logits, logits, atol=atol, rtol=rtol)
        eager_state, compiled_state = _cache_state(eager_cache), _cache_state(compiled_cache)
        assert [k[:2] for k in compiled_state] == [k[:2] for k in eager_state]
        for (idx, name, want), (_, _, got) in zip(eager_state, compiled_state):
            if isinstance(want, torch.Tensor):
                torch.testing.assert_close(
                    got, want, atol=atol, rtol=rtol, msg=lambda m, i=idx, n=name: f"{i}.{n}: {m}"
                )
            else:
                assert got == want, (idx, name, got, want)
        token = logits[:, -1:].argmax(-1)
    assert not counters["graph_break"], dict(counters["graph_break"])
    graphs = counters["stats"]["unique_graphs"]
    assert graphs <= 2, (
        f"{graphs} graphs for {steps} decode steps: the step recompiles every token (a Python "
        "value such as the cache's position count was specialised; see TORCH_LOGS=recompiles)"
    )


BACKENDS = [
    pytest.param("eager", id="eager"),
    pytest.param(AOT_BACKEND, id="aot", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("model_type", "overrides"), CASES)
def test_training_step_compiles_without_graph_breaks(model_type, overrides, backend):
    """Forward with labels and backward, compiled whole, give eager's loss, logits, gradients."""
    _check_training(_build(model_type, overrides), backend, atol=1e-5, rtol=1e-5, grad_rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("model_type", "overrides"), CASES)
def test_decode_step_compiles_without_graph_breaks(model_type, overrides, backend):
    """A one-token step on the recurrent cache, compiled whole, gives eager's logits and cache
    over three steps, without recompiling per token."""
    _check_decode(_build(model_type, overrides), backend, atol=1e-5, rtol=1e-5)


def test_training_step_through_aot_autograd():
    """MAD's hybrid (Hyena, Mamba, attention, RTF, MLPs) through AOTAutograd's joint graph."""
    model = _build(hazyzoo.MadConfig.model_type, {})
    _check_training(model, AOT_BACKEND, atol=1e-5, rtol=1e-5, grad_rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("program", ["training", "decode"])
def test_inductor_compiles_the_training_and_decode_steps(program):
    """The default backend (inductor's generated C++) on the smallest model."""
    model = _build(hazyzoo.RtfConfig.model_type, {})
    if program == "training":
        _check_training(model, "inductor", atol=1e-4, rtol=1e-4, grad_rtol=1e-4)
    else:
        _check_decode(model, "inductor", atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_cuda_compile_with_the_triton_kernels(monkeypatch):
    """On CUDA the dispatch picks the Triton kernels; training and decode steps must still
    compile whole (fullgraph) and match eager."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    monkeypatch.delenv("HAZYZOO_KERNELS", raising=False)
    model = make_model("hazyzoo_based").cuda()
    ids = random_ids(model, 2, 16).cuda()

    def train_step(input_ids):
        return model(input_ids=input_ids, labels=input_ids).loss

    model.train()
    want = train_step(ids)
    got = _compiled_call(train_step, (ids,), lambda: (ids,), "eager")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    got.backward()

    model.eval()
    with torch.no_grad():
        prefill = model(input_ids=ids, use_cache=True)
        cache, token = getattr(prefill, CACHE_FIELD), prefill.logits[:, -1:].argmax(-1)
        twin = copy.deepcopy(cache)

        def decode_step(input_ids, cache):
            return model(input_ids=input_ids, cache=cache, use_cache=True).logits

        want = decode_step(token, cache)
        got = _compiled_call(
            decode_step, (token, twin), lambda: (token, copy.deepcopy(twin)), "eager"
        )
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
