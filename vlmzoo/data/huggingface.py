"""A Hugging Face ``datasets`` split with an ``objects`` column (cppe-5, detection-datasets/coco, ...) as records.

The layout of the hub's detection datasets: an ``image`` column (decoded to a PIL image) and an
``objects`` column holding, per image, the boxes (``bbox``, COCO's ``[x, y, width, height]`` by default)
and their classes (``category``: ``ClassLabel`` integers, whose names the split's features give, or
strings). ``objects`` may be a dict of lists (``datasets.Sequence`` of a dict) or a list of dicts.

``datasets`` is an optional dependency (``pip install datasets``), imported only when a dataset is given
by name. Records keep the images in memory (PIL images), which `vlmzoo.train` accepts as they are.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
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

__all__ = ["BBOX_FORMATS", "hf_records"]

#: How a dataset writes a box: COCO's corner + size, or two corners.
BBOX_FORMATS = ("xywh", "xyxy")


def _load(name: str, split: str | None, **options: Any):
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "reading a Hugging Face dataset by name needs the 'datasets' package: pip install datasets "
            "(or pass a split you loaded yourself)"
        ) from None
    if split is None:
        raise ValueError(f"give split= (e.g. 'train') to load {name!r}")
    return datasets.load_dataset(name, split=split, **options)


def _feature_names(split: Any, objects_column: str, label_key: str) -> list[str] | None:
    """Class names from the split's features (a ``ClassLabel`` under objects → label), if it has them."""
    features = getattr(split, "features", None)
    if not features or objects_column not in features:
        return None
    feature = features[objects_column]
    feature = getattr(feature, "feature", feature)
    if isinstance(feature, list) and feature:
        feature = feature[0]
    if not isinstance(feature, Mapping) or label_key not in feature:
        return None
    label = feature[label_key]
    label = getattr(label, "feature", label)
    names = getattr(label, "names", None)
    return list(names) if names else None


def _as_list(objects: Any, where: str, problems: Problems) -> list[Mapping[str, Any]] | None:
    """Objects of one row as a list of dicts, from a dict of lists or a list of dicts."""
    if isinstance(objects, Mapping):
        lengths = {len(v) for v in objects.values() if isinstance(v, Sequence) and not isinstance(v, str)}
        if len(lengths) > 1:
            problems.add(where, f"the objects' lists have different lengths {sorted(lengths)}")
            return None
        count = lengths.pop() if lengths else 0
        return [{key: values[i] for key, values in objects.items()} for i in range(count)]
    if isinstance(objects, Sequence) and not isinstance(objects, str):
        return list(objects)
    problems.add(where, f"objects must be a dict of lists or a list of dicts, got {type(objects).__name__}")
    return None


def hf_records(
    dataset: Any,
    split: str | None = None,
    *,
    task: str = "detect",
    image_column: str = "image",
    objects_column: str = "objects",
    bbox_key: str = "bbox",
    label_key: str = "category",
    bbox_format: str = "xywh",
    class_names: Sequence[str] | None = None,
    max_classes: int | None = None,
    seed: int = 0,
    **load_options: Any,
) -> list[dict[str, Any]]:
    """Detection records (``{"image": PIL image, "prefix", "objects"}``) from a ``datasets`` split.

    Args:
        dataset: a loaded split (any sequence of row dicts with ``features``), or a hub name, loaded
            with ``datasets.load_dataset(dataset, split=split, **load_options)``.
        task: only ``"detect"``: the hub's detection datasets carry boxes, not masks.
        bbox_format: ``"xywh"`` (COCO, the hub's usual form) or ``"xyxy"``.
        class_names: the class names by integer label; default: the split's ``ClassLabel`` names.
        max_classes: name at most this many classes per prompt, as for `vlmzoo.data.coco.coco_records`.
        seed: fixes the class samples (each row draws from ``seed`` and its index).

    Every bad object (label out of range, box empty or outside the image) is reported as row and object
    (the object's ``id`` where the dataset has one) in one `AnnotationError`.
    """
    if check_task(task) != "detect":
        raise ValueError("Hugging Face detection datasets carry boxes only: use task='detect'")
    if bbox_format not in BBOX_FORMATS:
        raise ValueError(f"bbox_format must be one of {', '.join(map(repr, BBOX_FORMATS))}, got {bbox_format!r}")
    source = dataset if isinstance(dataset, str) else type(dataset).__name__
    if isinstance(dataset, (str, os.PathLike)):
        dataset = _load(os.fspath(dataset), split, **load_options)
    elif split is not None or load_options:
        raise ValueError("split= and loading options apply only when the dataset is given by name")
    names = list(class_names) if class_names is not None else _feature_names(dataset, objects_column, label_key)
    problems = Problems(f"dataset {source}")
    for name in names or []:
        why = check_class_name(name)
        if why:
            problems.add("features", why)
    problems.raise_if_any()
    rows = []
    for index, row in enumerate(dataset):
        where = f"row {index}"
        if not isinstance(row, Mapping) or image_column not in row or objects_column not in row:
            problems.add(where, f"needs the columns {image_column!r} and {objects_column!r}")
            continue
        image = row[image_column]
        if not hasattr(image, "size") or not hasattr(image, "convert"):
            problems.add(where, f"column {image_column!r} holds a {type(image).__name__}, not a decoded image")
            continue
        objects = _as_list(row[objects_column], where, problems)
        if objects is None:
            continue
        found = []
        for number, obj in enumerate(objects):
            at = f"{where} object {obj.get('id', number) if isinstance(obj, Mapping) else number}"
            if not isinstance(obj, Mapping) or bbox_key not in obj or label_key not in obj:
                problems.add(at, f"needs {bbox_key!r} and {label_key!r}")
                continue
            label = obj[label_key]
            if isinstance(label, str):
                why = check_class_name(label)
                if why:
                    problems.add(at, why)
                    continue
                label = " ".join(label.split())
            elif names is not None and isinstance(label, int) and 0 <= label < len(names):
                label = " ".join(names[label].split())
            else:
                known = f"0..{len(names) - 1}" if names else "none: pass class_names="
                problems.add(at, f"{label_key} {label!r} is not a known class (class numbers: {known})")
                continue
            raw = obj[bbox_key]
            try:
                x0, y0, a, b = (float(v) for v in raw)
            except (TypeError, ValueError):
                problems.add(at, f"{bbox_key} must be four numbers, got {raw!r}")
                continue
            corners = (x0, y0, x0 + a, y0 + b) if bbox_format == "xywh" else (x0, y0, a, b)
            box, why = pixel_box(corners, tuple(image.size))
            if why:
                problems.add(at, f"{bbox_key} {list(raw)} ({bbox_format}): {why}")
                continue
            found.append({"label": label, "box": box})
        rows.append((image, found))
    problems.raise_if_any()
    if not rows:
        raise AnnotationError(f"dataset {source} has no rows")
    classes = names or sorted({o["label"] for _, found in rows for o in found})
    if not classes:
        raise AnnotationError(f"dataset {source} names no classes; pass class_names=")
    records = []
    for index, (image, found) in enumerate(rows):
        chosen = prompt_classes(classes, {o["label"] for o in found}, max_classes, random.Random(f"{seed}/{index}"))
        named = set(chosen)
        records.append({"image": image, "prefix": class_prompt("detect", chosen),
                        "objects": [o for o in found if o["label"] in named]})  # fmt: skip
    return records
