"""Repeated boxes: the same object written twice, a known habit of fine-tuned PaliGemma models.

`drop_repeated` keeps, of every group of same-label boxes that overlap more than a threshold, the one
with the highest score (the first written when scores are equal or unknown), like the non-maximum
suppression of classic detectors, but only within one label. The ``detect`` and ``segment`` tasks
apply it when parsing, with `REPEAT_IOU` unless told otherwise (``repeat_iou=None`` keeps every box).
"""

from __future__ import annotations

from collections.abc import Sequence

from vlmzoo.tasks.matching import box_iou
from vlmzoo.tasks.results import DetectedObject

__all__ = ["REPEAT_IOU", "check_repeat_iou", "drop_repeated"]

#: Default threshold: same-label boxes overlapping more than this are one object written twice. Distinct
#: objects of one class rarely overlap this much; a repeat after fine-tuning nearly always does.
REPEAT_IOU = 0.7


def check_repeat_iou(repeat_iou: float | None) -> float | None:
    """``repeat_iou`` as a float in (0, 1], or None (keep every box)."""
    if repeat_iou is None:
        return None
    if isinstance(repeat_iou, bool) or not isinstance(repeat_iou, (int, float)) or not 0 < repeat_iou <= 1:
        raise ValueError(f"repeat_iou must be a number in (0, 1] or None (keep repeated boxes), got {repeat_iou!r}")
    return float(repeat_iou)


def drop_repeated(objects: Sequence[DetectedObject], repeat_iou: float | None = REPEAT_IOU) -> list[DetectedObject]:
    """``objects`` without repeats: of two same-label boxes with IoU above ``repeat_iou``, the higher score stays.

    The objects that stay keep their order. ``repeat_iou=None`` returns every object.
    """
    threshold = check_repeat_iou(repeat_iou)
    if threshold is None:
        return list(objects)
    ranked = sorted(range(len(objects)), key=lambda i: -(objects[i].score if objects[i].score is not None else 0.0))
    kept: list[int] = []
    for i in ranked:
        if not any(
            objects[j].label == objects[i].label and box_iou(objects[j].box, objects[i].box) > threshold for j in kept
        ):
            kept.append(i)
    return [objects[i] for i in sorted(kept)]
