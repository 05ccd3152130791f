"""Vector quantization with a choice of gradient estimator: straight-through or the rotation trick.

"Restructuring Vector Quantization with the Rotation Trick" (Fifty et al. 2024) passes the
gradient from a code ``q`` back to the encoder output ``e`` through a rotation-and-rescale that
maps ``e`` onto ``q`` and is a constant in backpropagation: ``out = sg(lambda) sg(R) e`` with
``R`` the rotation taking ``e / |e|`` to ``q / |q|`` and ``lambda = |q| / |e|``. The forward
value is ``q``; the gradient is ``lambda R^T g``, so it keeps the angle and the relative magnitude
between ``e`` and its code instead of copying ``g`` (straight-through). ``R`` is never
materialised: with ``u = e / |e|``, ``q_hat = q / |q|``, ``w = (u + q_hat) / |u + q_hat|``,
``R x = x - 2 w (w . x) + 2 q_hat (u . x)`` (two Householder reflections).

Estimators (:data:`GRADIENT_ESTIMATORS`):

* ``"ste"``: ``out = e + sg(q - e)`` (the forward value is the code).
* ``"rotation"``: the paper's rotation, with the norms clamped at ``eps`` (lucidrains'
  ``rotate_to``; the paper's code adds ``eps`` to the norms instead, 2.5e-6 apart).
* ``"rotation_vqgan"``: the form the reference's VQGAN experiments used: the detached rotation
  applied to the *unit-normalised* input, times ``sg(|q|)``; the gradient also flows through the
  normalisation, so it is ``lambda (I - u u^T) R^T g`` (its radial component projected out).

Rows whose ``e`` (or ``q``) has norm below ``eps`` fall back to straight-through for the rotation
estimators: the forward value is still the code and nothing is NaN.

:class:`VectorQuantizer` is the module: a codebook (learned by EMA or by gradient), Euclidean or
cosine nearest-code search, k-means initialisation, dead-code restarts, commitment loss,
optional projections in and out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from hazyzoo.kernels import nearest_code as search_ops

__all__ = [
    "DISTANCES",
    "GRADIENT_ESTIMATORS",
    "QuantizerOutput",
    "VectorQuantizer",
    "kmeans",
    "nearest_code",
    "rotation_trick",
    "rotation_trick_vqgan",
    "straight_through",
]

GRADIENT_ESTIMATORS = ("ste", "rotation", "rotation_vqgan")
DISTANCES = ("euclidean", "cosine")


def _unit(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    norm = x.norm(dim=-1, keepdim=True)
    return x / norm.clamp(min=eps), norm


def _householder_pair(
    x: torch.Tensor, u: torch.Tensor, q_hat: torch.Tensor, eps: float
) -> torch.Tensor:
    """``R x`` for the rotation taking ``u`` to ``q_hat`` (both detached, unit or zero)."""
    w, _ = _unit(u + q_hat, eps)
    return x - 2 * w * (x * w).sum(-1, keepdim=True) + 2 * q_hat * (x * u).sum(-1, keepdim=True)


def straight_through(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``e + sg(q - e)``: the code forward, the upstream gradient copied back to ``e``."""
    return e + (q - e).detach()


def rotation_trick(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The rotation trick over the last dim: forward value ``q``, gradient ``lambda R^T g``."""
    u, e_norm = _unit(e.detach(), eps)
    q_hat, q_norm = _unit(q.detach(), eps)
    scale = q_norm / e_norm.clamp(min=eps)
    out = _householder_pair(e, u, q_hat, eps) * scale
    degenerate = (e_norm < eps) | (q_norm < eps)
    return torch.where(degenerate, straight_through(e, q), out)


def rotation_trick_vqgan(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The reference VQGAN's form: ``sg(R) (e / |e|) sg(|q|)`` (gradient through the
    normalisation too); straight-through for rows with ``|e|`` or ``|q|`` below ``eps``."""
    u, e_norm = _unit(e.detach(), eps)
    q_hat, q_norm = _unit(q.detach(), eps)
    x = e / e.norm(dim=-1, keepdim=True).clamp(min=eps)  # the gradient flows through this
    out = _householder_pair(x, u, q_hat, eps) * q_norm
    degenerate = (e_norm < eps) | (q_norm < eps)
    return torch.where(degenerate, straight_through(e, q), out)


def nearest_code(
    x: torch.Tensor, codebook: torch.Tensor, distance: str = "euclidean"
) -> torch.Tensor:
    """Index of the nearest code of each row of ``x`` [N, d] in ``codebook`` [K, d] (smallest
    squared Euclidean distance, or largest cosine similarity; ties to the lower index), by the
    fused search op :func:`hazyzoo.kernels.nearest_code.nearest_code` (Triton on CUDA: no N x K
    matrix). float64 inputs are searched in float32."""
    if x.dtype == torch.float64 or codebook.dtype == torch.float64:
        x, codebook = x.float(), codebook.float()
    return search_ops.nearest_code(x, codebook, distance)[0]


def kmeans(
    x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``x`` [N, d]: ``(centroids [k, d], counts [k])``. Starts from ``k``
    distinct random rows (with replacement when ``N < k``); an empty cluster keeps its
    centroid. In float32, on ``x``'s device: it runs inside the first training step on the
    batch's (GPU) latents, where scikit-learn's KMeans would need a copy to the host."""
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, d] tensor, got {tuple(x.shape)}")
    x = x.float()
    n = x.shape[0]
    if n >= k:
        start = torch.randperm(n, generator=generator, device="cpu")[:k]
    else:
        start = torch.randint(0, n, (k,), generator=generator, device="cpu")
    centroids = x[start.to(x.device)].clone()
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        assign = nearest_code(x, centroids)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids, counts


@dataclass
class QuantizerOutput:
    """What :class:`VectorQuantizer` returns.

    ``quantized``: the input's shape, the codes (with the estimator's gradient in training);
    ``indices``: the input's shape without the last dim; ``loss``: ``commitment_weight *
    commitment_loss`` plus ``codebook_loss`` when the codebook learns by gradient;
    ``perplexity``: ``exp`` of the entropy of the batch's code histogram; ``usage``: the fraction
    of codes used by the batch; ``quantization_error``: mean squared distance between the
    (projected) inputs and their codes.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor
    quantization_error: torch.Tensor


class VectorQuantizer(nn.Module):
    """A codebook of ``codebook_size`` codes of width ``codebook_dim`` and a nearest-code
    quantizer with the gradient estimator ``gradient_estimator`` (see the module docstring).

    Args:
        codebook_size: Number of codes K.
        codebook_dim: Width of the codes.
        input_dim: Width of the inputs (default ``codebook_dim``); when different, inputs go
            through ``project_in`` and codes come back through ``project_out`` (Linear layers).
        gradient_estimator: ``"ste"``, ``"rotation"`` or ``"rotation_vqgan"``.
        distance: ``"euclidean"`` or ``"cosine"`` (inputs and codes unit-normalised).
        commitment_weight: Weight of ``mean((x - sg(q))^2)`` in ``loss``.
        use_ema: Learn the codebook by exponential moving averages of the assigned inputs
            (buffers ``codebook``, ``cluster_size``, ``embed_avg``); otherwise ``codebook`` is a
            parameter learned through ``codebook_loss = mean((sg(x) - q)^2)``.
        decay: EMA decay.
        eps: Laplace smoothing of the EMA cluster sizes.
        kmeans_init: Initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that initialisation.
        threshold_ema_dead_code: Codes whose EMA cluster size falls below this are restarted
            from random inputs of the batch (0: never; EMA codebooks only).
        rotation_eps: Norm clamp of the rotation estimators.
    """

    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        input_dim: int | None = None,
        gradient_estimator: str = "rotation",
        distance: str = "euclidean",
        commitment_weight: float = 0.25,
        use_ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
        rotation_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        for name, value in (("codebook_size", codebook_size), ("codebook_dim", codebook_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(
                f"gradient_estimator must be one of {GRADIENT_ESTIMATORS}, got "
                f"{gradient_estimator!r}"
            )
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if commitment_weight < 0 or eps <= 0 or threshold_ema_dead_code < 0:
            raise ValueError(
                "commitment_weight and threshold_ema_dead_code must be >= 0 and eps > 0"
            )
        if threshold_ema_dead_code > 0 and not use_ema:
            raise ValueError("threshold_ema_dead_code needs use_ema=True (EMA cluster sizes)")
        input_dim = codebook_dim if input_dim is None else input_dim
        self.codebook_size, self.codebook_dim, self.input_dim = (
            codebook_size,
            codebook_dim,
            input_dim,
        )
        self.gradient_estimator, self.distance = gradient_estimator, distance
        self.commitment_weight, self.use_ema, self.decay, self.eps = (
            commitment_weight,
            use_ema,
            decay,
            eps,
        )
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.threshold_ema_dead_code, self.rotation_eps = threshold_ema_dead_code, rotation_eps
        self.project_in = nn.Linear(input_dim, codebook_dim) if input_dim != codebook_dim else None
        self.project_out = nn.Linear(codebook_dim, input_dim) if input_dim != codebook_dim else None
        codebook = torch.randn(codebook_size, codebook_dim)
        if distance == "cosine":
            codebook = F.normalize(codebook, dim=-1)
        if use_ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embed_avg", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        # 1.0 once the codebook is initialised (a float: checkpoints hold floating tensors only)
        self.register_buffer("initted", torch.tensor(0.0 if kmeans_init else 1.0))

    # --- the parts -------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.project_in is not None:
            x = self.project_in(x)
        if self.distance == "cosine":
            x = F.normalize(x, dim=-1)
        return x

    def codes(self) -> torch.Tensor:
        """The codebook [K, codebook_dim] as used for search (unit rows for cosine)."""
        return F.normalize(self.codebook, dim=-1) if self.distance == "cosine" else self.codebook

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices`` (any shape), projected out: ``indices.shape + (input_dim,)``."""
        if indices.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"indices must be in [0, {self.codebook_size}), got values outside")
        q = F.embedding(indices.long(), self.codes())
        return self.project_out(q) if self.project_out is not None else q

    @torch.no_grad()
    def _init_codebook(self, flat: torch.Tensor) -> None:
        centroids, counts = kmeans(flat, self.codebook_size, self.kmeans_iters)
        if self.distance == "cosine":
            centroids = F.normalize(centroids, dim=-1)
        self.codebook.data.copy_(centroids)
        if self.use_ema:
            self.embed_avg.copy_(centroids)
            self.cluster_size.copy_(counts.clamp(min=1))
        self.initted.fill_(1.0)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.codebook_size).type(flat.dtype)
        self.cluster_size.lerp_(onehot.sum(0), 1 - self.decay)
        self.embed_avg.lerp_(onehot.T @ flat, 1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        embed = self.embed_avg / smoothed[:, None]
        self.codebook.copy_(F.normalize(embed, dim=-1) if self.distance == "cosine" else embed)
        if self.threshold_ema_dead_code > 0:
            dead = self.cluster_size < self.threshold_ema_dead_code
            if dead.any():
                pick = torch.randint(0, flat.shape[0], (int(dead.sum()),), device=flat.device)
                fresh = flat[pick]
                self.codebook[dead] = fresh
                self.embed_avg[dead] = fresh * self.threshold_ema_dead_code
                self.cluster_size[dead] = self.threshold_ema_dead_code

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantize ``x`` [..., input_dim] (see :class:`QuantizerOutput`)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"x must have last dim input_dim={self.input_dim}, got shape {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x holds NaN or infinite values")
        e = self._prepare(x)
        flat = e.reshape(-1, self.codebook_dim)
        if self.training and not bool(self.initted > 0):
            self._init_codebook(flat.detach())
        codes = self.codes()
        indices = nearest_code(flat.detach(), codes.detach(), self.distance)
        q = F.embedding(indices, codes).reshape(e.shape).to(e.dtype)
        commitment = F.mse_loss(e, q.detach())
        codebook_loss = e.new_zeros(()) if self.use_ema else F.mse_loss(q, e.detach())
        if self.training:
            if self.gradient_estimator == "ste":
                out = straight_through(e, q)
            elif self.gradient_estimator == "rotation":
                out = rotation_trick(e, q, self.rotation_eps)
            else:
                out = rotation_trick_vqgan(e, q, self.rotation_eps)
        else:
            out = q
        if self.training and self.use_ema:
            self._ema_update(flat.detach().float(), indices)
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        probs = counts / counts.sum().clamp(min=1)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
        usage = (counts > 0).float().mean()
        error = ((e.detach() - q.detach()) ** 2).sum(-1).mean()
        if self.project_out is not None:
            out = self.project_out(out)
        return QuantizerOutput(
            quantized=out,
            indices=indices.reshape(e.shape[:-1]),
            loss=self.commitment_weight * commitment + codebook_loss,
            commitment_loss=commitment,
            codebook_loss=codebook_loss,
            perplexity=perplexity,
            usage=usage,
            quantization_error=error,
        )

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"input_dim={self.input_dim}, gradient_estimator={self.gradient_estimator!r}, "
            f"distance={self.distance!r}, use_ema={self.use_ema}"
        )
