"""The built-in plugin that registers PaliGemma's variants (the table is `vlmzoo.paligemma.variants`)."""

from __future__ import annotations

from vlmzoo.hookspecs import hookimpl
from vlmzoo.paligemma.variants import variants


@hookimpl
def register_variants(registry):
    for variant in variants():
        registry.variant.register(variant.name, variant)
