"""Kernel dispatch: pick the Triton kernel or the PyTorch reference for an op.

Every fast op in :mod:`hazyzoo.kernels` calls :func:`use_triton` with its input tensors.
By default Triton runs for CUDA tensors and the PyTorch reference everywhere else.
``HAZYZOO_KERNELS=torch`` forces the reference; ``HAZYZOO_KERNELS=triton`` forces Triton
(on CPU tensors this needs ``TRITON_INTERPRET=1`` set before the kernels are imported).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

_ALLOWED = ("auto", "torch", "triton")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it is optional on CPU-only machines)."""
    return importlib.util.find_spec("triton") is not None


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
