"""Mamba's selective scan: public entry points, input checks, dispatch.

:mod:`.reference` is the spec (plain PyTorch, a loop over time in float32). The fast paths
are Triton kernels in :mod:`.triton_scan` (imported only when triton imports): the forward
scan, its reverse-time backward (states recomputed from per-chunk checkpoints) and the
single-position decode step. Registered ops (:mod:`hazyzoo.kernels.dispatch`):

* :func:`selective_scan` -- a whole sequence (training / prefill), optionally from an initial
  state and returning the last one; differentiable on both paths.
* :func:`selective_step` -- one decode position, updating the float32 state in place.

Precision: everything is computed in float32 whatever the input dtypes (each tensor may have
its own float16 / bfloat16 / float32 dtype); ``y`` comes back in ``u.dtype``, the last state
in float32, gradients in their inputs' dtypes. Under ``torch.compile`` both entry points run
the reference (Dynamo does not trace the Triton launches).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hazyzoo.kernels._utils import check_float, check_rank, check_same_device, check_shape
from hazyzoo.kernels.dispatch import ExampleInputs, call_op, register_op, triton_available
from hazyzoo.kernels.selective_scan.reference import selective_scan_reference, selective_state_step

__all__ = [
    "selective_scan",
    "selective_scan_reference",
    "selective_state_step",
    "selective_step",
]

if triton_available():
    from hazyzoo.kernels.selective_scan.triton_scan import INTERPRETED as _INTERPRETED
    from hazyzoo.kernels.selective_scan.triton_scan import (
        selective_scan_triton,
        selective_state_step_triton,
    )
else:
    _INTERPRETED = False
    selective_scan_triton = selective_state_step_triton = None


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_optional(
    name: str, t: object, expected: tuple[int, ...], layout: str, tensors: dict[str, Tensor]
) -> None:
    """``None``, or a float tensor of shape ``expected`` (added to ``tensors`` for the device
    check)."""
    if t is None:
        return
    check_float(name, t)
    check_shape(name, t, expected, layout)
    tensors[name] = t


def _check_common(
    u: Tensor,
    delta: object,
    A: object,
    B: object,
    C: object,
    D: object,
    z: object,
    delta_bias: object,
    delta_softplus: object,
    seq: bool,
) -> dict[str, Tensor]:
    """Checks shared by the scan (``seq``: ``u [B, D, L]``) and the step (``u [B, D]``);
    returns the tensors by name (for the device check)."""
    rank = 3 if seq else 2
    u_layout = "[B, D, L]" if seq else "[B, D]"
    bc_layout = "[B, N, L]" if seq else "[B, N]"
    check_float("u", u)
    check_rank("u", u, rank, u_layout)
    batch, channels = u.shape[:2]
    if seq and u.shape[2] < 1:
        raise ValueError(f"u must be [B, D, L] with L >= 1, got shape {tuple(u.shape)}")
    check_float("delta", delta)
    check_shape("delta", delta, tuple(u.shape), u_layout)
    check_float("A", A)
    check_rank("A", A, 2, "[D, N]")
    n_state = A.shape[1]
    check_shape("A", A, (channels, n_state), "[D, N]")
    if n_state < 1:
        raise ValueError(f"A must be [D, N] with d_state N >= 1, got shape {tuple(A.shape)}")
    bc_shape = (batch, n_state, *u.shape[2:])
    check_float("B", B)
    check_shape("B", B, bc_shape, bc_layout)
    check_float("C", C)
    check_shape("C", C, bc_shape, bc_layout)
    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C}
    _check_optional("D", D, (channels,), "[D]", tensors)
    _check_optional("z", z, tuple(u.shape), u_layout, tensors)
    _check_optional("delta_bias", delta_bias, (channels,), "[D]", tensors)
    _check_bool("delta_softplus", delta_softplus)
    return tensors


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba's selective scan over a whole sequence (see :mod:`.reference` for the maths).

    Args:
        u, delta: ``[B, D, L]`` (L >= 1); A: ``[D, N]`` (real, typically negative);
        B, C: ``[B, N, L]`` (input-dependent, shared by all channels); D: ``None`` or ``[D]``
        skip; z: ``None`` or ``[B, D, L]`` gate (``y * silu(z)``); delta_bias: ``None`` or
        ``[D]``; delta_softplus: ``dt = softplus(delta + delta_bias)`` instead of the sum;
        initial_state: ``None`` or ``[B, D, N]``, the state before position 0 (never
        modified); return_last_state: also return the state after the last position.
        Every tensor float16 / bfloat16 / float32 (independently), any strides, one device.

    Returns:
        ``y [B, D, L]`` in ``u.dtype``, and with ``return_last_state`` the last state
        ``[B, D, N]`` float32. Both paths are differentiable w.r.t. every tensor input
        through ``y`` and the last state. Triton on CUDA tensors (N <= 256), the reference
        elsewhere; ``HAZYZOO_KERNELS`` forces either; the reference under ``torch.compile``.
    """
    tensors = _check_common(u, delta, A, B, C, D, z, delta_bias, delta_softplus, seq=True)
    _check_optional(
        "initial_state", initial_state, (u.shape[0], u.shape[1], A.shape[1]), "[B, D, N]", tensors
    )
    _check_bool("return_last_state", return_last_state)
    check_same_device(**tensors)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)
    if torch.compiler.is_compiling():  # Dynamo does not trace the Triton launches
        return selective_scan_reference(*args)
    return call_op("selective_scan", tensors.values(), *args)


def selective_step(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """One decode position of the selective scan, updating ``state`` IN PLACE.

    Args:
        state: ``[B, D, N]`` float32, the state before this position; overwritten with the
            state after it.
        u, delta, z: ``[B, D]``; A: ``[D, N]``; B, C: ``[B, N]``; D, delta_bias: ``[D]``;
            delta_softplus as in :func:`selective_scan`.

    Returns:
        ``y [B, D]`` in ``u.dtype``. Triton on CUDA tensors, the reference elsewhere. The
        Triton path is for decoding: it records no autograd history (the reference's
        in-place update does).
    """
    tensors = _check_common(u, delta, A, B, C, D, z, delta_bias, delta_softplus, seq=False)
    check_float("state", state, (torch.float32,))
    check_shape("state", state, (u.shape[0], u.shape[1], A.shape[1]), "[B, D, N]")
    check_same_device(state=state, **tensors)
    args = (state, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if torch.compiler.is_compiling():
        return selective_state_step(*args)
    return call_op("selective_step", (state, *tensors.values()), *args)


# --------------------------------------------------------------------------------------------
# Registration (with small example inputs for the generic dispatch tests)
# --------------------------------------------------------------------------------------------


def _example_parameters(gen: torch.Generator, channels: int, n_state: int) -> dict[str, Tensor]:
    """Mamba-like ``A`` (negative), ``D`` and ``delta_bias`` (float32)."""
    return {
        "A": -(torch.rand(channels, n_state, generator=gen) + 0.5),
        "D": torch.randn(channels, generator=gen),
        "delta_bias": torch.randn(channels, generator=gen) * 0.5,
    }


def _example_scan() -> ExampleInputs:
    """``u [2, 5, 7]``, ``d_state 4``, every option on (softplus, D, z, bias, states)."""
    gen = torch.Generator().manual_seed(0)
    batch, channels, length, n_state = 2, 5, 7, 4
    p = _example_parameters(gen, channels, n_state)
    u, delta, z = (torch.randn(batch, channels, length, generator=gen) for _ in range(3))
    B, C = (torch.randn(batch, n_state, length, generator=gen) for _ in range(2))
    kwargs = {
        "D": p["D"],
        "z": z,
        "delta_bias": p["delta_bias"],
        "delta_softplus": True,
        "initial_state": torch.randn(batch, channels, n_state, generator=gen),
        "return_last_state": True,
    }
    return (u, delta, p["A"], B, C), kwargs


def _example_step() -> ExampleInputs:
    """One position of the scan example's sizes, from a random state."""
    gen = torch.Generator().manual_seed(1)
    batch, channels, n_state = 2, 5, 4
    p = _example_parameters(gen, channels, n_state)
    state = torch.randn(batch, channels, n_state, generator=gen)
    u, delta, z = (torch.randn(batch, channels, generator=gen) for _ in range(3))
    B, C = (torch.randn(batch, n_state, generator=gen) for _ in range(2))
    kwargs = {"D": p["D"], "z": z, "delta_bias": p["delta_bias"], "delta_softplus": True}
    return (state, u, delta, p["A"], B, C), kwargs


register_op(
    "selective_scan",
    entry=selective_scan,
    reference=selective_scan_reference,
    triton=selective_scan_triton,
    example_inputs=_example_scan,
)
register_op(
    "selective_step",
    entry=selective_step,
    reference=selective_state_step,
    triton=selective_state_step_triton,
    example_inputs=_example_step,
)
