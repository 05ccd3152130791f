"""Taylor linear attention (BASED): reference vs naive definition, Triton vs reference.

The Triton kernels run on CPU in Triton's interpreter. Triton decides whether a kernel is
interpreted when the ``@triton.jit`` decorator runs, i.e. when ``hazyzoo.kernels.linear_attention``
is imported, so ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` (on machines without CUDA)
before anything imports hazyzoo; these tests skip when the kernels were not defined for the
interpreter (on a GPU machine the benchmark script checks them at real sizes). Shapes stay tiny because the interpreter is slow; bf16 is not tested here because
bf16 ``tl.dot`` is broken in the interpreter (triton-lang/triton#11584): the GPU benchmark script
``benchmarks/kernels_linear_attention.py`` checks bf16 at real sizes.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hazyzoo.kernels.linear_attention as la
from hazyzoo.kernels.dispatch import triton_available

requires_triton = pytest.mark.skipif(
    not triton_available() or not la._INTERPRETED,
    reason="needs triton and TRITON_INTERPRET=1 at import (set by tests/conftest.py without CUDA)",
)

HYPOTHESIS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FP32_TOL = 1e-4


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """Max abs error relative to the largest reference value (robust to cancellation)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().clamp_min(1e-6).item()
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} * {scale:.3g}"


def make_inputs(
    seed: int,
    batch: int,
    heads: int,
    length: int,
    feat: int,
    dv: int,
    masked: bool,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random q, k, v (and a random bool key mask keeping at least one key per row)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, feat, generator=gen).to(dtype)
    k = torch.randn(batch, heads, length, feat, generator=gen).to(dtype)
    v = torch.randn(batch, heads, length, dv, generator=gen).to(dtype)
    key_mask = None
    if masked:
        key_mask = torch.rand(batch, length, generator=gen) > 0.4
        key_mask[torch.arange(batch), torch.randint(0, length, (batch,), generator=gen)] = True
    return q, k, v, key_mask


shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 2),
        "heads": st.integers(1, 2),
        "length": st.integers(1, 40),
        "feat": st.sampled_from([2, 4, 8, 16]),
        "dv": st.sampled_from([1, 3, 8, 16, 24]),
        "masked": st.booleans(),
    }
)


# ------------------------------------------------------------------------------------------
# The reference against the definition
# ------------------------------------------------------------------------------------------


def naive_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) for one vector, written out from the paper's definition (float64)."""
    feat = x.shape[-1]
    quad = torch.outer(x, x).reshape(-1) / (math.sqrt(2) * math.sqrt(feat))
    return torch.cat([x.new_ones(1), x / feat**0.25, quad])


def naive_attention(q, k, v, key_mask):
    """o_t = sum_{s<=t} m_s (phi(q_t).phi(k_s)) v_s and z_t likewise, one (b, h, t) at a time."""
    batch, heads, length, _ = q.shape
    o = torch.zeros(batch, heads, length, v.shape[-1], dtype=torch.float64)
    z = torch.zeros(batch, heads, length, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            phi_k = [naive_feature_map(k[b, h, s]) for s in range(length)]
            for t in range(length):
                phi_q = naive_feature_map(q[b, h, t])
                for s in range(t + 1):
                    if key_mask is not None and not key_mask[b, s]:
                        continue
                    a = phi_q @ phi_k[s]
                    o[b, h, t] += a * v[b, h, s]
                    z[b, h, t] += a
    return o, z


def test_feature_map_inner_product_is_taylor_expansion():
    gen = torch.Generator().manual_seed(0)
    for feat in (1, 3, 16):
        x, y = torch.randn(2, 5, feat, dtype=torch.float64, generator=gen)
        phi_x, phi_y = la.taylor_feature_map(x), la.taylor_feature_map(y)
        assert phi_x.shape == (5, la.taylor_feature_dim(feat)) and phi_x.dtype == torch.float64
        s = (x * y).sum(-1) / math.sqrt(feat)
        torch.testing.assert_close((phi_x * phi_y).sum(-1), 1 + s + s * s / 2)
        torch.testing.assert_close(phi_x[0], naive_feature_map(x[0]))
    assert la.taylor_feature_map(torch.randn(3, 16, dtype=torch.bfloat16)).dtype == torch.float32
    assert la.taylor_feature_dim(16) == 273


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(
    ("batch", "heads", "length", "feat", "dv"), [(2, 2, 9, 4, 3), (1, 1, 12, 16, 5)]
)
def test_reference_matches_naive_loop(batch, heads, length, feat, dv, masked):
    q, k, v, key_mask = make_inputs(1, batch, heads, length, feat, dv, masked, torch.float64)
    o, z = la._taylor_attention_parallel_reference(q, k, v, key_mask)
    o_naive, z_naive = naive_attention(q, k, v, key_mask)
    torch.testing.assert_close(o, o_naive, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(z, z_naive, rtol=1e-10, atol=1e-10)
    # The state is the same sum without the causal restriction, read at the last position.
    kv_state, k_state = la._taylor_attention_state_reference(k, v, key_mask)
    phi_q_last = la.taylor_feature_map(q[:, :, -1])
    torch.testing.assert_close(
        torch.einsum("bhd,bhdv->bhv", phi_q_last, kv_state), o_naive[:, :, -1]
    )
    torch.testing.assert_close((phi_q_last * k_state).sum(-1), z_naive[:, :, -1])


def test_reference_fp32_accumulation_of_half_inputs():
    q, k, v, _ = make_inputs(2, 1, 2, 16, 8, 4, False, torch.bfloat16)
    o, z = la.taylor_attention_parallel(q, k, v)
    assert o.dtype == torch.float32 and z.dtype == torch.float32
    o64, z64 = la._taylor_attention_parallel_reference(q.double(), k.double(), v.double())
    assert_close(o, o64, 1e-5, "o")
    assert_close(z, z64, 1e-5, "z")


def test_reference_steps_match_parallel():
    q, k, v, _ = make_inputs(3, 2, 2, 10, 4, 3, False)
    o, z = la._taylor_attention_parallel_reference(q, k, v)
    kv_state, k_state = la._taylor_attention_state_reference(k[:, :, :0], v[:, :, :0])
    for t in range(q.shape[2]):
        o_t, z_t = la.taylor_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], kv_state, k_state)
        assert_close(o_t, o[:, :, t], FP32_TOL, f"o[{t}]")
        assert_close(z_t, z[:, :, t], FP32_TOL, f"z[{t}]")


# ------------------------------------------------------------------------------------------
# Triton (interpreted) against the reference
# ------------------------------------------------------------------------------------------


@requires_triton
@HYPOTHESIS
@given(shape=shapes)
def test_triton_parallel_forward(shape):
    q, k, v, key_mask = make_inputs(**shape)
    o, z = la._taylor_attention_parallel_triton(q, k, v, key_mask)
    o_ref, z_ref = la._taylor_attention_parallel_reference(q, k, v, key_mask)
    assert o.dtype == torch.float32 and z.dtype == torch.float32
    assert_close(o, o_ref, FP32_TOL, "o")
    assert_close(z, z_ref, FP32_TOL, "z")


@requires_triton
@settings(HYPOTHESIS, max_examples=12)
@given(shape=shapes)
def test_triton_parallel_backward(shape):
    q, k, v, key_mask = make_inputs(**shape)
    gen = torch.Generator().manual_seed(shape["seed"] + 1)
    grad_o = torch.randn(*v.shape, generator=gen)
    grad_z = torch.randn(*v.shape[:-1], generator=gen)
    grads = {}
    for name, fn in (
        ("triton", la._taylor_attention_parallel_triton),
        ("reference", la._taylor_attention_parallel_reference),
    ):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        o, z = fn(*leaves, key_mask)
        grads[name] = torch.autograd.grad((o, z), leaves, (grad_o, grad_z))
    for what, got, want in zip(
        ("dq", "dk", "dv"), grads["triton"], grads["reference"], strict=True
    ):
        assert got.dtype == torch.float32
        assert_close(got, want, FP32_TOL, what)


@requires_triton
@pytest.mark.parametrize("feat", [1, 33])
def test_triton_parallel_odd_feature_dims(feat):
    q, k, v, key_mask = make_inputs(4, 1, 2, 20, feat, 5, True)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o, z = la._taylor_attention_parallel_triton(*leaves, key_mask)
    (o.square().sum() + z.sum()).backward()
    ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o_ref, z_ref = la._taylor_attention_parallel_reference(*ref_leaves, key_mask)
    (o_ref.square().sum() + z_ref.sum()).backward()
    assert_close(o, o_ref, FP32_TOL, "o")
    assert_close(z, z_ref, FP32_TOL, "z")
    for got, want in zip(leaves, ref_leaves, strict=True):
        assert_close(got.grad, want.grad, FP32_TOL, "grad")


@requires_triton
def test_triton_parallel_strided_inputs_and_expanded_grads():
    """q/k/v as transposed views of [B, L, H, F] (no copies), and z.sum() gives a grad of z
    with stride 0: the kernels take strides."""
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 23, 3, 2, 8, generator=gen)  # [B, L, (q|k|v), H, F]
    leaves = [qkv.clone().requires_grad_() for _ in range(2)]
    results = []
    for fn, leaf in zip(
        (la._taylor_attention_parallel_triton, la._taylor_attention_parallel_reference),
        leaves,
        strict=True,
    ):
        q, k, v = leaf.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, F], non-contiguous
        o, z = fn(q, k, v)
        (o.sum() + 0.5 * z.sum()).backward()
        results.append((o, z, leaf.grad))
    for got, want, what in zip(results[0], results[1], ("o", "z", "grad"), strict=True):
        assert_close(got, want, FP32_TOL, what)


@requires_triton
def test_triton_parallel_fp16():
    q, k, v, key_mask = make_inputs(6, 2, 1, 33, 16, 24, True, torch.float16)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o, z = la._taylor_attention_parallel_triton(*leaves, key_mask)
    assert o.dtype == torch.float32 and z.dtype == torch.float32
    (o.sum() + z.sum()).backward()
    assert all(t.grad.dtype == torch.float16 for t in leaves)
    ref_leaves = [t.float().requires_grad_() for t in (q, k, v)]
    o_ref, z_ref = la._taylor_attention_parallel_reference(*ref_leaves, key_mask)
    (o_ref.sum() + z_ref.sum()).backward()
    assert_close(o, o_ref, 1e-2, "o")
    assert_close(z, z_ref, 1e-3, "z")  # z never rounds A to half
    for got, want in zip(leaves, ref_leaves, strict=True):
        assert_close(got.grad, want.grad, 1e-2, "grad")


@requires_triton
@settings(HYPOTHESIS, max_examples=12)
@given(shape=shapes)
def test_triton_state(shape):
    _, k, v, key_mask = make_inputs(**shape)
    kv_state, k_state = la._taylor_attention_state_triton(k, v, key_mask)
    kv_ref, k_ref = la._taylor_attention_state_reference(k, v, key_mask)
    assert kv_state.dtype == torch.float32 and k_state.dtype == torch.float32
    assert_close(kv_state, kv_ref, FP32_TOL, "kv_state")
    assert_close(k_state, k_ref, FP32_TOL, "k_state")


@requires_triton
@settings(HYPOTHESIS, max_examples=12)
@given(shape=shapes)
def test_triton_step(shape):
    q, k, v, _ = make_inputs(**shape)
    prefix = shape["length"] - 1
    kv_ref, k_ref = la._taylor_attention_state_reference(k[:, :, :prefix], v[:, :, :prefix])
    kv_state, k_state = kv_ref.clone(), k_ref.clone()
    token = (q[:, :, -1], k[:, :, -1], v[:, :, -1])
    o, z = la._taylor_attention_step_triton(*token, kv_state, k_state)
    o_ref, z_ref = la._taylor_attention_step_reference(*token, kv_ref, k_ref)
    assert o.shape == o_ref.shape and z.shape == z_ref.shape
    assert_close(o, o_ref, FP32_TOL, "o")
    assert_close(z, z_ref, FP32_TOL, "z")
    assert_close(kv_state, kv_ref, FP32_TOL, "kv_state (in place)")
    assert_close(k_state, k_ref, FP32_TOL, "k_state (in place)")


@requires_triton
@settings(HYPOTHESIS, max_examples=10)
@given(shape=shapes, data=st.data())
def test_triton_prefill_then_steps_match_parallel(shape, data):
    """State of a prefix + one step per token == parallel o/z per token, and the final state
    == the state of the whole sequence."""
    shape["length"] = min(shape["length"], 12)
    q, k, v, _ = make_inputs(**shape)  # decoding has no key mask
    length = q.shape[2]
    prefix = data.draw(st.integers(0, length - 1), label="prefix")
    o, z = la._taylor_attention_parallel_triton(q, k, v)
    kv_state, k_state = la._taylor_attention_state_triton(k[:, :, :prefix], v[:, :, :prefix])
    for t in range(prefix, length):
        o_t, z_t = la._taylor_attention_step_triton(
            q[:, :, t], k[:, :, t], v[:, :, t], kv_state, k_state
        )
        assert_close(o_t, o[:, :, t], FP32_TOL, f"o[{t}]")
        assert_close(z_t, z[:, :, t], FP32_TOL, f"z[{t}]")
    kv_whole, k_whole = la._taylor_attention_state_triton(k, v)
    assert_close(kv_state, kv_whole, FP32_TOL, "kv_state")
    assert_close(k_state, k_whole, FP32_TOL, "k_state")


# ------------------------------------------------------------------------------------------
# Dispatch and input checks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["torch", "triton", "auto"])
def test_dispatch_follows_env(monkeypatch, mode):
    if mode == "triton" and not (triton_available() and la._INTERPRETED):
        pytest.skip("needs triton defined for the interpreter (CPU tensors)")
    calls = []
    for op in ("parallel", "state", "step"):
        for path in ("reference", "triton"):
            name = f"_taylor_attention_{op}_{path}"
            real = getattr(la, name)

            def spy(*args, _real=real, _name=name):
                calls.append(_name)
                return _real(*args)

            monkeypatch.setattr(la, name, spy)
    monkeypatch.setenv("HAZYZOO_KERNELS", mode)
    q, k, v, key_mask = make_inputs(7, 1, 2, 5, 4, 3, True)
    o, z = la.taylor_attention_parallel(q, k, v, key_mask)
    kv_state, k_state = la.taylor_attention_state(k, v, key_mask)
    la.taylor_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], kv_state, k_state)
    path = "triton" if mode == "triton" else "reference"  # auto: CPU tensors -> reference
    assert calls == [f"_taylor_attention_{op}_{path}" for op in ("parallel", "state", "step")]
    o_ref, z_ref = la._taylor_attention_parallel_reference(q, k, v, key_mask)
    assert_close(o, o_ref, FP32_TOL, "o")
    assert_close(z, z_ref, FP32_TOL, "z")


def test_bad_inputs_raise_value_errors():
    q, k, v, key_mask = make_inputs(8, 1, 2, 5, 4, 3, True)
    kv_state, k_state = la.taylor_attention_state(k, v)
    with pytest.raises(ValueError, match="k has shape"):
        la.taylor_attention_parallel(q, k[..., :3], v)
    with pytest.raises(ValueError, match=r"q must be \[B, H, L, F\]"):
        la.taylor_attention_parallel(q[0], k, v)
    with pytest.raises(ValueError, match="v has shape"):
        la.taylor_attention_parallel(q, k, v[:, :, :4])
    with pytest.raises(ValueError, match="q has dtype torch.int64"):
        la.taylor_attention_parallel(q.long(), k, v)
    with pytest.raises(ValueError, match="v has dtype"):
        la.taylor_attention_parallel(q, k, v.half())
    with pytest.raises(ValueError, match="key_mask must be"):
        la.taylor_attention_parallel(q, k, v, key_mask[:, :4])
    with pytest.raises(ValueError, match="key_mask must be"):
        la.taylor_attention_state(k, v, key_mask[None])
    with pytest.raises(ValueError, match=r"k must be \[B, H, F\]"):
        la.taylor_attention_step(q[:, :, 0], k, v[:, :, 0], kv_state, k_state)
    with pytest.raises(ValueError, match="kv_state must be float32"):
        la.taylor_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], kv_state.double(), k_state)
    with pytest.raises(ValueError, match="k_state must be"):
        la.taylor_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], kv_state, k_state[..., :-1])
    with pytest.raises(ValueError, match="contiguous"):
        la.taylor_attention_step(
            q[:, :, 0], k[:, :, 0], v[:, :, 0], kv_state.mT.contiguous().mT, k_state
        )
    with pytest.raises(ValueError, match="x has dtype"):
        la.taylor_feature_map(torch.ones(3, dtype=torch.int32))
