"""Rotary position embedding in the split-half layout that Gemma checkpoints use."""

from __future__ import annotations

import torch


class RotaryEmbedding:
    """Computes cos/sin tables for integer positions; holds no state, so dtype casts can't degrade it."""

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim = head_dim
        self.theta = theta

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` [B, T] → cos, sin [B, 1, T, head_dim], computed in float32 then cast."""
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=positions.device)
        inv_freq = 1.0 / (self.theta ** (exponents / self.head_dim))
        freqs = positions.float()[..., None] * inv_freq
        angles = torch.cat([freqs, freqs], dim=-1)[:, None]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, H, T, D] by the angles in ``cos``/``sin`` [B, 1, T, D]."""
    return x * cos + _rotate_half(x) * sin
