"""Mamba's selective scan in plain PyTorch: the spec (Gu & Dao 2023, "Mamba: linear-time
sequence modeling with selective state spaces").

For every channel ``d`` and state index ``n`` (``A`` real, diagonal)::

    dt_t  = softplus(delta_t + delta_bias)          (when delta_softplus)
    h_t   = exp(dt_t A[d, n]) h_{t-1} + dt_t B_t[n] u_t
    y_t   = sum_n C_t[n] h_t[n] + D[d] u_t          (then y_t * silu(z_t) when z is given)

with ``h_{-1}`` zero (or ``initial_state``). The scan runs over time in float32; outputs are
returned in ``u.dtype``. :func:`selective_state_step` is one step of the same recurrence
(decoding).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["selective_scan_reference", "selective_state_step"]


def _discretize(delta: Tensor, delta_bias: Tensor | None, softplus: bool) -> Tensor:
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[..., None] if dt.dim() == 3 else dt + delta_bias.float()
    return F.softplus(dt) if softplus else dt


def selective_scan_reference(
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
    """``y [B, D, L]`` (and the last state ``[B, D, N]`` in float32 when asked).

    Args:
        u, delta: ``[B, D, L]``; A: ``[D, N]``; B, C: ``[B, N, L]`` (input-dependent);
        D: ``[D]`` skip; z: ``[B, D, L]`` gate; delta_bias: ``[D]``;
        initial_state: ``[B, D, N]`` state before the first position.
    """
    dt = _discretize(delta, delta_bias, delta_softplus)  # [B, D, L]
    a = A.float()
    x = u.float()
    b, c = B.float(), C.float()
    batch, channels, length = x.shape
    state = (
        torch.zeros(batch, channels, a.shape[1], dtype=torch.float32, device=x.device)
        if initial_state is None
        else initial_state.float().clone()
    )
    decay = torch.exp(dt[..., None] * a[None, :, None, :])  # [B, D, L, N]
    drive = dt[..., None] * b.transpose(1, 2)[:, None] * x[..., None]  # [B, D, L, N]
    ys = []
    for t in range(length):
        state = decay[:, :, t] * state + drive[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, c[:, :, t]))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + x * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(u.dtype)
    return (y, state) if return_last_state else y


def selective_state_step(
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
    """One position: ``u, delta, z [B, D]``, ``B, C [B, N]``; ``state [B, D, N]`` float32 is
    updated in place; returns ``y [B, D]`` in ``u.dtype``."""
    dt = _discretize(delta, delta_bias, delta_softplus)  # [B, D]
    x = u.float()
    state.mul_(torch.exp(dt[..., None] * A.float())).add_(
        dt[..., None] * B.float()[:, None] * x[..., None]
    )
    y = torch.einsum("bdn,bn->bd", state, C.float())
    if D is not None:
        y = y + x * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)
