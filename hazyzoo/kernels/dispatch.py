"""The op registry and the one dispatch policy: Triton kernel or PyTorch reference.

Every fast op in :mod:`hazyzoo.kernels` registers itself once with :func:`register_op` (its
public entry point, its reference, its Triton implementation and a factory of small example
inputs), and its entry point, after validating the inputs, calls :func:`call_op` with the
tensors that decide the device. :func:`use_triton` is the policy: by default Triton runs for
CUDA tensors and the PyTorch reference everywhere else. ``HAZYZOO_KERNELS=torch`` forces the
reference; ``HAZYZOO_KERNELS=triton`` forces Triton (on CPU tensors this needs
``TRITON_INTERPRET=1`` set before the kernels are imported).

The registry is what generic tests iterate over: a new op joins the dispatch test by
registering (its example inputs are what the test calls it with).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = [
    "KernelOp",
    "call_op",
    "get_op",
    "kernel_mode",
    "register_op",
    "registered_ops",
    "triton_available",
    "triton_interpreting",
    "use_triton",
]

_ALLOWED = ("auto", "torch", "triton")


# Looked up once at import: a plain constant is what torch.compile can trace through (a
# cached function call inside a compiled decode step would break the graph there).
_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it is optional on CPU-only machines)."""
    return _TRITON_AVAILABLE


def triton_interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernel_mode() -> str:
    """The value of ``HAZYZOO_KERNELS`` (``auto`` when unset), validated."""
    mode = os.environ.get("HAZYZOO_KERNELS", "auto").strip().lower() or "auto"
    if mode not in _ALLOWED:
        raise ValueError(f"HAZYZOO_KERNELS={mode!r} is not one of {_ALLOWED}")
    return mode


def use_triton(*tensors: torch.Tensor) -> bool:
    """Decide whether an op over ``tensors`` runs its Triton kernel.

    ``auto``: Triton when every tensor is on a CUDA device and Triton imports.
    ``torch``: never. ``triton``: always; raises if Triton is missing or if the tensors are on
    the CPU without ``TRITON_INTERPRET=1`` (the kernel could not run there).
    """
    mode = kernel_mode()
    if mode == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if mode == "auto":
        return on_cuda and triton_available()
    if not triton_available():
        raise RuntimeError("HAZYZOO_KERNELS=triton but the triton package is not installed")
    if not on_cuda and not triton_interpreting():
        raise RuntimeError(
            "HAZYZOO_KERNELS=triton with CPU tensors needs TRITON_INTERPRET=1 set before "
            "hazyzoo.kernels is imported"
        )
    return True


# Positional and keyword arguments of one call of an op's entry point.
ExampleInputs = tuple[tuple[Any, ...], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class KernelOp:
    """One registered fast op.

    Attributes:
        name: the registry key (the entry point's name).
        entry: the public function: validates its inputs, then :func:`call_op`.
        reference: the PyTorch spec; runs on any device.
        triton: the Triton implementation, same signature as ``reference``; ``None`` where
            triton does not import.
        example_inputs: returns fresh, small, random CPU inputs ``(args, kwargs)`` for
            ``entry`` (fresh each call: some ops update their inputs in place).
    """

    name: str
    entry: Callable[..., Any]
    reference: Callable[..., Any]
    triton: Callable[..., Any] | None
    example_inputs: Callable[[], ExampleInputs]


_REGISTRY: dict[str, KernelOp] = {}


def register_op(
    name: str,
    *,
    entry: Callable[..., Any],
    reference: Callable[..., Any],
    triton: Callable[..., Any] | None,
    example_inputs: Callable[[], ExampleInputs],
) -> KernelOp:
    """Register an op once under ``name`` (a second registration of a name is an error)."""
    if name in _REGISTRY:
        raise ValueError(f"kernel op {name!r} is already registered")
    op = KernelOp(name, entry, reference, triton, example_inputs)
    _REGISTRY[name] = op
    return op


def get_op(name: str) -> KernelOp:
    """The registered op ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no kernel op {name!r}; registered: {sorted(_REGISTRY)}") from None


def registered_ops() -> tuple[str, ...]:
    """Names of all registered ops, sorted (importing :mod:`hazyzoo.kernels` registers all)."""
    return tuple(sorted(_REGISTRY))


def call_op(name: str, deciding: Iterable[torch.Tensor | None], *args: Any, **kwargs: Any) -> Any:
    """Run op ``name`` on ``args``/``kwargs``: its Triton implementation when
    :func:`use_triton` says so for the ``deciding`` tensors (``None`` entries are skipped),
    else its reference."""
    op = get_op(name)
    if use_triton(*(t for t in deciding if t is not None)):
        if op.triton is None:  # use_triton already raised unless triton imports
            raise RuntimeError(f"kernel op {name!r} has no Triton implementation")
        return op.triton(*args, **kwargs)
    return op.reference(*args, **kwargs)
