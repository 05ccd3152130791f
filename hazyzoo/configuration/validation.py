"""Shared checks for hazyzoo configurations: each raises ``ValueError`` naming the field."""

from __future__ import annotations

from typing import Any


def check_positive(config: Any, name: str) -> None:
    """Require ``config.<name>`` to be an integer > 0."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_divides(config: Any, numerator: str, denominator: str) -> None:
    """Require ``config.<numerator>`` to be divisible by ``config.<denominator>``."""
    num, den = getattr(config, numerator), getattr(config, denominator)
    if num % den:
        raise ValueError(
            f"{numerator} ({num}) must be divisible by {denominator} ({den}); "
            f"the remainder is {num % den}"
        )


def check_layer_indices(config: Any, name: str, num_layers: int) -> None:
    """Require ``config.<name>`` to be distinct layer indices in ``[0, num_layers)``."""
    indices = getattr(config, name)
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise ValueError(f"{name} must hold integers, got {bad}")
    out = [i for i in indices if not 0 <= i < num_layers]
    if out:
        raise ValueError(
            f"{name} has indices {out} out of range for num_hidden_layers={num_layers} "
            f"(allowed 0..{num_layers - 1})"
        )
    if len(set(indices)) != len(indices):
        raise ValueError(f"{name} has repeated indices: {sorted(indices)}")
