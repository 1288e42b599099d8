"""LoRA: trainable low-rank updates on chosen linears, the model's own weights frozen, mergeable after.

A `LoraLinear` computes ``base(x) + (alpha / rank) * B(A(dropout(x)))`` with ``B`` zero at the start,
so wrapping a model changes nothing until it trains; `merge_lora` folds ``(alpha / rank) * B @ A`` into
each base weight and puts the plain linear back, giving a model of the original architecture that
``save_pretrained`` writes in the Hugging Face layout.

Written here rather than taken from ``peft``: peft requires transformers and accelerate and imports
transformers when it is imported, and vlmzoo does not depend on transformers.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoraLinear", "apply_lora", "lora_state_dict", "merge_lora"]


class LoraLinear(nn.Module):
    """A frozen linear plus a trainable low-rank update (``lora_a``: [rank, in], ``lora_b``: [out, rank])."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        weight = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        base.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype))
        return self.base(x) + update * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base linear with the update folded into its weight (computed in float32)."""
        delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
        self.base.weight.copy_((self.base.weight.float() + delta).to(self.base.weight.dtype))
        return self.base


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def apply_lora(
    model: nn.Module, targets: Sequence[str], rank: int = 8, alpha: float = 16.0, dropout: float = 0.0
) -> list[str]:
    """Freeze ``model`` and wrap every linear whose name matches a pattern of ``targets`` in a `LoraLinear`.

    Patterns are shell-style over module names (``"language_model.*.q_proj"``). Returns the wrapped
    names; matching nothing is an error that shows some of the names there are.
    """
    model.requires_grad_(False)
    chosen = [name for name in _linear_names(model) if any(fnmatch.fnmatchcase(name, p) for p in targets)]
    if not chosen:
        examples = ", ".join(_linear_names(model)[:6])
        raise ValueError(
            f"LoRA targets {list(targets)} match no linear layer of this model; patterns are shell-style over "
            f"module names such as {examples}"
        )
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear(getattr(parent, child), rank, alpha, dropout))
    return chosen


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every `LoraLinear` of ``model`` into its base linear, in place; returns ``model``."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only (``...q_proj.lora_a`` / ``.lora_b``), detached, on the CPU."""
    return {
        name: param.detach().to("cpu").contiguous()
        for name, param in model.named_parameters()
        if name.endswith((".lora_a", ".lora_b"))
    }
