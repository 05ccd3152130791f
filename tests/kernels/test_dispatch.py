"""The op registry and the dispatch policy, for every registered op at once.

Each op registers example inputs, so a new op joins these tests by registering: with
``HAZYZOO_KERNELS=torch`` its reference runs, with ``=triton`` its Triton implementation (on CPU
tensors when the kernels are interpreted), and ``auto`` picks the reference for CPU tensors;
every path gives the reference's results.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

import hazyzoo.kernels  # noqa: F401  (registers every op)
from hazyzoo.kernels import dispatch, linear_attention, rms_norm
from hazyzoo.kernels.dispatch import get_op, register_op, registered_ops, triton_available
from tests.kernels.conftest import INTERPRETED, assert_close, assert_close_at_dtype


def flatten(tree: Any) -> list[Any]:
    """The leaves of nested tuples / lists (tensors, None, numbers) in order."""
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in flatten(item)]
    return [tree]


def test_every_op_is_registered():
    assert set(registered_ops()) == {
        "attention_with_lse",
        "block_diagonal_matmul",
        "merge_attention",
        "nearest_code",
        "rms_norm",
        "rtf_step",
        "selective_scan",
        "selective_step",
        "taylor_attention_parallel",
        "taylor_attention_state",
        "taylor_attention_step",
        "taylor_linear_attention",
        "taylor_prefix_linear_attention",
    }
    for name in registered_ops():
        op = get_op(name)
        assert op.name == name == op.entry.__name__
        assert (op.triton is not None) == triton_available()


@pytest.mark.parametrize("mode", ["torch", "triton", "auto"])
@pytest.mark.parametrize("name", registered_ops())
def test_dispatch_follows_env(monkeypatch, name, mode):
    if mode == "triton" and not INTERPRETED:
        pytest.skip("needs triton defined for the interpreter (CPU tensors)")
    op = get_op(name)
    monkeypatch.setenv("HAZYZOO_KERNELS", "torch")
    want_args, want_kwargs = op.example_inputs()
    want = op.entry(*want_args, **want_kwargs)

    calls = []

    def spy(path: str, fn):
        def wrapped(*args, **kwargs):
            calls.append(path)
            return fn(*args, **kwargs)

        return wrapped

    spied = dataclasses.replace(
        op, reference=spy("reference", op.reference), triton=spy("triton", op.triton)
    )
    monkeypatch.setitem(dispatch._REGISTRY, name, spied)
    monkeypatch.setenv("HAZYZOO_KERNELS", mode)
    args, kwargs = op.example_inputs()
    got = op.entry(*args, **kwargs)
    assert calls == ["triton" if mode == "triton" else "reference"]  # auto: CPU -> reference
    # Outputs, and inputs updated in place (the decode step's state), match the reference's.
    pairs = zip(
        flatten((got, args, [*kwargs.values()])),
        flatten((want, want_args, [*want_kwargs.values()])),
        strict=True,
    )
    for i, (a, b) in enumerate(pairs):
        what = f"{name} leaf {i}"
        if not isinstance(b, torch.Tensor) or not b.is_floating_point():
            assert torch.equal(a, b) if isinstance(b, torch.Tensor) else a == b, what
        elif b.dtype == torch.float32:
            assert_close(a, b, what, same_dtype=True)
        else:  # half results: both paths round to the same dtype
            assert_close_at_dtype(a, b, what)


def test_registry_rejects_duplicates_and_names_unknown_ops():
    op = get_op("rms_norm")
    with pytest.raises(ValueError, match="already registered"):
        register_op(
            "rms_norm",
            entry=op.entry,
            reference=op.reference,
            triton=op.triton,
            example_inputs=op.example_inputs,
        )
    with pytest.raises(KeyError, match="no kernel op 'nope'; registered: .*rms_norm"):
        get_op("nope")


def test_kernels_interpreted_as_decided_at_import():
    """``_INTERPRETED`` says how the kernels were decorated (fixed at import), and it is."""
    if not triton_available():
        assert not (linear_attention._INTERPRETED or rms_norm._INTERPRETED)
        return
    from triton.runtime.interpreter import InterpretedFunction

    from hazyzoo.kernels.linear_attention import parallel, recurrent
    from hazyzoo.kernels.rms_norm import fused

    assert linear_attention._INTERPRETED == rms_norm._INTERPRETED == INTERPRETED
    for kernel in (fused._rms_norm_fwd_kernel, recurrent._step_kernel):
        assert isinstance(kernel, InterpretedFunction) == INTERPRETED
    autotuned = parallel._parallel_fwd_kernel
    assert isinstance(getattr(autotuned, "fn", autotuned), InterpretedFunction) == INTERPRETED
