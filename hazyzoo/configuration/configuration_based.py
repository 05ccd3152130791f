"""Configuration of BASED: gated short convolutions, Taylor linear attention and sliding windows.

BASED ("Simple linear attention language models balance the recall-throughput tradeoff",
Arora et al. 2024) stacks pre-norm blocks whose sequence mixer is one of three kinds:
a gated short convolution (``base_conv``), Taylor-feature-map linear attention
(``linear_attention``) or sliding-window softmax attention with rotary embeddings
(``sliding_window_attention``). Layers listed in neither ``linear_attention_layers`` nor
``sliding_window_layers`` are ``base_conv`` layers.
"""

from __future__ import annotations

from typing import Any

from hazyzoo.configuration.base import HazyConfig
from hazyzoo.validation import (
    check_bool,
    check_choice,
    check_divides,
    check_float,
    check_layer_indices,
    check_positive,
    check_token_id,
)

MIXER_BASE_CONV = "base_conv"
MIXER_LINEAR_ATTENTION = "linear_attention"
MIXER_SLIDING_WINDOW = "sliding_window_attention"

# The released sizes (Hazy Research checkpoints on the Hub), from the reference training configs.
BASED_PRESETS: dict[str, dict[str, Any]] = {
    "based-360m": dict(
        vocab_size=50264,
        bos_token_id=50256,
        eos_token_id=50256,
        hidden_size=1024,
        num_hidden_layers=27,
        intermediate_size=2048,
        num_attention_heads=16,
        feature_dim=16,
        linear_attention_layers=[1, 6, 11, 16, 21],
        sliding_window_layers=[2, 7, 12, 17, 22],
        sliding_window=129,
    ),
    "based-1.3b": dict(
        vocab_size=50264,
        bos_token_id=50256,
        eos_token_id=50256,
        hidden_size=1792,
        num_hidden_layers=36,
        intermediate_size=3584,
        num_attention_heads=16,
        feature_dim=16,
        linear_attention_layers=[1, 6, 11, 16, 21, 27, 33],
        sliding_window_layers=[2, 7, 12, 17, 22, 28, 34],
        sliding_window=129,
    ),
}


class BasedConfig(HazyConfig):
    r"""Configuration for :class:`~hazyzoo.BasedModel` and :class:`~hazyzoo.BasedForCausalLM`.

    Defaults give the released 360M model. Use :meth:`from_preset` for the released sizes.
    Every field is checked when the config is built and again when a model is built from it
    (:meth:`check_architecture`): a wrong type, a value out of range or an unknown keyword (a
    misspelt field) is a ``TypeError``/``ValueError`` naming it. The per-layer mixers the shared
    stack builds are :attr:`mixer_types` (from the two index lists) and
    :attr:`channel_mixer_types` (SwiGLU everywhere), with RMSNorm norms.

    Args:
        vocab_size: Size of the (padded) vocabulary; the released models pad GPT-2's 50257 to 50264.
        hidden_size: Width of the residual stream.
        num_hidden_layers: Number of pre-norm blocks.
        intermediate_size: Inner width of the SwiGLU MLP (gate and up projections each produce it).
        num_attention_heads: Heads of the linear-attention layers (value head dim is
            ``hidden_size // num_attention_heads``).
        feature_dim: Per-head query/key width fed to the Taylor feature map (16 in the paper);
            the feature map has ``1 + feature_dim + feature_dim**2`` entries.
        linear_attention_eps: Added to the linear-attention normaliser.
        linear_attention_state_dtype: Dtype of the cached linear-attention state matrix
            ``sum phi(k)^T v`` during generation: ``"float32"`` (default, exact) or
            ``"bfloat16"`` / ``"float16"`` (half the bytes a large-batch decode step moves;
            the normaliser stays float32; see ``benchmarks/RESULTS.md`` for the measured logit
            error after 1024 steps). Training and single-call forwards are unaffected.
        linear_attention_layers: Indices of the linear-attention layers.
        sliding_window_layers: Indices of the sliding-window attention layers.
        sliding_window: Number of tokens each sliding-window query sees, itself included (the
            transformers convention). The reference's ``window_size`` w corresponds to ``w // 2 + 1``.
        sliding_window_num_heads: Heads of the sliding-window layers (default: ``num_attention_heads``).
        rope_theta: Rotary base of the sliding-window layers.
        conv_kernel_size: Width of the depthwise causal convolution in ``base_conv`` layers.
        conv_expansion: ``base_conv`` channels are ``conv_expansion * hidden_size``.
        conv_bias: Whether the ``base_conv`` input and output projections have biases.
        rms_norm_eps: Epsilon of every RMSNorm.
        residual_in_fp32: Keep the residual stream in float32 whatever the parameter dtype.
        initializer_range: Standard deviation of the normal initialisation.
        use_cache: Whether ``forward`` returns the recurrent cache by default.
        tie_word_embeddings: Tie the LM head to the input embedding (the released models do).
    """

    model_type = "hazyzoo_based"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    vocab_size: int = 50264
    hidden_size: int = 1024
    num_hidden_layers: int = 27
    intermediate_size: int = 2048
    num_attention_heads: int = 16
    feature_dim: int = 16
    linear_attention_eps: float = 1e-12
    linear_attention_state_dtype: str = "float32"
    linear_attention_layers: list[int] | None = None
    sliding_window_layers: list[int] | None = None
    sliding_window: int = 129
    sliding_window_num_heads: int | None = None
    rope_theta: float = 10000.0
    conv_kernel_size: int = 3
    conv_expansion: int = 2
    conv_bias: bool = True
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True

    # The shared stack's norm kind (BASED uses RMSNorm everywhere; not a field).
    norm_type = "rms_norm"

    def __post_init__(self, **kwargs: Any) -> None:
        if self.linear_attention_layers is None:
            self.linear_attention_layers = list(
                BASED_PRESETS["based-360m"]["linear_attention_layers"]
            )
        if self.sliding_window_layers is None:
            self.sliding_window_layers = list(BASED_PRESETS["based-360m"]["sliding_window_layers"])
        if self.sliding_window_num_heads is None:
            self.sliding_window_num_heads = self.num_attention_heads
        super().__post_init__(**kwargs)
        self.check_architecture()

    def check_architecture(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the field when a value has the wrong type or
        the architecture is inconsistent. Runs once when the config is built and again when a
        model is built from it (so a config changed after construction is re-checked)."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "intermediate_size",
            "num_attention_heads",
            "feature_dim",
            "sliding_window_num_heads",
            "conv_kernel_size",
            "conv_expansion",
        ):
            check_positive(self, name)
        check_float(self, "rms_norm_eps", gt=0)
        check_float(self, "rope_theta", gt=0)
        check_float(self, "initializer_range", ge=0)
        check_float(self, "linear_attention_eps", ge=0)
        check_choice(self, "linear_attention_state_dtype", ("float32", "bfloat16", "float16"))
        for name in ("conv_bias", "residual_in_fp32", "use_cache", "tie_word_embeddings"):
            check_bool(self, name)
        check_layer_indices(self, "linear_attention_layers", self.num_hidden_layers)
        check_layer_indices(self, "sliding_window_layers", self.num_hidden_layers)
        both = sorted(set(self.linear_attention_layers) & set(self.sliding_window_layers))
        if both:
            raise ValueError(
                f"layers {both} are in both linear_attention_layers and sliding_window_layers; "
                "each layer has exactly one mixer"
            )
        check_divides(self, "hidden_size", "num_attention_heads")
        if self.sliding_window_layers:
            check_positive(self, "sliding_window")
            check_divides(self, "hidden_size", "sliding_window_num_heads")
            head_dim = self.hidden_size // self.sliding_window_num_heads
            if head_dim % 2:
                raise ValueError(
                    f"sliding-window head dim hidden_size // sliding_window_num_heads = {head_dim} "
                    "must be even for rotary embeddings"
                )
        for name in ("pad_token_id", "bos_token_id"):
            check_token_id(self, name, self.vocab_size)
        check_token_id(self, "eos_token_id", self.vocab_size, allow_list=True)

    @property
    def mixer_types(self) -> list[str]:
        """The sequence mixer of each layer, in order."""
        kinds = [MIXER_BASE_CONV] * self.num_hidden_layers
        for i in self.linear_attention_layers:
            kinds[i] = MIXER_LINEAR_ATTENTION
        for i in self.sliding_window_layers:
            kinds[i] = MIXER_SLIDING_WINDOW
        return kinds

    @property
    def channel_mixer_types(self) -> list[str]:
        """The channel mixer of each layer: SwiGLU in every BASED block."""
        return ["swiglu"] * self.num_hidden_layers

    @property
    def feature_map_dim(self) -> int:
        """Width of the Taylor feature map: ``1 + feature_dim + feature_dim**2``."""
        return 1 + self.feature_dim + self.feature_dim**2

    @classmethod
    def tiny(cls, **overrides: Any) -> BasedConfig:
        """A 4-layer model (one mixer of each kind) small enough for CPU tests and demos."""
        defaults = dict(
            vocab_size=61,
            hidden_size=32,
            num_hidden_layers=4,
            intermediate_size=48,
            num_attention_heads=2,
            feature_dim=4,
            linear_attention_layers=[1],
            sliding_window_layers=[2],
            sliding_window=5,
        )
        return cls(**{**defaults, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BasedConfig:
        """Build the configuration of a released size (``based-360m``, ``based-1.3b``)."""
        if name not in BASED_PRESETS:
            raise ValueError(f"unknown BASED preset {name!r}; choose from {sorted(BASED_PRESETS)}")
        return cls(**{**BASED_PRESETS[name], **overrides})
