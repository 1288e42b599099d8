"""The plugin module named by the ``vlmzoo`` entry point in this package's pyproject.toml.

It adds, through the same hooks vlmzoo's built-ins use:

- an attention kernel ``example_fp32_eager``: the explicit attention math carried out in float32 whatever
  the model's dtype (handy when chasing bfloat16 differences);
- a norm ``example_scale_norm``: ScaleNorm (Nguyen & Salazar, 2019), ``g * x / ||x||`` with one learned
  scalar ``g`` per layer;
- a variant ``example-paligemma2-tiny`` (alias ``example-tiny``): a toy PaliGemma 2 whose decoder uses
  both components.

Keys are prefixed with ``example`` so they never collide with vlmzoo's own; a collision would make
vlmzoo skip this whole plugin with a warning naming both owners.
"""

from __future__ import annotations

import torch
import vlmzoo
from torch import nn
from vlmzoo.components import Attention

ATTENTION_KEY = "example_fp32_eager"
NORM_KEY = "example_scale_norm"
VARIANT_NAME = "example-paligemma2-tiny"
VARIANT_ALIAS = "example-tiny"


class Float32EagerAttention(Attention):
    """The explicit attention math (grouped heads, soft-cap, mask) computed in float32, cast back after."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return super().attend(q.float(), k.float(), v.float(), mask).to(q.dtype)


class ScaleNorm(nn.Module):
    """``g * x / max(||x||, eps)`` over the last dimension, in float32; built as ``ScaleNorm(dim, eps)``.

    vlmzoo builds models on the meta device and then calls ``reset_parameters()`` on modules it does not
    know, so every component with its own parameters must define it.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.g = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.g.fill_(self.dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (self.g.float() * x32 / x32.norm(dim=-1, keepdim=True).clamp(min=self.eps)).type_as(x)


def tiny_config() -> vlmzoo.PaliGemmaConfig:
    """A toy PaliGemma 2 (2 image tokens per side, 2 layers) using this plugin's attention and norm."""
    vision = vlmzoo.VisionConfig(
        image_size=28, patch_size=14, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2
    )
    decoder = vlmzoo.DecoderConfig(
        block="gemma2",
        attention=ATTENTION_KEY,
        norm=NORM_KEY,
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        query_pre_attn_scalar=8,
        attn_logit_softcap=50.0,
        final_logit_softcap=30.0,
        sliding_window=4,
    )
    return vlmzoo.PaliGemmaConfig(
        name=VARIANT_NAME,
        vision=vision,
        projector=vlmzoo.ProjectorConfig(input_size=vision.hidden_size, output_size=decoder.hidden_size),
        decoder=decoder,
        image_token_id=decoder.vocab_size - 1,
    )


@vlmzoo.hookimpl
def register_components(registry):
    registry.attention.register(ATTENTION_KEY, Float32EagerAttention)
    registry.norm.register(NORM_KEY, ScaleNorm)


@vlmzoo.hookimpl
def register_variants(registry):
    registry.variant.register(
        VARIANT_NAME,
        vlmzoo.Variant(
            VARIANT_NAME,
            tiny_config(),
            aliases=(VARIANT_ALIAS,),
            description="toy PaliGemma 2 with float32 eager attention and ScaleNorm (example plugin)",
        ),
    )
