"""Block-diagonal matmul: the reference against the dense block matrix, Triton forward and
backward against the reference (interpreted; see tests/kernels/conftest.py) over strided and
odd-sized inputs, autocast, input checks, and (``gpu``) the compiled kernels on CUDA at
M2-BERT-80M's shapes, in a subprocess (see test_rms_norm.py for why)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hazyzoo.kernels.blockdiag as bd
from hazyzoo.kernels.blockdiag.reference import block_diagonal_matmul_reference
from hazyzoo.kernels.dispatch import triton_available
from hazyzoo.modeling.layers.blockdiag import block_diagonal_linear
from tests.kernels.conftest import (
    FP32_TOL,
    HYPOTHESIS,
    INTERPRETED,
    assert_close,
    assert_close_at_dtype,
    run_python,
)

if triton_available():  # the Triton module imports triton at the top
    from hazyzoo.kernels.blockdiag import grouped
    from hazyzoo.kernels.blockdiag.grouped import (
        block_diagonal_matmul_triton,
        grad_weight_bmm,
        grad_weight_triton,
    )

requires_interpreted = pytest.mark.skipif(
    not (INTERPRETED and bd._INTERPRETED),
    reason="needs triton and TRITON_INTERPRET=1 at import (set by tests/conftest.py without CUDA)",
)

LAYOUTS = ("contiguous", "column_slice", "transposed")


def make_inputs(
    seed: int,
    lead: tuple[int, ...],
    nb: int,
    in_per: int,
    out_per: int,
    dtype: torch.dtype = torch.float32,
    bias: bool = True,
    layout: str = "contiguous",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Random ``x [*lead, nb * in_per]`` (never zeros) in ``layout``, ``weight``, optional
    ``bias`` and an upstream gradient ``grad_y [*lead, nb * out_per]``.

    ``column_slice``: x is a slice of a wider tensor (row stride > width, read in place).
    ``transposed``: x is a view with transposed strides (a 2-D ``x.T`` is read in place with
    column stride M; 3-D leading dims that cannot be flattened are copied).
    """
    gen = torch.Generator().manual_seed(seed)
    dim = nb * in_per
    if layout == "contiguous":
        x = torch.randn(*lead, dim, generator=gen)
    elif layout == "column_slice":
        x = torch.randn(*lead, dim + 5, generator=gen)[..., 2 : 2 + dim]
    else:
        x = torch.randn(dim, *reversed(lead), generator=gen).permute(*range(len(lead), -1, -1))
    weight = torch.randn(nb, out_per, in_per, generator=gen) / in_per**0.5
    b = torch.randn(nb * out_per, generator=gen) if bias else None
    grad_y = torch.randn(*lead, nb * out_per, generator=gen)
    cast = (lambda t: t.to(dtype)) if dtype != torch.float32 else (lambda t: t)
    return cast(x), cast(weight), None if b is None else cast(b), cast(grad_y)


def forward_backward(
    fn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, grad_y: torch.Tensor
) -> list[torch.Tensor]:
    """``[y, dx, dweight(, dbias)]`` of ``fn`` for the upstream gradient ``grad_y``; the leaves
    keep ``x``'s strides (``detach`` does not copy)."""
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias) if t is not None]
    y = fn(*leaves)
    return [y.detach(), *torch.autograd.grad(y, leaves, grad_y)]


def assert_results(got: list, want: list, close=assert_close_at_dtype) -> None:
    """``close`` for each of ``y, dx, dweight(, dbias)``."""
    assert len(got) == len(want), (len(got), len(want))
    for a, w, what in zip(got, want, ("y", "dx", "dweight", "dbias")):
        close(a, w, what)


def dense_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``x @ block_diag(*weight).T + bias`` in float64."""
    y = x.double() @ torch.block_diag(*weight.double()).T
    return y if bias is None else y + bias.double()


FLOATS = {"fp32": torch.float32, "fp16": torch.float16}
cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "lead": st.one_of(
            st.tuples(st.integers(1, 40)),
            st.tuples(st.integers(1, 3), st.integers(1, 9)),  # x is 3-D
        ),
        "nb": st.integers(1, 4),
        "in_per": st.sampled_from([1, 3, 16, 17, 33]),
        "out_per": st.sampled_from([1, 5, 16, 20]),
        "dtype": st.sampled_from(list(FLOATS.values())),
        "bias": st.booleans(),
        "layout": st.sampled_from(LAYOUTS),
    }
)


# ------------------------------------------------------------------------------------------
# The reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nb", "in_per", "out_per", "bias"), [(1, 6, 4, True), (4, 8, 16, True), (3, 3, 2, False)]
)
def test_reference_matches_dense_block_matrix(nb, in_per, out_per, bias):
    """Forward and all gradients equal those of the dense ``block_diag`` matrix."""
    x, weight, b, grad_y = make_inputs(nb, (2, 5), nb, in_per, out_per, bias=bias)
    got = forward_backward(block_diagonal_matmul_reference, x, weight, b, grad_y)
    want = forward_backward(dense_reference, x, weight, b, grad_y.double())  # grads: fp32
    assert all(t.dtype == torch.float32 for t in got)
    assert_results(got, want, assert_close)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_half_inputs_accumulate_in_float32(dtype):
    """Half in, half out, computed from the float32 products (one final rounding)."""
    x, weight, b, _ = make_inputs(0, (7,), 2, 64, 8, dtype=dtype)
    y = block_diagonal_matmul_reference(x, weight, b)
    assert y.dtype == dtype and y.shape == (7, 16)
    assert_close_at_dtype(y, dense_reference(x, weight, b).to(dtype), "y")
    assert torch.equal(bd.block_diagonal_matmul(x, weight, b), y)  # CPU, auto: the reference


def test_layer_function_keeps_its_message_and_calls_the_op():
    x, weight, b, _ = make_inputs(1, (3,), 4, 2, 3)
    assert torch.equal(block_diagonal_linear(x, weight, b), bd.block_diagonal_matmul(x, weight, b))
    with pytest.raises(ValueError, match="the input's last dim is 9 but the blocks take 4 x 2"):
        block_diagonal_linear(torch.randn(3, 9), weight)


def test_autocast_casts_like_linear():
    """Under CPU autocast (bf16), float32 inputs are cast first: bf16 out, float32 grads for
    the float32 weight, equal to the reference on the cast inputs."""
    x, weight, b, grad_y = make_inputs(2, (5,), 2, 16, 8)
    leaves = [t.clone().requires_grad_() for t in (x, weight, b)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bd.block_diagonal_matmul(*leaves)
    assert y.dtype == torch.bfloat16
    want = block_diagonal_matmul_reference(*(t.bfloat16() for t in (x, weight, b)))
    assert torch.equal(y, want)
    grads = torch.autograd.grad(y, leaves, grad_y.bfloat16())
    assert all(g.dtype == torch.float32 for g in grads)


# ------------------------------------------------------------------------------------------
# Triton (interpreted) against the reference
# ------------------------------------------------------------------------------------------


@requires_interpreted
@HYPOTHESIS
@given(case=cases)
def test_triton_forward_and_backward(case):
    x, weight, b, grad_y = make_inputs(**case)
    got = forward_backward(block_diagonal_matmul_triton, x, weight, b, grad_y)
    want = forward_backward(block_diagonal_matmul_reference, x, weight, b, grad_y)
    assert_results(got, want)  # same dtype (the inputs'), one rounding apart
    with torch.no_grad():  # the inference path skips autograd: same kernel, same result
        assert torch.equal(block_diagonal_matmul_triton(x, weight, b), got[0])


@requires_interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("splits", [None, 1, 3])
def test_triton_grad_weight_kernel(dtype, splits):
    """The split-K grad_W kernel (1 and 3 row chunks, odd sizes, strided grad_y and x) against
    the bmm on strided views and the float64 product."""
    x, _, _, grad_y = make_inputs(3, (37,), 3, 17, 20, dtype=dtype, layout="transposed")
    grad_y = torch.cat([grad_y, grad_y[:, :4]], dim=1)[:, :60]  # row stride 64
    want = torch.einsum(
        "mko,mki->koi", grad_y.double().unflatten(1, (3, 20)), x.double().unflatten(1, (3, 17))
    ).to(dtype)
    for got in (grad_weight_triton(grad_y, x, 3, splits=splits), grad_weight_bmm(grad_y, x, 3)):
        assert_close_at_dtype(got, want, "dweight")


@requires_interpreted
def test_triton_backward_through_grad_weight_kernel(monkeypatch):
    """``GRAD_WEIGHT = "triton"`` switches the backward to the split-K kernel: same grads."""
    x, weight, b, grad_y = make_inputs(4, (2, 9), 2, 17, 5)
    want = forward_backward(block_diagonal_matmul_reference, x, weight, b, grad_y)
    monkeypatch.setattr(grouped, "GRAD_WEIGHT", "triton")
    got = forward_backward(block_diagonal_matmul_triton, x, weight, b, grad_y)
    assert_results(got, want)


@requires_interpreted
@pytest.mark.parametrize("wanted", [0, 1, 2])
def test_triton_backward_for_one_input(wanted):
    """Only the wanted gradient is computed and returned."""
    x, weight, b, grad_y = make_inputs(5, (6,), 2, 3, 16)
    grads = []
    for fn in (block_diagonal_matmul_triton, block_diagonal_matmul_reference):
        leaves = [t.clone().requires_grad_(i == wanted) for i, t in enumerate((x, weight, b))]
        (fn(*leaves) * grad_y).sum().backward()
        assert [leaf.grad is not None for leaf in leaves] == [i == wanted for i in range(3)]
        grads.append(leaves[wanted].grad)
    assert_close_at_dtype(grads[0], grads[1], "grad")


@requires_interpreted
def test_triton_expanded_grad_and_permuted_input():
    """A permuted 3-D x (copied), and an expanded upstream gradient (row stride 0)."""
    x, weight, b, grad_y = make_inputs(6, (3, 4), 2, 16, 5, layout="transposed")
    assert not x.is_contiguous()
    grad_y = grad_y[:1, :1].expand(grad_y.shape)
    got = forward_backward(block_diagonal_matmul_triton, x, weight, b, grad_y)
    want = forward_backward(block_diagonal_matmul_reference, x, weight, b, grad_y)
    assert_results(got, want)


@requires_interpreted
def test_triton_vector_input():
    """x without leading dims (``[nb * in_per]``) gives ``y [nb * out_per]``."""
    x, weight, b, grad_y = make_inputs(9, (), 3, 17, 5)
    got = forward_backward(block_diagonal_matmul_triton, x, weight, b, grad_y)
    want = forward_backward(block_diagonal_matmul_reference, x, weight, b, grad_y)
    assert got[0].shape == (15,)
    assert_results(got, want)


@requires_interpreted
@pytest.mark.parametrize("lead", [(0,), (2, 0)])
def test_triton_empty_batch(lead):
    x, weight, b, grad_y = make_inputs(7, lead, 2, 3, 4, dtype=torch.float16)
    y, dx, dw, db = forward_backward(block_diagonal_matmul_triton, x, weight, b, grad_y)
    assert y.shape == (*lead, 8) and y.dtype == torch.float16
    assert dx.shape == x.shape and dx.dtype == torch.float16
    assert torch.equal(dw, torch.zeros_like(weight)) and torch.equal(db, torch.zeros_like(b))


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise():
    x, weight, b, _ = make_inputs(8, (2,), 3, 4, 5)
    f = bd.block_diagonal_matmul
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        f(x.tolist(), weight)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        f(x, None)
    with pytest.raises(ValueError, match="x has dtype torch.int64"):
        f(x.long(), weight)
    with pytest.raises(ValueError, match="weight has dtype torch.float64"):
        f(x, weight.double())
    with pytest.raises(ValueError, match="bias has dtype torch.int32"):
        f(x, weight, b.int())
    with pytest.raises(ValueError, match=r"weight must be \[nb, out_per, in_per\] \(3 dims\)"):
        f(x, weight[0])
    with pytest.raises(ValueError, match="weight must be .* every dim >= 1"):
        f(x[:, :0], weight[:, :, :0])
    with pytest.raises(ValueError, match=r"x must be \[\.\.\., nb \* in_per\] = \[\.\.\., 3 \* 4"):
        f(x[:, :11], weight)
    with pytest.raises(ValueError, match=r"x must be \[\.\.\., nb \* in_per\]"):
        f(torch.ones(()), weight)
    with pytest.raises(ValueError, match=r"bias must be \[nb \* out_per\] = \(15,\)"):
        f(x, weight, b[:14])
    with pytest.raises(ValueError, match="weight has dtype torch.float16 but x has torch.float32"):
        f(x, weight.half())
    with pytest.raises(ValueError, match="bias has dtype torch.bfloat16 but x has"):
        f(x, weight, b.bfloat16())
    with pytest.raises(ValueError, match="all tensors must be on one device.*'weight'"):
        f(x, weight.to("meta"))


# ------------------------------------------------------------------------------------------
# GPU: compiled kernels at M2-BERT-80M's shapes
# ------------------------------------------------------------------------------------------

# A fresh interpreter without TRITON_INTERPRET (see test_rms_norm.py). The float32 reference
# runs on float32 copies of the inputs, so each result is compared with the exact-ish value.
_CUDA_SCRIPT = """
import sys
import torch
import hazyzoo.kernels.blockdiag as bd
from hazyzoo.kernels.blockdiag import grouped
from hazyzoo.kernels.blockdiag.reference import block_diagonal_matmul_reference as ref
from hazyzoo.kernels.dispatch import use_triton

out = {"interpreted": bd._INTERPRETED}
gen = torch.Generator(device="cuda").manual_seed(0)
rows = 8192
for name, (in_f, out_f, has_bias) in {"gated": (768, 6144, False), "wo": (3072, 768, True)}.items():
    nb = 4
    x = torch.randn(4, rows // 4, in_f, device="cuda", generator=gen)
    w = torch.randn(nb, out_f // nb, in_f // nb, device="cuda", generator=gen) / (in_f // nb) ** 0.5
    b = torch.randn(out_f, device="cuda", generator=gen) if has_bias else None
    gy = torch.randn(4, rows // 4, out_f, device="cuda", generator=gen)
    for dtype in (torch.bfloat16, torch.float32):
        inputs = [t.to(dtype) for t in (x, w, b) if t is not None]
        out["use_triton"] = use_triton(*inputs)
        for tag, fn, ins, g in (
            ("", bd.block_diagonal_matmul, inputs, gy.to(dtype)),
            ("_ref", ref, [t.float() for t in inputs], gy.to(dtype).float()),
        ):
            leaves = [t.clone().requires_grad_() for t in ins]
            y = fn(*leaves)
            grads = torch.autograd.grad(y, leaves, g)
            key = f"{name}_{dtype}"
            out[key + "_y" + tag] = y.detach().cpu()
            for what, grad in zip(("dx", "dw", "db"), grads):
                out[key + "_" + what + tag] = grad.cpu()
        x2, g2 = inputs[0].reshape(rows, -1), gy.to(dtype).reshape(rows, -1)
        out[key + "_dw_splitk"] = grouped.grad_weight_triton(g2, x2, nb).cpu()
torch.save(out, sys.argv[1])
"""


@pytest.mark.gpu
@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_triton_matches_reference_on_cuda(tmp_path):
    """8192 rows through M2-BERT-80M's two MLP matrices (768 -> 6144, nb 4, no bias; 3072 ->
    768, nb 4, bias), bf16 and fp32, forward and backward, through the public entry point, and
    the split-K grad_W kernel; against the float32 reference on float32 copies."""
    path = tmp_path / "out.pt"
    run_python(_CUDA_SCRIPT, str(path))
    out = torch.load(path)
    assert not out["interpreted"] and out["use_triton"]
    for key in [k for k in out if k.endswith("_ref")]:
        got = out[key.removesuffix("_ref")]
        tol = 1e-2 if "bfloat16" in key else FP32_TOL
        assert got.dtype == (torch.bfloat16 if "bfloat16" in key else torch.float32), key
        assert_close(got, out[key], key, tol=tol)
        if key.endswith("_dw_ref"):
            assert_close(out[key.replace("_dw_ref", "_dw_splitk")], out[key], key, tol=tol)


def test_compile_path_equals_the_reference():
    """Under torch.compile the op is one batched matmul in the inputs' dtype."""
    from hazyzoo.kernels.blockdiag.reference import (
        block_diagonal_matmul_native,
        block_diagonal_matmul_reference,
    )

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 7, 24, generator=gen)
    weight = torch.randn(4, 5, 6, generator=gen)
    bias = torch.randn(20, generator=gen)
    torch.testing.assert_close(
        block_diagonal_matmul_native(x, weight, bias),
        block_diagonal_matmul_reference(x, weight, bias),
        atol=1e-5,
        rtol=1e-5,
    )
    compiled = torch.compile(bd.block_diagonal_matmul, fullgraph=True)
    torch.testing.assert_close(
        compiled(x, weight, bias),
        block_diagonal_matmul_reference(x, weight, bias),
        atol=1e-5,
        rtol=1e-5,
    )
