"""Configuration of M2-BERT: the Monarch Mixer BERT encoder (long-context retrieval).

M2-BERT ("Monarch Mixer", Fu et al. 2023; "Benchmarking and Building Long-Context Retrieval
Models with LoCo and M2-BERT", Saad-Falcon et al. 2024) replaces BERT's attention with a gated
bidirectional long convolution (implicit Hyena filters) and its MLP with a GLU whose matrices
are block diagonal, so a layer costs O(L log L) in the sequence length: the released retrieval
encoders read 2k, 8k and 32k tokens.

:class:`M2BertConfig` accepts every key of the released ``config.json`` files (the reference
``BertConfig`` of HazyResearch/m2, ``bert/src/configuration_bert.py``), so a released config
loads as is; keys that only select the reference's optional CUDA kernels or optimizer
settings are kept (and round-trip) but change nothing in the forward, and settings the
released models never use (attention sequence mixing, ALiBi, token planting) are refused with
an error naming them.
"""

from __future__ import annotations

from typing import Any

from transformers.activations import ACT2FN

from hazyzoo.configuration.base import HazyConfig
from hazyzoo.validation import (
    check_bool,
    check_choice,
    check_divides,
    check_float,
    check_int,
    check_positive,
    check_token_id,
)

# The released retrieval encoders (togethercomputer/m2-bert-80M-{2k,8k,32k}-retrieval): BERT-base
# widths (768, 12 layers, 3072), bert-base-uncased's vocabulary padded to a multiple of 8,
# Monarch MLP with 4 blocks, Hyena filters of order 128 over 5 positional features. The three
# differ only in their maximum length.
_RELEASED = dict(
    vocab_size=30528,
    hidden_size=768,
    num_hidden_layers=12,
    intermediate_size=3072,
    hidden_dropout_prob=0.1,
    hyena_filter_order=128,
    hyena_emb_dim=5,
    monarch_mlp_nblocks=4,
)
M2BERT_PRESETS: dict[str, dict[str, Any]] = {
    f"m2-bert-80M-{name}-retrieval": dict(
        _RELEASED,
        max_position_embeddings=length,
        long_conv_l_max=length,
        alibi_starting_size=length,
    )
    for name, length in (("2k", 2048), ("8k", 8192), ("32k", 32768))
}


class M2BertConfig(HazyConfig):
    r"""Configuration for :class:`~hazyzoo.M2BertModel`, :class:`~hazyzoo.M2BertForTextEncoding`
    and :class:`~hazyzoo.M2BertForMaskedLM`.

    Defaults give the 80M 32k-token retrieval encoder (``m2-bert-80M-32k-retrieval``);
    :meth:`from_preset` gives the 2k and 8k ones.

    Each layer is ``h = MLP(mixer(h))``: the Monarch Mixer sequence mixer (``in_linear`` to
    ``3 d``, a width-3 causal depthwise convolution, ``hyena(v * x1) * x2 + hyena2(u)``,
    ``out_linear``), then the MLP block ``LayerNorm(wo(GELU(a) * b) + mixer_output)``.

    Padding (``padding_invariant``): the released models never read the attention mask: padding
    tokens (id ``pad_token_id``) pass through every layer as ordinary tokens, the long
    convolutions mix them into the real positions, and the embedding is the pooler of position
    0. They were trained and are meant to be used with inputs padded to
    ``max_position_embeddings`` (``padding="max_length"``); the same text padded to another
    length gives another embedding. ``False`` (the default, what converted checkpoints use)
    reproduces that exactly. ``True`` makes padding invisible: positions where the attention
    mask is 0 are zeroed before every convolution, position ids count real tokens, and the
    pooler reads the first real token, so a text gives the same embedding whatever padding
    precedes or follows it (up to float rounding of the FFT size). Real tokens must then form
    one contiguous run per row.

    Args:
        vocab_size, hidden_size, num_hidden_layers, intermediate_size, hidden_act,
        hidden_dropout_prob, max_position_embeddings, type_vocab_size, initializer_range,
        layer_norm_eps, pad_token_id: as in BERT. ``hidden_act`` is the masked-LM head's
        activation; the MLPs use exact GELU as the reference does. ``hidden_dropout_prob``
        applies after the embeddings and inside every MLP.
        num_attention_heads, attention_probs_dropout_prob, alibi_starting_size: released keys
            of the attention variant; kept for compatibility, unused (there is no attention).
        position_embedding_type: ``"absolute"`` (the only kind the released models use).
        monarch_mixer_sequence_mixing: must be True (the attention variant is not M2).
        long_conv_l_max: Length the Hyena filters' positional features are defined for; inputs
            may be at most ``min(long_conv_l_max, max_position_embeddings)`` long.
        hyena_filter_order: Width of the filter MLPs.
        hyena_emb_dim: Number of positional features (odd, >= 3: time plus cosine/sine bands).
        hyena_w: Initial frequency of the filters' sine activations.
        hyena_w_mod: Fixed multiplier of those frequencies (``sin(w_mod * freq * x)``).
        hyena_filter_dropout: Released key; the reference never applies it (nor does hazyzoo).
        hyena_training_additions: The reference's extra LayerNorm on each mixer's input.
        bidirectional: Add the anti-causal Hyena kernel (True in every released model).
        residual_long_conv: The second long convolution of the mixer's input (``filter_fn2``).
        use_glu_mlp: GLU MLP (``GELU(a) * b``) rather than a plain GELU MLP.
        use_monarch_mlp, monarch_mlp_nblocks: block-diagonal MLP matrices with that many blocks
            (False: dense).
        use_positional_encodings: Learned absolute position embeddings.
        pool_all: Pool the mean of the real tokens (by the mask) instead of the first token.
        use_cls_token: ``M2BertForTextEncoding``'s embedding is the first token's last hidden
            state instead of the pooler output.
        long_conv_kernel_learning_rate, hyena_lr_pos_emb, hyena_wd: The reference's optimizer
            settings for the filters (see ``M2BertPreTrainedModel.optimizer_parameter_groups``).
        use_flash_mm, use_flash_fft: The reference's optional CUDA kernels; here kernels are
            chosen by ``hazyzoo.kernels`` dispatch, so these change nothing.
        sequence_token_planting: Must be False (a reference training experiment).
        padding_invariant: See "Padding" above.
        normalize_embeddings: ``M2BertForTextEncoding`` returns L2-normalised embeddings.
        tie_word_embeddings: Tie the masked-LM decoder to the word embeddings.
        use_cache: Kept for transformers (its ``Trainer`` sets it); an encoder has no cache.
    """

    model_type = "hazyzoo_m2bert"

    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 32768
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    position_embedding_type: str = "absolute"
    alibi_starting_size: int = 32768
    monarch_mixer_sequence_mixing: bool = True
    long_conv_l_max: int = 32768
    long_conv_kernel_learning_rate: float | None = 1e-3
    hyena_lr_pos_emb: float | None = 1e-5
    hyena_w: float = 10.0
    hyena_w_mod: float = 1.0
    hyena_wd: float = 0.1
    hyena_emb_dim: int = 5
    hyena_filter_order: int = 128
    hyena_filter_dropout: float = 0.2
    hyena_training_additions: bool = False
    bidirectional: bool = True
    residual_long_conv: bool = True
    use_glu_mlp: bool = True
    use_monarch_mlp: bool = True
    monarch_mlp_nblocks: int = 4
    use_positional_encodings: bool = True
    pool_all: bool = False
    use_cls_token: bool = False
    use_flash_mm: bool = False
    use_flash_fft: bool = False
    sequence_token_planting: bool = False
    padding_invariant: bool = False
    normalize_embeddings: bool = False
    tie_word_embeddings: bool = True
    use_cache: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.check_architecture()

    def check_architecture(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the field when a value is wrong."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "long_conv_l_max",
            "hyena_filter_order",
            "alibi_starting_size",
        ):
            check_positive(self, name)
        check_int(self, "hyena_emb_dim", minimum=3)
        if self.hyena_emb_dim % 2 == 0:
            raise ValueError(
                f"hyena_emb_dim must be odd (time plus cosine/sine pairs), got {self.hyena_emb_dim}"
            )
        for name in (
            "monarch_mixer_sequence_mixing",
            "hyena_training_additions",
            "bidirectional",
            "residual_long_conv",
            "use_glu_mlp",
            "use_monarch_mlp",
            "use_positional_encodings",
            "pool_all",
            "use_cls_token",
            "use_flash_mm",
            "use_flash_fft",
            "sequence_token_planting",
            "padding_invariant",
            "normalize_embeddings",
            "tie_word_embeddings",
            "use_cache",
        ):
            check_bool(self, name)
        if not self.monarch_mixer_sequence_mixing:
            raise ValueError(
                "monarch_mixer_sequence_mixing=False selects the reference's attention BERT, "
                "which is not M2-BERT; hazyzoo implements the Monarch Mixer sequence mixer only "
                "(use transformers' BertModel for an attention encoder)"
            )
        if self.sequence_token_planting:
            raise ValueError(
                "sequence_token_planting=True (the reference's experiment that overwrites every "
                "128th input id with 101) is not supported; the released models set it False"
            )
        check_choice(self, "position_embedding_type", ("absolute",))
        check_choice(self, "hidden_act", sorted(ACT2FN))
        if self.use_monarch_mlp:
            check_positive(self, "monarch_mlp_nblocks")
            check_divides(self, "hidden_size", "monarch_mlp_nblocks")
            check_divides(self, "intermediate_size", "monarch_mlp_nblocks")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            check_float(self, name, ge=0, lt=1)
        check_float(self, "hyena_filter_dropout", ge=0, lt=1)
        check_float(self, "layer_norm_eps", gt=0)
        check_float(self, "initializer_range", ge=0)
        check_float(self, "hyena_w", gt=0)
        check_float(self, "hyena_w_mod", gt=0)
        check_float(self, "hyena_wd", ge=0)
        for name in ("long_conv_kernel_learning_rate", "hyena_lr_pos_emb"):
            check_float(self, name, ge=0, allow_none=True)
        for name in ("pad_token_id", "bos_token_id"):
            check_token_id(self, name, self.vocab_size)
        check_token_id(self, "eos_token_id", self.vocab_size, allow_list=True)

    @property
    def max_input_length(self) -> int:
        """The longest input the model reads: the filters' length, and the position table's
        when there are position embeddings."""
        if self.use_positional_encodings:
            return min(self.long_conv_l_max, self.max_position_embeddings)
        return self.long_conv_l_max

    @classmethod
    def tiny(cls, **overrides: Any) -> M2BertConfig:
        """A 2-layer model small enough for CPU tests (the golden model's shape: 32 wide, 64
        positions, 4 Monarch blocks, filters of order 16 over 5 features)."""
        defaults = dict(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            long_conv_l_max=64,
            alibi_starting_size=64,
            hyena_filter_order=16,
            hidden_dropout_prob=0.0,
        )
        return cls(**{**defaults, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> M2BertConfig:
        """Build the configuration of a released size (see ``M2BERT_PRESETS``)."""
        if name not in M2BERT_PRESETS:
            raise ValueError(
                f"unknown M2-BERT preset {name!r}; choose from {sorted(M2BERT_PRESETS)}"
            )
        return cls(**{**M2BERT_PRESETS[name], **overrides})
