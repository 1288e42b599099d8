"""``detect``: boxes and labels from ``<loc>`` tokens, in pixels of the original image."""

from __future__ import annotations

from typing import Any, ClassVar

from vlmzoo.tasks.base import Postprocessor, TaskError, check_names
from vlmzoo.tasks.locations import DEFAULT_BINS, check_bins, clean_located_text, located_objects
from vlmzoo.tasks.repeats import REPEAT_IOU, check_repeat_iou
from vlmzoo.tasks.results import TaskResult


class Detect(Postprocessor):
    """Detection: ``detect cat ; dog`` → one `DetectedObject` per ``<loc>`` x 4 + label.

    Args:
        bins: how a ``<locN>`` bin becomes a fraction of the side: ``N / bins``. 1023 (default) is
            big_vision's convention, which the checkpoints were trained with; 1024 is the official demo's.
        repeat_iou: of two boxes with the same label that overlap more than this (IoU), only the one with
            the higher score stays (`vlmzoo.tasks.repeats`; the first written when there are no scores, as
            from ``parse`` alone). Default 0.7; None keeps every box.
    """

    name: ClassVar[str] = "detect"
    max_new_tokens: ClassVar[int] = 256

    def __init__(self, *, bins: int = DEFAULT_BINS, repeat_iou: float | None = REPEAT_IOU) -> None:
        self.bins = check_bins(bins)
        self.repeat_iou = check_repeat_iou(repeat_iou)

    def prompt(self, objects: str | list[str]) -> str:
        return f"detect {' ; '.join(check_names(objects))}"

    def parse(self, text: str, image_size: Any = None) -> TaskResult:
        if not isinstance(text, str):
            raise TypeError(f"{self.name}: parse takes the generated text (a str), got {type(text).__name__}")
        if image_size is None:
            raise TaskError(f"{self.name}: parse needs image_size=(width, height) of the original image")
        objects = located_objects(text, image_size, bins=self.bins)
        for obj in objects:
            obj.seg_codes = None
        objects = self.drop_repeats(objects)
        return TaskResult(self.name, clean_located_text(text), text, objects, (int(image_size[0]), int(image_size[1])))


__all__ = ["Detect", "TaskError"]
