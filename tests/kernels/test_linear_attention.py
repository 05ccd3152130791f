"""Taylor linear attention (BASED): the references against the definition, Triton against the
references (interpreted; see tests/kernels/conftest.py), state in and out, input checks, and
the linear memory of the reference at 32k tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hazyzoo.kernels.linear_attention as la
from hazyzoo.kernels.dispatch import get_op, triton_available
from hazyzoo.kernels.linear_attention import reference as ref
from tests.kernels.conftest import (
    HYPOTHESIS,
    assert_all_close,
    assert_close,
    make_qkv,
    make_state,
    requires_triton,
    run_python,
)

if triton_available():  # the Triton modules import triton at the top
    from hazyzoo.kernels.linear_attention import parallel, recurrent, state


def qkv_shapes(max_length: int, feats: list[int], dvs: list[int]) -> st.SearchStrategy:
    """Keyword arguments of make_qkv: B, H in 1..2, L in 1..max_length, F and Dv from lists."""
    return st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**31 - 1),
            "batch": st.integers(1, 2),
            "heads": st.integers(1, 2),
            "length": st.integers(1, max_length),
            "feat": st.sampled_from(feats),
            "dv": st.sampled_from(dvs),
            "masked": st.booleans(),
        }
    )


# Tiny for the interpreter; Dv = 24 > 16 runs the several-Dv-blocks paths there.
shapes = qkv_shapes(40, [2, 4, 8, 16], [1, 3, 8, 16, 24])
# Small enough for the float64 references to be fast, long enough for several chunks.
ref_shapes = qkv_shapes(30, [1, 2, 3, 4], [1, 2, 5])
chunk_sizes = st.integers(1, 12)

# Tight bounds for float64 against float64 (only summation order differs).
FP64_TOL = 1e-10


# ------------------------------------------------------------------------------------------
# The references against the definition
# ------------------------------------------------------------------------------------------


def naive_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) for one vector, written out from the paper's definition (float64)."""
    feat = x.shape[-1]
    quad = torch.outer(x, x).reshape(-1) / (math.sqrt(2) * math.sqrt(feat))
    return torch.cat([x.new_ones(1), x / feat**0.25, quad])


def naive_attention(q, k, v, key_mask, initial_state=None):
    """o_t = phi(q_t) @ kv_0 + sum_{s<=t} m_s (phi(q_t).phi(k_s)) v_s, z_t likewise, and the
    final state kv_0 + sum_s m_s phi(k_s)^T v_s: one (b, h, t) at a time, in float64."""
    batch, heads, length, feat = q.shape
    d_phi = la.taylor_feature_dim(feat)
    o = torch.zeros(batch, heads, length, v.shape[-1], dtype=torch.float64)
    z = torch.zeros(batch, heads, length, dtype=torch.float64)
    kv_final = torch.zeros(batch, heads, d_phi, v.shape[-1], dtype=torch.float64)
    k_final = torch.zeros(batch, heads, d_phi, dtype=torch.float64)
    if initial_state is not None:
        kv_final += initial_state[0].double()
        k_final += initial_state[1].double()
    for b in range(batch):
        for h in range(heads):
            kept = [key_mask is None or bool(key_mask[b, s]) for s in range(length)]
            phi_k = [naive_feature_map(k[b, h, s].double()) for s in range(length)]
            for t in range(length):
                phi_q = naive_feature_map(q[b, h, t].double())
                o[b, h, t] = phi_q @ kv_final[b, h]  # the initial state (zero if None)
                z[b, h, t] = phi_q @ k_final[b, h]
                for s in range(t + 1):
                    if kept[s]:
                        a = phi_q @ phi_k[s]
                        o[b, h, t] += a * v[b, h, s].double()
                        z[b, h, t] += a
            for s in range(length):
                if kept[s]:
                    kv_final[b, h] += torch.outer(phi_k[s], v[b, h, s].double())
                    k_final[b, h] += phi_k[s]
    return o, z, (kv_final, k_final)


def assert_outputs_close(got, want, tol: float, what: str = "") -> None:
    """``(o, z, final_state)`` triples (final_state may be None in both)."""
    names = [what + name for name in ("o", "z", "kv_state", "k_state")]
    flat = [(o, z, *(final or (None, None))) for o, z, final in (got, want)]
    assert_all_close(*flat, names, tol)


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
def test_references_match_naive_loop(batch, heads, length, feat, dv, masked):
    """Quadratic form, chunked form (several chunk sizes, with and without an initial state)
    and the state, all against the loop, in float64."""
    q, k, v, key_mask = make_qkv(1, batch, heads, length, feat, dv, masked, torch.float64)
    o_naive, z_naive, final_naive = naive_attention(q, k, v, key_mask)
    o, z = ref.taylor_attention_quadratic_reference(q, k, v, key_mask)
    assert_all_close((o, z), (o_naive, z_naive), ("quadratic o", "z"), FP64_TOL)
    state_ref = ref.taylor_attention_state_reference(k, v, key_mask)
    assert_all_close(state_ref, final_naive, ("kv_state", "k_state"), FP64_TOL)
    initial = make_state(2, batch, heads, feat, dv, torch.float64)
    naive_init = naive_attention(q, k, v, key_mask, initial)
    for chunk in (1, 4, 5, length, 128):
        got = ref.taylor_linear_attention_reference(
            q, k, v, key_mask, output_final_state=True, chunk_size=chunk
        )
        assert_outputs_close(got, (o_naive, z_naive, final_naive), FP64_TOL, f"chunk {chunk} ")
        got = ref.taylor_linear_attention_reference(q, k, v, key_mask, initial, True, chunk)
        assert_outputs_close(got, naive_init, FP64_TOL, f"chunk {chunk} with state ")


@settings(HYPOTHESIS, max_examples=40)
@given(shape=ref_shapes, chunk=chunk_sizes, dtype=st.sampled_from([torch.float64, torch.float32]))
def test_chunked_reference_matches_quadratic(shape, chunk, dtype):
    q, k, v, key_mask = make_qkv(**shape, dtype=dtype)
    o, z, _ = ref.taylor_linear_attention_reference(q, k, v, key_mask, chunk_size=chunk)
    want = ref.taylor_attention_quadratic_reference(q, k, v, key_mask)
    tol = FP64_TOL if dtype == torch.float64 else 1e-5
    assert_all_close((o, z), want, ("o", "z"), tol, dtype)


@settings(HYPOTHESIS, max_examples=40)
@given(
    shape=ref_shapes,
    chunk=chunk_sizes,
    dtype=st.sampled_from([torch.float64, torch.float32]),
    data=st.data(),
)
def test_split_sequence_continues_from_final_state(shape, chunk, dtype, data):
    """Prefix with output_final_state, then the suffix from that state == the whole sequence
    (o, z and final state); the initial state is never modified, the final one is new."""
    q, k, v, key_mask = make_qkv(**shape, dtype=dtype)
    split = data.draw(st.integers(0, shape["length"]), label="split")
    head = [t[:, :, :split] for t in (q, k, v)]
    tail = [t[:, :, split:] for t in (q, k, v)]
    mask_head = mask_tail = None
    if key_mask is not None:
        mask_head, mask_tail = key_mask[:, :split], key_mask[:, split:]
    whole = ref.taylor_linear_attention_reference(q, k, v, key_mask, None, True, chunk)
    o_a, z_a, state_a = ref.taylor_linear_attention_reference(*head, mask_head, None, True, chunk)
    kept = tuple(t.clone() for t in state_a)
    o_b, z_b, state_b = ref.taylor_linear_attention_reference(
        *tail, mask_tail, state_a, True, chunk
    )
    tol = FP64_TOL if dtype == torch.float64 else 1e-5
    joined = (torch.cat([o_a, o_b], dim=2), torch.cat([z_a, z_b], dim=2), state_b)
    assert_outputs_close(joined, whole, tol)
    assert all(torch.equal(a, b) for a, b in zip(state_a, kept, strict=True)), "modified"
    assert all(a is not b for a, b in zip(state_a, state_b, strict=True)), "not new tensors"


def test_public_op_continues_from_state_and_matches_parallel():
    """Through the entry point (CPU: the reference), float32: a 3-way split of a masked
    sequence, and without a state it equals taylor_attention_parallel / _state."""
    q, k, v, key_mask = make_qkv(3, 2, 2, 300, 4, 5, True)
    whole = la.taylor_linear_attention(q, k, v, key_mask, output_final_state=True)
    o, z = la.taylor_attention_parallel(q, k, v, key_mask)
    assert torch.equal(whole[0], o) and torch.equal(whole[1], z)
    state_ref = la.taylor_attention_state(k, v, key_mask)
    assert_all_close(whole[2], state_ref, ("kv_state", "k_state"), 1e-5)
    assert la.taylor_linear_attention(q, k, v, key_mask)[2] is None
    outs, current = [], None
    for lo, hi in ((0, 37), (37, 200), (200, 300)):
        piece = (q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], key_mask[:, lo:hi])
        o_p, z_p, current = la.taylor_linear_attention(
            *piece, initial_state=current, output_final_state=True
        )
        outs.append((o_p, z_p))
    joined = tuple(torch.cat(parts, dim=2) for parts in zip(*outs, strict=True))
    assert_outputs_close((*joined, current), whole, 1e-5)


def test_empty_sequence_returns_copy_of_initial_state():
    q, k, v, _ = make_qkv(4, 1, 2, 0, 3, 2, False)
    initial = make_state(4, 1, 2, 3, 2)
    o, z, final = la.taylor_linear_attention(q, k, v, None, initial, True)
    assert o.shape == (1, 2, 0, 2) and z.shape == (1, 2, 0)
    for got, want in zip(final, initial, strict=True):
        assert torch.equal(got, want) and got is not want
    _, _, zero = la.taylor_linear_attention(q, k, v, output_final_state=True)
    assert zero[0].shape == (1, 2, 13, 2) and not zero[0].any() and not zero[1].any()


def test_reference_gradients():
    """gradcheck of the chunked reference w.r.t. q, k, v and the initial state (through o, z
    and the final state), and its gradients == those of the quadratic form."""
    q, k, v, key_mask = make_qkv(5, 1, 1, 5, 2, 2, True, torch.float64)
    initial = make_state(5, 1, 1, 2, 2, torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, *initial)]

    def fn(q_, k_, v_, kv_, ks_):
        o, z, (kv, ks) = ref.taylor_linear_attention_reference(
            q_, k_, v_, key_mask, (kv_, ks_), True, chunk_size=2
        )
        return o, z, kv, ks

    assert torch.autograd.gradcheck(fn, leaves)
    q, k, v, key_mask = make_qkv(6, 2, 2, 33, 4, 3, True, torch.float64)
    grads = []
    for chunked in (True, False):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        if chunked:
            o, z, _ = ref.taylor_linear_attention_reference(*leaves, key_mask, chunk_size=8)
        else:
            o, z = ref.taylor_attention_quadratic_reference(*leaves, key_mask)
        grads.append(torch.autograd.grad((o * o).sum() + z.sum(), leaves))
    assert_all_close(*grads, ("dq", "dk", "dv"), FP64_TOL)


def test_reference_fp32_accumulation_of_half_inputs():
    q, k, v, _ = make_qkv(2, 1, 2, 16, 8, 4, False, torch.bfloat16)
    got = la.taylor_attention_parallel(q, k, v)
    want = ref.taylor_attention_quadratic_reference(q.double(), k.double(), v.double())
    assert_all_close(got, want, ("o", "z"), 1e-5, torch.float32)


def test_reference_steps_match_parallel():
    q, k, v, _ = make_qkv(3, 2, 2, 10, 4, 3, False)
    o, z = ref.taylor_attention_parallel_reference(q, k, v)
    kv_state, k_state = ref.taylor_attention_state_reference(k[:, :, :0], v[:, :, :0])
    for t in range(q.shape[2]):
        got = la.taylor_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], kv_state, k_state)
        assert_all_close(got, (o[:, :, t], z[:, :, t]), (f"o[{t}]", f"z[{t}]"))


# ------------------------------------------------------------------------------------------
# Triton (interpreted) against the references
# ------------------------------------------------------------------------------------------


def forward_backward(fn, q, k, v, key_mask, *extra):
    """``fn``'s ``o`` and ``z``, the gradients of ``(o, z)`` w.r.t. q, k, v for random upstream
    gradients, and (last) the final state where ``fn`` returns one."""
    gen = torch.Generator().manual_seed(0)
    grad_o = torch.randn(*v.shape, generator=gen)
    grad_z = torch.randn(*v.shape[:-1], generator=gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o, z, *final = fn(*leaves, key_mask, *extra)
    grads = torch.autograd.grad((o, z), leaves, (grad_o, grad_z))
    return o.detach(), z.detach(), *grads, *final


# Registered ops over whole sequences: the arguments they take from make_qkv's
# (q, k, v, key_mask), and the names of their results.
SEQUENCE_OPS = {
    "taylor_attention_parallel": (lambda q, k, v, m: (q, k, v, m), ("o", "z")),
    "taylor_attention_state": (lambda q, k, v, m: (k, v, m), ("kv_state", "k_state")),
}


@requires_triton
@pytest.mark.parametrize("name", sorted(SEQUENCE_OPS))
@settings(HYPOTHESIS, max_examples=12)
@given(shape=shapes)
def test_triton_forward_matches_reference(name, shape):
    select, names = SEQUENCE_OPS[name]
    args = select(*make_qkv(**shape))
    op = get_op(name)
    assert_all_close(op.triton(*args), op.reference(*args), names, dtype=torch.float32)


@requires_triton
@settings(HYPOTHESIS, max_examples=12)
@given(shape=shapes)
def test_triton_parallel_backward(shape):
    q, k, v, key_mask = make_qkv(**shape)
    got = forward_backward(parallel.taylor_attention_parallel_triton, q, k, v, key_mask)
    want = forward_backward(ref.taylor_attention_parallel_reference, q, k, v, key_mask)
    assert_all_close(got, want, ("o", "z", "dq", "dk", "dv"), dtype=torch.float32)


@requires_triton
@settings(HYPOTHESIS, max_examples=8)
@given(shape=shapes, with_state=st.booleans(), output_final_state=st.booleans())
def test_triton_linear_attention(shape, with_state, output_final_state):
    """The new op's Triton path (parallel kernels + torch readout + state kernel) against the
    chunked reference: o, z, their gradients and the final state."""
    shape["length"] = min(shape["length"], 24)
    q, k, v, key_mask = make_qkv(**shape)
    dims = (shape["batch"], shape["heads"], shape["feat"], shape["dv"])
    initial = make_state(shape["seed"] + 1, *dims) if with_state else None
    extra = (initial, output_final_state)
    *got, final = forward_backward(
        parallel.taylor_linear_attention_triton, q, k, v, key_mask, *extra
    )
    *want, final_ref = forward_backward(
        ref.taylor_linear_attention_reference, q, k, v, key_mask, *extra
    )
    assert_all_close(got, want, ("o", "z", "dq", "dk", "dv"))
    assert (final is None) == (not output_final_state)
    if output_final_state:
        assert_all_close(final, final_ref, ("kv_state", "k_state"))
        if initial is not None:
            assert final[0] is not initial[0] and final[1] is not initial[1]


@requires_triton
@pytest.mark.parametrize("feat", [1, 33])
def test_triton_parallel_odd_feature_dims(feat):
    q, k, v, key_mask = make_qkv(4, 1, 2, 20, feat, 5, True)
    got = forward_backward(parallel.taylor_attention_parallel_triton, q, k, v, key_mask)
    want = forward_backward(ref.taylor_attention_parallel_reference, q, k, v, key_mask)
    assert_all_close(got, want, ("o", "z", "dq", "dk", "dv"))


@requires_triton
def test_triton_parallel_strided_inputs_and_expanded_grads():
    """q/k/v as transposed views of [B, L, H, F] (no copies), and z.sum() gives a grad of z
    with stride 0: the kernels take strides."""
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 23, 3, 2, 8, generator=gen)  # [B, L, (q|k|v), H, F]
    leaves = [qkv.clone().requires_grad_() for _ in range(2)]
    results = []
    for fn, leaf in zip(
        (parallel.taylor_attention_parallel_triton, ref.taylor_attention_parallel_reference),
        leaves,
        strict=True,
    ):
        q, k, v = leaf.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, F], non-contiguous
        o, z = fn(q, k, v)
        (o.sum() + 0.5 * z.sum()).backward()
        results.append((o, z, leaf.grad))
    assert_all_close(*results, ("o", "z", "grad"))


@requires_triton
def test_triton_parallel_fp16():
    q, k, v, key_mask = make_qkv(6, 2, 1, 33, 16, 24, True, torch.float16)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o, z = parallel.taylor_attention_parallel_triton(*leaves, key_mask)
    assert o.dtype == torch.float32 and z.dtype == torch.float32
    (o.sum() + z.sum()).backward()
    assert all(t.grad.dtype == torch.float16 for t in leaves)
    ref_leaves = [t.float().requires_grad_() for t in (q, k, v)]
    o_ref, z_ref = ref.taylor_attention_parallel_reference(*ref_leaves, key_mask)
    (o_ref.sum() + z_ref.sum()).backward()
    assert_close(o, o_ref, "o", 1e-2)
    assert_close(z, z_ref, "z", 1e-3)  # z never rounds A to half
    for got, want in zip(leaves, ref_leaves, strict=True):
        assert_close(got.grad, want.grad, "grad", 1e-2)


@requires_triton
@settings(HYPOTHESIS, max_examples=12)
@given(shape=shapes)
def test_triton_step(shape):
    q, k, v, key_mask = make_qkv(**shape)
    prefix = shape["length"] - 1
    kv_ref, k_ref = ref.taylor_attention_state_reference(k[:, :, :prefix], v[:, :, :prefix])
    kv_state, k_state = kv_ref.clone(), k_ref.clone()
    token = (q[:, :, -1], k[:, :, -1], v[:, :, -1])
    step_mask = None if key_mask is None else key_mask[:, -1]
    got = recurrent.taylor_attention_step_triton(*token, kv_state, k_state, step_mask)
    want = ref.taylor_attention_step_reference(*token, kv_ref, k_ref, step_mask)
    names = ("o", "z", "kv_state (in place)", "k_state (in place)")
    assert_all_close((*got, kv_state, k_state), (*want, kv_ref, k_ref), names)


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_state_step(state_dtype):
    """A bfloat16 / float16 kv_state. Each step computes the update in float32 and stores it
    rounded once: from the same state, the Triton step (where triton runs) and the reference
    store the same state up to one rounding (1 ulp), read the same unrounded sum (o, z within
    float32 error) and keep k_state float32. Over ten steps the rounded state stays within
    half an ulp per step of the float32 chain, and o within what that drift allows."""
    q, k, v, _ = make_qkv(seed=5, batch=2, heads=2, length=14, feat=4, dv=24, masked=False)
    kv32, ks32 = ref.taylor_attention_state_reference(k[:, :, :4], v[:, :, :4])
    chain = (kv32.to(state_dtype), ks32.clone())  # the reference's reduced-precision chain
    exact = (chain[0].float(), ks32.clone())  # float32 steps from the same rounded start
    eps = torch.finfo(state_dtype).eps  # spacing at 1: a rounding moves x by <= eps/2 |x|
    for n, t in enumerate(range(4, 14), start=1):
        token = (q[:, :, t], k[:, :, t], v[:, :, t])
        before = (chain[0].clone(), chain[1].clone())
        o, z = ref.taylor_attention_step_reference(*token, *chain)
        assert chain[0].dtype == state_dtype and chain[1].dtype == torch.float32
        if triton_available():
            other = (before[0].clone(), before[1].clone())
            o_t, z_t = recurrent.taylor_attention_step_triton(*token, *other)
            assert other[0].dtype == state_dtype
            ulp = eps * chain[0].float().abs()
            assert ((other[0].float() - chain[0].float()).abs() <= ulp + 1e-30).all(), t
            assert_all_close((o_t, z_t, other[1]), (o, z, chain[1]), ("o", "z", "k_state"))
        gap = (before[0].float() - exact[0]).abs()  # the drift o reads (before this step)
        want_o, want_z = ref.taylor_attention_step_reference(*token, *exact)
        drift = (chain[0].float() - exact[0]).abs()
        assert drift.amax() <= n * eps / 2 * exact[0].abs().amax(), (t, drift.amax())
        phi_q = ref.taylor_feature_map_reference(q[:, :, t]).abs()
        bound = torch.einsum("bhd,bhdv->bhv", phi_q, gap) + 1e-5 * want_o.abs().amax()
        assert ((o - want_o).abs() <= bound).all(), t
        assert_close(z, want_z, f"z[{t}]")


def test_step_state_dtypes_are_checked():
    q, k, v, _ = make_qkv(seed=1, batch=1, heads=1, length=1, feat=2, dv=3, masked=False)
    kv, ks = ref.taylor_attention_state_reference(k, v)
    token = (q[:, :, 0], k[:, :, 0], v[:, :, 0])
    with pytest.raises(ValueError, match="kv_state must be float32 or bfloat16 or float16"):
        la.taylor_attention_step(*token, kv.double(), ks)
    with pytest.raises(ValueError, match="k_state must be float32"):
        la.taylor_attention_step(*token, kv.bfloat16(), ks.bfloat16())
    with pytest.raises(ValueError, match=r"initial_state\[0\] \(kv_state\) must be float32"):
        la.taylor_linear_attention(q, k, v, initial_state=(kv.bfloat16(), ks))


@requires_triton
@settings(HYPOTHESIS, max_examples=10)
@given(shape=shapes, data=st.data())
def test_triton_prefill_then_steps_match_parallel(shape, data):
    """State of a prefix + one step per token == parallel o/z per token, and the final state
    == the state of the whole sequence."""
    shape["length"] = min(shape["length"], 12)
    shape["masked"] = False  # decoding has no key mask
    q, k, v, _ = make_qkv(**shape)
    length = q.shape[2]
    prefix = data.draw(st.integers(0, length - 1), label="prefix")
    o, z = parallel.taylor_attention_parallel_triton(q, k, v)
    kv_state, k_state = state.taylor_attention_state_triton(k[:, :, :prefix], v[:, :, :prefix])
    for t in range(prefix, length):
        got = recurrent.taylor_attention_step_triton(
            q[:, :, t], k[:, :, t], v[:, :, t], kv_state, k_state
        )
        assert_all_close(got, (o[:, :, t], z[:, :, t]), (f"o[{t}]", f"z[{t}]"))
    whole = state.taylor_attention_state_triton(k, v)
    assert_all_close((kv_state, k_state), whole, ("kv_state", "k_state"))


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors():
    q, k, v, key_mask = make_qkv(8, 1, 2, 5, 4, 3, True)
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
    with pytest.raises(ValueError, match="key_mask must be"):
        la.taylor_linear_attention(q, k, v, key_mask[:, :4])
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


def test_bad_initial_state_raises_naming_it():
    q, k, v, key_mask = make_qkv(9, 1, 2, 5, 4, 3, True)
    kv_state, k_state = make_state(9, 1, 2, 4, 3)
    bad = [
        (TypeError, r"initial_state must be None or a tuple .* got Tensor", kv_state),
        (TypeError, r"got tuple of length 3", (kv_state, k_state, k_state)),
        (
            TypeError,
            r"initial_state\[1\] \(k_state\) must be a torch.Tensor, got str",
            (kv_state, "k"),
        ),
        (
            ValueError,
            r"initial_state\[0\] \(kv_state\) must be float32 .* got torch.float64",
            (kv_state.double(), k_state),
        ),
        (
            ValueError,
            r"initial_state\[1\] \(k_state\) must be float32 .* got torch.bfloat16",
            (kv_state, k_state.bfloat16()),
        ),
        (
            ValueError,
            r"initial_state\[0\] \(kv_state\) must be \[B, H, 1\+F\+F\^2, Dv\] = \(1, 2, 21, 3\), "
            r"got shape \(1, 2, 21, 4\)",
            (torch.zeros(1, 2, 21, 4), k_state),
        ),
        (
            ValueError,
            r"initial_state\[1\] \(k_state\) must be \[B, H, 1\+F\+F\^2\] = \(1, 2, 21\)",
            (kv_state, k_state[None]),
        ),
        (
            ValueError,
            r"one device.*initial_state\[0\] \(kv_state\)",
            (kv_state.to("meta"), k_state),
        ),
    ]
    for error, match, initial_state in bad:
        with pytest.raises(error, match=match):
            la.taylor_linear_attention(q, k, v, key_mask, initial_state=initial_state)
    with pytest.raises(TypeError, match="output_final_state must be a bool, got int"):
        la.taylor_linear_attention(q, k, v, output_final_state=1)
    # A list is accepted as well as a tuple.
    la.taylor_linear_attention(q, k, v, initial_state=[kv_state, k_state])


# ------------------------------------------------------------------------------------------
# Linear memory of the reference
# ------------------------------------------------------------------------------------------

# Runs in a fresh interpreter so that ru_maxrss (the process's peak resident memory) measures
# this alone. The quadratic form would need several 2 * 32768^2 * 4 bytes = 8.6 GB matrices.
_MEMORY_SCRIPT = """
import json, resource, sys, types
import torch

# The kernels need nothing else from hazyzoo; importing the package root would also import
# transformers and every model (many seconds on a busy machine), so load hazyzoo.kernels alone.
root = types.ModuleType("hazyzoo")
root.__path__ = [sys.argv[1]]
sys.modules["hazyzoo"] = root
import hazyzoo.kernels.linear_attention as la

torch.set_num_threads(1)  # hundreds of small ops: threads only contend on a busy machine
L, out = 32768, {}
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
gen = torch.Generator().manual_seed(0)
inputs = {}
for dtype in (torch.float32, torch.bfloat16):
    q, k = (torch.randn(1, 2, L, 4, generator=gen).to(dtype) for _ in range(2))
    v = torch.randn(1, 2, L, 8, generator=gen).to(dtype)
    inputs[dtype] = (q, k, v, torch.rand(1, L, generator=gen) > 0.1)
state = (torch.randn(1, 2, 21, 8, generator=gen), torch.rand(1, 2, 21, generator=gen))
out["baseline"] = peak_mb()
finite = True
for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
    q, k, v, mask = inputs[dtype]
    o, z, final = la.taylor_linear_attention(q, k, v, mask, state, output_final_state=True)
    o2, z2 = la.taylor_attention_parallel(q, k, v)
    finite &= all(bool(torch.isfinite(t).all()) for t in (o, z, *final, o2, z2))
    out["forward " + name] = peak_mb()
leaves = [t.clone().requires_grad_() for t in inputs[torch.float32][:3]]
o, z, final = la.taylor_linear_attention(*leaves, output_final_state=True)
(o.square().mean() + z.mean() + final[0].mean()).backward()
finite &= all(bool(torch.isfinite(t.grad).all()) for t in leaves)
out["backward float32"] = peak_mb()
out["finite"] = finite
json.dump(out, sys.stdout)
"""
# Forward-only high-water mark above the baseline (imports + inputs), and with a float32
# backward through the chunk loop; and the whole process.
FORWARD_BOUND_MB = 100
BACKWARD_BOUND_MB = 600
PROCESS_BOUND_MB = 1536


def test_reference_memory_is_linear_at_32k_tokens():
    package_dir = str(Path(la.__file__).resolve().parents[2])  # hazyzoo/
    stdout = run_python(_MEMORY_SCRIPT, package_dir, HAZYZOO_KERNELS="torch")
    out = json.loads(stdout)
    assert out["finite"], out
    base = out["baseline"]
    for stage in ("forward float32", "forward bfloat16"):
        assert out[stage] - base < FORWARD_BOUND_MB, out
    assert out["backward float32"] - base < BACKWARD_BOUND_MB, out
    assert out["backward float32"] < PROCESS_BOUND_MB, out


def test_masked_step_adds_nothing_to_the_state_of_masked_rows():
    """A padding token decoded with key mask 0 leaves its row's state as it was (its query
    still reads it); rows with mask 1 take the token as the unmasked step does."""
    q, k, v, _ = make_qkv(seed=11, batch=2, heads=2, length=6, feat=4, dv=3, masked=False)
    kv_state, k_state = ref.taylor_attention_state_reference(k[:, :, :5], v[:, :, :5])
    token = (q[:, :, 5], k[:, :, 5], v[:, :, 5])
    masked = (kv_state.clone(), k_state.clone())
    plain = (kv_state.clone(), k_state.clone())
    key_mask = torch.tensor([False, True])
    o_masked, z_masked = la.taylor_attention_step(*token, *masked, key_mask=key_mask)
    o_plain, z_plain = la.taylor_attention_step(*token, *plain)
    torch.testing.assert_close(masked[0][0], kv_state[0])
    torch.testing.assert_close(masked[1][0], k_state[0])
    torch.testing.assert_close(masked[0][1], plain[0][1])
    torch.testing.assert_close(o_masked[1], o_plain[1])
    torch.testing.assert_close(z_masked[1], z_plain[1])
    phi_q = la.taylor_feature_map(q[0, :, 5])
    torch.testing.assert_close(o_masked[0], torch.einsum("hd,hdv->hv", phi_q, kv_state[0]))
    torch.testing.assert_close(z_masked[0], (phi_q * k_state[0]).sum(-1))
    with pytest.raises(ValueError, match=r"key_mask must be \[B\]"):
        la.taylor_attention_step(*token, *plain, key_mask=torch.ones(2, 1))
