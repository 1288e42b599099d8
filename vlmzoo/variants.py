"""Named variants as the registry holds them: what a variant is, and the rules every set of them keeps.

Shared by the zoo (which looks variants up) and the plugin manager (which checks each plugin's variants
as it registers them), so neither reaches into the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmzoo.config import FrozenConfig, PaliGemmaConfig
from vlmzoo.registry import Registries

__all__ = ["Variant", "aliases_of", "check_variants", "variants_of"]


@dataclass(frozen=True)
class Variant:
    """A named architecture in the zoo; aliases are extra names that resolve to it.

    ``config`` is a `PaliGemmaConfig` or the config of another registered model family (see
    `vlmzoo.families`)."""

    name: str
    config: FrozenConfig
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
    """Variants must be configs of a known family, and no alias may shadow another variant's name or alias."""
    families = tuple(entry.value.config_type for entry in registries.model_family.entries())
    for entry in registries.variant.entries():
        if not isinstance(entry.value, (Variant, PaliGemmaConfig)):
            raise TypeError(
                f"variant {entry.key!r} must be a vlmzoo.Variant or a PaliGemmaConfig, got {type(entry.value).__name__}"
            )
        config = entry.value.config if isinstance(entry.value, Variant) else entry.value
        if not isinstance(config, (PaliGemmaConfig, *families)):
            raise TypeError(
                f"variant {entry.key!r} has a {type(config).__name__}, which no registered model family builds; "
                "register its family in registry.model_family (see vlmzoo.families)"
            )
    aliases_of(variants_of(registries))
