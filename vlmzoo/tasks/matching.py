"""Comparing boxes: intersection over union, and one-to-one matching of predictions to the truth.

Detection quality everywhere in vlmzoo (training evaluation, the demo model's quality bars, plugins that
merge repeated boxes) is measured with these two functions, so the numbers mean the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The IoU at which a predicted box counts as finding a true one (the PASCAL VOC / COCO AP50 rule).
IOU_THRESHOLD = 0.5

LabelledBox = tuple[str, Sequence[float]]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes; 0 when both are empty."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_objects(
    predicted: Sequence[LabelledBox], expected: Sequence[LabelledBox], threshold: float = IOU_THRESHOLD
) -> int:
    """True positives: predictions paired one-to-one with expected objects of the same label at IoU >= threshold.

    Pairs are taken greedily, best IoU first, as detection benchmarks do. Precision is this count over
    ``len(predicted)``, recall over ``len(expected)``.
    """
    pairs = sorted(
        (
            (box_iou(p_box, e_box), i, j)
            for i, (p_label, p_box) in enumerate(predicted)
            for j, (e_label, e_box) in enumerate(expected)
            if p_label == e_label
        ),
        reverse=True,
    )
    used_p: set[int] = set()
    used_e: set[int] = set()
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in used_p and j not in used_e:
            used_p.add(i)
            used_e.add(j)
    return len(used_p)
