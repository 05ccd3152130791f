"""Mamba's selective scan: the Triton kernels (interpreted on CPU, see tests/kernels/conftest.py)
against the PyTorch reference -- forward values, the last state, every gradient, the decode
step -- plus input checks and the dispatch policy.

Tolerances: float32 results within ``FP32_TOL`` (1e-4) of the largest reference value
(:func:`tests.kernels.conftest.assert_close`); float16 results within one float16 rounding
(``assert_close_at_dtype``). Shapes are tiny (the interpreter is slow) and the kernels' block
sizes are tiny when interpreted (4 channels per program at d_state 4, time tiles of 4 steps,
each checkpointed), so the channel masking, the cross-block reductions of dB / dC and several
tiles (the last one partial) all run.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hazyzoo.kernels.selective_scan as ss
from hazyzoo.kernels import dispatch
from hazyzoo.kernels.dispatch import get_op, triton_available
from tests.kernels.conftest import HYPOTHESIS, assert_close, assert_close_at_dtype

if triton_available():
    from hazyzoo.kernels.selective_scan.triton_scan import (
        selective_scan_triton,
        selective_state_step_triton,
    )

requires_triton = pytest.mark.skipif(
    not ss._INTERPRETED,
    reason="needs triton and TRITON_INTERPRET=1 at import (set by tests/conftest.py without CUDA)",
)

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration: sizes and which options are on."""

    batch: int
    channels: int
    length: int
    n_state: int
    D: bool = False
    z: bool = False
    bias: bool = False
    softplus: bool = False
    init: bool = False
    last: bool = False
    transposed: bool = False  # u, delta, z, B, C as transposed views of [B, L, *] tensors


def make_inputs(
    case: Case, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[dict[str, torch.Tensor | None], dict[str, bool]]:
    """Random inputs for ``case`` (never zeros), Mamba-like: ``A < 0``; ``delta`` raw normal
    with softplus, else a small positive ``dt``. ``u, delta, z, B, C`` in ``dtype``; ``A, D,
    delta_bias, initial_state`` float32 (as the Mamba layer passes them)."""
    gen = torch.Generator().manual_seed(seed)
    b, d, n, length = case.batch, case.channels, case.n_state, case.length

    def seq(rows: int, scale: float = 1.0, shift: float = 0.0, uniform: bool = False):
        shape = (b, length, rows) if case.transposed else (b, rows, length)
        draw = torch.rand if uniform else torch.randn
        t = (draw(*shape, generator=gen) * scale + shift).to(dtype)
        return t.transpose(1, 2) if case.transposed else t

    inputs = {
        "u": seq(d),
        "delta": seq(d) if case.softplus else seq(d, 0.5, 0.05, uniform=True),
        "A": -(torch.rand(d, n, generator=gen) + 0.5),
        "B": seq(n),
        "C": seq(n),
        "D": torch.randn(d, generator=gen) if case.D else None,
        "z": seq(d) if case.z else None,
        "delta_bias": None,
        "initial_state": torch.randn(b, d, n, generator=gen) if case.init else None,
    }
    if case.bias:
        scale = 0.5 if case.softplus else 0.2
        inputs["delta_bias"] = torch.rand(d, generator=gen) * scale
    flags = {"delta_softplus": case.softplus, "return_last_state": case.last}
    return inputs, flags


def run_scan(fn, inputs: dict, flags: dict, grad: bool = True, seed: int = 1, **options):
    """``fn``'s outputs and the gradients of a random weighting of them w.r.t. every present
    input: ``(outputs tuple, grads dict)``."""
    leaves = {
        k: v.detach().clone().requires_grad_(grad) for k, v in inputs.items() if v is not None
    }
    out = fn(**{**dict.fromkeys(NAMES), **leaves}, **flags, **options)
    outs = out if isinstance(out, tuple) else (out,)
    if not grad:
        return outs, {}
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return outs, dict(zip(leaves, grads, strict=True))


def check_against_reference(case: Case, dtype: torch.dtype = torch.float32, **options) -> None:
    inputs, flags = make_inputs(case, dtype=dtype)
    got, got_grads = run_scan(selective_scan_triton, inputs, flags, **options)
    want, want_grads = run_scan(ss.selective_scan_reference, inputs, flags)
    compare = assert_close if dtype == torch.float32 else assert_close_at_dtype
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == b.dtype, f"output {i}: {a.dtype} != {b.dtype}"
        compare(a, b, "y" if i == 0 else "last_state")
    assert got_grads.keys() == want_grads.keys()
    for name, a in got_grads.items():
        assert a.dtype == inputs[name].dtype, f"d{name}: dtype {a.dtype}"
        compare(a, want_grads[name], f"d{name}")


ALL = dict(D=True, z=True, bias=True, softplus=True, init=True, last=True)
CASES = {
    "all_options": Case(2, 6, 13, 4, **ALL),
    "no_options": Case(2, 6, 13, 4),
    "n16": Case(1, 5, 10, 16, D=True, z=True, softplus=True, last=True),
    "n3_padded_no_softplus": Case(2, 3, 6, 3, bias=True, init=True, last=True),
    "length1": Case(1, 4, 1, 4, z=True, softplus=True, init=True, last=True),
    "transposed_views": Case(2, 5, 9, 4, D=True, z=True, bias=True, softplus=True, last=True,
                             transposed=True),
}  # fmt: skip


@requires_triton
@pytest.mark.parametrize("name", CASES)
def test_scan_forward_and_gradients_match_reference(name):
    check_against_reference(CASES[name])


@requires_triton
@HYPOTHESIS
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 6),
    length=st.integers(1, 19),
    n_state=st.integers(1, 6),
    options=st.fixed_dictionaries({k: st.booleans() for k in (*ALL, "transposed")}),
)
def test_scan_matches_reference_on_drawn_shapes(batch, channels, length, n_state, options):
    check_against_reference(Case(batch, channels, length, n_state, **options))


@requires_triton
@pytest.mark.parametrize(("chunk", "block_d"), [(1, 1), (3, 8), (5, 2), (64, 4)])
def test_scan_chunk_and_block_sizes(chunk, block_d):
    """Checkpoint interval (1 step, partial last chunk, longer than L) and channels per
    program (one, more than D) do not change the results."""
    check_against_reference(Case(2, 6, 11, 4, **ALL), chunk=chunk, block_d=block_d)


@requires_triton
@pytest.mark.parametrize("chunk", [1, 6, 8, None])
def test_scan_many_time_tiles(chunk):
    """Sequences spanning many time tiles: one-step tiles, a tile length that is not a power
    of two (masked lanes inside every tile), a power of two, the default (4 when
    interpreted). The last tile is partial, the prefetch runs past both ends and the state
    and its gradient cross every tile boundary."""
    check_against_reference(Case(2, 5, 37, 4, **ALL), chunk=chunk)


@requires_triton
def test_scan_many_time_tiles_transposed_n16():
    """Transposed (L-strided) views, d_state 16, several channel blocks and tiles."""
    case = Case(1, 3, 29, 16, D=True, z=True, bias=True, softplus=True, init=True, last=True,
                transposed=True)  # fmt: skip
    check_against_reference(case, chunk=8, block_d=2)


@requires_triton
def test_scan_half_inputs():
    """float16 sequences (A, D, delta_bias, initial_state float32, as in the Mamba layer):
    y and every gradient in its input's dtype, within one float16 rounding."""
    check_against_reference(Case(2, 5, 8, 4, **ALL), dtype=torch.float16)


@requires_triton
def test_scan_without_grad_and_last_state_only_gradient():
    """Under no_grad (no checkpoints saved) the forward matches; a loss on the last state
    alone (y unused: its gradient is None) and only some inputs requiring grad backprop."""
    case = Case(2, 6, 9, 4, D=True, z=True, bias=True, softplus=True, init=True, last=True)
    inputs, flags = make_inputs(case)
    with torch.no_grad():
        got = selective_scan_triton(**inputs, **flags)
    want = ss.selective_scan_reference(**inputs, **flags)
    assert_close(got[0], want[0], "y (no_grad)")
    assert_close(got[1], want[1], "last_state (no_grad)")

    def last_state_grads(fn):
        leaves = {k: inputs[k].clone().requires_grad_() for k in ("delta", "B", "initial_state")}
        _, last = fn(**{**inputs, **leaves}, **flags)
        return torch.autograd.grad((last * last).sum(), list(leaves.values()))

    for name, a, b in zip(
        ("delta", "B", "initial_state"),
        last_state_grads(selective_scan_triton),
        last_state_grads(ss.selective_scan_reference),
        strict=True,
    ):
        assert_close(a, b, f"d{name} (last state only)")


# ------------------------------------------------------------------------------------------
# The decode step
# ------------------------------------------------------------------------------------------


def step_inputs(case: Case, t: int = 0) -> tuple[torch.Tensor, dict, bool]:
    """``(state, per-position inputs at t, softplus)`` from the scan inputs of ``case``."""
    inputs, flags = make_inputs(case)
    gen = torch.Generator().manual_seed(7)
    state = torch.randn(case.batch, case.channels, case.n_state, generator=gen)
    kwargs = {
        k: (v[..., t] if v is not None and k in ("u", "delta", "B", "C", "z") else v)
        for k, v in inputs.items()
        if k != "initial_state"
    }
    return state, kwargs, flags["delta_softplus"]


STEP_CASES = {
    "all_options": Case(2, 6, 3, 4, D=True, z=True, bias=True, softplus=True),
    "n16_no_options": Case(1, 5, 3, 16),
    "n3_bias": Case(2, 3, 3, 3, bias=True),
}


@requires_triton
@pytest.mark.parametrize("name", STEP_CASES)
def test_step_matches_reference(name):
    state, kwargs, softplus = step_inputs(STEP_CASES[name])
    want_state = state.clone()
    want = ss.selective_state_step(want_state, **kwargs, delta_softplus=softplus)
    got_state = state.clone()
    got = selective_state_step_triton(got_state, **kwargs, delta_softplus=softplus)
    assert_close(got, want, "y", same_dtype=True)
    assert_close(got_state, want_state, "state (updated in place)", same_dtype=True)


@requires_triton
def test_steps_reproduce_the_scan():
    """Decoding position by position from the initial state gives the scan's y and last
    state (both Triton)."""
    case = Case(2, 6, 5, 4, D=True, z=True, bias=True, softplus=True, init=True, last=True)
    inputs, flags = make_inputs(case)
    y, last = selective_scan_triton(**inputs, **flags)
    state = inputs["initial_state"].clone()
    per_position = ("u", "delta", "B", "C", "z")
    for t in range(case.length):
        kwargs = {k: inputs[k][..., t] if k in per_position else inputs[k] for k in NAMES[:-1]}
        y_t = selective_state_step_triton(state, **kwargs, delta_softplus=True)
        assert_close(y_t, y[..., t], f"y[{t}]")
    assert_close(state, last, "last state")


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------


def _valid_scan() -> dict:
    inputs, flags = make_inputs(Case(2, 3, 5, 4, **ALL))
    return {**inputs, **flags}


SCAN_ERRORS = [
    ("u", torch.randn(2, 3), ValueError, r"u must be \[B, D, L\] \(3 dims\)"),
    ("u", [1.0], TypeError, "u must be a torch.Tensor"),
    ("u", torch.ones(2, 3, 5, dtype=torch.int64), ValueError, "u has dtype torch.int64"),
    ("u", torch.randn(2, 3, 5, dtype=torch.float64), ValueError, "u has dtype torch.float64"),
    ("delta", torch.randn(2, 3, 4), ValueError, r"delta must be \[B, D, L\] = \(2, 3, 5\)"),
    ("A", torch.randn(4, 4), ValueError, r"A must be \[D, N\] = \(3, 4\)"),
    ("A", torch.randn(3), ValueError, r"A must be \[D, N\] \(2 dims\)"),
    ("B", torch.randn(2, 5, 5), ValueError, r"B must be \[B, N, L\] = \(2, 4, 5\)"),
    ("C", torch.randn(2, 4, 6), ValueError, r"C must be \[B, N, L\] = \(2, 4, 5\)"),
    ("D", torch.randn(4), ValueError, r"D must be \[D\] = \(3,\)"),
    ("z", torch.randn(1, 3, 5), ValueError, r"z must be \[B, D, L\]"),
    ("delta_bias", torch.randn(3, 1), ValueError, r"delta_bias must be \[D\]"),
    ("initial_state", torch.randn(2, 3, 5), ValueError, r"initial_state must be \[B, D, N\]"),
    ("initial_state", torch.randn(2, 3, 4, device="meta"), ValueError, "one device"),
    ("delta_softplus", 1, TypeError, "delta_softplus must be a bool"),
    ("return_last_state", "yes", TypeError, "return_last_state must be a bool"),
]


@pytest.mark.parametrize(("arg", "value", "error", "match"), SCAN_ERRORS)
def test_scan_rejects_bad_inputs(arg, value, error, match):
    kwargs = _valid_scan()
    kwargs[arg] = value
    with pytest.raises(error, match=match):
        ss.selective_scan(**kwargs)


def test_scan_rejects_empty_sequences_and_states():
    kwargs = _valid_scan()
    kwargs.update(u=kwargs["u"][..., :0], delta=kwargs["delta"][..., :0])
    with pytest.raises(ValueError, match="L >= 1"):
        ss.selective_scan(**kwargs)
    kwargs = _valid_scan()
    kwargs.update(A=kwargs["A"][:, :0], B=kwargs["B"][:, :0], C=kwargs["C"][:, :0])
    with pytest.raises(ValueError, match="N >= 1"):
        ss.selective_scan(**kwargs)


def _valid_step() -> dict:
    state, kwargs, softplus = step_inputs(STEP_CASES["all_options"])
    return {"state": state, **kwargs, "delta_softplus": softplus}


STEP_ERRORS = [
    ("state", torch.randn(2, 6, 4).half(), ValueError, "state has dtype torch.float16"),
    ("state", torch.randn(2, 6, 5), ValueError, r"state must be \[B, D, N\] = \(2, 6, 4\)"),
    ("u", torch.randn(2, 6, 3), ValueError, r"u must be \[B, D\] \(2 dims\)"),
    ("B", torch.randn(2, 4, 3), ValueError, r"B must be \[B, N\] = \(2, 4\)"),
    ("z", torch.randn(2, 5), ValueError, r"z must be \[B, D\] = \(2, 6\)"),
    ("delta_softplus", None, TypeError, "delta_softplus must be a bool"),
]


@pytest.mark.parametrize(("arg", "value", "error", "match"), STEP_ERRORS)
def test_step_rejects_bad_inputs(arg, value, error, match):
    kwargs = _valid_step()
    kwargs[arg] = value
    with pytest.raises(error, match=match):
        ss.selective_step(**kwargs)


# ------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------


def _spy_registry(monkeypatch, name: str, calls: list[str], triton_fails: bool) -> None:
    """Replace op ``name``'s implementations with call-recording wrappers; with
    ``triton_fails`` its Triton one raises instead."""
    op = get_op(name)

    def spy(path: str, fn):
        def wrapped(*args, **kwargs):
            calls.append(path)
            if path == "triton" and triton_fails:
                raise AssertionError("the Triton path must not run")
            return fn(*args, **kwargs)

        return wrapped

    spied = dataclasses.replace(
        op, reference=spy("reference", op.reference), triton=spy("triton", op.triton)
    )
    monkeypatch.setitem(dispatch._REGISTRY, name, spied)


@pytest.mark.parametrize("name", ["selective_scan", "selective_step"])
def test_torch_mode_runs_the_reference(monkeypatch, name):
    """``HAZYZOO_KERNELS=torch`` (and ``auto`` on CPU tensors) gives exactly the reference."""
    op = get_op(name)
    args, kwargs = op.example_inputs()
    want = op.reference(*args, **kwargs)
    want_inputs = args
    calls: list[str] = []
    _spy_registry(monkeypatch, name, calls, triton_fails=True)
    for mode in ("torch", "auto"):
        calls.clear()
        monkeypatch.setenv("HAZYZOO_KERNELS", mode)
        args, kwargs = op.example_inputs()
        got = op.entry(*args, **kwargs)
        assert calls == ["reference"]
        for a, b in zip(
            (*(got if isinstance(got, tuple) else (got,)), *args),
            (*(want if isinstance(want, tuple) else (want,)), *want_inputs),
            strict=True,
        ):
            assert torch.equal(a, b)


@requires_triton
@pytest.mark.parametrize("name", ["selective_scan", "selective_step"])
def test_triton_mode_runs_the_kernel(monkeypatch, name):
    op = get_op(name)
    args, kwargs = op.example_inputs()
    want = op.reference(*args, **kwargs)
    want_inputs = args
    calls: list[str] = []
    monkeypatch.setenv("HAZYZOO_KERNELS", "triton")
    _spy_registry(monkeypatch, name, calls, triton_fails=False)
    args, kwargs = op.example_inputs()
    got = op.entry(*args, **kwargs)
    assert calls == ["triton"]
    for i, (a, b) in enumerate(
        zip(
            (*(got if isinstance(got, tuple) else (got,)), *args),
            (*(want if isinstance(want, tuple) else (want,)), *want_inputs),
            strict=True,
        )
    ):
        assert_close(a, b, f"{name} leaf {i}", same_dtype=True)


@pytest.mark.parametrize("name", ["selective_scan", "selective_step"])
def test_compiling_runs_the_reference(monkeypatch, name):
    """Under torch.compile (simulated) the entry points skip the Triton launch."""
    calls: list[str] = []
    monkeypatch.setenv("HAZYZOO_KERNELS", "triton" if ss._INTERPRETED else "torch")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    _spy_registry(monkeypatch, name, calls, triton_fails=True)
    op = get_op(name)
    args, kwargs = op.example_inputs()
    got = op.entry(*args, **kwargs)
    assert calls == []  # the entry called the reference itself
    want = op.reference(*op.example_inputs()[0], **op.example_inputs()[1])
    for a, b in zip(
        got if isinstance(got, tuple) else (got,),
        want if isinstance(want, tuple) else (want,),
        strict=True,
    ):
        assert torch.equal(a, b)
