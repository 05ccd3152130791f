"""Configuration of RTF: the rational-transfer-function state-space model.

RTF ("State-free inference of state-space models: the transfer function approach", Parnichkun
et al., ICML 2024) gives each channel the transfer function ``H(z) = h0 + B(z) / A(z)`` of an
order-``state_size`` SSM; the convolution kernel's spectrum is one FFT of the coefficients, so
training and prefill cost O(L log L) whatever the state size. Each layer of the shared stack
is one ``rtf`` mixer (the reference's LRA block: RTF convolution, GELU, a GLU output linear)
followed by a channel mixer (an MLP in the language models, none in the LRA classifiers).
"""

from __future__ import annotations

from typing import Any

from hazyzoo.configuration.base import HazyConfig
from hazyzoo.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_positive,
    check_token_id,
)

MIXER_RTF = "rtf"
RTF_INITS = ("zeros", "xavier", "montel")
RTF_CONSTRAINTS = ("no", "l1_montel")
RTF_CONVENTIONS = ("rtf", "rtf2")
RTF_ACTIVATIONS = ("gelu", "silu", "identity")
RTF_CHANNEL_MIXERS = ("mlp", "swiglu", "none")
RTF_NORMS = ("layer_norm", "rms_norm")
RTF_POOLINGS = ("mean", "last")

# Sizes. ``rtf-wt103``: the paper's WikiText-103 width, depth, state size and filter settings
# (768 wide, 12 layers, state 64, l1_montel, xavier, 1024-token context) with the RTF layer as
# the sequence mixer of each block (the paper's model used RTF as Hyena's long filter instead).
# ``rtf-lra-*``: the reference's Long Range Arena configs (experiments/state-spaces/configs/
# experiment/lra/rtf-*.yaml): bidirectional, no channel mixer, the wrapper's default init
# ("zeros") and constraint ("no").
RTF_PRESETS: dict[str, dict[str, Any]] = {
    "rtf-wt103": dict(
        vocab_size=50264,
        bos_token_id=50256,
        eos_token_id=50256,
        hidden_size=768,
        num_hidden_layers=12,
        intermediate_size=3072,
        state_size=64,
        trunc_len=1024,
        init="xavier",
        constraint="l1_montel",
    ),
    "rtf-lra-listops": dict(
        vocab_size=20,
        hidden_size=256,
        num_hidden_layers=6,
        state_size=4,
        trunc_len=2048,
        num_a=1,
        bidirectional=True,
        channel_mixer="none",
        init="zeros",
        constraint="no",
        use_cache=False,
        num_labels=10,
    ),
    "rtf-lra-imdb": dict(
        vocab_size=256,
        hidden_size=256,
        num_hidden_layers=6,
        state_size=4,
        trunc_len=4096,
        num_a=1,
        bidirectional=True,
        channel_mixer="none",
        init="zeros",
        constraint="no",
        dropout=0.1,
        use_cache=False,
        num_labels=2,
    ),
}


class RtfConfig(HazyConfig):
    r"""Configuration for :class:`~hazyzoo.RtfModel`, :class:`~hazyzoo.RtfForCausalLM` and
    :class:`~hazyzoo.RtfForSequenceClassification`.

    Defaults give the ``rtf-wt103`` language model; :meth:`from_preset` gives the named sizes.
    Every field is checked when the config is built and when a model is built from it.

    Args:
        vocab_size: Vocabulary size.
        hidden_size: Width of the residual stream = the number of RTF channels per layer.
        num_hidden_layers: Number of pre-norm blocks (``rtf`` mixer, then the channel mixer).
        intermediate_size: Inner width of the channel mixer.
        channel_mixer: ``"mlp"`` (GELU MLP), ``"swiglu"`` or ``"none"`` (the LRA blocks).
        state_size: Order N of each channel's transfer function (the state size of the
            recurrent form). Kernel generation costs the same for every N.
        trunc_len: Longest input one call reads (the kernel is computed on an FFT grid of
            ``trunc_len`` rounded up to even points); must exceed ``state_size``. A cache
            continues past it: decoding is recurrent and has no length limit.
        num_a: Number of distinct denominators per direction, each shared by
            ``hidden_size // num_a`` consecutive channels (None: one per channel).
        bidirectional: Add an anti-causal RTF per channel (encoders and classifiers; no cache).
        init: Initialisation of the coefficients ``ab``: ``"zeros"`` (the reference default),
            ``"xavier"`` (uniform +-1/sqrt(N); can start unstable) or ``"montel"`` (uniform
            +-1/N, inside Montel's stability bound).
        constraint: ``"no"``, or ``"l1_montel"``: denominators divided by their l1 norm plus a
            learned slack, so every pole stays inside the unit disc.
        convention: ``"rtf"`` (the paper's kernel: the impulse response aliased on the FFT grid)
            or ``"rtf2"`` (the reference's RTF2 numerator ``b (I - A^T)``, which cancels the
            aliasing for an even ``trunc_len``).
        reference_recurrence: Decode with the released code's recurrent step instead of the
            exact one. The released step does not reproduce its own convolution (4e-2 apart on
            the golden data); only for reproducing its numbers.
        activation: Activation after the RTF convolution (``"gelu"`` in the reference).
        output_glu: The reference's ``final_act: glu``: a linear to ``2 * hidden_size`` and a
            GLU after the activation (False: a plain linear).
        dropout: Dropout after the activation (the S4 block's).
        kernel_dropout: Dropout on the kernel (the reference's ``dropout`` argument).
        norm_type: ``"layer_norm"`` or ``"rms_norm"`` (the reference's LRA runs use BatchNorm,
            which mixes padding into its statistics; the HF stack uses a per-token norm).
        norm_eps: Epsilon of every norm.
        pooling: How :class:`~hazyzoo.RtfForSequenceClassification` pools real tokens:
            ``"mean"`` (the reference's ``decoder: pool``) or ``"last"``.
        classifier_dropout: Dropout before the classification head.
        residual_in_fp32: Keep the residual stream in float32 whatever the parameter dtype.
        initializer_range: Standard deviation of the normal init of linear layers/embeddings.
        use_cache: Whether ``forward`` returns the recurrent cache by default (causal only).
        tie_word_embeddings: Tie the LM head to the input embedding.
    """

    model_type = "hazyzoo_rtf"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    vocab_size: int = 50264
    hidden_size: int = 768
    num_hidden_layers: int = 12
    intermediate_size: int = 3072
    channel_mixer: str = "mlp"
    state_size: int = 64
    trunc_len: int = 1024
    num_a: int | None = None
    bidirectional: bool = False
    init: str = "xavier"
    constraint: str = "l1_montel"
    convention: str = "rtf"
    reference_recurrence: bool = False
    activation: str = "gelu"
    output_glu: bool = True
    dropout: float = 0.0
    kernel_dropout: float = 0.0
    norm_type: str = "layer_norm"
    norm_eps: float = 1e-5
    pooling: str = "mean"
    classifier_dropout: float = 0.0
    residual_in_fp32: bool = True
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.check_architecture()

    def check_architecture(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the field when a value is wrong."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "intermediate_size",
            "state_size",
            "trunc_len",
        ):
            check_positive(self, name)
        if self.trunc_len <= self.state_size:
            raise ValueError(
                f"trunc_len ({self.trunc_len}) must be larger than state_size "
                f"({self.state_size}): the kernel of an order-{self.state_size} transfer "
                "function needs more taps than coefficients"
            )
        check_int(self, "num_a", minimum=1, allow_none=True)
        if self.num_a is not None and self.hidden_size % self.num_a:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_a ({self.num_a}): "
                "each denominator is shared by hidden_size // num_a consecutive channels"
            )
        check_choice(self, "channel_mixer", RTF_CHANNEL_MIXERS)
        check_choice(self, "init", RTF_INITS)
        check_choice(self, "constraint", RTF_CONSTRAINTS)
        check_choice(self, "convention", RTF_CONVENTIONS)
        check_choice(self, "activation", RTF_ACTIVATIONS)
        check_choice(self, "norm_type", RTF_NORMS)
        check_choice(self, "pooling", RTF_POOLINGS)
        for name in (
            "bidirectional",
            "reference_recurrence",
            "output_glu",
            "residual_in_fp32",
            "use_cache",
            "tie_word_embeddings",
        ):
            check_bool(self, name)
        if self.bidirectional and self.reference_recurrence:
            raise ValueError(
                "reference_recurrence=True needs bidirectional=False: a bidirectional layer "
                "reads future tokens and has no recurrent mode"
            )
        for name in ("dropout", "kernel_dropout", "classifier_dropout"):
            check_float(self, name, ge=0, lt=1)
        check_float(self, "norm_eps", gt=0)
        check_float(self, "initializer_range", ge=0)
        for name in ("pad_token_id", "bos_token_id"):
            check_token_id(self, name, self.vocab_size)
        check_token_id(self, "eos_token_id", self.vocab_size, allow_list=True)

    @property
    def num_denominators(self) -> int:
        """Distinct denominators per direction (``num_a``, or one per channel)."""
        return self.hidden_size if self.num_a is None else self.num_a

    @property
    def mixer_types(self) -> list[str]:
        """The sequence mixer of each layer: RTF everywhere."""
        return [MIXER_RTF] * self.num_hidden_layers

    @property
    def channel_mixer_types(self) -> list[str]:
        """The channel mixer of each layer (``channel_mixer``, the same in every block)."""
        return [self.channel_mixer] * self.num_hidden_layers

    @classmethod
    def tiny(cls, **overrides: Any) -> RtfConfig:
        """A 2-layer model small enough for CPU tests: 16 channels sharing 4 denominators of
        order 4, a 128-token kernel, l1_montel so every pole is stable."""
        defaults = dict(
            vocab_size=61,
            hidden_size=16,
            num_hidden_layers=2,
            intermediate_size=32,
            state_size=4,
            trunc_len=128,
            num_a=4,
        )
        return cls(**{**defaults, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> RtfConfig:
        """Build the configuration of a named size (see ``RTF_PRESETS``)."""
        if name not in RTF_PRESETS:
            raise ValueError(f"unknown RTF preset {name!r}; choose from {sorted(RTF_PRESETS)}")
        return cls(**{**RTF_PRESETS[name], **overrides})
