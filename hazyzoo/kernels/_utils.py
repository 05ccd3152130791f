"""Helpers every op in :mod:`hazyzoo.kernels` shares: input checks and launch utilities.

Nothing here imports Triton, so the validation runs (and fails early, naming the argument) on
machines where only the PyTorch references can run.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

# Input dtypes the fast ops accept (each computes in float32).
KERNEL_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)


def dtype_names(dtypes: tuple[torch.dtype, ...]) -> str:
    """``"float16, bfloat16, float32"``: dtypes as a user would type them, for error messages."""
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_float(name: str, t: object, allowed: tuple[torch.dtype, ...] = KERNEL_DTYPES) -> None:
    """``t`` is a tensor with a dtype in ``allowed`` (TypeError / ValueError naming ``name``)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in allowed:
        raise ValueError(f"{name} has dtype {t.dtype}; allowed: {dtype_names(allowed)}")


def check_rank(name: str, t: Tensor, rank: int, layout: str) -> None:
    """``t`` has ``rank`` dims; ``layout`` (e.g. ``"[B, H, L, F]"``) goes into the message."""
    if t.dim() != rank:
        raise ValueError(f"{name} must be {layout} ({rank} dims), got shape {tuple(t.shape)}")


def check_shape(name: str, t: Tensor, expected: tuple[int, ...], layout: str) -> None:
    """``t.shape == expected``; ``layout`` names the dims (e.g. ``"[B, H, 1+F+F^2]"``)."""
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must be {layout} = {tuple(expected)}, got shape {tuple(t.shape)}")


def check_same_device(**tensors: Tensor) -> None:
    """All ``tensors`` (by argument name) are on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def next_power_of_2(n: int, minimum: int = 1) -> int:
    """The smallest power of two ``>= n`` and ``>= minimum`` (Triton block sizes)."""
    return max(minimum, 1 << max(0, (n - 1).bit_length()))


def device_guard(t: Tensor) -> contextlib.AbstractContextManager:
    """Launch on ``t``'s GPU when it is not the current one (Triton launches on the current
    device; layers may be spread over GPUs). Entering ``torch.cuda.device`` costs microseconds,
    which a launch-bound decode step notices, so it is skipped when already current."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
