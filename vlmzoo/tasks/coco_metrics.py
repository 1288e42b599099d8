"""COCO metrics: mAP@[.5:.95], AP50, AP75 and AR@100, overall and per class, for boxes (bbox) and masks (segm).

The numbers are pycocotools' own (``COCOeval``), the implementation COCO results are reported with.
faster-coco-eval was measured against it (``scripts/compare_coco_evaluators.py``: identical figures on
5,000 synthetic images, 8x faster on boxes); pycocotools was kept because its numbers define the
metric and because evaluation takes seconds where generating the answers takes hours.

Results are COCO's results format, one dict per found object: ``{"image_id", "category_id", "bbox":
[x, y, width, height], "score"}`` plus ``"segmentation"`` (RLE) for masks. COCO ranks detections by
score, so every object needs one; `detection_results` gives an object without a score 1.0.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmzoo.tasks.results import DetectedObject
from vlmzoo.tasks.rle import mask_to_rle

__all__ = ["IOU_TYPES", "METRICS", "CocoMetrics", "coco_metrics", "detection_results", "metrics_table"]

#: What COCO evaluates: boxes, or masks.
IOU_TYPES = ("bbox", "segm")
#: The figures reported, overall and per class.
METRICS = ("mAP", "AP50", "AP75", "AR100")


@dataclass(frozen=True)
class CocoMetrics:
    """COCO figures for one kind of evaluation (``bbox`` or ``segm``).

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"``.
        overall: ``mAP`` (AP averaged over IoU 0.50:0.05:0.95), ``AP50``, ``AP75``, ``AR100`` (recall
            with at most 100 detections per image), all areas; the mean over classes, as COCO reports.
        per_class: the same four figures for each class name with ground truth in the evaluated images
            (classes without any are left out: COCO gives them no AP).
        images: how many images were evaluated.
    """

    iou_type: str
    overall: dict[str, float]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"iou_type": self.iou_type, "images": self.images, "overall": self.overall, "per_class": self.per_class}

    def table(self) -> str:
        """A plain-text table: one row per class, then ``all``."""
        return metrics_table([self])


def metrics_table(results: Sequence[CocoMetrics]) -> str:
    """Several `CocoMetrics` (e.g. bbox and segm) side by side as one plain-text table."""
    headers = ["class"] + [f"{m.iou_type} {name}" for m in results for name in METRICS]
    names = list(dict.fromkeys(name for m in results for name in m.per_class))
    rows = []
    for name in [*names, "all"]:
        row = [name]
        for m in results:
            values = m.overall if name == "all" else m.per_class.get(name)
            row += [f"{values[k]:.3f}" if values is not None else "-" for k in METRICS]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    return "\n".join(lines)


def detection_results(
    image_id: int, objects: Iterable[DetectedObject], category_ids: Mapping[str, int]
) -> list[dict[str, Any]]:
    """COCO results entries for one image's found objects; labels not in ``category_ids`` are left out.

    ``segmentation`` (RLE) is added for objects with a mask. A missing score counts as 1.0.
    """
    out = []
    for obj in objects:
        category = category_ids.get(obj.label)
        if category is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in obj.box)
        entry: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": 1.0 if obj.score is None else float(obj.score),
        }
        if obj.mask is not None:
            entry["segmentation"] = mask_to_rle(obj.mask)
        out.append(entry)
    return out


def _ground_truth(ground_truth: str | os.PathLike | Mapping[str, Any]):
    from pycocotools.coco import COCO

    if isinstance(ground_truth, (str, os.PathLike)):
        with open(ground_truth, encoding="utf-8") as f:
            data = json.load(f)
    else:
        data = copy.deepcopy(dict(ground_truth))
    data.setdefault("annotations", [])
    for i, ann in enumerate(data["annotations"]):  # pycocotools needs area and iscrowd on every annotation
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            w, h = ann["bbox"][2:] if "bbox" in ann else (0, 0)
            ann["area"] = float(w * h)
        ann.setdefault("id", i + 1)
    truth = COCO()
    truth.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
    return truth


def _mean(values: np.ndarray) -> float | None:
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def coco_metrics(
    ground_truth: str | os.PathLike | Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    iou_type: str = "bbox",
    image_ids: Sequence[int] | None = None,
) -> CocoMetrics:
    """Evaluate COCO ``results`` against a COCO instances file (or its dict) with pycocotools.

    ``image_ids`` restricts the evaluation to those images (default: every image of the ground truth).
    No results at all is allowed: every class with ground truth then scores 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {', '.join(map(repr, IOU_TYPES))}, got {iou_type!r}")
    truth = _ground_truth(ground_truth)
    results = [dict(r) for r in results]
    if iou_type == "segm":
        missing = sum(1 for r in results if "segmentation" not in r)
        if missing:
            raise ValueError(f"{missing} result(s) have no 'segmentation': segm evaluation needs a mask for each")
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            found = truth.loadRes(copy.deepcopy(results))
        else:
            found = COCO()
            found.dataset = {"images": truth.dataset["images"], "categories": truth.dataset["categories"],
                             "annotations": []}  # fmt: skip
            found.createIndex()
        evaluator = COCOeval(truth, found, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [iou, recall, class] at area "all", 100 detections
    recall = evaluator.eval["recall"][:, :, 0, -1]  # [iou, class]
    ious = evaluator.params.iouThrs
    at50, at75 = int(np.argmin(np.abs(ious - 0.5))), int(np.argmin(np.abs(ious - 0.75)))
    names = {c["id"]: c["name"] for c in truth.dataset["categories"]}
    per_class: dict[str, dict[str, float]] = {}
    for k, category in enumerate(evaluator.params.catIds):
        figures = {
            "mAP": _mean(precision[:, :, k]),
            "AP50": _mean(precision[at50, :, k]),
            "AP75": _mean(precision[at75, :, k]),
            "AR100": _mean(recall[:, k]),
        }
        if figures["mAP"] is not None:
            per_class[names[category]] = figures  # type: ignore[assignment]
    overall = {
        "mAP": _mean(precision) or 0.0,
        "AP50": _mean(precision[at50]) or 0.0,
        "AP75": _mean(precision[at75]) or 0.0,
        "AR100": _mean(recall) or 0.0,
    }
    return CocoMetrics(iou_type, overall, per_class, images=len(evaluator.params.imgIds))
