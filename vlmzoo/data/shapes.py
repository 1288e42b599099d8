"""Synthetic shapes: images of circles, squares and triangles, with PaliGemma task records.

A task the whole pipeline can learn in minutes on a laptop CPU, so the bundled ``shapes-demo`` model
can show detection and captioning end to end without downloading gigabytes of weights. Every scene
is drawn from a seeded generator: the same seed gives the same images and records, anywhere.

A scene holds one to three solid shapes that never overlap, each 15% to 35% of the image side, on a
plain light background. Records follow PaliGemma's task formats:

- ``detect circle`` / ``detect red square`` / ``detect triangle ; square``: for each query, in the
  order asked, the boxes of every matching shape (top to bottom, then left to right) as
  ``<loc{y0}><loc{x0}><loc{y1}><loc{x1}> {label}``, objects joined by `` ; ``. Coordinates are
  big_vision's bins, ``round(v * 1023)`` of the normalised coordinate. When nothing matches, the answer
  is ``none`` (:data:`NO_MATCH`): fine-tuning needs a non-empty target, and a detect parser reads it
  as text without objects.
- ``caption en``: the shapes listed in the same order, ``"a red circle and two blue squares"``.
- ``segment circle``: a record with ``objects`` instead of a suffix, every shape of the scene with its
  kind as label, its box and its mask (drawn exactly as in the image); the training data loader writes
  the target (``<loc>`` x 4 + ``<seg>`` x 16 + `` circle`` for each circle, through the model's mask
  VQ-VAE). Three prompts in four ask for a kind in the scene; the others may have no answer (an empty
  target).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

from vlmzoo.tasks.locations import location_tokens
from vlmzoo.tasks.rle import mask_to_rle

__all__ = [
    "COLOURS",
    "KINDS",
    "NO_MATCH",
    "PROMPT_KINDS",
    "Record",
    "Scene",
    "Shape",
    "caption_text",
    "detect_suffix",
    "expected_objects",
    "generate_scene",
    "loc_tokens",
    "make_records",
    "parse_caption",
    "scene_records",
    "shape_mask",
    "training_records",
    "write_dataset",
]

#: Shape kinds, as named in prompts and captions.
KINDS = ("circle", "square", "triangle")
#: Fill colours (RGB) by name.
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
#: The answer of a detect prompt that no shape in the scene matches.
NO_MATCH = "none"
#: The record kinds :func:`scene_records` makes, in a fixed order.
PROMPT_KINDS = ("detect_shape", "detect_colour_shape", "detect_two_shapes", "caption", "segment_shape")

MIN_SIDE, MAX_SIDE = 0.15, 0.35  # shape size as a fraction of the image side
_NUMBERS = {1: "a", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Shape:
    """One solid shape; ``box`` is (x0, y0, x1, y1) in pixels, edges included in the shape's extent."""

    kind: str
    colour: str
    box: tuple[int, int, int, int]

    @property
    def label(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """A drawn image and the shapes in it, sorted top to bottom then left to right."""

    image: PIL.Image.Image
    shapes: tuple[Shape, ...]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def masks(self) -> np.ndarray:
        """One bool [height, width] mask per shape, in the order of `shapes` (shapes never overlap)."""
        if not self.shapes:
            return np.zeros((0, self.size[1], self.size[0]), dtype=bool)
        return np.stack([shape_mask(shape, self.size) for shape in self.shapes])


@dataclass(frozen=True)
class Record:
    """One training or evaluation example; ``kind`` is one of :data:`PROMPT_KINDS`.

    A ``segment_shape`` record has no ``suffix`` but ``objects``: ``(kind, box, mask)`` of every shape.
    """

    kind: str
    prefix: str
    suffix: str | None
    objects: tuple[tuple[str, tuple[int, int, int, int], Any], ...] | None = None


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def shape_mask(shape: Shape, size: tuple[int, int]) -> np.ndarray:
    """The pixels `shape` covers in an image of ``size`` (width, height), as a bool [height, width] array,
    drawn exactly as in the scene's image."""
    canvas = PIL.Image.new("L", size, 0)
    _draw(PIL.ImageDraw.Draw(canvas), shape, fill=255)
    return np.asarray(canvas) > 0


def _draw(draw: PIL.ImageDraw.ImageDraw, shape: Shape, fill: Any = None) -> None:
    x0, y0, x1, y1 = shape.box
    fill = COLOURS[shape.colour] if fill is None else fill
    # PIL includes the last row/column of a box; boxes here are [x0, x1) like the loc-token convention.
    if shape.kind == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


def generate_scene(rng: random.Random, size: int = 224, max_shapes: int = 3) -> Scene:
    """Draw one scene of 1 to `max_shapes` non-overlapping shapes on a `size` x `size` light background."""
    if size < 32:
        raise ValueError(f"size={size} is too small to draw shapes on; use at least 32 pixels.")
    if not 1 <= max_shapes <= 3:
        raise ValueError(f"max_shapes={max_shapes} must be 1, 2 or 3.")
    gap = max(1, size // 40)
    while True:  # rejection sampling; three shapes of at most 35% always fit, so this ends quickly
        count = rng.randint(1, max_shapes)
        shapes: list[Shape] = []
        for _ in range(50 * count):
            if len(shapes) == count:
                break
            side = rng.randint(round(MIN_SIDE * size), round(MAX_SIDE * size))
            x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
            box = (x0, y0, x0 + side, y0 + side)
            if any(_overlaps(box, other.box, gap) for other in shapes):
                continue
            shapes.append(Shape(rng.choice(KINDS), rng.choice(sorted(COLOURS)), box))
        if len(shapes) == count:
            break
    background = tuple(rng.randint(225, 250) for _ in range(3))
    image = PIL.Image.new("RGB", (size, size), background)
    draw = PIL.ImageDraw.Draw(image)
    for shape in shapes:
        _draw(draw, shape)
    shapes.sort(key=lambda s: (s.box[1], s.box[0]))
    return Scene(image, tuple(shapes))


def loc_tokens(box: Sequence[float], image_size: tuple[int, int]) -> str:
    """``<loc{y0}><loc{x0}><loc{y1}><loc{x1}>`` for a pixel box (x0, y0, x1, y1), big_vision's round(v*1023)."""
    return location_tokens(box, image_size, bins=1023)


def _matches(shape: Shape, query: str) -> bool:
    words = query.split()
    if len(words) == 1:
        return shape.kind == words[0]
    return shape.label == query


def expected_objects(scene: Scene, queries: Sequence[str]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(label, pixel box) of every shape matching each query ("circle" or "red circle"), in query order."""
    return [(query, shape.box) for query in queries for shape in scene.shapes if _matches(shape, query)]


def detect_suffix(scene: Scene, queries: Sequence[str]) -> str:
    """The detection target: every shape matching each query (in query order), joined by `` ; ``.

    :data:`NO_MATCH` when no shape matches any query.
    """
    objects = expected_objects(scene, queries)
    return " ; ".join(f"{loc_tokens(box, scene.size)} {label}" for label, box in objects) or NO_MATCH


def _plural(kind: str) -> str:
    return kind + "s"


def caption_text(shapes: Sequence[Shape]) -> str:
    """List the shapes in order of first appearance, counting repeats: "a red circle and two blue squares"."""
    counts = Counter(shape.label for shape in shapes)
    parts = []
    for label in dict.fromkeys(shape.label for shape in shapes):
        n = counts[label]
        colour, kind = label.split(" ")
        parts.append(f"{_NUMBERS.get(n, str(n))} {colour} {kind if n == 1 else _plural(kind)}")
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def parse_caption(text: str) -> Counter[str]:
    """The shapes a caption names, as a multiset of labels ("red circle"); unknown words are ignored.

    The inverse of :func:`caption_text`, used to score captions by the exact set of shapes named.
    """
    numbers = {word: n for n, word in _NUMBERS.items()} | {"an": 1, "one": 1}
    found: Counter[str] = Counter()
    words = text.replace(",", " ").split()
    for i in range(len(words) - 2):
        count, colour, kind = words[i : i + 3]
        kind = kind[:-1] if kind.endswith("s") and kind[:-1] in KINDS else kind
        if colour in COLOURS and kind in KINDS:
            found[f"{colour} {kind}"] += numbers.get(count, int(count) if count.isdigit() else 1)
    return found


def scene_records(scene: Scene, rng: random.Random, kinds: Sequence[str] = PROMPT_KINDS) -> list[Record]:
    """One record of each of `kinds` for `scene`, with prompts drawn from `rng`.

    Colour+shape prompts ask for a shape in the scene three times in four, so most have an answer;
    the rest, like many single-shape and two-shape prompts, have none and teach :data:`NO_MATCH`.
    """
    records = []
    for kind in kinds:
        if kind == "detect_shape":
            queries = [rng.choice(KINDS)]
        elif kind == "detect_colour_shape":
            if rng.random() < 0.75:
                queries = [rng.choice(scene.shapes).label]
            else:
                queries = [f"{rng.choice(sorted(COLOURS))} {rng.choice(KINDS)}"]
        elif kind == "detect_two_shapes":
            queries = rng.sample(KINDS, 2)
        elif kind == "caption":
            records.append(Record(kind, "caption en", caption_text(scene.shapes)))
            continue
        elif kind == "segment_shape":
            query = rng.choice(scene.shapes).kind if rng.random() < 0.75 else rng.choice(KINDS)
            objects = tuple(
                (shape.kind, shape.box, mask) for shape, mask in zip(scene.shapes, scene.masks(), strict=True)
            )
            records.append(Record(kind, f"segment {query}", None, objects))
            continue
        else:
            raise ValueError(f"unknown record kind {kind!r}; use one of {', '.join(PROMPT_KINDS)}.")
        records.append(Record(kind, "detect " + " ; ".join(queries), detect_suffix(scene, queries)))
    return records


def make_records(
    seed: int, num_images: int, size: int = 224, kinds: Sequence[str] = PROMPT_KINDS
) -> Iterator[tuple[Scene, list[Record]]]:
    """`num_images` scenes and their records, reproducible from `seed`."""
    rng = random.Random(seed)
    for _ in range(num_images):
        scene = generate_scene(rng, size=size)
        yield scene, scene_records(scene, rng, kinds)


def training_records(
    seed: int, images: int, size: int = 224, kinds: Sequence[str] = PROMPT_KINDS
) -> list[dict[str, Any]]:
    """``{"image": PIL image, "prefix", "suffix"}`` dicts for `images` scenes, in memory: fine-tuning data
    without files (the ``shapes`` generator of a training config). ``segment`` records carry ``objects``
    with COCO RLE masks instead of a suffix."""
    if images <= 0:
        raise ValueError(f"images={images} must be positive")
    return [
        _record_dict(scene.image, record, masks_as=mask_to_rle)  # RLE: a few bytes a mask, not a whole image
        for scene, records in make_records(seed, images, size=size, kinds=kinds)
        for record in records
    ]


def _record_dict(image: Any, record: Record, masks_as: Any) -> dict[str, Any]:
    """A training record dict; masks stay arrays, or go through ``masks_as`` (e.g. to COCO RLE for JSONL)."""
    if record.objects is None:
        return {"image": image, "prefix": record.prefix, "suffix": record.suffix}
    objects = [
        {"label": label, "box": list(box), "mask": mask if masks_as is None else masks_as(mask)}
        for label, box, mask in record.objects
    ]
    return {"image": image, "prefix": record.prefix, "objects": objects}


def write_dataset(
    directory: str | os.PathLike,
    seed: int,
    num_images: int,
    size: int = 224,
    kinds: Sequence[str] = PROMPT_KINDS,
    filename: str = "data.jsonl",
) -> Path:
    """Write PNG images and a JSONL file of ``{"image", "prefix", "suffix"}`` records (``segment`` records:
    ``objects`` with COCO RLE masks instead of ``suffix``); return the JSONL path.

    Image paths in the file are relative to it (``images/000000.png``), the layout vlmzoo's fine-tuning
    reads. The JSONL file is written to a temporary name and renamed when complete, so an interrupted
    run never leaves a half-written dataset behind under the final name.
    """
    directory = Path(directory)
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        for index, (scene, records) in enumerate(make_records(seed, num_images, size=size, kinds=kinds)):
            name = f"images/{index:06d}.png"
            scene.image.save(directory / name)
            for record in records:
                f.write(json.dumps(_record_dict(name, record, masks_as=mask_to_rle)) + "\n")
    os.replace(partial, path)
    return path
