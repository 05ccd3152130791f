"""Prefix linear attention (JRT-RNN): the reference against an explicit-feature-map loop, the
Triton path (and its readout and differentiable state pieces) against the references, forward
and backward, under the interpreter (see tests/kernels/conftest.py), and the input checks."""

from __future__ import annotations

import math

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
)

if triton_available():  # the Triton modules import triton at the top
    from hazyzoo.kernels.linear_attention import chunked, parallel, readout, state

# Tight bounds for float64 against float64 (only summation order differs).
FP64_TOL = 1e-10


def make_enc(
    seed: int,
    batch: int,
    heads: int,
    prefix: int,
    feat: int,
    dv: int,
    masked: bool,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random encoder keys ``[B, H, P, F]``, values ``[B, H, P, Dv]`` and, if ``masked``, a
    random 0/1 float32 encoder mask ``[B, P]`` (numbers, not bool: both are accepted)."""
    gen = torch.Generator().manual_seed(seed)
    k_enc = torch.randn(batch, heads, prefix, feat, generator=gen).to(dtype)
    v_enc = torch.randn(batch, heads, prefix, dv, generator=gen).to(dtype)
    enc_mask = None
    if masked:
        enc_mask = (torch.rand(batch, prefix, generator=gen) > 0.4).float()
    return k_enc, v_enc, enc_mask


def explicit_phi(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = [1, x / F^(1/4), vec(x x^T) / (sqrt(2) sqrt(F))], written out (float64)."""
    feat = x.shape[-1]
    x = x.double()
    quad = (x[..., :, None] * x[..., None, :]).flatten(-2) / (math.sqrt(2) * math.sqrt(feat))
    return torch.cat([torch.ones_like(x[..., :1]), x / feat**0.25, quad], dim=-1)


def naive_prefix_attention(q, k, v, k_enc, v_enc, key_mask, enc_mask, initial=None):
    """The JRT-RNN definition, one (b, h) at a time in float64: the prefix state
    ``S = S_0 + sum_s e_s phi(k_enc_s)^T v_enc_s`` read by every query, plus the causal sum
    over the kept keys; and the final state ``S + sum_s m_s phi(k_s)^T v_s``."""
    batch, heads, length, _ = q.shape
    prefix = k_enc.shape[2]
    o = torch.zeros(batch, heads, length, v.shape[-1], dtype=torch.float64)
    z = torch.zeros(batch, heads, length, dtype=torch.float64)
    kv_final, k_final = [], []
    for b in range(batch):
        keep = torch.ones(length) if key_mask is None else key_mask[b].double()
        enc = torch.ones(prefix) if enc_mask is None else enc_mask[b].double()
        for h in range(heads):
            phi_q, phi_k, phi_e = (explicit_phi(t[b, h]) for t in (q, k, k_enc))
            s_kv = (phi_e * enc[:, None]).T @ v_enc[b, h].double()
            s_k = (phi_e * enc[:, None]).sum(0)
            if initial is not None:
                s_kv, s_k = s_kv + initial[0][b, h].double(), s_k + initial[1][b, h].double()
            for t in range(length):
                a = (phi_q[t] @ phi_k[: t + 1].T) * keep[: t + 1]
                o[b, h, t] = phi_q[t] @ s_kv + a @ v[b, h, : t + 1].double()
                z[b, h, t] = phi_q[t] @ s_k + a.sum()
            kv_final.append(s_kv + (phi_k * keep[:, None]).T @ v[b, h].double())
            k_final.append(s_k + (phi_k * keep[:, None]).sum(0))
    d_phi = la.taylor_feature_dim(q.shape[-1])
    final = (
        torch.stack(kv_final).reshape(batch, heads, d_phi, -1),
        torch.stack(k_final).reshape(batch, heads, d_phi),
    )
    return o, z, final


# ------------------------------------------------------------------------------------------
# The reference against the definition
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize(
    ("batch", "heads", "length", "prefix", "feat", "dv"),
    [(2, 2, 7, 0, 3, 2), (1, 2, 5, 9, 4, 3), (2, 1, 9, 4, 2, 5)],
)
def test_reference_matches_naive_loop(batch, heads, length, prefix, feat, dv, masked, with_state):
    """o, z and the final state of the chunked reference (several chunk sizes, so the prefix
    state and the sequence run in several chunks) == the loop, float64."""
    q, k, v, key_mask = make_qkv(1, batch, heads, length, feat, dv, masked, torch.float64)
    k_enc, v_enc, enc_mask = make_enc(2, batch, heads, prefix, feat, dv, masked, torch.float64)
    initial = make_state(3, batch, heads, feat, dv, torch.float64) if with_state else None
    o_n, z_n, final_n = naive_prefix_attention(q, k, v, k_enc, v_enc, key_mask, enc_mask, initial)
    names = ("o", "z", "kv_state", "k_state")
    for chunk in (1, 4, 128):
        o, z, final = ref.taylor_prefix_linear_attention_reference(
            q, k, v, k_enc, v_enc, key_mask, enc_mask, initial, True, chunk_size=chunk
        )
        assert_all_close((o, z, *final), (o_n, z_n, *final_n), names, FP64_TOL, torch.float64)
    o, z, final = ref.taylor_prefix_linear_attention_reference(
        q, k, v, k_enc, v_enc, key_mask, enc_mask, initial
    )
    assert final is None
    assert_all_close((o, z), (o_n, z_n), names[:2], FP64_TOL)


def test_reference_gradients():
    """gradcheck of the reference w.r.t. every tensor input, through o, z and the final state."""
    q, k, v, key_mask = make_qkv(5, 1, 1, 4, 2, 2, True, torch.float64)
    k_enc, v_enc, enc_mask = make_enc(6, 1, 1, 3, 2, 2, True, torch.float64)
    initial = make_state(7, 1, 1, 2, 2, torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, k_enc, v_enc, *initial)]

    def fn(q_, k_, v_, ke_, ve_, kv_, ks_):
        o, z, (kv, ks) = ref.taylor_prefix_linear_attention_reference(
            q_, k_, v_, ke_, ve_, key_mask, enc_mask, (kv_, ks_), True, chunk_size=2
        )
        return o, z, kv, ks

    assert torch.autograd.gradcheck(fn, leaves)


def test_public_op_composes_with_linear_attention_and_step():
    """Through the entry point (CPU: the reference), float32: the prefix op == linear attention
    from the encoder state (and == it outright for P = 0, bool masks); decoding from its final
    state continues the sequence."""
    q, k, v, key_mask = make_qkv(8, 2, 2, 9, 4, 3, True)
    k_enc, v_enc, enc_mask = make_enc(9, 2, 2, 6, 4, 3, True)
    initial = make_state(10, 2, 2, 4, 3)
    got = la.taylor_prefix_linear_attention(
        q, k, v, k_enc, v_enc, key_mask, enc_mask, initial, True
    )
    enc_state = la.taylor_attention_state(k_enc, v_enc, enc_mask.bool())
    start = tuple(a + b for a, b in zip(initial, enc_state, strict=True))
    want = la.taylor_linear_attention(q, k, v, key_mask, start, True)
    names = ("o", "z", "kv_state", "k_state")
    assert_all_close((*got[:2], *got[2]), (*want[:2], *want[2]), names, 1e-5)
    empty = k_enc[:, :, :0], v_enc[:, :, :0]
    got = la.taylor_prefix_linear_attention(q, k, v, *empty, key_mask, enc_mask[:, :0])
    want = la.taylor_linear_attention(q, k, v, key_mask)
    assert got[2] is None
    assert_all_close(got[:2], want[:2], names[:2], 1e-6)
    # Prefill all but the last token, then decode it from the final state.
    head = [t[:, :, :-1] for t in (q, k, v)]
    _, _, (kv_state, k_state) = la.taylor_prefix_linear_attention(
        *head, k_enc, v_enc, None, enc_mask, output_final_state=True
    )
    o_all, z_all, _ = la.taylor_prefix_linear_attention(q, k, v, k_enc, v_enc, None, enc_mask)
    token = (q[:, :, -1], k[:, :, -1], v[:, :, -1])
    o_step, z_step = la.taylor_attention_step(*token, kv_state, k_state)
    assert_all_close((o_step, z_step), (o_all[:, :, -1], z_all[:, :, -1]), ("o", "z"), 1e-5)


# ------------------------------------------------------------------------------------------
# Triton (interpreted) against the references
# ------------------------------------------------------------------------------------------

# B, H in 1..2, L in 1..14, P in 0..20 (P = 0, P < L and P > L all come up), F in {2, 4, 5},
# Dv = 24 > MAX_BLOCK_DV = 16 in the interpreter runs the several-Dv-blocks paths.
prefix_shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 2),
        "heads": st.integers(1, 2),
        "length": st.integers(1, 14),
        "prefix": st.sampled_from([0, 1, 5, 20]),
        "feat": st.sampled_from([2, 4, 5]),
        "dv": st.sampled_from([1, 3, 24]),
        "masked": st.booleans(),
    }
)


def prefix_inputs(shape: dict) -> tuple:
    """``(q, k, v, k_enc, v_enc, key_mask, enc_mask)`` for a ``prefix_shapes`` example."""
    dims = (shape["batch"], shape["heads"])
    feat, dv, masked, seed = shape["feat"], shape["dv"], shape["masked"], shape["seed"]
    q, k, v, key_mask = make_qkv(seed, *dims, shape["length"], feat, dv, masked)
    k_enc, v_enc, enc_mask = make_enc(seed + 1, *dims, shape["prefix"], feat, dv, masked)
    return q, k, v, k_enc, v_enc, key_mask, enc_mask


def prefix_forward_backward(fn, inputs, initial, output_final_state):
    """``fn``'s o, z, the gradients of (o, z) for random upstream gradients w.r.t. q, k, v,
    k_enc, v_enc (and the initial state, when given), then the final state (detached)."""
    q, k, v, k_enc, v_enc, key_mask, enc_mask = inputs
    leaves = [t.clone().requires_grad_() for t in (q, k, v, k_enc, v_enc)]
    state_leaves = None if initial is None else [t.clone().requires_grad_() for t in initial]
    o, z, final = fn(*leaves, key_mask, enc_mask, state_leaves, output_final_state)
    gen = torch.Generator().manual_seed(1)
    grad_o, grad_z = torch.randn(o.shape, generator=gen), torch.randn(z.shape, generator=gen)
    grads = torch.autograd.grad((o, z), leaves + (state_leaves or []), (grad_o, grad_z))
    final = None if final is None else tuple(t.detach() for t in final)
    return (o.detach(), z.detach(), *grads), final


@requires_triton
@settings(HYPOTHESIS, max_examples=8)
@given(shape=prefix_shapes, with_state=st.booleans(), output_final_state=st.booleans())
def test_triton_prefix_matches_reference(shape, with_state, output_final_state):
    """o, z, the gradients of q, k, v, k_enc, v_enc (and the initial state) and the final
    state of the Triton path == the reference."""
    inputs = prefix_inputs(shape)
    dims = (shape["batch"], shape["heads"], shape["feat"], shape["dv"])
    initial = make_state(shape["seed"] + 2, *dims) if with_state else None
    extra = (initial, output_final_state)
    got, final = prefix_forward_backward(
        chunked.taylor_prefix_linear_attention_triton, inputs, *extra
    )
    want, final_ref = prefix_forward_backward(
        ref.taylor_prefix_linear_attention_reference, inputs, *extra
    )
    names = ("o", "z", "dq", "dk", "dv", "dk_enc", "dv_enc", "dkv_0", "dk_0")
    assert_all_close(got, want, names[: len(want)], dtype=torch.float32)
    assert (final is None) == (not output_final_state)
    if output_final_state:
        assert_all_close(final, final_ref, ("kv_state", "k_state"), dtype=torch.float32)
        assert final[0].grad_fn is None  # the Triton final state carries no gradient


@requires_triton
def test_triton_prefix_empty_sequence_and_masked_prefix():
    """L = 0 (only the prefix: the final state is its state plus the initial one), and an
    encoder mask dropping every prefix key (zero gradients there, the causal part alone)."""
    q, k, v, _ = make_qkv(11, 1, 2, 0, 4, 3, False)
    k_enc, v_enc, _ = make_enc(12, 1, 2, 5, 4, 3, False)
    initial = make_state(13, 1, 2, 4, 3)
    op = get_op("taylor_prefix_linear_attention")
    args = (q, k, v, k_enc, v_enc, None, None, initial, True)
    o, z, final = op.triton(*args)
    assert o.shape == (1, 2, 0, 3) and z.shape == (1, 2, 0)
    assert_all_close(final, op.reference(*args)[2], ("kv_state", "k_state"))
    q, k, v, key_mask = make_qkv(14, 1, 2, 6, 4, 3, True)
    drop_all = torch.zeros(1, 5, dtype=torch.bool)
    inputs = (q, k, v, k_enc, v_enc, key_mask, drop_all)
    got, _ = prefix_forward_backward(
        chunked.taylor_prefix_linear_attention_triton, inputs, None, False
    )
    want = parallel.taylor_linear_attention_triton(q, k, v, key_mask)
    assert_all_close(got[:2], want[:2], ("o", "z"))
    assert not got[5].any() and not got[6].any(), "dropped prefix keys got a gradient"


# Shapes of the pieces on their own: B, H in 1..2, L in 0..20, F, Dv as above.
piece_shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 2),
        "heads": st.integers(1, 2),
        "length": st.integers(0, 20),
        "feat": st.sampled_from([2, 4, 5]),
        "dv": st.sampled_from([1, 3, 24]),
        "masked": st.booleans(),
    }
)


@requires_triton
@settings(HYPOTHESIS, max_examples=6)
@given(shape=piece_shapes)
def test_triton_readout(shape):
    """The readout kernel and its backward (dq, dKV, dKS) == the torch readout."""
    q, _, _, _ = make_qkv(**shape)
    dims = (shape["batch"], shape["heads"], shape["feat"], shape["dv"])
    initial = make_state(shape["seed"] + 1, *dims)
    gen = torch.Generator().manual_seed(2)
    grad_o = torch.randn(*q.shape[:-1], shape["dv"], generator=gen)
    grad_z = torch.randn(*q.shape[:-1], generator=gen)
    results = []
    for fn in (readout.state_readout_triton, ref.state_readout_reference):
        leaves = [t.clone().requires_grad_() for t in (q, *initial)]
        o, z = fn(*leaves)
        grads = torch.autograd.grad((o, z), leaves, (grad_o, grad_z))
        results.append((o.detach(), z.detach(), *grads))
    assert_all_close(*results, ("o", "z", "dq", "dkv", "dks"), dtype=torch.float32)


@requires_triton
def test_triton_readout_strided_fp16_and_partial_grads():
    """q as a transposed view, a stride-0 gradient of z (from z.sum()), float16 queries (the
    state stays float32), and a backward that only needs the state's gradient."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 19, 2, 4, generator=gen).transpose(1, 2)  # [B, H, L, F], strided
    initial = make_state(4, 2, 2, 4, 20)
    results = []
    for fn in (readout.state_readout_triton, ref.state_readout_reference):
        leaves = [t.clone().requires_grad_() for t in (q, *initial)]
        o, z = fn(*leaves)
        (o.square().sum() + z.sum()).backward()
        results.append((o, z, *(t.grad for t in leaves)))
    assert_all_close(*results, ("o", "z", "dq", "dkv", "dks"))
    q16 = q.half().requires_grad_()
    o, z = readout.state_readout_triton(q16, *initial)
    (o.sum() + z.sum()).backward()
    assert o.dtype == z.dtype == torch.float32 and q16.grad.dtype == torch.float16
    q32 = q16.detach().float().requires_grad_()
    o_ref, z_ref = ref.state_readout_reference(q32, *initial)
    (o_ref.sum() + z_ref.sum()).backward()
    assert_all_close((o, z, q16.grad), (o_ref, z_ref, q32.grad), ("o", "z", "dq"), 3e-3)
    kv_leaf = initial[0].clone().requires_grad_()
    o, _ = readout.state_readout_triton(q, kv_leaf, initial[1])
    (d_kv,) = torch.autograd.grad(o.sum(), kv_leaf)
    o_ref, _ = ref.state_readout_reference(q, kv_leaf, initial[1])
    (d_kv_ref,) = torch.autograd.grad(o_ref.sum(), kv_leaf)
    assert_close(d_kv, d_kv_ref, "dkv alone")


@requires_triton
@settings(HYPOTHESIS, max_examples=6)
@given(shape=piece_shapes)
def test_triton_state_backward(shape):
    """The differentiable state op: kv_state, k_state and the gradients of k and v (zero for
    masked keys) == the reference's."""
    _, k, v, key_mask = make_qkv(**shape)
    d_phi = la.taylor_feature_dim(shape["feat"])
    gen = torch.Generator().manual_seed(5)
    grad_kv = torch.randn(shape["batch"], shape["heads"], d_phi, shape["dv"], generator=gen)
    grad_ks = torch.randn(shape["batch"], shape["heads"], d_phi, generator=gen)
    results = []
    for fn in (state.taylor_attention_state_triton, ref.taylor_attention_state_reference):
        leaves = [t.clone().requires_grad_() for t in (k, v)]
        kv_state, k_state = fn(*leaves, key_mask)
        grads = torch.autograd.grad((kv_state, k_state), leaves, (grad_kv, grad_ks))
        results.append((kv_state.detach(), k_state.detach(), *grads))
    assert_all_close(*results, ("kv_state", "k_state", "dk", "dv"), dtype=torch.float32)
    if key_mask is not None:
        dropped = (~key_mask)[:, None, :, None]  # [B, 1, L, 1]
        assert not (results[0][2] * dropped).any() and not (results[0][3] * dropped).any()


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_naming_the_argument():
    q, k, v, key_mask = make_qkv(15, 1, 2, 5, 4, 3, True)
    k_enc, v_enc, enc_mask = make_enc(16, 1, 2, 6, 4, 3, True)
    kv_state, k_state = make_state(17, 1, 2, 4, 3)
    good = {"q": q, "k": k, "v": v, "k_enc": k_enc, "v_enc": v_enc, "key_mask": key_mask}
    bad = [
        (TypeError, r"k_enc must be a torch.Tensor, got list", {"k_enc": [1.0]}),
        (ValueError, r"k_enc must be \[B, H, P, F\] \(4 dims\)", {"k_enc": k_enc[0]}),
        (ValueError, r"v_enc must be \[B, H, P, Dv\] \(4 dims\)", {"v_enc": v_enc[0]}),
        (ValueError, r"k_enc must be \[B, H, P, F\] with B, H, F", {"k_enc": k_enc[..., :3]}),
        (ValueError, r"k_enc must be \[B, H, P, F\] with B, H, F", {"k_enc": k_enc[:, :1]}),
        (ValueError, r"v_enc must be \[B, H, P, Dv\] = \(1, 2, 6, 3\)", {"v_enc": v_enc[:, :, 1:]}),
        (ValueError, r"v_enc must be \[B, H, P, Dv\]", {"v_enc": v_enc[..., :2]}),
        (ValueError, r"k_enc has dtype torch.bfloat16 but q", {"k_enc": k_enc.bfloat16()}),
        (ValueError, r"v_enc has dtype torch.float16 but q", {"v_enc": v_enc.half()}),
        (ValueError, r"k_enc has dtype torch.int64; allowed", {"k_enc": k_enc.long()}),
        (ValueError, r"enc_mask must be \[B, P\] = \(1, 6\)", {"enc_mask": enc_mask[:, :5]}),
        (ValueError, r"enc_mask must be \[B, P\]", {"enc_mask": enc_mask.to(torch.complex64)}),
        (TypeError, r"enc_mask must be a torch.Tensor or None", {"enc_mask": [1, 0]}),
        (ValueError, r"one device.*k_enc", {"k_enc": k_enc.to("meta")}),
        (ValueError, r"key_mask must be \[B, L\]", {"key_mask": key_mask[:, :4]}),
        (ValueError, r"v has shape", {"v": v[:, :, :4]}),
        (
            ValueError,
            r"initial_state\[1\] \(k_state\) must be \[B, H, 1\+F\+F\^2\]",
            {"initial_state": (kv_state, k_state[..., :-1])},
        ),
        (TypeError, r"initial_state must be None or a tuple", {"initial_state": kv_state}),
        (TypeError, r"output_final_state must be a bool, got int", {"output_final_state": 1}),
    ]
    for error, match, change in bad:
        with pytest.raises(error, match=match):
            la.taylor_prefix_linear_attention(**{**good, "enc_mask": enc_mask, **change})
    # Good inputs pass: a list state, a bool encoder mask, an empty prefix.
    la.taylor_prefix_linear_attention(
        **good, enc_mask=enc_mask.bool(), initial_state=[kv_state, k_state]
    )
    la.taylor_prefix_linear_attention(
        **{**good, "k_enc": k_enc[:, :, :0], "v_enc": v_enc[:, :, :0]}
    )


@requires_triton
@pytest.mark.parametrize(
    ("length", "masked", "with_state"),
    [(16, False, False), (21, True, True), (40, True, False), (37, False, True)],
)
def test_triton_chunked_form_matches_reference(monkeypatch, length, masked, with_state):
    """From CHUNKED_MIN_LENGTH tokens on the prefix op runs the chunked (state-passing) kernels
    with the encoder state as their initial state (a small threshold and 8-token chunks here,
    valid under the interpreter, so it covers several chunks, a ragged last chunk, masks and an
    initial state), forward and backward, against the reference."""
    monkeypatch.delenv(chunked.FORM_ENV, raising=False)
    monkeypatch.setattr(chunked, "CHUNK_SIZE", 8)
    monkeypatch.setattr(chunked, "CHUNKED_MIN_LENGTH", 16)
    chunked_calls: list[int] = []
    chunked_form = chunked.taylor_linear_attention_chunked

    def spy(*args, **kwargs):
        chunked_calls.append(args[0].shape[2])
        return chunked_form(*args, **kwargs)

    monkeypatch.setattr(chunked, "taylor_linear_attention_chunked", spy)
    q, k, v, key_mask = make_qkv(5, 2, 2, length, 4, 5, masked)
    k_enc, v_enc, enc_mask = make_enc(6, 2, 2, 6, 4, 5, masked)
    initial = make_state(7, 2, 2, 4, 5) if with_state else None
    inputs = [q, k, v, k_enc, v_enc] + (list(initial) if initial else [])
    upstream = None
    results = []
    for path in (
        chunked.taylor_prefix_linear_attention_triton,
        ref.taylor_prefix_linear_attention_reference,
    ):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        state = tuple(leaves[5:]) if initial else None
        o, z, final = path(*leaves[:5], key_mask, enc_mask, state, True)
        if upstream is None:
            gen = torch.Generator().manual_seed(8)
            upstream = (torch.randn(o.shape, generator=gen), torch.randn(z.shape, generator=gen))
        ((o * upstream[0]).sum() + (z * upstream[1]).sum()).backward()
        results.append([o, z, *final, *(t.grad for t in leaves)])
    assert chunked_calls == [length], "the prefix op did not run the chunked form"
    names = ["o", "z", "kv_state", "k_state", "dq", "dk", "dv", "dk_enc", "dv_enc"]
    names += ["d kv_state0", "d k_state0"] if initial else []
    assert_all_close(*results, names)
