"""COCO instances files (``instances_train2017.json``, most labelling tools' "COCO" export) as training records.

A COCO file lists ``images`` (``id``, ``file_name``, ``width``, ``height``), ``categories`` (``id``,
``name``) and ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox`` ``[x, y, width, height]``
in pixels, ``segmentation`` as polygons or RLE, ``iscrowd``). Each image becomes one record:

- the prompt names the categories (`vlmzoo.data.annotations.prompt_classes`: all of them, or a seeded
  sample of ``max_classes`` when there are more);
- each annotation of a named category becomes an object: ``label`` (the category name), ``box``
  ``[x0, y0, x1, y1]`` and, for ``task="segment"``, ``mask`` (the annotation's polygons or RLE as given);
- ``iscrowd`` annotations are left out, as COCO-trained detectors do: a crowd region is one box around
  many objects, which COCO evaluation ignores rather than scores;
- an image without objects is kept: a negative, which teaches the model to answer nothing.

Every bad annotation (unknown image or category, a box that is empty or outside the image, a malformed
mask, a missing image file) is reported at once, as file + annotation id, in one `AnnotationError`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmzoo.data.annotations import (
    AnnotationError,
    Problems,
    check_class_name,
    check_task,
    class_prompt,
    pixel_box,
    prompt_classes,
)

__all__ = ["CocoDataset", "coco_records", "read_coco"]


@dataclass(frozen=True)
class CocoDataset:
    """A checked COCO instances file: the raw dict plus the lookups the importer and evaluator need.

    Attributes:
        path: the file it was read from.
        data: the file's content (``images``, ``categories``, ``annotations``).
        categories: category name by id, in the file's order.
        images: image entry by id, in the file's order.
    """

    path: Path
    data: dict[str, Any]
    categories: dict[int, str]
    images: dict[int, dict[str, Any]]

    @property
    def class_names(self) -> list[str]:
        return list(self.categories.values())

    def category_id(self, name: str) -> int | None:
        return next((i for i, n in self.categories.items() if n == name), None)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AnnotationError(f"COCO file {path} does not exist (expected an instances JSON file)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: a COCO file is an object with images, categories and annotations")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{path}: field {key!r} is missing or not a list; is this a COCO instances file?")
    if not isinstance(data.get("annotations", []), list):
        raise AnnotationError(f"{path}: field 'annotations' is not a list")
    return data


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_coco(path: str | os.PathLike) -> CocoDataset:
    """Read and check a COCO instances file's images and categories (annotations are checked by `coco_records`)."""
    path = Path(path)
    data = _load_json(path)
    problems = Problems(path)
    categories: dict[int, str] = {}
    for i, category in enumerate(data["categories"]):
        where = f"category {category.get('id', f'#{i}') if isinstance(category, dict) else f'#{i}'}"
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            problems.add(where, "needs an integer 'id' and a 'name'")
            continue
        why = check_class_name(category.get("name"))
        if why:
            problems.add(where, why)
        elif category["name"].strip() in categories.values():
            problems.add(where, f"name {category['name']!r} is used by another category; names must be unique")
        elif category["id"] in categories:
            problems.add(where, "id is used by another category")
        else:
            categories[category["id"]] = " ".join(category["name"].split())
    images: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(data["images"]):
        where = f"image {image.get('id', f'#{i}') if isinstance(image, dict) else f'#{i}'}"
        if not isinstance(image, dict) or not _is_id(image.get("id")):
            problems.add(where, "needs an integer 'id' and a 'file_name'")
        elif not isinstance(image.get("file_name"), str) or not image["file_name"]:
            problems.add(where, "needs a 'file_name'")
        elif image["id"] in images:
            problems.add(where, "id is used by another image")
        else:
            for side in ("width", "height"):
                if side in image and (not _is_id(image[side]) or image[side] <= 0):
                    problems.add(where, f"{side} must be a positive integer, got {image[side]!r}")
            images[image["id"]] = image
    problems.raise_if_any()
    if not categories:
        raise AnnotationError(f"{path}: no categories; a COCO instances file names its classes in 'categories'")
    return CocoDataset(path, data, categories, images)


def _image_size(image: Mapping[str, Any], path: Path) -> tuple[int, int]:
    if _is_id(image.get("width")) and _is_id(image.get("height")):
        return image["width"], image["height"]
    import PIL.Image

    with PIL.Image.open(path) as opened:
        return opened.size


def _mask_problem(segmentation: Any, size: tuple[int, int]) -> str | None:
    """Why a COCO ``segmentation`` is unusable for an image of ``size`` (width, height), or None."""
    width, height = size
    if isinstance(segmentation, list):
        if not segmentation:
            return "segmentation is an empty list of polygons"
        for polygon in segmentation:
            if (
                not isinstance(polygon, list)
                or len(polygon) < 6
                or len(polygon) % 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon)
            ):
                return "segmentation polygons must be flat lists of at least 3 (x, y) pairs of numbers"
        return None
    if isinstance(segmentation, dict):
        if segmentation.get("size") not in ([height, width], (height, width)):
            size = segmentation.get("size")
            return f"segmentation RLE size {size!r} is not the image's [height, width] {[height, width]}"
        if not isinstance(segmentation.get("counts"), (str, list)):
            return "segmentation RLE needs 'counts' (a string or a list of run lengths)"
        return None
    return f"segmentation must be polygons or an RLE dict, got {type(segmentation).__name__}"


def coco_records(
    annotations: str | os.PathLike | CocoDataset,
    images: str | os.PathLike | None = None,
    *,
    task: str = "detect",
    max_classes: int | None = None,
    seed: int = 0,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """Training records from a COCO instances file: one per image, negatives included.

    Args:
        annotations: the COCO JSON file (or a `CocoDataset` from `read_coco`).
        images: the folder the ``file_name`` entries are relative to (default: the JSON file's folder).
        task: ``"detect"`` (boxes) or ``"segment"`` (boxes and masks; every annotation needs a segmentation).
        max_classes: name at most this many classes per prompt (a seeded sample per image); None: all.
        seed: fixes the class samples (each image draws from ``seed`` and its id).
        check_files: report image files that do not exist.

    Returns dicts ``{"image", "prefix", "objects"}`` as described in the module docstring; image paths
    are ``images / file_name``.
    """
    task = check_task(task)
    dataset = annotations if isinstance(annotations, CocoDataset) else read_coco(annotations)
    folder = Path(images) if images is not None else dataset.path.parent
    if check_files and not folder.is_dir():
        raise AnnotationError(f"image folder {folder} does not exist (the folder the COCO file_name entries are in)")
    problems = Problems(dataset.path)
    sizes: dict[int, tuple[int, int]] = {}
    for image_id, image in dataset.images.items():
        path = folder / image["file_name"]
        if check_files and not path.is_file():
            problems.add(f"image {image_id}", f"file {str(path)!r} does not exist")
            continue
        try:
            sizes[image_id] = _image_size(image, path)
        except OSError as err:
            problems.add(f"image {image_id}", f"no width/height given and {str(path)!r} cannot be read ({err})")
    objects: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in dataset.images}
    for i, ann in enumerate(dataset.data.get("annotations", [])):
        if not isinstance(ann, dict) or not _is_id(ann.get("id")):
            problems.add(f"annotation #{i}", "needs an integer 'id', 'image_id', 'category_id' and 'bbox'")
            continue
        where = f"annotation {ann['id']}"
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if not _is_id(image_id) or image_id not in dataset.images:
            problems.add(where, f"image_id {image_id!r} is not in 'images'")
            continue
        if not _is_id(category_id) or category_id not in dataset.categories:
            problems.add(where, f"category_id {category_id!r} is not in 'categories'")
            continue
        if ann.get("iscrowd", 0):
            continue
        if image_id not in sizes:  # its image is already reported
            continue
        size = sizes[image_id]
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            problems.add(where, f"bbox must be [x, y, width, height], got {bbox!r}")
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            problems.add(where, f"bbox must be four numbers, got {bbox!r}")
            continue
        box, why = pixel_box((x, y, x + w, y + h), size)
        if why:
            problems.add(where, f"bbox {bbox} (x, y, width, height): {why}")
            continue
        item: dict[str, Any] = {"label": dataset.categories[category_id], "box": box}
        if task == "segment":
            segmentation = ann.get("segmentation")
            if segmentation is None:
                problems.add(where, "task 'segment' needs a 'segmentation' on every annotation")
                continue
            why = _mask_problem(segmentation, size)
            if why:
                problems.add(where, why)
                continue
            item["mask"] = segmentation
        objects[image_id].append(item)
    problems.raise_if_any()
    names = dataset.class_names
    records = []
    for image_id, image in dataset.images.items():
        present = {o["label"] for o in objects[image_id]}
        rng = random.Random(f"{seed}/{image_id}")
        classes = prompt_classes(names, present, max_classes, rng)
        named = set(classes)
        records.append({
            "image": str(folder / image["file_name"]),
            "prefix": class_prompt(task, classes),
            "objects": [o for o in objects[image_id] if o["label"] in named],
        })  # fmt: skip
    return records
