"""Decoder blocks. Gemma 2's block is Gemma's plus two norms around the attention and the MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlmzoo.components.parts import Parts
from vlmzoo.config import DecoderConfig


class GemmaBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: DecoderConfig, layer: int, parts: Parts) -> None:
        super().__init__()
        self.layer = layer
        self.window = config.window_of(layer)
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = parts.norm(hidden, eps)
        self.self_attn = parts.attention(
            hidden_size=hidden,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim,
            scale=config.scale,
            softcap=config.attn_logit_softcap,
            bias=False,
        )
        # Named as in the checkpoints: in Gemma 1 this is the norm before the MLP.
        self.post_attention_layernorm = parts.norm(hidden, eps)
        self.mlp = parts.mlp(hidden, config.intermediate_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        masks: dict[int | None, torch.Tensor],
        rotary: tuple[torch.Tensor, torch.Tensor],
        cache: Any = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), masks[self.window], rotary, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Gemma2Block(GemmaBlock):
    """Sandwich norms: each sub-layer's output is normalised again before the residual add."""

    def __init__(self, config: DecoderConfig, layer: int, parts: Parts) -> None:
        super().__init__(config, layer, parts)
        self.pre_feedforward_layernorm = parts.norm(config.hidden_size, config.rms_norm_eps)
        self.post_feedforward_layernorm = parts.norm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        masks: dict[int | None, torch.Tensor],
        rotary: tuple[torch.Tensor, torch.Tensor],
        cache: Any = None,
    ) -> torch.Tensor:
        attended = self.self_attn(self.input_layernorm(x), masks[self.window], rotary, cache)
        x = x + self.post_attention_layernorm(attended)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
