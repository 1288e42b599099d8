"""Swappable building blocks; each is registered by key through the `register_components` hook."""

from vlmzoo.components.attention import Attention, EagerAttention, SdpaAttention
from vlmzoo.components.blocks import Gemma2Block, GemmaBlock
from vlmzoo.components.mlp import ExactGeluMLP, GatedGeluMLP, GeluMLP
from vlmzoo.components.norm import GemmaRMSNorm, LayerNorm
from vlmzoo.components.parts import Parts
from vlmzoo.components.projector import Projector
from vlmzoo.components.rope import RotaryEmbedding, apply_rotary
from vlmzoo.components.vision import SiglipVisionEncoder

__all__ = [
    "Attention",
    "EagerAttention",
    "ExactGeluMLP",
    "GatedGeluMLP",
    "Gemma2Block",
    "GemmaBlock",
    "GemmaRMSNorm",
    "GeluMLP",
    "LayerNorm",
    "Parts",
    "Projector",
    "RotaryEmbedding",
    "SdpaAttention",
    "SiglipVisionEncoder",
    "apply_rotary",
]
