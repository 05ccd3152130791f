"""What the kernel tests share: the interpreter marker, hypothesis settings, closeness checks
and random-input makers.

The Triton kernels run on CPU in Triton's interpreter. Triton decides whether a kernel is
interpreted when its ``@triton.jit`` decorator runs, i.e. when :mod:`hazyzoo.kernels` is
imported, so ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` (on machines without CUDA)
before anything imports hazyzoo. Setting it here instead would leak into the whole pytest
process on a GPU machine and turn every later Triton launch (CUDA-graph captures included)
into interpreter runs. Tests marked :data:`requires_triton` skip when the kernels were
compiled instead (on a GPU machine ``benchmarks/kernels_linear_attention.py`` checks them at
real sizes). Shapes stay tiny because the interpreter is slow; bf16 is not run through it
because bf16 ``tl.dot`` is broken in the interpreter (triton-lang/triton#11584).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

import hazyzoo.kernels  # noqa: F401  (registers every op)
from hazyzoo.kernels import attention, linear_attention, rms_norm
from hazyzoo.kernels.dispatch import triton_available

# Whether the Triton kernels of every op were defined for the CPU interpreter.
INTERPRETED = (
    triton_available()
    and attention._INTERPRETED
    and linear_attention._INTERPRETED
    and rms_norm._INTERPRETED
)

requires_triton = pytest.mark.skipif(
    not INTERPRETED,
    reason="needs triton and TRITON_INTERPRET=1 at import (set by tests/conftest.py without CUDA)",
)

HYPOTHESIS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Max error relative to the largest reference value, for float32 results of float32 inputs.
FP32_TOL = 1e-4


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    what: str,
    tol: float = FP32_TOL,
    rtol: float = 0.0,
    same_dtype: bool = False,
    floor: float = 1e-6,
) -> None:
    """Same shape (and dtype if ``same_dtype``), finite, and elementwise
    ``|actual - expected| <= tol * max(max|expected|, floor) + rtol * |expected|``: the absolute
    part is relative to the largest reference value, which is robust to cancellation."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if same_dtype:
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    if expected.numel() == 0:
        return
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(floor).item()
    err = (actual - expected).abs()
    excess = (err - (tol * scale + rtol * expected.abs())).max().item()
    assert excess <= 0, (
        f"{what}: max error {err.max().item():.3g} > {tol} * {scale:.3g} + {rtol} * |expected|"
    )


def assert_all_close(
    got: Sequence[torch.Tensor | None],
    want: Sequence[torch.Tensor | None],
    names: Sequence[str],
    tol: float = FP32_TOL,
    dtype: torch.dtype | None = None,
) -> None:
    """:func:`assert_close` for each pair, named by ``names`` (a ``None`` must pair with a
    ``None``); with ``dtype``, every result must have it too."""
    assert len(got) == len(want) == len(names), f"{names}: {len(got)} results, {len(want)} wanted"
    for what, a, b in zip(names, got, want, strict=True):
        if b is None or a is None:
            assert a is None and b is None, f"{what}: {type(a).__name__} != {type(b).__name__}"
            continue
        if dtype is not None:
            assert a.dtype == dtype, f"{what}: dtype {a.dtype} != {dtype}"
        assert_close(a, b, what, tol)


# (rtol, atol) by result dtype; atol is relative to the largest reference value (at least 1:
# RMSNorm's dx is exactly 0 for D = 1). Half results may differ by one final rounding (rtol
# 1e-3 covers one float16 ulp, 2**-7 one bfloat16 ulp).
DTYPE_TOL = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (8e-3, 1e-4),
}


def assert_close_at_dtype(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Same shape and dtype, and close at the tolerance of that dtype (see DTYPE_TOL): for
    results that both paths round to the same (possibly half) dtype."""
    rtol, atol = DTYPE_TOL[expected.dtype]
    assert_close(actual, expected, what, tol=atol, rtol=rtol, same_dtype=True, floor=1.0)


def make_qkv(
    seed: int,
    batch: int,
    heads: int,
    length: int,
    feat: int,
    dv: int,
    masked: bool,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random q, k ``[B, H, L, F]``, v ``[B, H, L, Dv]`` and, if ``masked``, a random bool key
    mask ``[B, L]`` keeping at least one key per row."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, feat, generator=gen).to(dtype)
    k = torch.randn(batch, heads, length, feat, generator=gen).to(dtype)
    v = torch.randn(batch, heads, length, dv, generator=gen).to(dtype)
    key_mask = None
    if masked and length > 0:
        key_mask = torch.rand(batch, length, generator=gen) > 0.4
        key_mask[torch.arange(batch), torch.randint(0, length, (batch,), generator=gen)] = True
    return q, k, v, key_mask


def make_state(
    seed: int, batch: int, heads: int, feat: int, dv: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random recurrent state ``(kv_state [B, H, 1+F+F^2, Dv], k_state [B, H, 1+F+F^2])``:
    the state of a few random keys, so ``k_state`` looks like a real one (nonzero)."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(batch, heads, 3, feat, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, heads, 3, dv, generator=gen, dtype=torch.float64)
    phi = linear_attention.taylor_feature_map(k)
    return (phi.transpose(-1, -2) @ v).to(dtype), phi.sum(-2).to(dtype)


def make_norm_inputs(
    seed: int, lead: tuple[int, ...], dim: int, x_dtype: torch.dtype, w_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``x [*lead, D]`` (never all zeros) and a random ``weight [D]`` for RMSNorm."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*lead, dim, generator=gen) * 2.0).to(x_dtype)
    weight = torch.randn(dim, generator=gen).to(w_dtype)
    return x, weight


def run_python(script: str, *args: str, **env: str) -> str:
    """Run ``script`` in a fresh interpreter (``python -c script *args``) and return its
    stdout; fails the test on a non-zero exit. The child does not inherit TRITON_INTERPRET or
    HAZYZOO_KERNELS (``env`` sets variables) and finds hazyzoo through PYTHONPATH."""
    child_env = {
        k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "HAZYZOO_KERNELS")
    }
    repo_root = str(Path(linear_attention.__file__).resolve().parents[3])  # holds hazyzoo/
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [repo_root, os.environ.get("PYTHONPATH")])
    )
    child_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout
