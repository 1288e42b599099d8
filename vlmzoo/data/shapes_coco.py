"""Synthetic shapes written as a COCO instances dataset: a tiny real-format dataset for guides and tests.

The same seeded scenes as `vlmzoo.data.shapes`, saved as PNG files with an ``instances.json`` that a
labelling tool could have exported: one category per shape kind (``circle``, ``square``,
``triangle``; or per colour and kind, ``red circle``..., with ``labels="colour"``), a ``bbox`` and a
polygon ``segmentation`` per shape. Running it through the COCO
importer and the COCO evaluator exercises the whole path a user's own export takes, offline.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from vlmzoo.data.shapes import COLOURS, KINDS, Shape, make_records

__all__ = ["shape_polygon", "write_coco_dataset"]

#: Points of the polygon that outlines a circle.
CIRCLE_POINTS = 32


def shape_polygon(shape: Shape) -> list[float]:
    """The outline of a drawn shape as a flat COCO polygon ``[x, y, x, y, ...]`` in pixels."""
    x0, y0, x1, y1 = shape.box
    if shape.kind == "square":
        points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif shape.kind == "triangle":
        points = [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    else:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        step = 2 * math.pi / CIRCLE_POINTS
        points = [(cx + r * math.cos(i * step), cy + r * math.sin(i * step)) for i in range(CIRCLE_POINTS)]
    return [round(float(v), 2) for point in points for v in point]


def write_coco_dataset(
    directory: str | os.PathLike,
    seed: int,
    num_images: int,
    size: int = 224,
    filename: str = "instances.json",
    labels: str = "kind",
) -> Path:
    """Write ``images/NNNNNN.png`` and a COCO instances file for `num_images` scenes; return the file's path.

    ``labels="kind"`` gives three categories (circle, square, triangle), ``"colour"`` twelve (red circle,
    ...). The JSON is written under a temporary name and renamed when complete.
    """
    if num_images <= 0:
        raise ValueError(f"num_images={num_images} must be positive")
    if labels not in ("kind", "colour"):
        raise ValueError(f"labels must be 'kind' or 'colour', got {labels!r}")
    names = list(KINDS) if labels == "kind" else [f"{c} {k}" for c in sorted(COLOURS) for k in KINDS]
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(names)]
    ids = {name: i + 1 for i, name in enumerate(names)}
    images, annotations = [], []
    for index, (scene, _) in enumerate(make_records(seed, num_images, size=size, kinds=())):
        name = f"images/{index:06d}.png"
        scene.image.save(directory / name)
        images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
        for shape in scene.shapes:
            x0, y0, x1, y1 = shape.box
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": index + 1,
                "category_id": ids[shape.kind if labels == "kind" else shape.label],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float((x1 - x0) * (y1 - y0)),
                "segmentation": [shape_polygon(shape)],
                "iscrowd": 0,
            })  # fmt: skip
    path = directory / filename
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))
    os.replace(partial, path)
    return path
