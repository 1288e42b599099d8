"""Norms: LayerNorm for SigLIP, Gemma's RMSNorm for the decoder."""

from __future__ import annotations

import torch
from torch import nn

from vlmzoo.components import cpu_kernels


class LayerNorm(nn.LayerNorm):
    """Plain LayerNorm with weight and bias, constructed as ``LayerNorm(dim, eps)``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps=eps)


class GemmaRMSNorm(nn.Module):
    """RMSNorm as Gemma defines it: computed in float32 and scaled by ``1 + weight``.

    The ``1 +`` means a zero weight is the identity, which is how checkpoints store it.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = cpu_kernels.rms_norm(x, self.weight, self.eps)  # one call on CPUs without autograd
        if fused is not None:
            return fused
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)
