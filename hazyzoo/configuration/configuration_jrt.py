"""Configuration of JRT-RNN: BASED's stack with prefix linear attention.

JRT-RNN ("Just read twice: closing the recall gap for recurrent language models", Arora et al.
2024) keeps BASED's layout (gated short convolutions, sliding-window attention, Taylor linear
attention) but makes each linear-attention layer a *prefix* linear attention
(``prefix_linear_attention``): the first ``enc_length`` tokens are also read non-causally through
separate encoder key/value projections, whose state joins the causal linear-attention state
once; after the prefix, decoding is recurrent with a fixed-size state.
"""

from __future__ import annotations

from typing import Any

from hazyzoo.configuration.configuration_based import BASED_PRESETS, BasedConfig
from hazyzoo.validation import check_bool, check_float, check_positive, check_token_id

MIXER_PREFIX_LINEAR_ATTENTION = "prefix_linear_attention"
# What the two mask semantics mean (see JrtConfig.mask_semantics).
MASK_SEMANTICS = ("exact", "reference")

# The released sizes (hazyresearch/JRT-360M-30B and JRT-1B-50B), from the reference configs:
# BASED's shapes and layer indices, 26 layers at 360M, enc_length 1024 of a 2048 context, and
# the mask token 50263 (the last id of GPT-2's vocabulary padded to 50264).
JRT_PRESETS: dict[str, dict[str, Any]] = {
    "jrt-360m": {
        **BASED_PRESETS["based-360m"],
        "num_hidden_layers": 26,
        "enc_length": 1024,
        "mask_token_id": 50263,
    },
    "jrt-1.3b": {**BASED_PRESETS["based-1.3b"], "enc_length": 1024, "mask_token_id": 50263},
}


class JrtConfig(BasedConfig):
    r"""Configuration for :class:`~hazyzoo.JrtModel` and :class:`~hazyzoo.JrtForCausalLM`.

    Every field of :class:`~hazyzoo.BasedConfig` keeps its meaning, except that the layers in
    ``linear_attention_layers`` are prefix linear attention. Defaults give the released 360M
    model (26 layers); :meth:`from_preset` gives ``jrt-360m`` and ``jrt-1.3b``.

    The prefix: the first call on an empty cache (a forward without cache, or generate's
    prefill) reads each row's first ``enc_length`` tokens non-causally; a shorter input is the
    whole prefix. Later calls on that cache are causal (the prefix state is already in the
    recurrent state). ``generate`` widens ``prefill_chunk_size`` so the first chunk holds every
    row's prefix.

    Args:
        enc_length: Length of the non-causal prefix (1024 in the released models).
        mask_semantics: How padding is treated. ``"exact"`` (default): padding is invisible
            everywhere (pads add nothing to any sum, positions count real tokens, and the
            prefix is each row's first ``enc_length`` real tokens), so left-padded batches equal
            one-by-one runs. ``"reference"``: the released code's behaviour, which the converter
            sets for parity: only the prefix layers read the mask, and only when
            ``1 < L <= enc_length``, by zeroing the projected keys of pad positions before the
            feature map (each pad still adds 1 to the normaliser and its value to the sum);
            for longer inputs the mask is ignored; other layers treat pads as tokens and
            positions count from the first (pad) token.
        mask_token_id: The token that replaces masked prefix tokens in the masked-LM objective
            (:class:`~hazyzoo.JrtDataCollator`); must be inside the vocabulary.
        mlm_loss_weight: Weight of the masked-LM loss added to the next-token loss when
            ``mlm_labels`` are passed (0.25 in the paper).
        mlm_probability: Fraction of prefix tokens the collator masks (0.15 in the paper).
        loss_on_prefix: Whether next-token targets inside each row's prefix count in the loss.
            False (the JRT objective): positions inside the prefix see later prefix tokens, so
            predicting them is trivial and only targets after the prefix are scored.
    """

    model_type = "hazyzoo_jrt"

    num_hidden_layers: int = 26
    enc_length: int = 1024
    mask_semantics: str = "exact"
    mask_token_id: int | None = 50263
    mlm_loss_weight: float = 0.25
    mlm_probability: float = 0.15
    loss_on_prefix: bool = False

    def check_architecture(self) -> None:
        """BASED's checks, plus the prefix fields (named in every error)."""
        super().check_architecture()
        check_positive(self, "enc_length")
        if not isinstance(self.mask_semantics, str):
            raise TypeError(
                f"mask_semantics must be a string, got {type(self.mask_semantics).__name__}"
            )
        if self.mask_semantics not in MASK_SEMANTICS:
            raise ValueError(
                f"mask_semantics must be one of {MASK_SEMANTICS}, got {self.mask_semantics!r}"
            )
        check_token_id(self, "mask_token_id", self.vocab_size)
        check_float(self, "mlm_loss_weight", ge=0)
        check_float(self, "mlm_probability", ge=0)
        if self.mlm_probability > 1:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        check_bool(self, "loss_on_prefix")

    @property
    def mixer_types(self) -> list[str]:
        """The sequence mixer of each layer: BASED's, with prefix linear attention."""
        return [
            MIXER_PREFIX_LINEAR_ATTENTION if kind == "linear_attention" else kind
            for kind in super().mixer_types
        ]

    @classmethod
    def tiny(cls, **overrides: Any) -> JrtConfig:
        """BASED's tiny 4-layer model with a 4-token prefix and the last id as mask token."""
        base = dict(vocab_size=61, enc_length=4, mask_token_id=60)
        return super().tiny(**{**base, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> JrtConfig:
        """Build the configuration of a released size (``jrt-360m``, ``jrt-1.3b``)."""
        if name not in JRT_PRESETS:
            raise ValueError(f"unknown JRT preset {name!r}; choose from {sorted(JRT_PRESETS)}")
        return cls(**{**JRT_PRESETS[name], **overrides})
