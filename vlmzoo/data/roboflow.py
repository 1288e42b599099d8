"""Roboflow's "PaliGemma" export (``_annotations.train.jsonl`` and friends) as training records.

Each line is ``{"image": "0001.jpg", "prefix": "detect cat ; dog", "suffix": "<loc..>x4 cat ; ..."}`` with
the image next to the file. A ``detect`` line's suffix is read back into objects (boxes in pixels of
the image, whose size is read from the file's header), so the training loader can write the objects
in a new order every epoch, as the public fine-tuning recipes do; the prompt is kept as exported
(Roboflow names every class on every line). A line with an empty suffix is a negative.

Lines of other tasks, and ``segment`` lines (their masks are already ``<seg>`` codes, not masks), are
kept as they are, with their suffix. A suffix whose objects cannot all be read, or that names a class
the prompt does not, is reported as file:line and object number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import PIL.Image

from vlmzoo.data.annotations import AnnotationError, Problems
from vlmzoo.tasks.locations import DEFAULT_BINS, parse_located_text

__all__ = ["roboflow_records"]


def _classes(prefix: str) -> list[str]:
    return [" ".join(name.split()) for name in prefix.split(" ", 1)[1].split(";") if name.strip()]


def roboflow_records(path: str | os.PathLike, *, bins: int = DEFAULT_BINS) -> list[dict[str, Any]]:
    """Records from a Roboflow PaliGemma JSONL file: ``detect`` lines as objects, other lines unchanged.

    ``bins`` turns the ``<loc>`` bins back into pixels (1023, big_vision's convention, by default); the
    training loader writes them with the same convention, so a box comes back as the same bins.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"Roboflow file {path} does not exist (expected e.g. _annotations.train.jsonl)")
    problems = Problems(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                problems.add(where, f"not valid JSON ({err.msg} at column {err.colno})")
                continue
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("image", "prefix")):
                problems.add(where, "expected an object with string fields image, prefix and suffix")
                continue
            image = path.parent / item["image"]
            suffix = item.get("suffix", "")
            if not isinstance(suffix, str):
                problems.add(where, f"field 'suffix' must be a string, got {type(suffix).__name__}")
                continue
            if not image.is_file():
                problems.add(where, f"image {str(image)!r} does not exist")
                continue
            prefix = " ".join(item["prefix"].split())
            if not prefix.startswith("detect ") or "<seg" in suffix:
                records.append({"image": str(image), "prefix": item["prefix"], "suffix": suffix})
                continue
            try:
                with PIL.Image.open(image) as opened:
                    size = opened.size
            except (OSError, PIL.UnidentifiedImageError) as err:
                problems.add(where, f"image {str(image)!r} is not a readable image ({err})")
                continue
            classes = set(_classes(prefix))
            written = [part for part in suffix.split(";") if part.strip()]
            parsed = parse_located_text(suffix)
            if len(parsed) != len(written):
                problems.add(where, f"suffix holds {len(written)} object(s) but only {len(parsed)} read as "
                                    "<loc>x4 + label; fix the damaged ones")  # fmt: skip
                continue
            objects = []
            for index, located in enumerate(parsed, start=1):
                if located.label not in classes:
                    problems.add(where, f"object {index}: label {located.label!r} is not among the prompt's classes")
                    continue
                box = located.box(size, bins)
                if box[2] <= box[0] or box[3] <= box[1]:
                    problems.add(where, f"object {index}: box {located.locs} (y0, x0, y1, x1 bins) is empty")
                    continue
                objects.append({"label": located.label, "box": list(box)})
            records.append({"image": str(image), "prefix": prefix, "objects": objects})
    problems.raise_if_any()
    if not records:
        raise AnnotationError(f"{path} holds no records (one JSON object per line)")
    return records
