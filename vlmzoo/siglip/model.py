"""SigLIP as an assembly of registry components: image tower + pooling head, text tower, scale and bias."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.components.linear import Linear
from vlmzoo.components.parts import Parts
from vlmzoo.components.vision import SiglipLayer
from vlmzoo.config import VisionConfig
from vlmzoo.plugins import resolve_registries
from vlmzoo.registry import Registries
from vlmzoo.siglip.checkpoints import save_pretrained
from vlmzoo.siglip.config import SiglipConfig, SiglipTextConfig

__all__ = ["AttentionPoolingHead", "SiglipModel", "SiglipOutput", "SiglipTextTower"]


class AttentionPoolingHead(nn.Module):
    """Pools patch tokens into one vector: a learned probe attends over them, then LayerNorm + MLP (residual).

    Registered as ``attention_probe`` in the ``pooling`` registry; a pooling head is built as
    ``head(vision_config, parts)`` and maps [B, N, hidden] to [B, hidden].
    """

    def __init__(self, config: VisionConfig, parts: Parts) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        # nn.MultiheadAttention keeps the fused in-projection the checkpoints store (in_proj_weight [3H, H]).
        self.attention = nn.MultiheadAttention(config.hidden_size, config.num_heads, batch_first=True)
        self.layernorm = parts.norm(config.hidden_size, config.layer_norm_eps)
        self.mlp = parts.mlp(config.hidden_size, config.intermediate_size, bias=True)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The probe and the fused in-projection, which `vlmzoo.zoo.init_weights` does not know."""
        nn.init.normal_(self.probe, std=0.02)
        nn.init.normal_(self.attention.in_proj_weight, std=0.02)
        nn.init.zeros_(self.attention.in_proj_bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(tokens.shape[0], -1, -1)
        pooled = self.attention(probe, tokens, tokens, need_weights=False)[0]
        pooled = pooled + self.mlp(self.layernorm(pooled))
        return pooled[:, 0]


class SiglipTextEmbeddings(nn.Module):
    def __init__(self, config: SiglipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_length, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]


class SiglipTextTower(nn.Module):
    """Token ids [B, T] (T <= max_length) → text embeddings [B, embedding_size] (not normalised)."""

    def __init__(self, config: SiglipTextConfig, parts: Parts) -> None:
        super().__init__()
        self.config = config
        self.embeddings = SiglipTextEmbeddings(config)
        self.layers = nn.ModuleList(SiglipLayer(config, parts) for _ in range(config.num_layers))
        self.final_layer_norm = parts.norm(config.hidden_size, config.layer_norm_eps)
        self.head = Linear(config.hidden_size, config.embedding_size, bias=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() != 2 or input_ids.shape[1] > self.config.max_length:
            raise ValueError(
                f"input_ids must be [batch, length] with length <= {self.config.max_length} (the text tower's "
                f"positions), got {list(input_ids.shape)}; tokenize with the model's processor"
            )
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, mask)
        # The last position is pooled, whatever it holds: the checkpoints were trained on fixed-length text.
        return self.head(self.final_layer_norm(x)[:, -1])


@dataclass
class SiglipOutput:
    """``logits_per_image`` [N_images, N_texts] = exp(t) * img . txt + b, its transpose, and both embeddings
    (L2-normalised)."""

    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor


class SiglipModel(nn.Module):
    """SigLIP: two towers whose normalised embeddings meet in a scaled, shifted dot product."""

    def __init__(self, config: SiglipConfig, registries: Registries | None = None) -> None:
        super().__init__()
        registries = resolve_registries(registries)
        self.config = config
        vision = config.vision
        vision_parts = Parts.resolve(registries, attention=vision.attention, norm=vision.norm, mlp=vision.mlp)
        self.vision_model = registries.vision_encoder.get(vision.kind)(vision, vision_parts)
        self.vision_head = registries.pooling.get(config.pooling)(vision, vision_parts)
        text = config.text
        text_parts = Parts.resolve(registries, attention=text.attention, norm=text.norm, mlp=text.mlp)
        self.text_model = SiglipTextTower(text, text_parts)
        self.logit_scale = nn.Parameter(torch.empty(1))
        self.logit_bias = nn.Parameter(torch.empty(1))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """t' = log 10 and b = -10 (the paper's initialisation, from the config)."""
        self.logit_scale.fill_(self.config.logit_scale_init)
        self.logit_bias.fill_(self.config.logit_bias_init)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.logit_scale.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def image_embeddings(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Images [N, 3, H, W] in the processor's range → embeddings [N, D] (unit length unless ``normalize=False``)."""
        pooled = self.vision_head(self.vision_model(pixel_values.to(self.device)))
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def text_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Token ids [N, T] → embeddings [N, D] (unit length unless ``normalize=False``)."""
        mask = None if attention_mask is None else attention_mask.to(self.device)
        pooled = self.text_model(input_ids.to(self.device), mask)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """[N_images, N_texts] logits of normalised embeddings: exp(logit_scale) * img . txt + logit_bias."""
        return image_embeds @ text_embeds.T * self.logit_scale.exp() + self.logit_bias

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> SiglipOutput:
        """Every image against every text; ``sigmoid(logits_per_image)`` are the match probabilities."""
        image_embeds = self.image_embeddings(pixel_values)
        text_embeds = self.text_embeddings(input_ids, attention_mask)
        logits = self.logits(image_embeds, text_embeds)
        return SiglipOutput(logits, logits.T, image_embeds, text_embeds)

    def save_pretrained(self, directory, max_shard_size: int | str = "5GB"):
        """Write config.json and safetensors in the Hugging Face ``SiglipModel`` layout (transformers loads it)."""
        return save_pretrained(self, directory, max_shard_size=max_shard_size)
