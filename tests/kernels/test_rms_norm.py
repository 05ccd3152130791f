"""RMSNorm: Triton forward and backward vs the PyTorch reference (interpreted; see
tests/kernels/conftest.py), input checks, and (``gpu``) the compiled kernels on CUDA at a real
size, in a subprocess (see there why)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hazyzoo.kernels.rms_norm as rn
from hazyzoo.kernels.dispatch import triton_available
from hazyzoo.kernels.rms_norm.reference import rms_norm_reference
from tests.kernels.conftest import (
    HYPOTHESIS,
    assert_close_at_dtype,
    make_norm_inputs,
    requires_triton,
    run_python,
)

if triton_available():  # the Triton module imports triton at the top
    from hazyzoo.kernels.rms_norm.fused import rms_norm_triton


def forward_backward(
    fn, x: torch.Tensor, weight: torch.Tensor, grad_y: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y, dx, dweight`` of ``fn`` for the upstream gradient ``grad_y``."""
    leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_()]
    y = fn(*leaves, eps)
    dx, dw = torch.autograd.grad(y, leaves, grad_y)
    return y.detach(), dx, dw


FLOATS = {"fp32": torch.float32, "fp16": torch.float16}
cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "lead": st.one_of(
            st.tuples(st.integers(1, 9)),
            st.tuples(st.integers(1, 3), st.integers(1, 3)),  # x is 3-D
        ),
        "dim": st.sampled_from([1, 3, 16, 33, 64]),
        "x_dtype": st.sampled_from(list(FLOATS.values())),
        "w_dtype": st.sampled_from(list(FLOATS.values())),
    }
)


# ------------------------------------------------------------------------------------------
# The reference
# ------------------------------------------------------------------------------------------


def test_reference_matches_definition():
    """Row by row in float64, and the output dtype is the weight's."""
    x, weight = make_norm_inputs(0, (4, 3), 16, torch.float32, torch.bfloat16)
    y = rms_norm_reference(x, weight, 1e-6)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    x64, w64 = x.double(), weight.double()
    for i in range(4):
        for j in range(3):
            row = x64[i, j]
            want = row / torch.sqrt((row * row).sum() / 16 + 1e-6) * w64
            torch.testing.assert_close(y[i, j], want.to(torch.bfloat16), rtol=8e-3, atol=1e-4)
    assert rn.rms_norm(x, weight).dtype == torch.bfloat16  # CPU, auto: the reference


# ------------------------------------------------------------------------------------------
# Triton (interpreted) against the reference
# ------------------------------------------------------------------------------------------


@requires_triton
@HYPOTHESIS
@given(case=cases)
def test_triton_forward_and_backward(case):
    x, weight = make_norm_inputs(**case)
    gen = torch.Generator().manual_seed(case["seed"] + 1)
    grad_y = torch.randn(x.shape, generator=gen).to(weight.dtype)
    y, dx, dw = forward_backward(rms_norm_triton, x, weight, grad_y)
    y_ref, dx_ref, dw_ref = forward_backward(rms_norm_reference, x, weight, grad_y)
    assert_close_at_dtype(y, y_ref, "y")
    assert_close_at_dtype(dx, dx_ref, "dx")  # in x.dtype
    assert_close_at_dtype(dw, dw_ref, "dweight")  # in weight.dtype
    with torch.no_grad():  # the inference path skips autograd: same kernel, same result
        assert torch.equal(rms_norm_triton(x, weight), y)


@requires_triton
@pytest.mark.parametrize(("x_grad", "w_grad"), [(True, False), (False, True)])
def test_triton_backward_for_one_input(x_grad, w_grad):
    """Only the wanted gradient is computed (the kernel skips storing the other)."""
    x, weight = make_norm_inputs(1, (6,), 33, torch.float32, torch.float16)
    grads = []
    for fn in (rms_norm_triton, rms_norm_reference):
        xl, wl = x.clone().requires_grad_(x_grad), weight.clone().requires_grad_(w_grad)
        fn(xl, wl).float().square().sum().backward()
        assert (xl.grad is None) != x_grad and (wl.grad is None) != w_grad
        grads.append(xl.grad if x_grad else wl.grad)
    assert_close_at_dtype(grads[0], grads[1], "grad")


@requires_triton
def test_triton_strided_inputs_and_expanded_grad():
    """x as a column slice (row stride != D, no copy) and a transposed view (copied); the
    upstream gradient as an expanded [D] vector (row stride 0)."""
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(7, 20, generator=gen)
    base_t = torch.randn(16, 7, generator=gen)
    weight = torch.randn(16, generator=gen)
    grad_row = torch.randn(16, generator=gen)
    for x in (base[:, 2:18], base_t.T):
        assert not x.is_contiguous()
        grad_y = grad_row.expand(x.shape)
        got = forward_backward(rms_norm_triton, x, weight, grad_y)
        want = forward_backward(rms_norm_reference, x, weight, grad_y)
        for a, b, what in zip(got, want, ("y", "dx", "dweight"), strict=True):
            assert_close_at_dtype(a, b, what)


@requires_triton
@pytest.mark.parametrize("lead", [(0,), (2, 0)])
def test_triton_empty_batch(lead):
    x, weight = make_norm_inputs(3, lead, 16, torch.float32, torch.float16)
    y, dx, dw = forward_backward(rms_norm_triton, x, weight, torch.empty(*lead, 16).half())
    assert y.shape == x.shape and y.dtype == torch.float16
    assert dx.shape == x.shape and dx.dtype == torch.float32
    assert dw.dtype == torch.float16 and torch.equal(dw, torch.zeros_like(weight))


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise():
    x, weight = make_norm_inputs(5, (2,), 8, torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match=r"weight must be \[D\] = \[8\]"):
        rn.rms_norm(x, weight[:7])
    with pytest.raises(ValueError, match=r"weight must be \[D\]"):
        rn.rms_norm(x, weight[None])
    with pytest.raises(ValueError, match="x has dtype torch.int64"):
        rn.rms_norm(x.long(), weight)
    with pytest.raises(ValueError, match="x has dtype torch.float64"):
        rn.rms_norm(x.double(), weight)
    with pytest.raises(ValueError, match="weight has dtype torch.int32"):
        rn.rms_norm(x, weight.int())
    with pytest.raises(ValueError, match="x must be"):
        rn.rms_norm(torch.ones(()), weight)
    with pytest.raises(ValueError, match="x must be"):
        rn.rms_norm(torch.ones(2, 0), weight[:0])
    with pytest.raises(ValueError, match="eps must be"):
        rn.rms_norm(x, weight, eps=-1.0)
    with pytest.raises(TypeError, match="eps must be a float"):
        rn.rms_norm(x, weight, eps="1e-5")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        rn.rms_norm(x.tolist(), weight)
    if triton_available():
        with pytest.raises(ValueError, match="D <= 8192"):
            rms_norm_triton(torch.ones(1, 8193), torch.ones(8193))


# ------------------------------------------------------------------------------------------
# GPU: compiled kernels at a real size
# ------------------------------------------------------------------------------------------

# Runs in a fresh interpreter without TRITON_INTERPRET: this process defined the kernels for
# the interpreter, and with triton 3.6 running interpreted kernels leaves triton.language
# patched so that compiling kernels afterwards in the same process fails.
_CUDA_SCRIPT = """
import sys
import torch
import hazyzoo.kernels.rms_norm as rn
from hazyzoo.kernels.dispatch import use_triton
from hazyzoo.kernels.rms_norm.reference import rms_norm_reference

gen = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(4096, 1792, device="cuda", generator=gen) * 3.0  # float32 residual stream
weight = (1.0 + 0.1 * torch.randn(1792, device="cuda", generator=gen)).bfloat16()
grad_y = torch.randn(4096, 1792, device="cuda", generator=gen).bfloat16()
out = {"interpreted": rn._INTERPRETED, "use_triton": use_triton(x, weight)}
for tag, fn in (("", rn.rms_norm), ("_ref", rms_norm_reference)):
    leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_()]
    y = fn(*leaves)
    dx, dw = torch.autograd.grad(y, leaves, grad_y)
    out.update({"y" + tag: y.detach().cpu(), "dx" + tag: dx.cpu(), "dw" + tag: dw.cpu()})
torch.save(out, sys.argv[1])
"""


@pytest.mark.gpu
@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_triton_matches_reference_on_cuda(tmp_path):
    """[4096, 1792]: float32 x (the residual stream), bfloat16 weight, forward and backward,
    through the public entry point (which takes the compiled Triton path on CUDA)."""
    path = tmp_path / "out.pt"
    run_python(_CUDA_SCRIPT, str(path))
    out = torch.load(path)
    assert not out["interpreted"] and out["use_triton"]
    assert out["y"].dtype == torch.bfloat16 and out["dx"].dtype == torch.float32
    assert out["dw"].dtype == torch.bfloat16
    for what in ("y", "dx", "dw"):
        assert_close_at_dtype(out[what], out[what + "_ref"], what)
