"""Typed configs of SigLIP image-text models: the image tower, the text tower, and the pair."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from vlmzoo.config import FrozenConfig, VisionConfig

__all__ = ["SiglipConfig", "SiglipTextConfig"]

#: The image tower SigLIP B/16 uses (vlmzoo's VisionConfig defaults are PaliGemma's So400m/14).
BASE_VISION = VisionConfig(patch_size=16, hidden_size=768, intermediate_size=3072, num_layers=12, num_heads=12)


class SiglipTextConfig(FrozenConfig):
    """The text tower: token + learned position embeddings, encoder layers, final LayerNorm, last token, head.

    The tower reads a fixed number of tokens (``max_length``): the checkpoints were trained on text padded
    to that length, and the pooled token is the last position, so the processor pads every text to it.
    """

    attention: str = Field("sdpa", description="registry key in the `attention` registry")
    norm: str = Field("layer_norm", description="registry key in the `norm` registry")
    mlp: str = Field("gelu", description="registry key in the `mlp` registry")
    vocab_size: int = Field(32000, gt=0)
    hidden_size: int = Field(768, gt=0)
    intermediate_size: int = Field(3072, gt=0)
    num_layers: int = Field(12, ge=0)
    num_heads: int = Field(12, gt=0)
    max_length: int = Field(64, gt=0, description="positions of the text tower; texts are padded to this length")
    layer_norm_eps: float = Field(1e-6, gt=0)
    projection_size: int | None = Field(None, gt=0, description="width of the output head; None means hidden_size")

    @model_validator(mode="after")
    def _check_shapes(self) -> SiglipTextConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"text.hidden_size={self.hidden_size} must be divisible by text.num_heads={self.num_heads}"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embedding_size(self) -> int:
        return self.projection_size or self.hidden_size


class SiglipConfig(FrozenConfig):
    """A SigLIP model: an image tower with a pooling head, a text tower, and the learned scale and bias.

    ``logit_scale_init`` and ``logit_bias_init`` are the paper's initial t' = log 10 and b = -10: with them a
    freshly built model starts near the sigmoid loss's easy minimum where every pair is a negative.
    """

    name: str | None = None
    vision: VisionConfig = BASE_VISION
    pooling: str = Field("attention_probe", description="registry key in the `pooling` registry")
    text: SiglipTextConfig = SiglipTextConfig()
    logit_scale_init: float = math.log(10.0)
    logit_bias_init: float = -10.0

    @model_validator(mode="after")
    def _check_links(self) -> SiglipConfig:
        if self.text.embedding_size != self.vision.hidden_size:
            raise ValueError(
                f"the text embedding (text.projection_size or text.hidden_size = {self.text.embedding_size}) must "
                f"match the image embedding (vision.hidden_size = {self.vision.hidden_size}), since logits are "
                "their dot products"
            )
        return self

    @property
    def family(self) -> str:
        return "siglip"

    @property
    def num_image_tokens(self) -> int:
        """Patch tokens the image tower sees (the pooling head reduces them to one embedding)."""
        return self.vision.num_patches

    @property
    def embedding_size(self) -> int:
        return self.vision.hidden_size
