"""The plugin module named by the ``vlmzoo`` entry point in this package's pyproject.toml.

It adds one task, ``count``, through the ``register_postprocessors`` hook and vlmzoo's public API only:
the model is prompted exactly as for detection (``detect cat ; dog``), the answer is parsed by vlmzoo's
own ``detect`` post-processor, and the boxes are counted per label. Fine-tuned models sometimes write
the same box twice; boxes of one label that overlap more than ``duplicate_iou`` are counted once.

Examples:
    >>> vlm.run("count", "street.jpg", ["car", "person"]).counts
    {'car': 3, 'person': 2}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import vlmzoo
from vlmzoo.tasks import DetectedObject, Postprocessor, TaskResult, box_iou, check_names

TASK_NAME = "count"


@dataclass
class CountResult(TaskResult):
    """A detection result with ``counts``: label → number of distinct boxes, most frequent first.

    ``objects`` holds the distinct boxes only; ``count(label)`` is 0 for a label never seen.
    """

    counts: dict[str, int] = field(default_factory=dict)

    def count(self, label: str) -> int:
        return self.counts.get(label, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "counts": dict(self.counts)}


class Count(Postprocessor):
    """``count``: detection boxes counted per label.

    Args:
        bins: the ``<loc>`` convention, passed to vlmzoo's ``detect`` (1023: big_vision, 1024: the demo).
        duplicate_iou: boxes of one label overlapping more than this are one object; None keeps them all.
    """

    name: ClassVar[str] = TASK_NAME
    max_new_tokens: ClassVar[int] = 256

    def __init__(self, *, bins: int = 1023, duplicate_iou: float | None = 0.9) -> None:
        if duplicate_iou is not None and not 0.0 < duplicate_iou <= 1.0:
            raise ValueError(f"duplicate_iou must be in (0, 1] or None, got {duplicate_iou!r}")
        self.duplicate_iou = duplicate_iou
        # every box parsed: this task merges repeats itself, by its own duplicate_iou
        self.detect = vlmzoo.get_postprocessor("detect", bins=bins, repeat_iou=None)

    def prompt(self, objects: str | list[str]) -> str:
        """The detection prompt: PaliGemma counts by finding each object."""
        return self.detect.prompt(check_names(objects))

    def parse(self, text: str, image_size: Any = None) -> CountResult:
        detected = self.detect.parse(text, image_size=image_size)
        distinct: list[DetectedObject] = []
        for obj in detected.objects:
            if self.duplicate_iou is not None and any(
                kept.label == obj.label and box_iou(kept.box, obj.box) > self.duplicate_iou for kept in distinct
            ):
                continue
            distinct.append(obj)
        counts = dict(Counter(obj.label for obj in distinct).most_common())
        return CountResult(self.name, detected.text, detected.raw_text, distinct, detected.image_size, counts)


@vlmzoo.hookimpl
def register_postprocessors(registry):
    registry.postprocessor.register(TASK_NAME, Count)
