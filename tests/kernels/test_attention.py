"""Hydragen's ops (attention with log-sum-exp over keys shared by groups of sequences, and the
exact merge of partial results): the reference against SDPA over replicated keys and the
Hydragen identity, the Triton kernels against the reference (interpreted; see
tests/kernels/conftest.py), the input checks, and (``gpu``) the compiled kernels on CUDA at a
real decode size, in a subprocess (see tests/kernels/test_rms_norm.py why)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import hazyzoo.kernels.attention as attn
from hazyzoo.kernels.attention.reference import (
    attention_with_lse_reference,
    merge_attention_reference,
)
from hazyzoo.kernels.dispatch import triton_available
from tests.kernels.conftest import (
    FP32_TOL,
    HYPOTHESIS,
    INTERPRETED,
    assert_close,
    assert_close_at_dtype,
    requires_triton,
    run_python,
)

if triton_available():  # the Triton module imports triton at the top
    from hazyzoo.kernels.attention.split import (
        attention_with_lse_triton,
        merge_attention_triton,
    )

# fp16 inputs: the kernel rounds the probabilities to fp16 before the P @ V product.
FP16_TOL = 3e-3


def make_inputs(
    seed: int,
    key_batch: int,
    per: int,
    kv_heads: int,
    rep: int,
    length: int,
    n_keys: int,
    dim: int,
    dv: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``q [Bk * per, Hkv * rep, T, D]``, ``k [Bk, Hkv, N, D]``, ``v [Bk, Hkv, N, Dv]``
    (scaled so that the softmax is far from uniform)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(key_batch * per, kv_heads * rep, length, dim, generator=gen) * 1.5
    k = torch.randn(key_batch, kv_heads, n_keys, dim, generator=gen) * 1.5
    v = torch.randn(key_batch, kv_heads, n_keys, dv, generator=gen)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def make_mask(
    seed: int, kind: str, batch: int, key_batch: int, length: int, n_keys: int, keep_one: bool
) -> torch.Tensor | None:
    """A random bool mask of ``kind``: ``none``, ``key`` ``[Bk, 1, N]`` (a prefix's key
    padding), ``seq`` ``[B, 1, N]``, ``group`` ``[Bk, T, N]`` or ``dense`` ``[B, T, N]``
    (causal + padding). With ``keep_one`` every query row keeps at least one key."""
    if kind == "none":
        return None
    rows = {"key": key_batch, "seq": batch, "group": key_batch, "dense": batch}[kind]
    tm = length if kind in ("group", "dense") else 1
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, tm, n_keys, generator=gen) > 0.4
    if keep_one and n_keys:
        pick = torch.randint(0, n_keys, (rows, tm, 1), generator=gen)
        mask.scatter_(2, pick, True)
    return mask


def replicated_sdpa(q, k, v, mask, scale):
    """SDPA (float64) of ``q`` over the keys replicated per sequence and per query head."""
    batch, heads = q.shape[:2]
    per, rep = batch // k.shape[0], heads // k.shape[1]
    k_rep = k.double().repeat_interleave(per, 0).repeat_interleave(rep, 1)
    v_rep = v.double().repeat_interleave(per, 0).repeat_interleave(rep, 1)
    sdpa_mask = None
    if mask is not None:
        if mask.shape[0] != batch:
            mask = mask.repeat_interleave(per, 0)
        sdpa_mask = mask.unsqueeze(1)  # [B, 1, T or 1, N]
    return F.scaled_dot_product_attention(
        q.double(), k_rep, v_rep, attn_mask=sdpa_mask, scale=scale
    ), (k_rep, sdpa_mask)


def masked_logsumexp(q, k_rep, sdpa_mask, scale):
    """logsumexp over the keys of the masked scores (float64)."""
    scores = q.double() @ k_rep.transpose(-1, -2) * scale
    if sdpa_mask is not None:
        scores = scores.masked_fill(~sdpa_mask, float("-inf"))
    return torch.logsumexp(scores, -1)


def assert_attention_close(got, want, tol: float = FP32_TOL, what: str = "") -> None:
    """``(out, lse)`` pairs: float32, same shapes, ``lse = -inf`` at the same rows (where
    ``out`` is exactly 0), and close elsewhere (relative to the largest reference value)."""
    (out, lse), (out_ref, lse_ref) = got, want
    assert out.dtype == lse.dtype == torch.float32, f"{what}: dtypes {out.dtype}, {lse.dtype}"
    assert out.shape == out_ref.shape and lse.shape == lse_ref.shape, what
    empty = torch.isneginf(lse_ref)
    assert torch.equal(torch.isneginf(lse), empty), f"{what}: -inf lse rows differ"
    assert torch.equal(out[empty], torch.zeros_like(out[empty])), f"{what}: unseen rows not 0"
    assert_close(out, out_ref, f"{what} out", tol)
    assert_close(lse[~empty], lse_ref[~empty], f"{what} lse", tol)


# ------------------------------------------------------------------------------------------
# The reference against its definition
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "key", "seq", "group", "dense"])
@pytest.mark.parametrize(
    ("key_batch", "per", "kv_heads", "rep", "length", "n_keys", "dim", "dv"),
    [(1, 3, 2, 2, 1, 9, 16, 16), (2, 2, 1, 4, 3, 13, 8, 5), (3, 1, 2, 1, 4, 6, 16, 24)],
)
def test_reference_is_sdpa_over_replicated_keys(
    key_batch, per, kv_heads, rep, length, n_keys, dim, dv, kind
):
    """Shared keys (groups of sequences, GQA heads) give what SDPA gives over the keys copied
    for each sequence and query head; the lse is the logsumexp of the masked scores."""
    q, k, v = make_inputs(0, key_batch, per, kv_heads, rep, length, n_keys, dim, dv)
    mask = make_mask(1, kind, q.shape[0], key_batch, length, n_keys, keep_one=True)
    for scale in (dim**-0.5, 0.3):
        out, lse = attention_with_lse_reference(q, k, v, mask, scale)
        want, (k_rep, sdpa_mask) = replicated_sdpa(q, k, v, mask, scale)
        assert_close(out, want, "out", 1e-5, same_dtype=False)
        assert_close(lse, masked_logsumexp(q, k_rep, sdpa_mask, scale), "lse", 1e-5)
        assert out.dtype == lse.dtype == torch.float32
    # the public entry on CPU tensors runs the reference, with the default scale D ** -0.5
    got = attn.attention_with_lse(q, k, v, mask)
    assert_attention_close(got, attention_with_lse_reference(q, k, v, mask, dim**-0.5))


def test_reference_fully_masked_rows_and_no_keys():
    """A query row that sees no key (everything masked, or N = 0) gets out 0 and lse -inf;
    the other rows are unaffected."""
    q, k, v = make_inputs(2, 2, 2, 2, 2, 3, 10, 16, 16)
    mask = make_mask(3, "dense", 4, 2, 3, 10, keep_one=True)
    out_kept, lse_kept = attention_with_lse_reference(q, k, v, mask, 0.25)
    mask[1, 2] = False  # sequence 1, position 2 sees nothing
    out, lse = attention_with_lse_reference(q, k, v, mask, 0.25)
    assert torch.isneginf(lse[1, :, 2]).all()
    assert torch.equal(out[1, :, 2], torch.zeros_like(out[1, :, 2]))
    lse[1, :, 2] = lse_kept[1, :, 2]
    out[1, :, 2] = out_kept[1, :, 2]
    assert torch.equal(out, out_kept) and torch.equal(lse, lse_kept)
    out, lse = attention_with_lse_reference(q, k[:, :, :0], v[:, :, :0], None, 0.25)
    assert out.shape == (4, 4, 3, 16) and torch.equal(out, torch.zeros_like(out))
    assert lse.shape == (4, 4, 3) and torch.isneginf(lse).all()


@pytest.mark.parametrize("kind", ["key", "dense"])
def test_merge_of_disjoint_key_halves_is_full_attention(kind):
    """The Hydragen identity: attention over [prefix; suffix] == the merge of attention over
    each, including rows where one part saw no key (lse -inf) and rows that saw none at all."""
    q, k, v = make_inputs(4, 2, 3, 2, 2, 2, 17, 16, 8)
    mask = make_mask(5, kind, 6, 2, 2, 17, keep_one=False)
    split = 7
    if kind == "key":  # [Bk, 1, N]
        mask[0, 0] = torch.arange(17) >= split  # key batch 0 sees only the second part
        mask[1, 0, split:] = False  # key batch 1 sees only (some of) the first part
        mask[1, 0, 0] = True
    else:  # [B, T, N]
        mask[2, 0] = torch.arange(17) == split + 2  # one key, in the second part
        mask[4, 1] = torch.arange(17) < 3  # only first-part keys
        mask[0, 1] = False  # this row sees nothing at all
    full = attention_with_lse_reference(q, k, v, mask, 0.3)
    parts = [
        attention_with_lse_reference(q, k[:, :, s], v[:, :, s], mask[:, :, s], 0.3)
        for s in (slice(None, split), slice(split, None))
    ]
    outs, lses = torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
    assert torch.isneginf(lses[0]).any() and torch.isneginf(lses[1]).any()
    assert_attention_close(merge_attention_reference(outs, lses), full, 1e-5, "merged")
    got = attn.merge_attention(outs, lses)  # the entry on CPU: the reference
    assert_attention_close(got, full, 1e-5, "entry")
    if kind == "dense":
        assert torch.isneginf(full[1][0, :, 1]).all()


def test_merge_of_one_part_and_out_dtype():
    """Merging a single part returns it; out_dtype only rounds the output."""
    gen = torch.Generator().manual_seed(6)
    outs = torch.randn(1, 2, 3, 4, 8, generator=gen)
    lses = torch.randn(1, 2, 3, 4, generator=gen)
    out, lse = attn.merge_attention(outs, lses)
    assert_close(out, outs[0], "out", 1e-6, same_dtype=True)
    assert_close(lse, lses[0], "lse", 1e-6, same_dtype=True)
    half, lse_half = attn.merge_attention(outs, lses, torch.float16)
    assert half.dtype == torch.float16 and lse_half.dtype == torch.float32
    assert torch.equal(half, out.half())


# ------------------------------------------------------------------------------------------
# Triton (interpreted) against the reference
# ------------------------------------------------------------------------------------------

FLOATS = {"fp32": torch.float32, "fp16": torch.float16}  # not bf16: see conftest
cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "key_batch": st.integers(1, 2),
        "per": st.integers(1, 3),
        "kv_heads": st.integers(1, 2),
        "rep": st.sampled_from([1, 2, 4]),
        "length": st.integers(1, 4),
        "n_keys": st.one_of(st.sampled_from([0, 1, 16, 17, 70]), st.integers(0, 70)),
        "dim": st.sampled_from([16, 24]),
        "dv": st.sampled_from([16, 24]),
        "kind": st.sampled_from(["none", "key", "seq", "group", "dense"]),
        "num_splits": st.sampled_from([None, 1, 2, 3]),
        "dtype": st.sampled_from(list(FLOATS.values())),
        "scale": st.sampled_from([None, 0.2]),
    }
)


@requires_triton
@HYPOTHESIS
@given(case=cases)
def test_triton_attention_matches_reference(case):
    """Out and lse (float32) of the split-key kernel == the reference, for every mask layout
    (rows that see no key included: the random masks leave some), any split count."""
    dims = [case[n] for n in ("key_batch", "per", "kv_heads", "rep", "length", "n_keys")]
    q, k, v = make_inputs(case["seed"], *dims, case["dim"], case["dv"], case["dtype"])
    mask = make_mask(
        case["seed"] + 1, case["kind"], q.shape[0], k.shape[0], q.shape[2], k.shape[2], False
    )
    scale = case["scale"] or case["dim"] ** -0.5
    got = attention_with_lse_triton(q, k, v, mask, scale, case["num_splits"])
    want = attention_with_lse_reference(q, k, v, mask, scale)
    tol = FP32_TOL if case["dtype"] == torch.float32 else FP16_TOL
    assert_attention_close(got, want, tol)


@requires_triton
def test_triton_attention_strided_inputs():
    """Query as a transposed ``[B, T, Hq, D]`` view (transformers' layout), keys/values as a
    slice of a longer cache buffer, and an expanded (stride-0 batch) mask, as Hydragen's
    attention passes them."""
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(4, 3, 4, 16, generator=gen).transpose(1, 2)  # [B, Hq, T, D]
    k_buf = torch.randn(2, 2, 40, 16, generator=gen)
    v_buf = torch.randn(2, 2, 40, 24, generator=gen)
    k, v = k_buf[:, :, :33], v_buf[:, :, :33]
    mask = (torch.rand(1, 3, 33, generator=gen) > 0.3).expand(4, -1, -1)
    assert not q.is_contiguous() and not k.is_contiguous() and mask.stride(0) == 0
    for num_splits in (None, 2):
        got = attention_with_lse_triton(q, k, v, mask, 0.25, num_splits)
        want = attention_with_lse_reference(q, k, v, mask, 0.25)
        assert_attention_close(got, want, what=f"num_splits={num_splits}")


@requires_triton
def test_triton_attention_through_entry(monkeypatch):
    """HAZYZOO_KERNELS=triton sends CPU tensors to the kernel through the public entry."""
    q, k, v = make_inputs(8, 2, 2, 2, 2, 3, 20, 16, 16)
    mask = make_mask(9, "key", 4, 2, 3, 20, keep_one=True)
    want = attention_with_lse_reference(q, k, v, mask, 16**-0.5)
    monkeypatch.setenv("HAZYZOO_KERNELS", "triton")
    assert_attention_close(attn.attention_with_lse(q, k, v, mask, num_splits=2), want)


def make_parts(seed: int, parts: int, batch: int, heads: int, length: int, dv: int):
    """Random ``outs [K, B, H, T, Dv]`` and ``lses [K, B, H, T]`` with -inf entries: some
    parts of some rows saw no key, and row (0, 0, 0) saw none in any part."""
    gen = torch.Generator().manual_seed(seed)
    outs = torch.randn(parts, batch, heads, length, dv, generator=gen)
    lses = torch.randn(parts, batch, heads, length, generator=gen) * 3
    unseen = torch.rand(parts, batch, heads, length, generator=gen) > 0.7
    lses = lses.masked_fill(unseen, float("-inf"))
    lses[:, 0, 0, 0] = float("-inf")
    outs = outs.masked_fill(unseen.unsqueeze(-1), 0.0)  # as attention_with_lse leaves them
    outs[:, 0, 0, 0] = 0.0
    return outs, lses


@requires_triton
@pytest.mark.parametrize("out_dtype", [None, torch.float32, torch.float16])
@pytest.mark.parametrize(
    ("parts", "batch", "heads", "length", "dv"),
    [(3, 2, 4, 3, 16), (2, 5, 3, 1, 24), (1, 1, 2, 2, 8)],
)
def test_triton_merge_matches_reference(parts, batch, heads, length, dv, out_dtype):
    """Merged out (in out_dtype) and lse == the reference, -inf rows giving 0 / -inf; the
    output is stored as transformers' [B, T, H, Dv] (so ``.transpose(1, 2)`` is contiguous)."""
    outs, lses = make_parts(10 + parts, parts, batch, heads, length, dv)
    out, lse = merge_attention_triton(outs, lses, out_dtype)
    want_out, want_lse = merge_attention_reference(outs, lses, out_dtype)
    assert out.dtype == (out_dtype or torch.float32) and lse.dtype == torch.float32
    assert out.transpose(1, 2).is_contiguous()
    if out.dtype == torch.float32:
        assert_attention_close((out, lse), (want_out, want_lse))
    else:
        assert_close_at_dtype(out, want_out, "out")
        assert_attention_close((out.float(), lse), (want_out.float(), want_lse), 1e-3)
    assert torch.isneginf(lse[0, 0, 0]) and torch.equal(
        out[0, 0, 0], torch.zeros_like(out[0, 0, 0])
    )


@requires_triton
def test_triton_merge_strided_inputs():
    """Parts given as views (K not outermost in memory, or Dv strided) merge the same."""
    gen = torch.Generator().manual_seed(13)
    outs = torch.randn(2, 3, 4, 5, 16, generator=gen).permute(3, 0, 1, 2, 4)  # K = 5
    lses = torch.randn(2, 3, 4, 5, generator=gen).permute(3, 0, 1, 2)
    strided = torch.randn(3, 2, 4, 5, 32, generator=gen)[..., ::2]
    strided_lses = torch.randn(3, 2, 4, 5, generator=gen)
    for o, lse in ((outs, lses), (strided, strided_lses)):
        assert not o.is_contiguous()
        got = merge_attention_triton(o, lse, torch.float32)
        assert_attention_close(got, merge_attention_reference(o, lse, torch.float32))


@requires_triton
def test_triton_kernels_interpreted_as_decided_at_import():
    """The attention kernels were defined for the interpreter like every other op's."""
    from triton.runtime.interpreter import InterpretedFunction

    from hazyzoo.kernels.attention import split

    assert attn._INTERPRETED == split.INTERPRETED == INTERPRETED
    for kernel in (split._attention_lse_kernel, split._merge_kernel):
        assert isinstance(kernel, InterpretedFunction)


def test_choose_num_splits():
    """The split heuristic: one split when the grid is already full or the keys are few,
    else enough for ~two waves with at least 256 keys per split."""
    if not triton_available():
        pytest.skip("needs triton")
    from hazyzoo.kernels.attention.split import choose_num_splits

    assert choose_num_splits(264, 100_000, 64) == 1
    assert choose_num_splits(8, 256, 64) == 1
    assert choose_num_splits(8, 4096, 64) == 16  # 4096 / 256 keys per split
    assert choose_num_splits(64, 100_000, 64) == 5  # ceil(264 / 64)


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise():
    """Bad shapes, dtypes, masks and options fail early with the argument named."""
    q, k, v = make_inputs(11, 2, 2, 2, 2, 3, 5, 16, 16)
    with pytest.raises(
        ValueError, match=r"query batch B=3 must be a multiple of the key batch Bk=2"
    ):
        attn.attention_with_lse(q[:3], k, v)
    with pytest.raises(ValueError, match=r"query heads Hq=3 must be a multiple of key heads Hkv=2"):
        attn.attention_with_lse(q[:, :3], k, v)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        attn.attention_with_lse(q, k, v, torch.ones(2, 1, 5))
    with pytest.raises(
        ValueError, match=r"mask must be \[B or Bk, T or 1, N\].*got shape \(3, 1, 5\)"
    ):
        attn.attention_with_lse(q, k, v, torch.ones(3, 1, 5, dtype=torch.bool))
    with pytest.raises(
        ValueError, match=r"mask must be \[B or Bk, T or 1, N\].*got shape \(4, 2, 5\)"
    ):
        attn.attention_with_lse(q, k, v, torch.ones(4, 2, 5, dtype=torch.bool))
    with pytest.raises(
        ValueError, match=r"mask must be \[B or Bk, T or 1, N\].*got shape \(4, 3, 4\)"
    ):
        attn.attention_with_lse(q, k, v, torch.ones(4, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be \[B or Bk, T or 1, N\] \(3 dims\)"):
        attn.attention_with_lse(q, k, v, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="query, key and value must share a dtype"):
        attn.attention_with_lse(q, k.half(), v.half())
    with pytest.raises(ValueError, match="query, key and value must share a dtype"):
        attn.attention_with_lse(q, k, v.half())
    with pytest.raises(ValueError, match="query has dtype torch.float64"):
        attn.attention_with_lse(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="key must be a torch.Tensor"):
        attn.attention_with_lse(q, k.tolist(), v)
    with pytest.raises(ValueError, match=r"query must be \[B, Hq, T, D\]"):
        attn.attention_with_lse(q[0], k, v)
    with pytest.raises(ValueError, match="key head dim 8 != query head dim 16"):
        attn.attention_with_lse(q, k[..., :8], v)
    with pytest.raises(ValueError, match=r"value must be \[Bk, Hkv, N, Dv\]"):
        attn.attention_with_lse(q, k, v[:, :, :4])
    with pytest.raises(ValueError, match="num_splits must be a positive int"):
        attn.attention_with_lse(q, k, v, num_splits=0)
    with pytest.raises(ValueError, match="num_splits must be a positive int"):
        attn.attention_with_lse(q, k, v, num_splits=True)
    with pytest.raises(ValueError, match="scale must be a finite float"):
        attn.attention_with_lse(q, k, v, scale=float("nan"))

    outs, lses = make_parts(12, 2, 2, 4, 3, 16)
    with pytest.raises(ValueError, match=r"lses must be \[K, B, H, T\] = \(2, 2, 4, 3\)"):
        attn.merge_attention(outs, lses[:, :, :, :2])
    with pytest.raises(ValueError, match=r"lses must be \[K, B, H, T\]"):
        attn.merge_attention(outs, lses[0])
    with pytest.raises(ValueError, match=r"outs must be \[K, B, H, T, Dv\]"):
        attn.merge_attention(outs[0], lses[0])
    with pytest.raises(ValueError, match="outs has dtype torch.float16"):
        attn.merge_attention(outs.half(), lses)
    with pytest.raises(ValueError, match="lses has dtype torch.float16"):
        attn.merge_attention(outs, lses.half())
    with pytest.raises(ValueError, match="at least one part"):
        attn.merge_attention(outs[:0], lses[:0])
    with pytest.raises(ValueError, match="out_dtype must be float32, bfloat16 or float16"):
        attn.merge_attention(outs, lses, torch.float64)
    if triton_available():
        from hazyzoo.kernels.attention.split import check_triton_head_dim

        with pytest.raises(ValueError, match="head dims <= 256"):
            check_triton_head_dim(257, 16)


# ------------------------------------------------------------------------------------------
# GPU: compiled kernels at a real size
# ------------------------------------------------------------------------------------------

_CUDA_SCRIPT = """
import sys
import torch
import hazyzoo.kernels.attention as attn
from hazyzoo.kernels.attention.reference import attention_with_lse_reference as ref
from hazyzoo.kernels.attention.reference import merge_attention_reference as merge_ref
from hazyzoo.kernels.dispatch import use_triton

device = sys.argv[2]
batch, heads, kv_heads, length, n_keys, dim = (int(x) for x in sys.argv[3:9])
gen = torch.Generator(device=device).manual_seed(0)
out = {"interpreted": attn._INTERPRETED}
for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
    if name not in sys.argv[9].split(","):
        continue
    for key_batch in (1, 2):  # one prefix for the whole batch; two groups, key padding
        q = torch.randn(batch, heads, length, dim, device=device, generator=gen).to(dtype)
        k = torch.randn(key_batch, kv_heads, n_keys, dim, device=device, generator=gen).to(dtype)
        v = torch.randn(key_batch, kv_heads, n_keys, dim, device=device, generator=gen).to(dtype)
        mask = None
        if key_batch == 2:
            mask = torch.ones(key_batch, 1, n_keys, dtype=torch.bool, device=device)
            mask[1, :, : n_keys // 3] = False
        out["use_triton"] = use_triton(q, k, v)
        tag = f"{name}_{key_batch}"
        for splits in (None, 1):
            o, lse = attn.attention_with_lse(q, k, v, mask, num_splits=splits)
            out[f"{tag}_{splits}"] = (o.cpu(), lse.cpu())
        o, lse = ref(q, k, v, mask, dim**-0.5)
        out[f"{tag}_ref"] = (o.cpu(), lse.cpu())
        parts = torch.stack([o, o.flip(0)]), torch.stack([lse, lse.flip(0) - 1.0])
        merged = attn.merge_attention(*parts, dtype)
        assert merged[0].transpose(1, 2).is_contiguous()
        out[f"{tag}_merge"] = tuple(t.cpu() for t in merged)
        out[f"{tag}_merge_ref"] = tuple(t.cpu() for t in merge_ref(*parts, dtype))
torch.save(out, sys.argv[1])
"""


def check_cuda_script_results(out: dict, dtypes: list[str]) -> None:
    """What the script saved: every path close to the reference at its dtype's tolerance."""
    for name in dtypes:
        tol = FP32_TOL if name == "fp32" else 1e-2  # bf16 inputs: P rounded to bf16 for P @ V
        for key_batch in (1, 2):
            tag = f"{name}_{key_batch}"
            for splits in (None, 1):
                got = out[f"{tag}_{splits}"]
                assert_attention_close(got, out[f"{tag}_ref"], tol, f"{tag} splits={splits}")
            (m, m_lse), (m_ref, m_lse_ref) = out[f"{tag}_merge"], out[f"{tag}_merge_ref"]
            if m.dtype == torch.float32:
                assert_attention_close((m, m_lse), (m_ref, m_lse_ref), what=f"{tag} merge")
            else:
                assert_close_at_dtype(m, m_ref, f"{tag} merge")
                assert_close(m_lse, m_lse_ref, f"{tag} merge lse")


@pytest.mark.gpu
@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_triton_matches_reference_on_cuda(tmp_path):
    """Decode over a long shared prefix (B=64, Hq=32, Hkv=8, T=1, N=4096, D=128), bf16 and
    fp32, through the public entries (compiled Triton on CUDA; the default split count splits
    the keys, so the split + merge path runs), against the reference."""
    path = tmp_path / "out.pt"
    run_python(_CUDA_SCRIPT, str(path), "cuda", "64", "32", "8", "1", "4096", "128", "bf16,fp32")
    out = torch.load(path)
    assert not out["interpreted"] and out["use_triton"]
    check_cuda_script_results(out, ["bf16", "fp32"])
