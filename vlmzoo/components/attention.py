"""Self-attention with any number of key/value heads (multi-head, grouped-query, multi-query).

The window and the prefix-LM pattern live in the boolean mask the caller passes, so one module serves
full and sliding layers alike. Two kernels are registered: ``eager`` spells the math out and
``sdpa`` hands it to `torch.nn.functional.scaled_dot_product_attention` whenever no logit soft-cap
forces the explicit form.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.components import cpu_kernels
from vlmzoo.components.linear import Linear
from vlmzoo.components.rope import apply_rotary


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``; half-precision products on CPUs run on float32 copies and round once to the input dtype.

    PyTorch's CPU batched product in bfloat16 ran 19x slower than in float32 on a decode step's
    attention shapes (AVX2, no bfloat16 arithmetic), more than the conversions cost; the result is the
    same product accumulated in float32, as the half-precision kernels accumulate.
    """
    if a.device.type == "cpu" and a.dtype in (torch.bfloat16, torch.float16):
        return torch.matmul(a.float(), b.float()).to(a.dtype)
    return torch.matmul(a, b)


class Attention(nn.Module):
    """Projections, rotary embedding and KV-cache handling shared by every kernel."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        scale: float | None = None,
        softcap: float | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be divisible by num_kv_heads={num_kv_heads}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5 if scale is None else scale
        self.softcap = softcap
        self.q_proj = Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = Linear(num_heads * head_dim, hidden_size, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        """``x`` [B, T, hidden]; ``mask`` bool [B, 1, T, S] (True = may attend) or None for full attention.

        ``cache``, when given, stores this step's keys and values and returns every key the queries
        may see (its ``update(k, v)``), so ``S`` is the cache's length.
        """
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rotary is not None:
            q = apply_rotary(q, *rotary)
            k = apply_rotary(k, *rotary)
        if cache is not None:
            k, v = cache.update(k, v)
        out = self.attend(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Explicit attention; grouped query heads share their key/value head without copying it.

        The query heads of a group are stacked along the rows of one product with their key/value head
        (``[B, kv, groups * T, D] @ [B, kv, D, S]``): broadcasting the keys over the groups instead would
        make `torch.matmul` copy the whole cache into every group at every decode step.
        """
        batch, heads, length, dim = q.shape
        groups = heads // self.num_kv_heads
        keys = k.shape[-2]
        q = q.reshape(batch, self.num_kv_heads, groups * length, dim)  # a view when length is 1 (decoding)
        scores = (_matmul(q, k.transpose(-1, -2)) * self.scale).view(batch, self.num_kv_heads, groups, length, keys)
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(2), torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = _matmul(weights.view(batch, self.num_kv_heads, groups * length, keys), v)
        return out.view(batch, heads, length, dim)


class EagerAttention(Attention):
    """Always the explicit math path (reference and debugging)."""


class SdpaAttention(Attention):
    """PyTorch's fused scaled-dot-product kernel, falling back to the math path under a soft-cap; a decode
    step on a CPU (one query per row) goes to the C++ extension's fused kernel instead of either."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        fused = cpu_kernels.decode_attention(q, k, v, mask, self.scale, self.softcap)  # None unless it applies
        if fused is not None:
            return fused
        if self.softcap is not None:
            return super().attend(q, k, v, mask)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=self.num_kv_heads != self.num_heads
        )
