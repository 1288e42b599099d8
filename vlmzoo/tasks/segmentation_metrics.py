"""Segmentation quality as big_vision's evaluator measures it: mIoU, box accuracy at IoU 0.5, invalid answers.

big_vision (``evaluators/proj/paligemma/transfers/segmentation.py``) scores one object per example: the
answer's first 4 ``<loc>`` + 16 ``<seg>`` tokens are *invalid* unless all are there, in range, with
``ymax > ymin`` and ``xmax > xmin``; the box counts at IoU >= 0.5 with the true box; the mask IoU is
taken at the original resolution between the decoded mask placed in the box and the true mask, 0 for
an invalid answer; mIoU is the mean over examples.

A prompt here may have several true objects (``segment circle`` on two circles), so each true object
is one example: predictions are paired one-to-one with true objects of the same label, best box IoU
first (any overlap), and an unpaired true object scores IoU 0 and no box hit. *Invalid* counts the
predicted objects that are not a complete valid 4 + 16 group, plus answers with no object at all where
one was expected (big_vision's empty answer). With one true object per prompt this is big_vision's
definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vlmzoo.tasks.matching import IOU_THRESHOLD, box_iou
from vlmzoo.tasks.results import DetectedObject

__all__ = ["SegmentationTally", "TrueObject", "mask_iou"]


@dataclass(frozen=True)
class TrueObject:
    """A true object: label, ``(x0, y0, x1, y1)`` pixel box and full-image bool mask."""

    label: str
    box: tuple[float, float, float, float]
    mask: np.ndarray


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two bool masks of one image (0 when both are empty)."""
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 0.0


def _valid(obj: DetectedObject) -> bool:
    if obj.seg_codes is None or obj.mask is None:
        return False
    if obj.locs is not None:
        ymin, xmin, ymax, xmax = obj.locs
        return ymax > ymin and xmax > xmin
    x0, y0, x1, y1 = obj.box
    return x1 > x0 and y1 > y0


@dataclass
class SegmentationTally:
    """Running sums over answers; `add` one answer at a time, read `metrics` at the end."""

    ious: list[float] = field(default_factory=list)
    box_hits: int = 0
    invalid: int = 0
    predicted: int = 0
    empty_answers: int = 0
    answers: int = 0

    def add(self, predicted: Sequence[DetectedObject], truth: Sequence[TrueObject]) -> None:
        """Score one answer's objects (from the ``segment`` post-processor) against the true objects."""
        self.answers += 1
        valid = [obj for obj in predicted if _valid(obj)]
        self.predicted += len(predicted)
        self.invalid += len(predicted) - len(valid)
        if truth and not predicted:
            self.invalid += 1
            self.empty_answers += 1
        pairs = sorted(
            (
                (box_iou(p.box, t.box), i, j)
                for i, p in enumerate(valid)
                for j, t in enumerate(truth)
                if p.label == t.label
            ),
            reverse=True,
        )
        paired: dict[int, tuple[int, float]] = {}
        used: set[int] = set()
        for iou, i, j in pairs:
            if iou > 0 and i not in used and j not in paired:
                used.add(i)
                paired[j] = (i, iou)
        for j, true in enumerate(truth):
            if j not in paired:
                self.ious.append(0.0)
                continue
            i, iou = paired[j]
            self.box_hits += iou >= IOU_THRESHOLD
            self.ious.append(mask_iou(valid[i].mask, true.mask))  # type: ignore[arg-type]

    def metrics(self) -> dict[str, float]:
        """``miou``, ``boxacc@0.5`` (over true objects), ``invalid`` (count) and ``invalid_rate`` (over
        predicted objects plus empty answers), ``objects`` (true objects)."""
        objects = len(self.ious)
        judged = max(self.predicted + self.empty_answers, 1)
        return {
            "miou": float(np.mean(self.ious)) if objects else 0.0,
            "boxacc@0.5": self.box_hits / objects if objects else 0.0,
            "invalid": self.invalid,
            "invalid_rate": self.invalid / judged,
            "objects": objects,
        }
