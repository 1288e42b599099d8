"""Checkpoint key layouts: every Hugging Face naming maps onto vlmzoo's module names and back.

Known layouts (all may appear): the hub's ``vision_tower.vision_model.*`` / ``language_model.model.*``,
transformers 5's ``vision_tower.encoder.*``, and the ``model.``-prefixed names with ``lm_head.weight``.
"""

from __future__ import annotations

import re

# Applied in order to a checkpoint key; each removes one difference from vlmzoo's names.
_TO_VLMZOO = [
    (re.compile(r"^model\."), ""),
    (re.compile(r"^language_model\.model\."), "language_model."),
    (re.compile(r"^(language_model\.)?lm_head\."), "language_model.lm_head."),
    (re.compile(r"^vision_tower\.vision_model\."), "vision_tower."),
    (re.compile(r"^vision_tower\.encoder\.layers\."), "vision_tower.layers."),
    (re.compile(r"^(vision_tower\.layers\.\d+\.self_attn)\.out_proj\."), r"\1.o_proj."),
]

# vlmzoo name → hub name, the layout the published checkpoints use.
_TO_HUB = [
    (re.compile(r"^language_model\.lm_head\."), "lm_head."),
    (re.compile(r"^language_model\."), "language_model.model."),
    (re.compile(r"^(vision_tower\.layers\.\d+\.self_attn)\.o_proj\."), r"\1.out_proj."),
    (re.compile(r"^vision_tower\.layers\."), "vision_tower.vision_model.encoder.layers."),
    (re.compile(r"^vision_tower\.(?!vision_model\.)"), "vision_tower.vision_model."),
]


def to_vlmzoo_key(key: str) -> str:
    """The vlmzoo parameter name for a checkpoint key in any known layout."""
    for pattern, replacement in _TO_VLMZOO:
        key = pattern.sub(replacement, key)
    return key


def to_hub_key(key: str) -> str:
    """The hub checkpoint name of a vlmzoo parameter."""
    for pattern, replacement in _TO_HUB:
        key = pattern.sub(replacement, key)
    return key
