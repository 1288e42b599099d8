"""Datasets vlmzoo generates itself: synthetic shapes for the bundled ``shapes-demo`` model.

A training config can name a generator instead of a JSONL file, so that a run needs no data on disk
and repeats exactly from its seed::

    train_data = { generator = "shapes", seed = 0, images = 12000, size = 64 }
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from vlmzoo.data import shapes

__all__ = ["GENERATORS", "generate_records"]

#: Record generators by name: each takes keyword options and returns image/prefix/suffix dicts.
GENERATORS: dict[str, Callable[..., list[dict[str, Any]]]] = {"shapes": shapes.training_records}


def generate_records(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Records from a generator spec: ``{"generator": name, **options}`` (images are in memory)."""
    options = dict(spec)
    name = options.pop("generator", None)
    if name not in GENERATORS:
        raise ValueError(
            f"unknown data generator {name!r}; use one of {', '.join(map(repr, sorted(GENERATORS)))} "
            "(e.g. {'generator': 'shapes', 'seed': 0, 'images': 1000})"
        )
    function = GENERATORS[name]
    accepted = inspect.signature(function).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"data generator {name!r} has no option(s) {unknown}; its options are {sorted(accepted)}")
    return function(**options)
