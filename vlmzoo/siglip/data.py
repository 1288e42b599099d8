"""(image, text) pairs for contrastive training: JSONL files, Python lists, or the shapes generator.

A JSONL line is ``{"image": "images/0001.png", "text": "a red circle"}`` (image paths relative to the
file). A generator spec such as ``{"generator": "shapes", "seed": 0, "images": 1000, "size": 64}`` draws
shape scenes and captions them with every shape they hold (`vlmzoo.data.shapes.caption_text`).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmzoo.data import shapes
from vlmzoo.errors import VlmzooError

__all__ = ["Pair", "PairDataError", "load_pairs", "shapes_pairs"]


class PairDataError(VlmzooError, ValueError):
    """(image, text) data that cannot be used; the message names the file and line of each bad record."""


@dataclass(frozen=True)
class Pair:
    """One matched (image, text) example; ``image`` is a path or an in-memory image."""

    image: Any
    text: str
    where: str


def shapes_pairs(seed: int, images: int, size: int = 64) -> list[Pair]:
    """``images`` shape scenes (1 to 3 shapes) with captions naming every shape, reproducible from ``seed``."""
    if images <= 0:
        raise ValueError(f"images={images} must be positive")
    rng = random.Random(seed)
    pairs = []
    for index in range(images):
        scene = shapes.generate_scene(rng, size=size)
        pairs.append(Pair(scene.image, shapes.caption_text(scene.shapes), f"shapes scene {index} (seed {seed})"))
    return pairs


def load_pairs(data: str | os.PathLike | Sequence[Any] | Mapping[str, Any]) -> list[Pair]:
    """Pairs from a JSONL path, a list of ``{"image", "text"}`` dicts / ``(image, text)`` tuples, or a
    generator spec ``{"generator": "shapes", ...}``. Every bad record is reported at once."""
    if isinstance(data, Mapping):
        options = dict(data)
        if options.pop("generator", None) != "shapes":
            raise PairDataError(
                f"unknown pair generator {data.get('generator')!r}; use {{'generator': 'shapes', 'seed': 0, "
                "'images': 1000}"
            )
        return shapes_pairs(**options)
    if isinstance(data, (str, os.PathLike)):
        return _load_jsonl(Path(data))
    problems, pairs = [], []
    for index, item in enumerate(data):
        if isinstance(item, Pair):
            pairs.append(item)
            continue
        if isinstance(item, (tuple, list)) and len(item) == 2:
            item = {"image": item[0], "text": item[1]}
        pair = _pair(item, f"record {index}", None, problems)
        if pair is not None:
            pairs.append(pair)
    _raise_if(problems, "the training pairs")
    return pairs


def _load_jsonl(path: Path) -> list[Pair]:
    if not path.is_file():
        raise PairDataError(f"{path}: no such file; give a JSONL file of {{'image', 'text'}} lines")
    problems, pairs = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: not valid JSON ({err.msg})")
                continue
            pair = _pair(item, where, path.parent, problems)
            if pair is not None:
                pairs.append(pair)
    _raise_if(problems, str(path))
    if not pairs:
        raise PairDataError(f"{path}: holds no records")
    return pairs


def _pair(item: Any, where: str, base: Path | None, problems: list[str]) -> Pair | None:
    if not isinstance(item, Mapping):
        problems.append(f"{where}: must be an object with 'image' and 'text', got {type(item).__name__}")
        return None
    missing = [key for key in ("image", "text") if key not in item]
    if missing:
        problems.append(f"{where}: missing {', '.join(map(repr, missing))}")
        return None
    if not isinstance(item["text"], str) or not item["text"].strip():
        problems.append(f"{where}: 'text' must be a non-empty string")
        return None
    image = item["image"]
    if isinstance(image, str):
        image = str(base / image) if base is not None and not Path(image).is_absolute() else image
        if not Path(image).is_file():
            problems.append(f"{where}: image file {image} does not exist")
            return None
    return Pair(image, item["text"], where)


def _raise_if(problems: list[str], source: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... ({len(problems) - 20} more)" if len(problems) > 20 else "")
        raise PairDataError(f"{source}: {len(problems)} bad record(s):\n  {shown}")
