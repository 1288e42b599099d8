"""The SigLIP vision encoder: patchify, add learned positions, a ViT stack, a final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from vlmzoo.components.parts import Parts
from vlmzoo.config import VisionConfig


class SiglipEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Embedding(config.num_patches, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        return patches.flatten(2).transpose(1, 2) + self.position_embedding.weight


class SiglipLayer(nn.Module):
    """One pre-norm ViT layer; SigLIP's text tower stacks the same layer (``config`` needs ``hidden_size``,
    ``intermediate_size``, ``num_heads``, ``head_dim`` and ``layer_norm_eps``)."""

    def __init__(self, config: VisionConfig, parts: Parts) -> None:
        super().__init__()
        self.layer_norm1 = parts.norm(config.hidden_size, config.layer_norm_eps)
        self.self_attn = parts.attention(
            hidden_size=config.hidden_size,
            num_heads=config.num_heads,
            num_kv_heads=config.num_heads,
            head_dim=config.head_dim,
            bias=True,
        )
        self.layer_norm2 = parts.norm(config.hidden_size, config.layer_norm_eps)
        self.mlp = parts.mlp(config.hidden_size, config.intermediate_size, bias=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` bool [B, 1, T, T] (True = may attend) or None for full attention (images)."""
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipVisionEncoder(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] → patch features [B, num_patches, hidden]."""

    def __init__(self, config: VisionConfig, parts: Parts) -> None:
        super().__init__()
        self.config = config
        self.embeddings = SiglipEmbeddings(config)
        self.layers = nn.ModuleList(SiglipLayer(config, parts) for _ in range(config.num_layers))
        self.post_layernorm = parts.norm(config.hidden_size, config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape [batch, {', '.join(map(str, expected))}], "
                f"got {list(pixel_values.shape)}; resize images with the model's processor"
            )
        x = self.embeddings(pixel_values)
        for layer in self.layers:
            x = layer(x)
        return self.post_layernorm(x)
