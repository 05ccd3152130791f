"""The chunked (state-passing) Taylor attention: the Triton kernels (interpreted; see
tests/kernels/conftest.py) against the chunked reference, forward and backward, at tiny shapes
with small chunks (several chunks, a ragged last one, masks with left padding, an initial
state); the dispatch between the tiled and the chunked form (BASED's ops and JRT-RNN's prefix
op); and, on a GPU, the chunked form against the tiled kernels and the reference at a real size.

Tolerances: float32 results of float32 inputs within ``FP32_TOL`` (1e-4) of the reference
computed in float64, relative to the largest reference value (the kernels typically agree to
~3e-7). GPU: float32 within 1e-4, bfloat16 within 2e-2 (o, dq, dk, dv: ``A`` and the chunk
state's ``phi(k)`` are rounded to bfloat16, the state readouts run in TF32) and 1e-3 (z, which
sums ``A`` before rounding), again relative to the largest reference value.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hazyzoo.kernels.linear_attention as la
from hazyzoo.kernels.dispatch import triton_available
from hazyzoo.kernels.linear_attention import reference as ref
from tests.kernels.conftest import (
    HYPOTHESIS,
    INTERPRETED,
    assert_all_close,
    assert_close,
    make_qkv,
    make_state,
    requires_triton,
)

if triton_available():  # the Triton modules import triton at the top
    from hazyzoo.kernels.linear_attention import chunked, parallel


def run(fn, q, k, v, key_mask, initial, output_final_state, seed=0, **kwargs):
    """``o, z``, the gradients of ``(o, z)`` (random upstream gradients) w.r.t. q, k, v and
    the initial state (when given), and the final state (when asked for)."""
    gen = torch.Generator().manual_seed(seed)
    grad_o = torch.randn(*v.shape, generator=gen, dtype=torch.float64).to(v.device)
    grad_z = torch.randn(*v.shape[:-1], generator=gen, dtype=torch.float64).to(v.device)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    state = None
    if initial is not None:
        state = tuple(t.detach().clone().requires_grad_() for t in initial)
    o, z, final = fn(*leaves, key_mask, state, output_final_state, **kwargs)
    grads = torch.autograd.grad(
        (o, z), leaves + list(state or ()), (grad_o.to(o.dtype), grad_z.to(z.dtype))
    )
    return (o.detach(), z.detach(), *grads), final


def left_padding_mask(batch: int, length: int, seed: int) -> torch.Tensor:
    """Each row keeps a suffix of at least one token (left padding of 0..L-1 tokens)."""
    gen = torch.Generator().manual_seed(seed)
    pads = torch.randint(0, length, (batch,), generator=gen)
    return torch.arange(length)[None, :] >= pads[:, None]


GRAD_NAMES = ("o", "z", "dq", "dk", "dv", "d initial kv_state", "d initial k_state")


@requires_triton
@settings(HYPOTHESIS, max_examples=8)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch_heads=st.sampled_from([(1, 1), (1, 2), (2, 1)]),
    length=st.integers(1, 18),
    feat=st.sampled_from([1, 2, 4]),
    dv=st.sampled_from([1, 3, 24]),  # 24 > 16: several Dv blocks when interpreted
    mask=st.sampled_from(["none", "random", "left"]),
    with_state=st.booleans(),
    output_final_state=st.booleans(),
    chunk=st.sampled_from([4, 8]),
)
def test_chunked_matches_reference(
    seed, batch_heads, length, feat, dv, mask, with_state, output_final_state, chunk
):
    batch, heads = batch_heads
    q, k, v, key_mask = make_qkv(seed, batch, heads, length, feat, dv, mask == "random")
    if mask == "left":
        key_mask = left_padding_mask(batch, length, seed)
    initial = make_state(seed + 1, batch, heads, feat, dv) if with_state else None
    got, final = run(
        chunked.taylor_linear_attention_chunked,
        q, k, v, key_mask, initial, output_final_state, chunk_size=chunk,
    )  # fmt: skip
    want, final_ref = run(
        ref.taylor_linear_attention_reference,
        q.double(), k.double(), v.double(), key_mask,
        None if initial is None else tuple(t.double() for t in initial), output_final_state,
    )  # fmt: skip
    assert_all_close(got, want, GRAD_NAMES[: len(want)])
    assert all(t.dtype == torch.float32 for t in got)
    assert (final is None) == (not output_final_state)
    if output_final_state:
        assert_all_close(final, final_ref, ("final kv_state", "final k_state"))
        assert not final[0].requires_grad and not final[1].requires_grad
        if initial is not None:
            assert final[0] is not initial[0] and final[1] is not initial[1]


@requires_triton
def test_left_padding_is_invisible_across_chunk_boundaries():
    """A row left-padded by 5 tokens (so its chunks start mid-sequence) gives the same outputs
    for its real tokens, and the same final state, as the unpadded sequence alone."""
    q, k, v, _ = make_qkv(11, 1, 2, 14, 4, 3, False)
    initial = make_state(12, 1, 2, 4, 3)
    pad = 5
    key_mask = torch.arange(14)[None, :] >= pad
    o, z, final = chunked.taylor_linear_attention_chunked(
        q, k, v, key_mask, initial, True, chunk_size=4
    )
    tail = (t[:, :, pad:] for t in (q, k, v))
    o_t, z_t, final_t = chunked.taylor_linear_attention_chunked(
        *tail, None, initial, True, chunk_size=4
    )
    assert_all_close(
        (o[:, :, pad:], z[:, :, pad:], *final),
        (o_t, z_t, *final_t),
        ("o", "z", "kv_state", "k_state"),
    )


@requires_triton
def test_strided_inputs_expanded_grads_and_single_chunk():
    """q, k, v as permuted views of one [B, L, 3, H, F] tensor (the kernels take strides),
    ``z.sum()`` (a stride-0 upstream gradient), and a chunk longer than the sequence (the
    tiled kernel's result)."""
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 9, 3, 1, 4, generator=gen)
    results = []
    for fn, kwargs in (
        (chunked.taylor_linear_attention_chunked, {"chunk_size": 4}),
        (chunked.taylor_linear_attention_chunked, {"chunk_size": 16}),
        (parallel.taylor_linear_attention_triton, {}),
        (ref.taylor_linear_attention_reference, {}),
    ):
        leaf = qkv.clone().requires_grad_()
        q, k, v = leaf.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, F], non-contiguous
        o, z, _ = fn(q, k, v, None, None, False, **kwargs)
        (o.sum() + 0.5 * z.sum()).backward()
        results.append((o.detach(), z.detach(), leaf.grad))
    for i, got in enumerate(results[:-1]):
        assert_all_close(got, results[-1], (f"{i}: o", f"{i}: z", f"{i}: grad"))


@requires_triton
def test_empty_sequence_keeps_the_state():
    q, k, v, _ = make_qkv(3, 2, 1, 0, 4, 3, False)
    initial = make_state(4, 2, 1, 4, 3)
    o, z, final = chunked.taylor_linear_attention_chunked(q, k, v, None, initial, True, 4)
    assert o.shape == (2, 1, 0, 3) and z.shape == (2, 1, 0)
    assert_all_close(final, initial, ("kv_state", "k_state"))
    assert final[0] is not initial[0]
    _, _, zero = chunked.taylor_linear_attention_chunked(q, k, v, None, None, True, 4)
    assert not zero[0].any() and not zero[1].any() and zero[1].dtype == torch.float32


@requires_triton
def test_chunk_size_checks_and_defaults():
    q, k, v, _ = make_qkv(0, 1, 1, 5, 4, 3, False)
    for bad in (0, 6, -4):
        with pytest.raises(ValueError, match=rf"chunk_size must be a power of two.*got {bad}"):
            chunked.taylor_linear_attention_chunked(q, k, v, chunk_size=bad)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        chunked.taylor_linear_attention_chunked(q, k, v, chunk_size=4.0)
    assert chunked.default_chunk_size(16, 112) == chunked.default_chunk_size(16, 64) == 256
    for feat, dv in ((1, 1), (4, 16), (8, 64), (16, 128), (64, 256)):
        size = chunked.default_chunk_size(feat, dv)
        assert 64 <= size <= 512 and size & (size - 1) == 0


# ------------------------------------------------------------------------------------------
# Dispatch: tiled below the threshold, chunked from it on, forcing by environment variable
# ------------------------------------------------------------------------------------------


@pytest.fixture
def spied_forms(monkeypatch):
    """Triton forced on CPU tensors, a small threshold and chunk, and a record of which form
    each call ran ("chunked" or "parallel")."""
    monkeypatch.setenv("HAZYZOO_KERNELS", "triton")
    monkeypatch.delenv(chunked.FORM_ENV, raising=False)
    monkeypatch.setattr(chunked, "CHUNKED_MIN_LENGTH", 10)
    monkeypatch.setattr(chunked, "CHUNK_SIZE", 4)
    calls: list[str] = []

    def spy(form, fn):
        def wrapped(*args, **kwargs):
            calls.append(form)
            return fn(*args, **kwargs)

        return wrapped

    for name, form in (
        ("taylor_linear_attention_chunked", "chunked"),
        ("taylor_linear_attention_tiled", "parallel"),
        ("taylor_attention_parallel_triton", "parallel"),
    ):
        monkeypatch.setattr(chunked, name, spy(form, getattr(chunked, name)))
    return calls


@requires_triton
@pytest.mark.parametrize(
    ("length", "form", "want"),
    [(9, None, "parallel"), (10, None, "chunked"), (13, "parallel", "parallel"),
     (6, "chunked", "chunked"), (13, "auto", "chunked")],
)  # fmt: skip
def test_dispatch_picks_form_by_length(monkeypatch, spied_forms, length, form, want):
    if form is not None:
        monkeypatch.setenv(chunked.FORM_ENV, form)
    q, k, v, key_mask = make_qkv(7, 1, 2, length, 2, 3, True)
    initial = make_state(8, 1, 2, 2, 3)
    got = la.taylor_linear_attention(q, k, v, key_mask, initial, output_final_state=True)
    assert spied_forms == [want]
    want_out = ref.taylor_linear_attention_reference(q, k, v, key_mask, initial, True)
    assert_all_close(
        (*got[:2], *got[2]), (*want_out[:2], *want_out[2]), ("o", "z", "kv_state", "k_state")
    )
    spied_forms.clear()
    got = la.taylor_attention_parallel(q, k, v, key_mask)
    assert spied_forms == [want]
    assert_all_close(got, ref.taylor_attention_parallel_reference(q, k, v, key_mask), ("o", "z"))


@requires_triton
@pytest.mark.parametrize(
    ("length", "prefix", "form", "want"),
    [(9, 4, None, "parallel"), (9, 12, None, "parallel"), (10, 4, None, "chunked"),
     (13, 4, "parallel", "parallel"), (6, 4, "chunked", "chunked")],
)  # fmt: skip
def test_prefix_op_picks_form_by_length(monkeypatch, spied_forms, length, prefix, form, want):
    """JRT-RNN's prefix op dispatches as BASED's: by the length of the causal sequence (the
    prefix does not count), from the encoder state as the chunked or tiled form's initial
    state."""
    if form is not None:
        monkeypatch.setenv(chunked.FORM_ENV, form)
    q, k, v, key_mask = make_qkv(10, 1, 2, length, 2, 3, True)
    k_enc, v_enc, enc_mask = make_qkv(11, 1, 2, prefix, 2, 3, True)[1:]
    initial = make_state(12, 1, 2, 2, 3)
    args = (q, k, v, k_enc, v_enc, key_mask, enc_mask, initial, True)
    got = la.taylor_prefix_linear_attention(*args)
    assert spied_forms == [want]
    want_out = ref.taylor_prefix_linear_attention_reference(*args)
    assert_all_close(
        (*got[:2], *got[2]), (*want_out[:2], *want_out[2]), ("o", "z", "kv_state", "k_state")
    )


@requires_triton
def test_dispatch_rejects_unknown_form_and_cpu_auto_stays_reference(monkeypatch, spied_forms):
    q, k, v, _ = make_qkv(9, 1, 1, 12, 2, 3, False)
    monkeypatch.setenv(chunked.FORM_ENV, "fast")
    with pytest.raises(ValueError, match="HAZYZOO_LINEAR_ATTENTION_FORM='fast' is not one of"):
        la.taylor_attention_parallel(q, k, v)
    monkeypatch.setenv(chunked.FORM_ENV, "chunked")
    monkeypatch.setenv("HAZYZOO_KERNELS", "auto")  # CPU tensors: the reference, whatever form
    la.taylor_linear_attention(q, k, v)
    assert spied_forms == []


@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_default_threshold_keeps_short_sequences_tiled(monkeypatch):
    monkeypatch.delenv(chunked.FORM_ENV, raising=False)
    assert chunked.CHUNKED_MIN_LENGTH == 8192
    assert chunked.attention_form(4096) == chunked.attention_form(8191) == "parallel"
    assert chunked.attention_form(8192) == chunked.attention_form(1 << 20) == "chunked"


# ------------------------------------------------------------------------------------------
# GPU, real size
# ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or not triton_available() or INTERPRETED,
    reason="needs CUDA and compiled (not interpreted) Triton kernels",
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_matches_tiled_and_reference_on_gpu(dtype):
    """B 2, H 16, L 8189 (a ragged last chunk), F 16, Dv 64: the chunked form (default
    chunk, 256) against the tiled kernels and the reference, forward and backward, with a
    left-padding mask (row 1) and an initial state."""
    batch, heads, length, feat, dv = 2, 16, 8189, 16, 64
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(batch, heads, length, d, generator=gen, device="cuda").to(dtype)
        for d in (feat, feat, dv)
    )
    key_mask = torch.arange(length, device="cuda")[None, :] >= torch.tensor([[0], [37]]).cuda()
    initial = tuple(t.cuda() for t in make_state(1, batch, heads, feat, dv))
    got, final = run(chunked.taylor_linear_attention_chunked, q, k, v, key_mask, initial, True)
    tiled, _ = run(parallel.taylor_linear_attention_triton, q, k, v, key_mask, initial, True)
    want, final_ref = run(
        ref.taylor_linear_attention_reference, q.float(), k.float(), v.float(), key_mask,
        initial, True,
    )  # fmt: skip
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for other, what in ((tiled, "tiled"), (want, "reference")):
        for name, a, b in zip(GRAD_NAMES, got, other, strict=True):
            name_tol = 1e-3 if (name == "z" and dtype != torch.float32) else tol
            assert_close(a.float(), b.float(), f"{what}: {name}", max(name_tol, 1e-4))
    assert_all_close(
        final, final_ref, ("kv_state", "k_state"), 1e-4 if dtype == torch.float32 else 1e-2
    )
