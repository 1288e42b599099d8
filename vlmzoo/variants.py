"""Named variants as the registry holds them: what a variant is, and the rules every set of them keeps.

Shared by the zoo (which looks variants up) and the plugin manager (which checks each plugin's variants
as it registers them), so neither reaches into the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmzoo.config import PaliGemmaConfig
from vlmzoo.registry import Registries

__all__ = ["Variant", "aliases_of", "check_variants", "variants_of"]


@dataclass(frozen=True)
class Variant:
    """A named architecture in the zoo; aliases are extra names that resolve to it."""

    name: str
    config: PaliGemmaConfig
    aliases: tuple[str, ...] = ()
    description: str = ""


def variants_of(registries: Registries) -> dict[str, Variant]:
    """Every registered variant by canonical name (a bare config registered as a variant gets no aliases)."""
    found = {}
    for entry in registries.variant.entries():
        value = entry.value
        found[entry.key] = value if isinstance(value, Variant) else Variant(entry.key, value)
    return found


def aliases_of(variants: dict[str, Variant]) -> dict[str, str]:
    """Alias → canonical name; raises ValueError when an alias is another variant's name or alias."""
    aliases: dict[str, str] = {}
    for variant in variants.values():
        for alias in variant.aliases:
            taken = aliases.get(alias) or (alias if alias in variants else None)
            if taken and taken != variant.name:
                raise ValueError(f"model alias {alias!r} of {variant.name!r} is already taken by {taken!r}")
            aliases[alias] = variant.name
    return aliases


def check_variants(registries: Registries) -> None:
    """Variants must be configs, and no alias may shadow another variant's name or alias."""
    for entry in registries.variant.entries():
        if not isinstance(entry.value, (Variant, PaliGemmaConfig)):
            raise TypeError(
                f"variant {entry.key!r} must be a vlmzoo.Variant or a PaliGemmaConfig, got {type(entry.value).__name__}"
            )
    aliases_of(variants_of(registries))
