"""An example third-party vlmzoo plugin (see ``vlmzoo_example_plugin.plugin``)."""

from vlmzoo_example_plugin.plugin import (
    ATTENTION_KEY,
    NORM_KEY,
    VARIANT_ALIAS,
    VARIANT_NAME,
    Float32EagerAttention,
    ScaleNorm,
    tiny_config,
)

__all__ = [
    "ATTENTION_KEY",
    "NORM_KEY",
    "VARIANT_ALIAS",
    "VARIANT_NAME",
    "Float32EagerAttention",
    "ScaleNorm",
    "tiny_config",
]
