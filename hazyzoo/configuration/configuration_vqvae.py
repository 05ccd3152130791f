"""Configuration of the VQ-VAE: a convolutional image autoencoder with a vector-quantized
bottleneck whose gradient estimator is a switch (straight-through or the rotation trick)."""

from __future__ import annotations

from typing import Any

from hazyzoo.configuration.base import HazyConfig
from hazyzoo.modeling.quantizer import DISTANCES, GRADIENT_ESTIMATORS
from hazyzoo.validation import check_bool, check_choice, check_float, check_int, check_positive

__all__ = ["VQVAEConfig"]


class VQVAEConfig(HazyConfig):
    r"""Configuration of :class:`~hazyzoo.VQVAEModel`.

    Args:
        in_channels: Image channels (1 for grey levels, 3 for RGB).
        channels: Width of each encoder stage; every stage after the first starts with a
            stride-2 convolution, so the latent grid is ``2 ** (len(channels) - 1)`` times
            smaller than the image (``downsampling_factor``). The decoder mirrors it.
        num_res_blocks: Residual blocks (GroupNorm, SiLU, 3x3 conv, twice) per stage.
        codebook_size: Number of codes.
        codebook_dim: Width of the latents and the codes.
        gradient_estimator: ``"ste"``, ``"rotation"`` or ``"rotation_vqgan"``.
        distance: ``"euclidean"`` or ``"cosine"`` nearest-code search.
        commitment_weight: Weight of the commitment loss.
        use_ema: Learn the codebook by EMA (else by the codebook loss).
        decay: EMA decay.
        kmeans_init: Initialise the codebook by k-means on the first training batch.
        threshold_ema_dead_code: Restart codes whose EMA count falls below this (0: never).
        norm_groups: Groups of every GroupNorm (must divide every stage width).
        initializer_range: Kept for transformers' conventions (convolutions use PyTorch's
            default init).
        use_cache: Unused (the model keeps no cache); ``Trainer`` writes it.
    """

    model_type = "hazyzoo_vqvae"

    in_channels: int = 3
    channels: list | None = None
    num_res_blocks: int = 2
    codebook_size: int = 512
    codebook_dim: int = 64
    gradient_estimator: str = "rotation"
    distance: str = "euclidean"
    commitment_weight: float = 0.25
    use_ema: bool = True
    decay: float = 0.99
    kmeans_init: bool = False
    threshold_ema_dead_code: float = 0.0
    norm_groups: int = 8
    initializer_range: float = 0.02
    use_cache: bool = False  # no cache; present because transformers' Trainer sets it

    def __post_init__(self, **kwargs: Any) -> None:
        if self.channels is None:
            self.channels = [64, 128]
        super().__post_init__(**kwargs)
        self.check_architecture()

    @property
    def downsampling_factor(self) -> int:
        """How many image pixels per latent position along each side."""
        return 2 ** (len(self.channels) - 1)

    def check_architecture(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the field when a value is wrong."""
        for name in ("in_channels", "codebook_size", "codebook_dim", "norm_groups"):
            check_positive(self, name)
        check_int(self, "num_res_blocks", minimum=0)
        if (
            not isinstance(self.channels, (list, tuple))
            or not self.channels
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.channels)
        ):
            raise ValueError(
                f"channels must be a non-empty list of positive ints, got {self.channels!r}"
            )
        bad = [c for c in (*self.channels, self.codebook_dim) if c % self.norm_groups]
        if bad:
            raise ValueError(
                f"norm_groups ({self.norm_groups}) must divide every stage width and "
                f"codebook_dim; it does not divide {bad}"
            )
        check_choice(self, "gradient_estimator", GRADIENT_ESTIMATORS)
        check_choice(self, "distance", DISTANCES)
        check_float(self, "commitment_weight", ge=0)
        check_float(self, "decay", ge=0, lt=1)
        check_float(self, "threshold_ema_dead_code", ge=0)
        check_float(self, "initializer_range", ge=0)
        for name in ("use_ema", "kmeans_init"):
            check_bool(self, name)
        if self.threshold_ema_dead_code > 0 and not self.use_ema:
            raise ValueError("threshold_ema_dead_code needs use_ema=True")

    @classmethod
    def tiny(cls, **overrides: Any) -> VQVAEConfig:
        """A small model for CPU tests: grey 8x8 images to a 4x4 grid of 32 codes of width 8."""
        defaults = dict(
            in_channels=1, channels=[8, 16], num_res_blocks=1, codebook_size=32, codebook_dim=8,
            norm_groups=4,
        )  # fmt: skip
        return cls(**{**defaults, **overrides})
