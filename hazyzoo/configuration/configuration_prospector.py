"""Configuration of a prospector head (Machiraju et al.): a feature-attribution head over the
frozen token embeddings of any encoder."""

from __future__ import annotations

from typing import Any

from hazyzoo.configuration.base import HazyConfig
from hazyzoo.validation import check_choice, check_float, check_int, check_positive

__all__ = ["GRAPH_KINDS", "VARIANTS", "ProspectorConfig"]

VARIANTS = ("predictive", "inferential")
GRAPH_KINDS = ("sequence", "grid", "edges")


class ProspectorConfig(HazyConfig):
    r"""Configuration of :class:`~hazyzoo.ProspectorModel`.

    Args:
        hidden_size: Width of the token embeddings the head reads (the encoder's hidden size).
        num_concepts: ``k``, the number of concepts (k-means clusters of token embeddings).
        radius: ``r``, hops of the ego graph over which concept pairs are counted and the
            kernel is convolved (0: concepts only, no pairs).
        graph: The token graph :meth:`~hazyzoo.ProspectorModel.prospect` builds when given
            none: ``"sequence"`` (``[n, d]`` embeddings; token ``i`` linked to the tokens
            within ``sequence_offset`` positions), ``"grid"`` (``[H, W, d]`` embeddings, the
            8-neighbourhood, background tokens skipped) or ``"edges"`` (a graph must always be
            passed).
        sequence_offset: Neighbours of a token in a sequence graph (2 in the text setting).
        variant: ``"predictive"`` (standardised TF-IDF sketches, elastic-net logistic
            regression) or ``"inferential"`` (log2 fold change of the class means of the
            TF-IDF sketches, masked by a Bonferroni-corrected Mann-Whitney test and ``tau``).
        l1_ratio: Elastic-net mixing of the predictive fit (scikit-learn's ``l1_ratio``; the
            paper's lambda): 0 is ridge, 1 is lasso.
        C: Inverse regularisation strength of the predictive fit.
        max_iter: Iterations of the predictive fit's saga solver.
        alpha: Family-wise significance level of the inferential fit: a feature is kept when
            its Mann-Whitney p-value times the number of features is at most ``alpha``.
        tau: Minimum absolute log2 fold change kept by the inferential fit.
        kmeans_n_init: k-means restarts.
        kmeans_max_tokens: Fit k-means on a seeded random subset of at most this many tokens
            (None: all tokens).
        seed: Seed of k-means, the subset and the saga solver.
    """

    model_type = "hazyzoo_prospector"

    hidden_size: int = 768
    num_concepts: int = 8
    radius: int = 1
    graph: str = "sequence"
    sequence_offset: int = 2
    variant: str = "inferential"
    l1_ratio: float = 0.5
    C: float = 1.0
    max_iter: int = 3000
    alpha: float = 0.05
    tau: float = 1.0
    kmeans_n_init: int = 10
    kmeans_max_tokens: int | None = None
    seed: int = 0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.check_architecture()

    def check_architecture(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the field when a value is wrong."""
        for name in ("hidden_size", "num_concepts", "sequence_offset", "max_iter"):
            check_positive(self, name)
        check_positive(self, "kmeans_n_init")
        check_int(self, "radius", minimum=0)
        check_int(self, "seed", minimum=0)
        check_int(self, "kmeans_max_tokens", minimum=1, allow_none=True)
        if self.kmeans_max_tokens is not None and self.kmeans_max_tokens < self.num_concepts:
            raise ValueError(
                f"kmeans_max_tokens ({self.kmeans_max_tokens}) must be at least num_concepts "
                f"({self.num_concepts})"
            )
        check_choice(self, "graph", GRAPH_KINDS)
        check_choice(self, "variant", VARIANTS)
        check_float(self, "l1_ratio", ge=0, le=1)
        check_float(self, "C", gt=0)
        check_float(self, "alpha", gt=0)
        check_float(self, "tau", ge=0)

    @property
    def num_features(self) -> int:
        """Length of a sketch: ``k`` concepts, plus ``k (k + 1) / 2`` pairs when ``radius >= 1``."""
        k = self.num_concepts
        return k if self.radius == 0 else k + k * (k + 1) // 2

    @classmethod
    def tiny(cls, **overrides: Any) -> ProspectorConfig:
        """A small head for CPU tests: 6-wide embeddings, 4 concepts, radius 1."""
        return cls(**{"hidden_size": 6, "num_concepts": 4, "radius": 1, **overrides})
