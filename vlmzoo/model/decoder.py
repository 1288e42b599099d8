"""The Gemma decoder stack: scaled token embeddings, blocks, final norm, tied output head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vlmzoo.components import cpu_kernels
from vlmzoo.components.linear import Linear, linear
from vlmzoo.components.parts import Parts
from vlmzoo.components.rope import RotaryEmbedding
from vlmzoo.config import DecoderConfig
from vlmzoo.registry import Registries


class GemmaDecoder(nn.Module):
    """Gemma 1 or Gemma 2, as chosen by ``config.block``; one class for both families."""

    def __init__(self, config: DecoderConfig, registries: Registries) -> None:
        super().__init__()
        self.config = config
        parts = Parts.resolve(registries, attention=config.attention, norm=config.norm, mlp=config.mlp)
        block = registries.decoder_block.get(config.block)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(block(config, i, parts) for i in range(config.num_layers))
        self.norm = parts.norm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)

    @property
    def windows(self) -> set[int | None]:
        """The distinct windows of the layers (None for full attention): one mask is built per window."""
        return {layer.window for layer in self.layers}

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings times sqrt(hidden), the scale rounded to the weights' dtype as Gemma does."""
        rows = self.embed_tokens(input_ids)
        return rows * torch.tensor(self.config.hidden_size**0.5, dtype=rows.dtype)

    def forward(
        self,
        embeds: torch.Tensor,
        masks: dict[int | None, torch.Tensor],
        positions: torch.Tensor,
        caches: Sequence[Any] | None = None,
    ) -> torch.Tensor:
        """Hidden states after the final norm, for embeddings [B, T, hidden] at ``positions`` [B, T]."""
        rotary = self.rotary(positions, embeds.dtype)
        x = embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, masks, rotary, None if caches is None else caches[i])
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        elif isinstance(self.embed_tokens, nn.Embedding):
            logits = linear(hidden, self.embed_tokens.weight)
        else:  # a quantized embedding serves as its own tied head
            logits = self.embed_tokens.project(hidden)
        cap = self.config.final_logit_softcap
        if cap is not None:
            capped = cpu_kernels.softcap(logits, cap)  # one vectorized pass on CPUs without autograd
            logits = torch.tanh(logits / cap) * cap if capped is None else capped
        return logits
