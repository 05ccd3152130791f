"""The spec of the two Hydragen ops in plain PyTorch (float32 arithmetic, any device).

``attention_with_lse_reference``: softmax attention of queries ``[B, Hq, T, D]`` over keys
shared by groups of consecutive sequences (``Bk`` key batches, ``B`` a multiple of ``Bk``:
sequence ``b`` reads key batch ``b // (B // Bk)``) and grouped-query heads (query head ``h``
reads key head ``h // (Hq // Hkv)``, as transformers' ``repeat_kv`` does), returning the
unnormalised pieces a merge needs: the attention output and the log-sum-exp of the scores.

``merge_attention_reference``: the exact softmax over the union of several key sets, from the
(output, log-sum-exp) pair of each set. That is the identity Hydragen rests on::

    lse = logsumexp_i(lse_i)        out = sum_i exp(lse_i - lse) * out_i

A row that sees no key at all (everything masked) has ``lse = -inf`` and ``out = 0``; it then
contributes nothing to a merge.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["attention_with_lse_reference", "merge_attention_reference"]


def _grouped_mask(mask: Tensor, batch: int, key_batch: int) -> Tensor:
    """``mask [Bm, Tm, N]`` (``Bm`` = B or Bk) as ``[Bk, B // Bk or 1, 1, 1, Tm, N]``."""
    bm, tm, n = mask.shape
    per = batch // key_batch
    if bm == batch:
        return mask.reshape(key_batch, per, 1, 1, tm, n)
    return mask.reshape(key_batch, 1, 1, 1, tm, n)


def attention_with_lse_reference(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scale: float,
    num_splits: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention of ``query`` over ``key``/``value`` with its log-sum-exp, in float32.

    Args:
        query: ``[B, Hq, T, D]``.
        key, value: ``[Bk, Hkv, N, D]`` and ``[Bk, Hkv, N, Dv]``; ``B % Bk == 0``,
            ``Hq % Hkv == 0``.
        mask: ``None`` or bool ``[Bm, Tm, N]`` (True = attend) with ``Bm`` in ``{B, Bk}`` and
            ``Tm`` in ``{1, T}``.
        scale: multiplies the scores (``1/sqrt(D)`` for standard attention).
        num_splits: ignored (the Triton path splits the keys over programs; the result is the
            same).

    Returns:
        ``out [B, Hq, T, Dv]`` and ``lse [B, Hq, T]``, both float32.
    """
    del num_splits
    batch, heads, length, dim = query.shape
    key_batch, kv_heads = key.shape[:2]
    dv = value.shape[-1]
    per, rep = batch // key_batch, heads // kv_heads
    q = query.float().reshape(key_batch, per, kv_heads, rep, length, dim)
    scores = torch.einsum("zbhrtd,zhnd->zbhrtn", q, key.float()) * scale
    if mask is not None:
        scores = scores.masked_fill(~_grouped_mask(mask, batch, key_batch), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    seen = torch.isfinite(lse)
    probs = torch.exp(scores - torch.where(seen, lse, 0.0).unsqueeze(-1))
    out = torch.einsum("zbhrtn,zhnd->zbhrtd", probs, value.float())
    return out.reshape(batch, heads, length, dv), lse.reshape(batch, heads, length)


def merge_attention_reference(
    outs: Tensor, lses: Tensor, out_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Merge ``K`` partial attention results over disjoint key sets into the exact one.

    Args:
        outs: ``[K, ..., Dv]`` partial outputs (each normalised over its own keys).
        lses: ``[K, ...]`` their log-sum-exps (``-inf`` where a part saw no key).
        out_dtype: dtype of the merged output (default: ``outs.dtype``).

    Returns:
        ``out [..., Dv]`` in ``out_dtype`` and ``lse [...]`` in float32.
    """
    lses = lses.float()
    lse = torch.logsumexp(lses, dim=0)
    weights = torch.exp(lses - torch.where(torch.isfinite(lse), lse, 0.0))
    out = (weights.unsqueeze(-1) * outs.float()).sum(0)
    return out.to(out_dtype or outs.dtype), lse
