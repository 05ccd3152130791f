"""Nearest-code search (the vector-quantisation step of a VQ-VAE): the PyTorch spec.

For rows ``x [N, d]`` and a codebook ``[K, d]``:

* ``"euclidean"``: the squared distance ``||x - c||^2``, computed in float32 as
  ``||x||^2 + (||c||^2 - 2 x.c)``. The code is the argmin of the score ``||c||^2 - 2 x.c``
  (``||x||^2`` is the same for every code of a row, so leaving it out changes no ordering and
  avoids its cancellation); the reported distance is ``||x||^2 + min score`` clamped at 0
  (rounding can make it slightly negative when x sits on a code).
* ``"cosine"``: the code of largest cosine similarity; the reported distance is ``1 - cos``.
  Both ``x`` and the codebook are normalised in float32 as ``v / max(||v||, 1e-12)``, so a
  zero vector normalises to zero: a zero row of ``x`` has similarity 0 with every code
  (index 0, distance 1), and a zero code has similarity 0 with every row.

Ties go to the lowest index (as :func:`torch.argmin`). The rows are processed in chunks of
``chunk_size`` so memory stays ``O(chunk_size * K)`` (the ``N x K`` matrix is never built).
Inputs with NaN / inf give unspecified indices. Not differentiable (argmin has no gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["COSINE_EPS", "DISTANCES", "nearest_code_reference", "normalize_rows"]

DISTANCES = ("euclidean", "cosine")
# Norm floor when normalising for the cosine distance (a zero vector normalises to zero).
COSINE_EPS = 1e-12


def normalize_rows(t: Tensor) -> Tensor:
    """``t`` in float32 with each row divided by ``max(||row||, COSINE_EPS)``."""
    t = t.float()
    return t / torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min(COSINE_EPS)


@torch.no_grad()
def nearest_code_reference(
    x: Tensor, codebook: Tensor, distance: str = "euclidean", chunk_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """For each row of ``x [N, d]``, the nearest row of ``codebook [K, d]``.

    Returns ``(indices [N] int64, distances [N] float32)`` (see the module docstring for the
    two distances, the float32 arithmetic and the tie rule).
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    cosine = distance == "cosine"
    xf = normalize_rows(x) if cosine else x.float()
    cf = normalize_rows(codebook) if cosine else codebook.float()
    n = xf.shape[0]
    indices = torch.empty(n, dtype=torch.int64, device=x.device)
    distances = torch.empty(n, dtype=torch.float32, device=x.device)
    c2 = cf.pow(2).sum(1)
    for start in range(0, n, chunk_size):
        xc = xf[start : start + chunk_size]
        if cosine:
            score = -(xc @ cf.T)
        else:
            score = torch.addmm(c2, xc, cf.T, alpha=-2.0)  # ||c||^2 - 2 x.c
        idx = score.argmin(dim=1)
        best = score.gather(1, idx[:, None]).squeeze(1)
        if cosine:
            dist = 1.0 + best
        else:
            dist = (xc.pow(2).sum(1) + best).clamp_min(0.0)
        indices[start : start + chunk_size] = idx
        distances[start : start + chunk_size] = dist
    return indices, distances
