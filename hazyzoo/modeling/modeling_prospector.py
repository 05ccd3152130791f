"""Prospector heads (Machiraju et al., "Prospector heads: generalized feature attribution for
large models & data") as a transformers model.

A prospector head localises the class-relevant parts of a datum (sentences of a document,
patches of an image, residues of a protein) from an encoder's frozen token embeddings:

1. **Concepts.** k-means over all training tokens gives ``k`` centroids; each token becomes
   the concept of its nearest centroid.
2. **Sketch.** Each datum is a graph over its tokens (:mod:`.prospector_graphs`); its sketch
   counts every concept and every unordered concept pair over the radius-``r`` ego graphs.
   TF-IDF (``tf = count / row sum``, ``idf = ln(n / (1 + document frequency))`` from the
   training sketches, not clipped) weights the counts.
3. **Kernel.** One weight per feature, fitted on the training sketches and the datum labels:
   ``"predictive"`` -- standardised TF-IDF sketches into an elastic-net logistic regression
   (saga), the kernel is its coefficients; ``"inferential"`` -- the log2 fold change of the
   class means of the TF-IDF sketches, zeroed where a two-sided Mann-Whitney test fails the
   Bonferroni-corrected level ``alpha`` or the fold change is below ``tau``.
4. **Prospect.** The kernel is convolved back over the graph: token ``v`` scores
   ``B[c(v)] + sum over u in ego(v) of B[pair(c(v), c(u))]`` (raw weights).

:class:`ProspectorModel` holds the centroids, kernel, intercept, IDF and standardisation
statistics as buffers, so ``save_pretrained`` writes them to safetensors and
``AutoModel.from_pretrained`` reads them back. Fitting needs scikit-learn (k-means, logistic
regression) and SciPy (Mann-Whitney); prospecting and prediction are torch only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from hazyzoo.configuration.configuration_prospector import ProspectorConfig
from hazyzoo.modeling.base import HazyPreTrainedModel
from hazyzoo.modeling.prospector_graphs import (
    EdgeListGraph,
    GridGraph,
    SequenceGraph,
    TokenGraph,
    ego_pair_features,
    feature_names,
    prospect_map,
    sketch,
)

__all__ = ["ProspectorModel", "ProspectorOutput", "ProspectorPreTrainedModel"]

logger = logging.getLogger(__name__)

# Added to both class means before the log2 fold change (as the reference does).
FOLD_CHANGE_EPS = 1e-10
_BUFFERS = ("centroids", "kernel", "intercept", "idf", "scaler_mean", "scaler_scale", "calibration")


@dataclass
class ProspectorOutput(ModelOutput):
    """One entry per datum: ``attributions`` (per-token maps, ``[n]`` for a sequence or edge
    list, ``[H, W]`` with NaN on background for a grid), ``concepts`` (per node); and for the
    batch ``sketches`` (raw counts, ``[B, num_features]``), ``logits`` (datum-level log-odds
    of class 1, ``[B]``) and ``probabilities`` (their sigmoid)."""

    attributions: list[Tensor] | None = None
    concepts: list[Tensor] | None = None
    sketches: Tensor | None = None
    logits: Tensor | None = None
    probabilities: Tensor | None = None


@dataclass
class _Datum:
    tokens: Tensor  # [n, d], one row per graph node
    graph: TokenGraph
    grid_shape: tuple[int, int] | None = None  # set when the map goes back onto a grid
    grid_mask: Tensor | None = None


def _require_sklearn() -> Any:
    try:
        import sklearn
    except ImportError as err:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "fitting a prospector head needs scikit-learn and SciPy: pip install "
            "'hazyzoo[prospector]' (prospecting a fitted head needs only torch)"
        ) from err
    return sklearn


class ProspectorPreTrainedModel(HazyPreTrainedModel):
    """Base class of prospector heads: config class and the (empty, unfitted) state."""

    config_class = ProspectorConfig
    base_model_prefix = "prospector"
    main_input_name = "token_embeddings"
    supports_gradient_checkpointing = False
    _no_split_modules: list[str] = []

    # A head holds statistics, not trainable weights: transformers reads dtype and device from
    # the first parameter, so they come from the kernel buffer instead.
    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the head's statistics (float64 unless cast)."""
        return self.kernel.dtype

    @property
    def device(self) -> torch.device:
        """The device of the head's statistics."""
        return self.kernel.device

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        """An unfitted head: every statistic zero, unit standardisation scales."""
        if isinstance(module, ProspectorModel):
            for name in _BUFFERS:
                init.zeros_(getattr(module, name))
            init.ones_(module.scaler_scale)
            init.zeros_(module.fitted)


class ProspectorModel(ProspectorPreTrainedModel):
    """A prospector head (see the module docstring).

    ``fit(embeddings, labels, graphs)`` learns concepts and kernel; ``prospect(embeddings,
    graph)`` gives per-token attribution maps; ``predict_proba`` / ``predict`` the datum-level
    class; ``forward`` all of them at once. Embeddings are ``[n, d]`` per datum (a sequence,
    or the nodes of an edge-list graph) or ``[H, W, d]`` (a grid; pass a
    :class:`~hazyzoo.modeling.prospector_graphs.GridGraph` with a mask to skip background).
    Labels are 0/1, 1 the class whose evidence the maps locate.
    """

    def __init__(self, config: ProspectorConfig) -> None:
        super().__init__(config)
        k, f = config.num_concepts, config.num_features
        f64 = torch.float64
        self.register_buffer("centroids", torch.zeros(k, config.hidden_size, dtype=f64))
        self.register_buffer("kernel", torch.zeros(f, dtype=f64))
        self.register_buffer("intercept", torch.zeros(1, dtype=f64))
        self.register_buffer("idf", torch.zeros(f, dtype=f64))
        self.register_buffer("scaler_mean", torch.zeros(f, dtype=f64))
        self.register_buffer("scaler_scale", torch.ones(f, dtype=f64))
        # Datum-level logit = calibration[0] * score + calibration[1] (inferential heads).
        self.register_buffer("calibration", torch.zeros(2, dtype=f64))
        # [concepts fitted, kernel fitted] as 0/1 (checkpoint tensors are floating point).
        self.register_buffer("fitted", torch.zeros(2, dtype=f64))
        self.post_init()

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"hidden_size={c.hidden_size}, num_concepts={c.num_concepts}, radius={c.radius}, "
            f"variant={c.variant!r}, fitted={self.is_fitted}"
        )

    # --- properties ----------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`fit_kernel`) has run on this head."""
        return bool(self.fitted[1].item() > 0)

    @property
    def feature_names(self) -> list[str]:
        """The sketch's features: concepts ``"0" .. "k-1"``, then pairs ``"(i, j)"``."""
        return feature_names(self.config.num_concepts, self.config.radius)

    # --- inputs ---------------------------------------------------------------------------
    def _datum(self, embeddings: Any, graph: TokenGraph | None, name: str) -> _Datum:
        """Check one datum and pair its node embeddings with its graph."""
        if not isinstance(embeddings, Tensor) or not embeddings.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {type(embeddings)}")
        d = self.config.hidden_size
        if embeddings.shape[-1] != d or embeddings.ndim not in (2, 3):
            raise ValueError(
                f"{name} must be [n, {d}] or [H, W, {d}] (hidden_size={d}), got shape "
                f"{tuple(embeddings.shape)}"
            )
        if graph is not None and not isinstance(graph, TokenGraph):
            raise TypeError(f"the graph of {name} must be a TokenGraph, got {type(graph).__name__}")
        if embeddings.ndim == 3:
            h, w = embeddings.shape[:2]
            if graph is None:
                if self.config.graph == "edges":
                    raise ValueError(f"{name}: config.graph='edges' needs a graph per datum")
                graph = GridGraph(h, w)
            if not isinstance(graph, GridGraph) or (graph.height, graph.width) != (h, w):
                raise ValueError(
                    f"{name} is a [{h}, {w}, d] grid: its graph must be a GridGraph of "
                    f"{h} x {w}, got {graph!r:.80}"
                )
            tokens = embeddings[graph.mask.to(embeddings.device)]
            return _Datum(tokens, graph, (h, w), graph.mask)
        n = embeddings.shape[0]
        if graph is None:
            if self.config.graph != "sequence":
                raise ValueError(
                    f"{name}: config.graph={self.config.graph!r} needs a graph per datum "
                    f"([n, d] embeddings default to a sequence graph only when graph='sequence')"
                )
            graph = SequenceGraph(n, self.config.sequence_offset) if n else None
        if n == 0:
            raise ValueError(f"{name} has no tokens")
        if graph.num_nodes != n:
            raise ValueError(
                f"the graph of {name} has {graph.num_nodes} nodes but the datum has {n} tokens"
            )
        if isinstance(graph, GridGraph):
            return _Datum(embeddings, graph, (graph.height, graph.width), graph.mask)
        return _Datum(embeddings, graph)

    def _data(self, embeddings: Any, graphs: Any) -> list[_Datum]:
        if isinstance(embeddings, Tensor):
            raise TypeError(
                "embeddings must be a sequence of per-datum tensors (data have different "
                "lengths); wrap a single datum in a list"
            )
        embeddings = list(embeddings)
        if graphs is None:
            graphs = [None] * len(embeddings)
        elif isinstance(graphs, TokenGraph):
            raise TypeError("graphs must be a sequence with one TokenGraph (or None) per datum")
        graphs = list(graphs)
        if len(graphs) != len(embeddings):
            raise ValueError(f"got {len(embeddings)} data but {len(graphs)} graphs")
        return [
            self._datum(e, g, f"embeddings[{i}]")
            for i, (e, g) in enumerate(zip(embeddings, graphs))
        ]

    # --- layer I: concepts ----------------------------------------------------------------
    def fit_concepts(self, tokens: Tensor) -> ProspectorModel:
        """Fit the ``k`` concept centroids by scikit-learn k-means on ``tokens`` ``[N, d]``
        (seeded by ``config.seed``, ``config.kmeans_n_init`` restarts; a seeded subset of
        ``config.kmeans_max_tokens`` rows when set). Float64 tokens are clustered in float64,
        others in float32."""
        _require_sklearn()
        from sklearn.cluster import KMeans

        cfg = self.config
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[1] != cfg.hidden_size:
            raise ValueError(
                f"tokens must be [N, {cfg.hidden_size}], got "
                f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}"
            )
        if tokens.shape[0] < cfg.num_concepts:
            raise ValueError(
                f"num_concepts ({cfg.num_concepts}) is larger than the number of tokens "
                f"({tokens.shape[0]}): k-means needs at least one token per concept"
            )
        if not torch.isfinite(tokens).all():
            raise ValueError("tokens hold NaN or inf")
        data = tokens.detach().cpu()
        data = data.double() if data.dtype == torch.float64 else data.float()
        if cfg.kmeans_max_tokens is not None and data.shape[0] > cfg.kmeans_max_tokens:
            gen = torch.Generator().manual_seed(cfg.seed)
            keep = torch.randperm(data.shape[0], generator=gen)[: cfg.kmeans_max_tokens]
            data = data[keep.sort().values]
        kmeans = KMeans(
            n_clusters=cfg.num_concepts, random_state=cfg.seed, n_init=cfg.kmeans_n_init
        )
        kmeans.fit(data.numpy())
        centers = torch.from_numpy(kmeans.cluster_centers_).to(torch.float64)
        self.centroids.copy_(centers.to(self.centroids.device))
        self.fitted.copy_(torch.tensor([1.0, 0.0]))  # new concepts: any old kernel is stale
        return self

    def assign_concepts(self, tokens: Tensor) -> Tensor:
        """The concept (nearest centroid, squared Euclidean, ties to the lowest index) of each
        row of ``tokens`` ``[N, d]``: int64 ``[N]``. Float64 tokens are compared in float64;
        others in float32 on the ``nearest_code`` kernel (Triton on CUDA)."""
        if tokens.dtype == torch.float64:
            c = self.centroids.to(tokens.device)
            c2 = (c * c).sum(1)
            out = torch.empty(tokens.shape[0], dtype=torch.int64, device=tokens.device)
            for start in range(0, tokens.shape[0], 65536):
                chunk = tokens[start : start + 65536]
                out[start : start + 65536] = torch.addmm(c2, chunk, c.T, alpha=-2.0).argmin(1)
            return out
        from hazyzoo.kernels.nearest_code import nearest_code

        centroids = self.centroids.to(device=tokens.device, dtype=torch.float32)
        return nearest_code(tokens.float(), centroids)[0]

    # --- layer II: sketches and kernel ----------------------------------------------------
    def _sketch_datum(self, datum: _Datum) -> tuple[Tensor, Tensor, Any]:
        """(concepts, counts, (ego pairs, their pair features) or None) of one datum."""
        r, k = self.config.radius, self.config.num_concepts
        concepts = self.assign_concepts(datum.tokens).cpu()
        if r == 0:
            return concepts, sketch(concepts, None, k), None
        pairs = datum.graph.ego_pairs(r)
        features = ego_pair_features(concepts, pairs, k)
        return concepts, sketch(concepts, pairs, k, features), (pairs, features)

    def sketch(self, embeddings: Sequence[Tensor], graphs: Sequence[Any] | None = None) -> Tensor:
        """Raw feature counts ``[B, num_features]`` (float64) of each datum."""
        data = self._data(embeddings, graphs)
        self._require_concepts()
        return torch.stack([self._sketch_datum(d)[1] for d in data])

    def tfidf(self, counts: Tensor) -> Tensor:
        """TF-IDF of sketches ``[B, num_features]`` with this head's fitted IDF."""
        counts = counts.to(torch.float64)
        return counts / counts.sum(1, keepdim=True) * self.idf.to(counts.device)

    def fit_kernel(self, counts: Tensor, labels: Any) -> ProspectorModel:
        """Fit IDF, kernel and datum-level classifier on training sketches ``counts``
        ``[B, num_features]`` (in this row order: the saga solver depends on it) and 0/1
        ``labels``."""
        _require_sklearn()
        cfg = self.config
        counts = torch.as_tensor(counts, dtype=torch.float64).cpu()
        if counts.ndim != 2 or counts.shape[1] != cfg.num_features:
            raise ValueError(
                f"counts must be [B, {cfg.num_features}] (num_features), got {tuple(counts.shape)}"
            )
        y = _check_labels(labels, counts.shape[0])
        if (counts.sum(1) <= 0).any():
            raise ValueError("a sketch with no counts (an empty datum) cannot be TF-IDF weighted")
        n = counts.shape[0]
        docfreq = (counts > 0).sum(0).double()
        idf = torch.log(n / (1.0 + docfreq))
        x = counts / counts.sum(1, keepdim=True) * idf
        if cfg.variant == "predictive":
            kernel, intercept, mean, scale, calib = self._fit_predictive(x, y, idf)
        else:
            kernel, intercept, mean, scale, calib = self._fit_inferential(x, y)
        for name, value in (
            ("idf", idf), ("kernel", kernel), ("intercept", intercept), ("scaler_mean", mean),
            ("scaler_scale", scale), ("calibration", calib), ("fitted", torch.ones(2)),
        ):  # fmt: skip
            buf = getattr(self, name)
            buf.copy_(value.to(device=buf.device, dtype=buf.dtype))
        return self

    def _fit_predictive(self, x: Tensor, y: Tensor, idf: Tensor) -> tuple[Tensor, ...]:
        import sklearn
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        cfg = self.config
        scaler = StandardScaler().fit(x.numpy())
        z = scaler.transform(x.numpy())
        kwargs: dict[str, Any] = dict(
            C=cfg.C, l1_ratio=cfg.l1_ratio, solver="saga", random_state=cfg.seed,
            max_iter=cfg.max_iter,
        )  # fmt: skip
        if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) < (1, 8):
            kwargs["penalty"] = "elasticnet"  # scikit-learn < 1.8 needs it spelled out
        model = LogisticRegression(**kwargs).fit(z, y.numpy())
        kernel = torch.from_numpy(model.coef_[0].copy())
        flipped = (kernel != 0) & (idf < 0)
        if flipped.any():
            names = [self.feature_names[i] for i in flipped.nonzero().flatten().tolist()]
            logger.warning(
                "prospector (predictive): features %s occur in every training datum, so their "
                "IDF ln(n / (1 + n)) is negative and their TF-IDF runs opposite to their counts; "
                "the map sums raw kernel weights per occurrence, so on these features it reads "
                "reversed (the reference does the same). More concepts, or the inferential "
                "variant, avoid it.",
                names[:8],
            )
        intercept = torch.from_numpy(model.intercept_.copy())
        mean = torch.from_numpy(scaler.mean_.copy())
        scale = torch.from_numpy(scaler.scale_.copy())
        return kernel, intercept, mean, scale, torch.tensor([1.0, 0.0])

    def _fit_inferential(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        from scipy.stats import mannwhitneyu
        from sklearn.linear_model import LogisticRegression

        cfg = self.config
        pos, neg = x[y == 1], x[y == 0]
        fold = torch.log2((pos.mean(0) + FOLD_CHANGE_EPS) / (neg.mean(0) + FOLD_CHANGE_EPS))
        p = torch.from_numpy(mannwhitneyu(pos.numpy(), neg.numpy(), axis=0).pvalue)
        p = torch.nan_to_num(p, nan=1.0)  # a feature equal in every datum: no evidence
        keep = (p * x.shape[1] <= cfg.alpha) & (fold.abs() >= cfg.tau)
        kernel = torch.where(keep, fold, torch.zeros_like(fold))
        # Datum-level prediction: a one-feature logistic regression on the kernel score.
        score = (x @ kernel).numpy()[:, None]
        if score.std() > 0:
            calib_model = LogisticRegression(C=1e6).fit(score, y.numpy())
            calib = torch.tensor([calib_model.coef_[0, 0], calib_model.intercept_[0]])
        else:  # an all-zero kernel: predict the class prior
            prior = y.double().mean().item()
            calib = torch.tensor([0.0, math.log(prior / (1 - prior))])
        f = x.shape[1]
        zeros, ones = torch.zeros(f, dtype=torch.float64), torch.ones(f, dtype=torch.float64)
        return kernel, torch.zeros(1, dtype=torch.float64), zeros, ones, calib

    def fit(
        self,
        embeddings: Sequence[Tensor],
        labels: Any,
        graphs: Sequence[Any] | None = None,
    ) -> ProspectorModel:
        """Fit concepts (k-means over every token of every datum, in datum order) and kernel.

        Args:
            embeddings: One tensor per datum, ``[n, hidden_size]`` or ``[H, W, hidden_size]``.
            labels: 0/1 per datum (both classes present).
            graphs: One :class:`~hazyzoo.modeling.prospector_graphs.TokenGraph` (or None, for
                ``config.graph``'s default) per datum.

        Returns:
            ``self``, fitted. The same data and seed give the same head.
        """
        data = self._data(embeddings, graphs)
        _check_labels(labels, len(data))
        self.fit_concepts(torch.cat([d.tokens.detach().cpu() for d in data]))
        counts = torch.stack([self._sketch_datum(d)[1] for d in data])
        return self.fit_kernel(counts, labels)

    # --- prospecting and prediction -------------------------------------------------------
    def _require_concepts(self) -> None:
        if not self.fitted[0].item() > 0:
            raise RuntimeError("this prospector head has no concepts yet: call fit() first")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("this prospector head is not fitted: call fit() first")

    def _logits(self, counts: Tensor) -> Tensor:
        x = self.tfidf(counts)
        z = (x - self.scaler_mean) / self.scaler_scale
        score = z @ self.kernel + self.intercept
        return self.calibration[0] * score + self.calibration[1] if self._inferential else score

    @property
    def _inferential(self) -> bool:
        return self.config.variant == "inferential"

    def _map(self, datum: _Datum, concepts: Tensor, pairs: Any) -> Tensor:
        ego, features = pairs if pairs is not None else (None, None)
        scores = prospect_map(concepts, ego, self.kernel.cpu(), self.config.num_concepts, features)
        if datum.grid_shape is None:
            return scores
        grid = torch.full(datum.grid_shape, float("nan"), dtype=scores.dtype)
        grid[datum.grid_mask] = scores
        return grid

    @torch.no_grad()
    def forward(
        self,
        token_embeddings: Sequence[Tensor] | Tensor,
        graphs: Sequence[Any] | TokenGraph | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> ProspectorOutput | tuple:
        """Maps, concepts, sketches and datum-level logits of a datum (a tensor) or of a
        sequence of data."""
        self._require_fitted()
        if isinstance(token_embeddings, Tensor):
            token_embeddings = [token_embeddings]
            graphs = [graphs] if graphs is None or isinstance(graphs, TokenGraph) else graphs
        data = self._data(token_embeddings, graphs)
        maps, concepts, counts = [], [], []
        for datum in data:
            c, x, pairs = self._sketch_datum(datum)
            maps.append(self._map(datum, c, pairs))
            concepts.append(c)
            counts.append(x)
        sketches = torch.stack(counts)
        logits = self._logits(sketches.to(self.kernel.device))
        out = ProspectorOutput(
            attributions=maps,
            concepts=concepts,
            sketches=sketches,
            logits=logits,
            probabilities=torch.sigmoid(logits),
        )
        if return_dict is None:
            return_dict = bool(getattr(self.config, "return_dict", True))
        return out if return_dict else out.to_tuple()

    def prospect(self, embeddings: Tensor, graph: TokenGraph | None = None) -> Tensor:
        """The attribution map of one datum: ``[n]`` (sequence, edge list) or ``[H, W]`` with
        NaN on background (grid); float64 raw kernel sums, higher = more class-1 evidence."""
        return self.forward(embeddings, graph).attributions[0]

    def predict_proba(
        self, embeddings: Sequence[Tensor], graphs: Sequence[Any] | None = None
    ) -> Tensor:
        """Probability of class 1 per datum, ``[B]``."""
        return self.forward(list(embeddings), graphs).probabilities

    def predict(self, embeddings: Sequence[Tensor], graphs: Sequence[Any] | None = None) -> Tensor:
        """Predicted class (0/1) per datum, ``[B]`` int64."""
        return (self.predict_proba(embeddings, graphs) > 0.5).long()

    def example_inputs(self, batch_size: int = 2, seq_len: int = 8, seed: int = 0) -> dict:
        """Random ``[seq_len, hidden_size]`` token embeddings for ``batch_size`` data."""
        gen = torch.Generator().manual_seed(seed)
        data = [
            torch.randn(seq_len, self.config.hidden_size, generator=gen) for _ in range(batch_size)
        ]
        return {"token_embeddings": data}


def _check_labels(labels: Any, count: int) -> Tensor:
    """0/1 labels as int64 ``[count]``; both classes must be present."""
    y = torch.as_tensor(labels)
    if y.dtype == torch.bool:
        y = y.long()
    if y.is_floating_point() or y.is_complex():
        if not torch.equal(y, y.round()):
            raise TypeError(f"labels must be integers 0/1, got {y.dtype} values")
    y = y.long().reshape(-1)
    if y.numel() != count:
        raise ValueError(f"got {count} data but {y.numel()} labels")
    bad = y[(y != 0) & (y != 1)]
    if bad.numel():
        raise ValueError(
            f"labels must be 0 or 1 (1: the class the maps locate), got {bad[0].item()}; "
            "for a multi-class label pass (labels == target_class)"
        )
    if y.unique().numel() < 2:
        raise ValueError(f"labels hold a single class ({y[0].item()}): fitting needs both 0 and 1")
    return y


# Public graph classes next to the model, for ``from hazyzoo.modeling.modeling_prospector import``.
__all__ += ["EdgeListGraph", "GridGraph", "SequenceGraph", "TokenGraph"]
