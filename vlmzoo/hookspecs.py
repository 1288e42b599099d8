"""The hooks through which built-in and third-party plugins add to vlmzoo.

A plugin is any module or object with functions marked ``@vlmzoo.hookimpl`` whose names match these
specs. Third-party packages expose one through the entry-point group ``vlmzoo``::

    [project.entry-points.vlmzoo]
    my_plugin = "my_package.plugin"

Each hook receives a view of the registries; what a hook registers is credited to its plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from vlmzoo.registry import OwnedRegistries

PROJECT = "vlmzoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_components(registry: OwnedRegistries) -> None:
    """Register model components: ``registry.attention``, ``.norm``, ``.mlp``, ``.decoder_block``,
    ``.vision_encoder``, ``.pooling`` (heads that pool an encoder's tokens into one vector), whole model
    families in ``.model_family`` (a `vlmzoo.families.ModelFamily`),
    matrix-product kernels in ``.linear_kernel`` (a `LinearKernel`) and weight-only
    quantization schemes in ``.quantization`` (a `QuantizationScheme`)."""


@hookspec
def register_variants(registry: OwnedRegistries) -> None:
    """Register named model configs in ``registry.variant`` (a `PaliGemmaConfig`, or a `Variant` with aliases
    whose config may belong to any registered model family)."""


@hookspec
def register_samplers(registry: OwnedRegistries) -> None:
    """Register token samplers in ``registry.sampler`` (a factory taking keyword options)."""


@hookspec
def register_postprocessors(registry: OwnedRegistries) -> None:
    """Register task post-processors in ``registry.postprocessor`` (a factory taking keyword options)."""
