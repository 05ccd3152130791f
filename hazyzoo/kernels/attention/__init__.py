"""Softmax attention that returns its log-sum-exp, and the exact merge of partial results.

These are Hydragen's two ops (Juravsky et al., "Hydragen: High-Throughput LLM Inference with
Shared Prefixes"). Attention over a long prompt shared by many sequences is split into the
part over the shared prefix, computed once for a whole group of sequences as one matrix-matrix
product, and the part over each sequence's own suffix; the two are combined exactly through
their log-sum-exps:

- :func:`attention_with_lse`: queries ``[B, Hq, T, D]`` over keys ``[Bk, Hkv, N, D]`` shared
  by groups of ``B // Bk`` consecutive sequences (and ``Hq // Hkv`` query heads), returning the
  float32 output and log-sum-exp.
- :func:`merge_attention`: ``out = sum_i exp(lse_i - lse) out_i`` with
  ``lse = logsumexp_i lse_i``.

Layout: :mod:`.reference` is the spec (plain PyTorch, float32 arithmetic), :mod:`.split` the
Triton kernels (a split-key flash-attention forward and a merge), imported only when triton
imports. The entries validate and dispatch through :func:`hazyzoo.kernels.dispatch.call_op`:
Triton for CUDA tensors, the reference elsewhere, ``HAZYZOO_KERNELS`` forces either.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hazyzoo.kernels._utils import check_float, check_rank, check_same_device
from hazyzoo.kernels.attention.reference import (
    attention_with_lse_reference,
    merge_attention_reference,
)
from hazyzoo.kernels.dispatch import ExampleInputs, call_op, register_op, triton_available

__all__ = ["attention_with_lse", "merge_attention"]

if triton_available():
    from hazyzoo.kernels.attention.split import INTERPRETED as _INTERPRETED
    from hazyzoo.kernels.attention.split import (
        attention_with_lse_triton,
        merge_attention_triton,
    )
else:  # pragma: no cover - exercised on machines without triton
    _INTERPRETED, attention_with_lse_triton, merge_attention_triton = False, None, None


def _check_attention_inputs(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scale: float
) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_float(name, t)
    check_rank("query", query, 4, "[B, Hq, T, D]")
    check_rank("key", key, 4, "[Bk, Hkv, N, D]")
    check_rank("value", value, 4, "[Bk, Hkv, N, Dv]")
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise ValueError(
            f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, "
            f"{value.dtype}"
        )
    check_same_device(query=query, key=key, value=value)
    batch, heads, length, dim = query.shape
    key_batch, kv_heads, n_keys, kdim = key.shape
    if kdim != dim:
        raise ValueError(f"key head dim {kdim} != query head dim {dim}")
    if tuple(value.shape[:3]) != (key_batch, kv_heads, n_keys):
        raise ValueError(
            f"value must be [Bk, Hkv, N, Dv] with [Bk, Hkv, N] = {(key_batch, kv_heads, n_keys)} "
            f"(from key), got shape {tuple(value.shape)}"
        )
    if key_batch < 1 or batch % key_batch:
        raise ValueError(
            f"the query batch B={batch} must be a multiple of the key batch Bk={key_batch} "
            "(each key batch is shared by B // Bk consecutive sequences)"
        )
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"query heads Hq={heads} must be a multiple of key heads Hkv={kv_heads}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = attend), got {mask!r:.80}")
        check_rank("mask", mask, 3, "[B or Bk, T or 1, N]")
        bm, tm, nm = mask.shape
        if bm not in (batch, key_batch) or tm not in (1, length) or nm != n_keys:
            raise ValueError(
                f"mask must be [B or Bk, T or 1, N] with B={batch}, Bk={key_batch}, T={length}, "
                f"N={n_keys}, got shape {tuple(mask.shape)}"
            )
        check_same_device(query=query, mask=mask)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float, got {scale!r}")


def attention_with_lse(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    scale: float | None = None,
    num_splits: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Softmax attention and its log-sum-exp, with keys shared by groups of sequences.

    Args:
        query: ``[B, Hq, T, D]`` (any strides), float32 / bfloat16 / float16.
        key, value: ``[Bk, Hkv, N, D]``, ``[Bk, Hkv, N, Dv]`` in query's dtype. Sequence ``b``
            reads key batch ``b // (B // Bk)``; query head ``h`` reads key head
            ``h // (Hq // Hkv)`` (transformers' grouped-query convention).
        mask: optional bool ``[B or Bk, T or 1, N]``, True where a query may attend a key
            (``[Bk, 1, N]``: key padding of a shared prefix; ``[B, T, N]``: causal + padding).
        scale: score multiplier, default ``D ** -0.5``.
        num_splits: how many key slices the Triton kernel uses (default: chosen from the
            shapes to fill the GPU); the result does not depend on it.

    Returns:
        ``out [B, Hq, T, Dv]`` and ``lse [B, Hq, T]`` in float32. A query that sees no key gets
        ``out = 0`` and ``lse = -inf``.
    """
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    _check_attention_inputs(query, key, value, mask, scale)
    if num_splits is not None and (
        isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1
    ):
        raise ValueError(f"num_splits must be a positive int or None, got {num_splits!r}")
    return call_op(
        "attention_with_lse", (query, key, value), query, key, value, mask, scale, num_splits
    )


def merge_attention(
    outs: Tensor, lses: Tensor, out_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Merge partial attention results over disjoint key sets into the exact attention.

    Args:
        outs: ``[K, B, H, T, Dv]`` float32, each part normalised over its own keys.
        lses: ``[K, B, H, T]`` float32 log-sum-exps (``-inf`` where a part saw no key).
        out_dtype: dtype of the merged output (default float32).

    Returns:
        ``out [B, H, T, Dv]`` in ``out_dtype`` and ``lse [B, H, T]`` float32. The Triton path
        stores ``out`` as ``[B, T, H, Dv]`` (transformers' attention output layout), so
        ``out.transpose(1, 2)`` is contiguous there.
    """
    check_float("outs", outs, (torch.float32,))
    check_float("lses", lses, (torch.float32,))
    check_rank("outs", outs, 5, "[K, B, H, T, Dv]")
    if tuple(lses.shape) != tuple(outs.shape[:4]):
        raise ValueError(
            f"lses must be [K, B, H, T] = {tuple(outs.shape[:4])} (from outs), got shape "
            f"{tuple(lses.shape)}"
        )
    if outs.shape[0] < 1:
        raise ValueError("merge_attention needs at least one part (K >= 1)")
    check_same_device(outs=outs, lses=lses)
    out_dtype = out_dtype or torch.float32
    if out_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"out_dtype must be float32, bfloat16 or float16, got {out_dtype}")
    return call_op("merge_attention", (outs, lses), outs, lses, out_dtype)


def _attention_example() -> ExampleInputs:
    """Two prefix groups of two sequences, GQA 4:2, a key-padding mask."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(4, 4, 3, 16, generator=gen)
    k = torch.randn(2, 2, 20, 16, generator=gen)
    v = torch.randn(2, 2, 20, 16, generator=gen)
    mask = torch.rand(2, 1, 20, generator=gen) > 0.3
    return (q, k, v), {"mask": mask, "num_splits": 2}


def _merge_example() -> ExampleInputs:
    gen = torch.Generator().manual_seed(1)
    outs = torch.randn(3, 2, 4, 3, 16, generator=gen)
    lses = torch.randn(3, 2, 4, 3, generator=gen) * 3
    lses[0, 0, 0, 0] = -40.0  # a part that barely counts (inputs stay finite for the tests)
    return (outs, lses), {}


register_op(
    "attention_with_lse",
    entry=attention_with_lse,
    reference=attention_with_lse_reference,
    triton=attention_with_lse_triton,
    example_inputs=_attention_example,
)
register_op(
    "merge_attention",
    entry=merge_attention,
    reference=merge_attention_reference,
    triton=merge_attention_triton,
    example_inputs=_merge_example,
)
