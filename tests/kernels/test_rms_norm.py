"""RMSNorm: Triton forward and backward vs the PyTorch reference, dispatch, input checks.

The Triton kernels run on CPU in Triton's interpreter. Triton decides whether a kernel is
interpreted when the ``@triton.jit`` decorator runs, i.e. when ``hazyzoo.kernels.rms_norm`` is
imported, so ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` (on machines without CUDA) before
anything imports hazyzoo, and the interpreter tests skip when the kernels were compiled instead.
Setting the variable here would leak into the whole pytest process on a GPU machine and turn
every later Triton launch (CUDA-graph captures included) into interpreter runs. Shapes stay tiny because the interpreter is slow. The last test (``gpu``)
checks the compiled kernels on CUDA at a real size, in a subprocess (see there why).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hazyzoo.kernels.rms_norm as rn
from hazyzoo.kernels.dispatch import triton_available

requires_triton = pytest.mark.skipif(
    not triton_available() or not rn._INTERPRETED,
    reason="needs triton and TRITON_INTERPRET=1 at import (set by tests/conftest.py without CUDA)",
)

HYPOTHESIS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# (rtol, atol) by result dtype; atol is relative to the largest reference value. Half results
# may differ by one final rounding (rtol 1e-3 covers one float16 ulp, 2**-7 one bfloat16 ulp).
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-5), torch.bfloat16: (8e-3, 1e-4)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Same shape and dtype, and close at the tolerance of that dtype (see TOL)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    rtol, atol = TOL[expected.dtype]
    scale = expected.double().abs().max().clamp_min(1.0).item() if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.double(),
        expected.double(),
        rtol=rtol,
        atol=atol * scale,
        msg=lambda m: f"{what}: {m}",
    )


def make_inputs(
    seed: int, lead: tuple[int, ...], dim: int, x_dtype: torch.dtype, w_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``x [*lead, D]`` (never all zeros) and a random ``weight [D]``."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*lead, dim, generator=gen) * 2.0).to(x_dtype)
    weight = torch.randn(dim, generator=gen).to(w_dtype)
    return x, weight


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
    x, weight = make_inputs(0, (4, 3), 16, torch.float32, torch.bfloat16)
    y = rn._rms_norm_reference(x, weight, 1e-6)
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
def test_module_is_interpreted():
    assert rn._INTERPRETED, "the kernels must be defined under TRITON_INTERPRET=1 on CPU"


@requires_triton
@HYPOTHESIS
@given(case=cases)
def test_triton_forward_and_backward(case):
    x, weight = make_inputs(**case)
    gen = torch.Generator().manual_seed(case["seed"] + 1)
    grad_y = torch.randn(x.shape, generator=gen).to(weight.dtype)
    y, dx, dw = forward_backward(rn._rms_norm_triton, x, weight, grad_y)
    y_ref, dx_ref, dw_ref = forward_backward(rn._rms_norm_reference, x, weight, grad_y)
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")  # in x.dtype
    assert_close(dw, dw_ref, "dweight")  # in weight.dtype
    with torch.no_grad():  # the inference path skips autograd: same kernel, same result
        assert torch.equal(rn._rms_norm_triton(x, weight), y)


@requires_triton
@pytest.mark.parametrize(("x_grad", "w_grad"), [(True, False), (False, True)])
def test_triton_backward_for_one_input(x_grad, w_grad):
    """Only the wanted gradient is computed (the kernel skips storing the other)."""
    x, weight = make_inputs(1, (6,), 33, torch.float32, torch.float16)
    grads = []
    for fn in (rn._rms_norm_triton, rn._rms_norm_reference):
        xl, wl = x.clone().requires_grad_(x_grad), weight.clone().requires_grad_(w_grad)
        fn(xl, wl).float().square().sum().backward()
        assert (xl.grad is None) != x_grad and (wl.grad is None) != w_grad
        grads.append(xl.grad if x_grad else wl.grad)
    assert_close(grads[0], grads[1], "grad")


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
        got = forward_backward(rn._rms_norm_triton, x, weight, grad_y)
        want = forward_backward(rn._rms_norm_reference, x, weight, grad_y)
        for a, b, what in zip(got, want, ("y", "dx", "dweight"), strict=True):
            assert_close(a, b, what)


@requires_triton
@pytest.mark.parametrize("lead", [(0,), (2, 0)])
def test_triton_empty_batch(lead):
    x, weight = make_inputs(3, lead, 16, torch.float32, torch.float16)
    y, dx, dw = forward_backward(rn._rms_norm_triton, x, weight, torch.empty(*lead, 16).half())
    assert y.shape == x.shape and y.dtype == torch.float16
    assert dx.shape == x.shape and dx.dtype == torch.float32
    assert dw.dtype == torch.float16 and torch.equal(dw, torch.zeros_like(weight))


# ------------------------------------------------------------------------------------------
# Dispatch and input checks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["torch", "triton", "auto"])
def test_dispatch_follows_env(monkeypatch, mode):
    if mode == "triton" and not (triton_available() and rn._INTERPRETED):
        pytest.skip("needs triton defined for the interpreter (CPU tensors)")
    calls = []
    for path in ("reference", "triton"):
        name = f"_rms_norm_{path}"
        real = getattr(rn, name)

        def spy(*args, _real=real, _name=name):
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(rn, name, spy)
    monkeypatch.setenv("HAZYZOO_KERNELS", mode)
    x, weight = make_inputs(4, (3,), 8, torch.float32, torch.float32)
    y = rn.rms_norm(x, weight, eps=1e-6)
    path = "triton" if mode == "triton" else "reference"  # auto: CPU tensors -> reference
    assert calls == [f"_rms_norm_{path}"]
    assert_close(y, rn._rms_norm_reference(x, weight, 1e-6), "y")


def test_bad_inputs_raise():
    x, weight = make_inputs(5, (2,), 8, torch.float32, torch.bfloat16)
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
            rn._rms_norm_triton(torch.ones(1, 8193), torch.ones(8193))


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

gen = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(4096, 1792, device="cuda", generator=gen) * 3.0  # float32 residual stream
weight = (1.0 + 0.1 * torch.randn(1792, device="cuda", generator=gen)).bfloat16()
grad_y = torch.randn(4096, 1792, device="cuda", generator=gen).bfloat16()
out = {"interpreted": rn._INTERPRETED, "use_triton": use_triton(x, weight)}
for tag, fn in (("", rn.rms_norm), ("_ref", rn._rms_norm_reference)):
    leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_()]
    y = fn(*leaves)
    dx, dw = torch.autograd.grad(y, leaves, grad_y)
    out.update({"y" + tag: y.detach().cpu(), "dx" + tag: dx.cpu(), "dw" + tag: dw.cpu()})
torch.save(out, sys.argv[1])
"""


@pytest.mark.gpu
@requires_triton
def test_triton_matches_reference_on_cuda(tmp_path):
    """[4096, 1792]: float32 x (the residual stream), bfloat16 weight, forward and backward,
    through the public entry point (which takes the compiled Triton path on CUDA)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "HAZYZOO_KERNELS")}
    package_root = str(Path(rn.__file__).resolve().parents[2])  # the folder holding hazyzoo/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    path = tmp_path / "out.pt"
    proc = subprocess.run(
        [sys.executable, "-c", _CUDA_SCRIPT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = torch.load(path)
    assert not out["interpreted"] and out["use_triton"]
    assert out["y"].dtype == torch.bfloat16 and out["dx"].dtype == torch.float32
    assert out["dw"].dtype == torch.bfloat16
    for what in ("y", "dx", "dw"):
        assert_close(out[what], out[what + "_ref"], what)
