"""Sequence mixers, channel mixers and blocks that hazyzoo models compose (one file per mixer).

Importing this package registers every mixer below by name (see :mod:`.registry`); a new mixer
is one file plus one import line here.
"""

from hazyzoo.modeling.layers.attention import FullAttention, RotaryAttention, windowed_attention
from hazyzoo.modeling.layers.base_conv import BaseConv
from hazyzoo.modeling.layers.blockdiag import BlockDiagonalLinear
from hazyzoo.modeling.layers.decoder import DecoderLayer
from hazyzoo.modeling.layers.gated_linear_attention import GatedLinearAttention
from hazyzoo.modeling.layers.hyena import HyenaOperator
from hazyzoo.modeling.layers.hyena_experts import HyenaExpertsOperator
from hazyzoo.modeling.layers.hyena_filter import ImplicitHyenaFilter
from hazyzoo.modeling.layers.linear_attention import TaylorLinearAttention
from hazyzoo.modeling.layers.mad_linear_attention import MadLinearAttention
from hazyzoo.modeling.layers.mad_moe import MadMoeMlp, mad_topk_gate
from hazyzoo.modeling.layers.mamba import MambaMixer
from hazyzoo.modeling.layers.mh_hyena import MultiHeadHyenaOperator
from hazyzoo.modeling.layers.mlp import MLP, SwiGLUMLP
from hazyzoo.modeling.layers.moe import MoEMLP
from hazyzoo.modeling.layers.monarch_mixer import MonarchGluMlp, MonarchMixerSequenceMixing
from hazyzoo.modeling.layers.norm import LayerNorm, RMSNorm, build_norm
from hazyzoo.modeling.layers.prefix_linear_attention import PrefixLinearAttention
from hazyzoo.modeling.layers.protocol import ChannelMixer, MixerKwargs, MixerOutput, SequenceMixer
from hazyzoo.modeling.layers.registry import (
    CHANNEL_MIXERS,
    NO_MIXER,
    SEQUENCE_MIXERS,
    register_channel_mixer,
    register_sequence_mixer,
)
from hazyzoo.modeling.layers.rotary import apply_rotary, rotary_cos_sin
from hazyzoo.modeling.layers.rtf import RtfFilter, RtfMixer
from hazyzoo.modeling.layers.sliding_window import SlidingWindowAttention

__all__ = [
    "CHANNEL_MIXERS",
    "MLP",
    "NO_MIXER",
    "SEQUENCE_MIXERS",
    "BaseConv",
    "BlockDiagonalLinear",
    "ChannelMixer",
    "DecoderLayer",
    "FullAttention",
    "GatedLinearAttention",
    "HyenaExpertsOperator",
    "HyenaOperator",
    "ImplicitHyenaFilter",
    "LayerNorm",
    "MadLinearAttention",
    "MadMoeMlp",
    "MambaMixer",
    "MixerKwargs",
    "MixerOutput",
    "MoEMLP",
    "MonarchGluMlp",
    "MonarchMixerSequenceMixing",
    "MultiHeadHyenaOperator",
    "PrefixLinearAttention",
    "RMSNorm",
    "RotaryAttention",
    "RtfFilter",
    "RtfMixer",
    "SequenceMixer",
    "SlidingWindowAttention",
    "SwiGLUMLP",
    "TaylorLinearAttention",
    "apply_rotary",
    "build_norm",
    "mad_topk_gate",
    "register_channel_mixer",
    "register_sequence_mixer",
    "rotary_cos_sin",
    "windowed_attention",
]
