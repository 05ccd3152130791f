"""Sequence mixers and blocks that hazyzoo models compose (one file per mixer)."""

from hazyzoo.modeling.layers.base_conv import BaseConv
from hazyzoo.modeling.layers.decoder import DecoderLayer
from hazyzoo.modeling.layers.linear_attention import TaylorLinearAttention
from hazyzoo.modeling.layers.mlp import SwiGLUMLP
from hazyzoo.modeling.layers.norm import RMSNorm
from hazyzoo.modeling.layers.rotary import apply_rotary, rotary_cos_sin
from hazyzoo.modeling.layers.sliding_window import SlidingWindowAttention, windowed_attention

__all__ = [
    "BaseConv",
    "DecoderLayer",
    "RMSNorm",
    "SlidingWindowAttention",
    "SwiGLUMLP",
    "TaylorLinearAttention",
    "apply_rotary",
    "rotary_cos_sin",
    "windowed_attention",
]
