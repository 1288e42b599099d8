"""What every dataset importer shares: object records, the class prompt, the error that lists bad annotations.

An importer turns a dataset into training records that carry objects instead of a written suffix::

    {"image": "images/0001.jpg", "prefix": "detect cat ; dog",
     "objects": [{"label": "cat", "box": [12.0, 30.5, 200.0, 180.0]}]}

Boxes are ``[x0, y0, x1, y1]`` in pixels of the original image; a ``segment`` record's objects also
carry a ``mask`` (COCO polygons or RLE). The training loader writes the suffix from the objects at
load time, in a new seeded order every epoch, so the order here is only the dataset's own.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vlmzoo.errors import VlmzooError

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "TASKS",
    "AnnotationError",
    "Problems",
    "class_prompt",
    "prompt_classes",
    "write_records",
]

#: The tasks an importer can make records for.
TASKS = ("detect", "segment")
#: At most this many problems are listed in one `AnnotationError` (the count of the rest is given).
MAX_LISTED_PROBLEMS = 20
#: A box may pass the image's edge by this many pixels (rounding in exporters); it is clipped to the image.
EDGE_TOLERANCE = 1.0


class AnnotationError(VlmzooError, ValueError):
    """A dataset with annotations that cannot be used; the message names the file and each bad annotation."""


class Problems:
    """Collects every problem of one source, then raises them as one `AnnotationError`."""

    def __init__(self, source: str | os.PathLike) -> None:
        self.source = os.fspath(source)
        self.items: list[str] = []

    def add(self, where: str, problem: str) -> None:
        self.items.append(f"{where}: {problem}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        listed = self.items[:MAX_LISTED_PROBLEMS]
        more = f"\n  ... and {len(self.items) - len(listed)} more" if len(self.items) > len(listed) else ""
        raise AnnotationError(
            f"{len(self.items)} bad annotation(s) in {self.source}; fix or remove them:\n  "
            + "\n  ".join(listed)
            + more
        )


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    return task


def pixel_box(box: Sequence[Any], image_size: tuple[int, int]) -> tuple[list[float] | None, str | None]:
    """``[x0, y0, x1, y1]`` checked against an image of ``image_size`` (width, height): (box, None) or (None, why).

    Corners up to `EDGE_TOLERANCE` pixels outside the image are clipped to it; further out is an error.
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None, f"box {box!r} is not four numbers"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None, f"box {list(box)} has a non-finite coordinate"
    width, height = image_size
    if x1 <= x0 or y1 <= y0:
        return None, f"box {[x0, y0, x1, y1]} is empty (x1 <= x0 or y1 <= y0)"
    tol = EDGE_TOLERANCE
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        return None, f"box {[x0, y0, x1, y1]} lies outside the {width}x{height} image"
    return [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))], None


def prompt_classes(
    classes: Sequence[str], present: Iterable[str], max_classes: int | None, rng: random.Random
) -> list[str]:
    """The classes one record's prompt names.

    All ``classes`` (in their order) when there are at most ``max_classes`` (or it is None). Otherwise a
    sample of ``max_classes``: up to half of them drawn from the classes ``present`` in the image, the
    rest from the absent ones (so the model also learns to answer nothing for a named class), in a
    shuffled order. The sample comes from ``rng``, so a seed fixes it.
    """
    if max_classes is None or len(classes) <= max_classes:
        return list(classes)
    if max_classes < 1:
        raise ValueError(f"max_classes must be at least 1, got {max_classes}")
    present_set = set(present)
    here = [c for c in classes if c in present_set]
    absent = [c for c in classes if c not in present_set]
    positives = rng.sample(here, min(len(here), max(1, max_classes // 2)))
    negatives = rng.sample(absent, min(len(absent), max_classes - len(positives)))
    chosen = positives + negatives
    rng.shuffle(chosen)
    return chosen


def class_prompt(task: str, classes: Sequence[str]) -> str:
    """``detect a ; b`` / ``segment a ; b``."""
    return f"{task} {' ; '.join(classes)}"


def check_class_name(name: Any) -> str | None:
    """Why ``name`` cannot be a class in a prompt, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return f"class name {name!r} is not a non-empty string"
    if ";" in name or "\n" in name:
        return f"class name {name!r} contains ';' or a newline, which separate classes in the prompt"
    return None


def write_records(records: Sequence[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Write records as JSONL; image paths become relative to the file's directory where they can.

    The file is written under a temporary name and renamed when complete, so an existing file is only
    replaced by a whole new one.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        for record in records:
            image = record["image"]
            if not isinstance(image, (str, os.PathLike)):
                raise ValueError(
                    f"record image is a {type(image).__name__}; only records with image paths can be written to JSONL"
                )
            path = Path(image).resolve()
            try:
                image = os.path.relpath(path, base)
            except ValueError:  # another drive on Windows
                image = str(path)
            f.write(json.dumps({**record, "image": Path(image).as_posix()}, ensure_ascii=False) + "\n")
    os.replace(partial, out)
    return out
