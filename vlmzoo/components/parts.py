"""The component factories a block or encoder is assembled from, resolved from registry keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlmzoo.registry import Registries


@dataclass(frozen=True)
class Parts:
    """Factories for attention, norm and MLP, looked up once so modules never touch the registry."""

    attention: Any
    norm: Any
    mlp: Any

    @classmethod
    def resolve(cls, registries: Registries, *, attention: str, norm: str, mlp: str) -> Parts:
        return cls(
            attention=registries.attention.get(attention),
            norm=registries.norm.get(norm),
            mlp=registries.mlp.get(mlp),
        )
