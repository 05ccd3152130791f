"""Nearest-code search (VQ): the Triton kernel (interpreted on CPU, see
tests/kernels/conftest.py) against the PyTorch reference, the reference against a brute-force
``torch.cdist(...).argmin``, the tie rule, input checks and the dispatch policy.

Comparisons: distances within 1e-5 of the largest reference distance; indices equal wherever
the best code beats the runner-up by more than that tolerance (float64 brute force decides),
and elsewhere (near-ties) the chosen code's float64 distance is within 1e-5 (relative) of the
minimum. The interpreted kernel uses 16-wide blocks of rows, codes and d, so the shapes below
span several of each, the last ones partial.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hazyzoo.kernels.nearest_code as nc
from hazyzoo.kernels import dispatch
from hazyzoo.kernels.dispatch import get_op, triton_available
from tests.kernels.conftest import HYPOTHESIS, assert_close

if triton_available():
    from hazyzoo.kernels.nearest_code.triton_nearest import nearest_code_triton

requires_triton = pytest.mark.skipif(
    not nc._INTERPRETED,
    reason="needs triton and TRITON_INTERPRET=1 at import (set by tests/conftest.py without CUDA)",
)

TOL = 1e-5


def make_inputs(
    seed: int, n: int, k: int, d: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random normal ``x [n, d]`` and ``codebook [k, d]`` (never zeros)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen).to(dtype)
    codebook = torch.randn(k, d, generator=gen).to(dtype)
    return x, codebook


def exact_distances(x: torch.Tensor, codebook: torch.Tensor, distance: str) -> torch.Tensor:
    """All ``[N, K]`` distances in float64 (cosine with the reference's normalisation)."""
    x, c = x.double(), codebook.double()
    if distance == "cosine":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1.0 - x @ c.T
    return torch.cdist(x, c).pow(2)


def check_result(got, want, x, codebook, distance: str) -> None:
    """``got`` (indices, distances) agrees with ``want`` as the module docstring says."""
    idx, dist = got
    ref_idx, ref_dist = want
    assert idx.dtype == torch.int64 and dist.dtype == torch.float32
    assert idx.shape == dist.shape == (x.shape[0],)
    # Distances near 0 (x on a code) carry float32 cancellation of order eps * ||x||^2.
    floor = 1.0 if distance == "cosine" else max(x.double().pow(2).sum(1).max().item(), 1.0)
    assert_close(dist, ref_dist, f"{distance} distances", tol=TOL, floor=floor)
    full = exact_distances(x, codebook, distance)
    scale = max(full.abs().max().item(), 1e-6)
    # Distance of the chosen code, exactly: within TOL of the row's minimum.
    chosen = full.gather(1, idx[:, None]).squeeze(1)
    best = full.min(dim=1).values
    assert ((chosen - best) <= TOL * scale).all(), f"{distance}: a chosen code is not nearest"
    # Where the minimum is clear (runner-up more than TOL behind), the indices are equal.
    if full.shape[1] > 1:
        two = full.topk(2, dim=1, largest=False).values
        clear = (two[:, 1] - two[:, 0]) > TOL * scale
    else:
        clear = torch.ones_like(idx, dtype=torch.bool)
    assert torch.equal(idx[clear], ref_idx[clear]), f"{distance}: indices differ"


# --------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [4096, 7])
def test_reference_matches_cdist_argmin(chunk_size):
    x, codebook = make_inputs(0, 50, 37, 12)
    idx, dist = nc.nearest_code_reference(x, codebook, chunk_size=chunk_size)
    full = torch.cdist(x.double(), codebook.double())
    assert torch.equal(idx, full.argmin(-1))
    assert_close(dist, full.min(-1).values.pow(2).float(), "distances", tol=TOL)


def test_reference_cosine_matches_brute_force():
    x, codebook = make_inputs(1, 40, 23, 9)
    idx, dist = nc.nearest_code_reference(x, codebook, "cosine", chunk_size=16)
    sim = torch.nn.functional.cosine_similarity(
        x.double()[:, None], codebook.double()[None], dim=-1
    )
    assert torch.equal(idx, sim.argmax(-1))
    assert_close(dist, (1 - sim.max(-1).values).float(), "cosine distances", tol=TOL)


def test_reference_zero_vectors():
    """Zero vectors normalise to zero for cosine: similarity 0 with everything."""
    x, codebook = make_inputs(2, 4, 5, 6)
    x[1] = 0
    codebook[3] = 0
    idx, dist = nc.nearest_code_reference(x, codebook, "cosine")
    assert idx[1] == 0 and dist[1] == 1.0
    assert torch.isfinite(dist).all()


# --------------------------------------------------------------------------------------------
# Triton vs reference
# --------------------------------------------------------------------------------------------


@requires_triton
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("n", "k", "d"), [(37, 50, 40), (1, 1, 1), (16, 16, 16), (5, 70, 3)])
def test_triton_matches_reference(distance, dtype, n, k, d):
    x, codebook = make_inputs(3, n, k, d, dtype)
    want = nc.nearest_code_reference(x, codebook, distance)
    got = nearest_code_triton(x, codebook, distance)
    check_result(got, want, x, codebook, distance)


@requires_triton
@HYPOTHESIS
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 40),
    d=st.integers(1, 36),
    distance=st.sampled_from(["euclidean", "cosine"]),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_reference_hypothesis(n, k, d, distance, seed):
    x, codebook = make_inputs(seed, n, k, d)
    want = nc.nearest_code_reference(x, codebook, distance)
    check_result(nearest_code_triton(x, codebook, distance), want, x, codebook, distance)


@requires_triton
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triton_exact_ties_pick_lowest_index(distance):
    """Duplicated codes in different code blocks (and inside one): entries +-1 with d = 64
    (norm 8, so even the cosine normalisation is exact) make every dot product exact, so the
    duplicates tie exactly and the lowest index must win on both paths."""
    gen = torch.Generator().manual_seed(4)

    def signs(rows: int) -> torch.Tensor:
        return torch.randint(0, 2, (rows, 64), generator=gen).float() * 2 - 1

    base = signs(10)
    # codes 0..9 random, then base at 10..19, 20..29, 30..39 (16-code blocks split copies).
    codebook = torch.cat([signs(10), base, base, base])
    x = base[torch.randint(0, 10, (30,), generator=gen)]
    x[::3] = signs(10)  # some rows off the codes, with their own (exact) ties
    ref_idx, ref_dist = nc.nearest_code_reference(x, codebook, distance)
    idx, dist = nearest_code_triton(x, codebook, distance)
    assert torch.equal(idx, ref_idx)
    full = exact_distances(x, codebook, distance)
    best = full.min(dim=1).values
    first = (full == best[:, None]).int().argmax(dim=1)  # lowest index of the exact minimum
    assert torch.equal(idx, first)
    assert_close(dist, ref_dist, "distances", tol=TOL, floor=64.0)


@requires_triton
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triton_near_ties(distance):
    """Codes that differ by ~1e-6: either choice is a valid nearest code within tolerance."""
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(8, 24, generator=gen)
    codebook = torch.cat([base, base + 1e-6 * torch.randn(8, 24, generator=gen), base[:3]])
    x = base[torch.randint(0, 8, (33,), generator=gen)] + 0.01 * torch.randn(33, 24, generator=gen)
    want = nc.nearest_code_reference(x, codebook, distance)
    check_result(nearest_code_triton(x, codebook, distance), want, x, codebook, distance)


@requires_triton
def test_triton_mixed_dtypes_strides_and_zero_vectors():
    x, codebook = make_inputs(6, 24, 30, 18)
    x_t = x.T.contiguous().T  # column-major view
    x_t[2] = 0
    cb = codebook.to(torch.float16)
    want = nc.nearest_code_reference(x_t, cb)
    check_result(nearest_code_triton(x_t, cb), want, x_t, cb, "euclidean")
    want = nc.nearest_code_reference(x_t, cb, "cosine")
    got = nearest_code_triton(x_t, cb, "cosine")
    check_result(got, want, x_t, cb, "cosine")
    assert got[0][2] == 0 and got[1][2] == 1.0


# --------------------------------------------------------------------------------------------
# Entry point: checks and dispatch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "codebook", "kwargs", "match"),
    [
        (torch.randn(4), torch.randn(3, 4), {}, "x must be"),
        (torch.randn(2, 4), torch.randn(3, 4, 1), {}, "codebook must be"),
        (torch.randn(2, 4), torch.randn(3, 5), {}, "codebook must be .* d = 4"),
        (torch.randn(0, 4), torch.randn(3, 4), {}, "x must be .* N >= 1"),
        (torch.randn(2, 0), torch.randn(3, 0), {}, "x must be .* d >= 1"),
        (torch.randn(2, 4), torch.randn(0, 4), {}, "codebook must be .* K >= 1"),
        (torch.ones(2, 4, dtype=torch.int64), torch.randn(3, 4), {}, "x has dtype"),
        (torch.randn(2, 4), torch.randn(3, 4, dtype=torch.float64), {}, "codebook has dtype"),
        (torch.randn(2, 4), torch.randn(3, 4, device="meta"), {}, "one device"),
        (torch.randn(2, 4), torch.randn(3, 4), {"distance": "l1"}, "distance must be"),
    ],
)
def test_bad_inputs_raise(x, codebook, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nc.nearest_code(x, codebook, **kwargs)


def test_not_a_tensor_raises():
    with pytest.raises(TypeError, match="codebook must be a torch.Tensor"):
        nc.nearest_code(torch.randn(2, 4), [[1.0, 2.0, 3.0, 4.0]])


def _spy_registry(monkeypatch) -> list[str]:
    op = get_op("nearest_code")
    calls: list[str] = []

    def spy(path, fn):
        def wrapped(*args, **kwargs):
            calls.append(path)
            return fn(*args, **kwargs)

        return wrapped

    spied = dataclasses.replace(
        op, reference=spy("reference", op.reference), triton=spy("triton", op.triton)
    )
    monkeypatch.setitem(dispatch._REGISTRY, "nearest_code", spied)
    return calls


def test_torch_mode_uses_reference(monkeypatch):
    calls = _spy_registry(monkeypatch)
    monkeypatch.setenv("HAZYZOO_KERNELS", "torch")
    x, codebook = make_inputs(7, 9, 11, 5)
    got = nc.nearest_code(x, codebook, "cosine")
    assert calls == ["reference"]
    want = nc.nearest_code_reference(x, codebook, "cosine")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@requires_triton
def test_triton_mode_uses_triton(monkeypatch):
    calls = _spy_registry(monkeypatch)
    monkeypatch.setenv("HAZYZOO_KERNELS", "triton")
    x, codebook = make_inputs(8, 9, 20, 17)
    got = nc.nearest_code(x, codebook)
    assert calls == ["triton"]
    check_result(got, nc.nearest_code_reference(x, codebook), x, codebook, "euclidean")


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or nc.nearest_code_triton is None or nc._INTERPRETED,
    reason="needs CUDA and compiled (not interpreted) Triton kernels",
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize(("k", "d"), [(1024, 32), (16384, 256)])
def test_triton_matches_reference_on_gpu(dtype, distance, k, d):
    """Real sizes on the GPU: the default launch (tf32x3 for float32) picks the reference's
    code for all but near-ties and its distance to float32 rounding."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(65536, d, generator=gen, device="cuda").to(dtype)
    codebook = torch.randn(k, d, generator=gen, device="cuda").to(dtype)
    idx, dist = nc.nearest_code_triton(x, codebook, distance)
    ref_idx, ref_dist = nc.nearest_code_reference(x, codebook, distance)
    assert (idx == ref_idx).double().mean().item() >= 0.9999
    scale = 1.0 if distance == "cosine" else x.float().pow(2).sum(1).max().item()
    assert (dist - ref_dist).abs().max().item() / scale < 2e-6
