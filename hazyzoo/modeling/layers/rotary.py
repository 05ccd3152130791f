"""Rotary position embeddings (non-interleaved halves, as in GPT-NeoX and Llama)."""

from __future__ import annotations

import torch


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines [batch, 1, seq, head_dim] (float32) for integer ``position_ids``.

    The inverse frequencies are computed on the fly rather than stored as a buffer, so nothing
    needs re-initialising after ``from_pretrained`` builds the model on the meta device.
    """
    exponent = (
        torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    )
    inv_freq = 1.0 / (theta**exponent)
    angles = position_ids.float()[..., None] * inv_freq  # [B, L, D/2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, L, D]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [batch, heads, seq, head_dim] in float32 and return it in its own dtype."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)
