"""What a task returns: found objects (label, box, mask, score) and the answer's clean text.

Results are plain data in the original image's pixels, so they can be drawn, saved as JSON and
compared without knowing which model or post-processor made them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmzoo.errors import VlmzooError
from vlmzoo.tasks.drawing import draw_objects
from vlmzoo.tasks.rle import mask_to_rle

Box = tuple[float, float, float, float]


class ImageSizeError(VlmzooError, ValueError):
    """An ``image_size`` that is not two positive integers ``(width, height)``."""


def check_image_size(image_size: Any) -> tuple[int, int]:
    """``(width, height)`` as two Python ints, or one clear `ImageSizeError`."""
    try:
        width, height = image_size
    except (TypeError, ValueError):
        raise ImageSizeError(
            f"image_size must be (width, height) of the original image, two positive integers; got {image_size!r}. "
            "For a PIL image pass image.size."
        ) from None
    for name, value in (("width", width), ("height", height)):
        integral = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if not integral or value <= 0:
            raise ImageSizeError(
                f"image_size {name} must be a positive integer (pixels), got {value!r} in image_size={image_size!r}. "
                "Pass (width, height) of the original image, e.g. image.size for a PIL image."
            )
    return int(width), int(height)


@dataclass
class DetectedObject:
    """One object found in an image.

    Attributes:
        label: the object's name as the model wrote it (may be empty, may hold any characters but ``;``).
        box: ``(x0, y0, x1, y1)`` in pixels of the original image, ``x0 <= x1``, ``y0 <= y1``, inside the image.
        mask: boolean array ``[height, width]`` of the whole image (segmentation only), else None.
        score: a confidence in [0, 1] when one is known, else None. The text carries none; `VisionLanguageModel.run`
            sets it to the geometric mean of the probabilities the model gave the object's tokens.
        seg_codes: the 16 VQ-VAE codes of the mask (segmentation only), else None.
        locs: the four ``<loc>`` bins ``(ymin, xmin, ymax, xmax)`` as the model wrote them, when parsed from text.
    """

    label: str
    box: Box
    mask: np.ndarray | None = None
    score: float | None = None
    seg_codes: tuple[int, ...] | None = None
    locs: tuple[int, int, int, int] | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``box`` [x0, y0, x1, y1], COCO ``bbox`` [x, y, w, h], ``area``, ``segmentation`` (RLE)."""
        x0, y0, x1, y1 = (float(v) for v in self.box)
        out: dict[str, Any] = {
            "label": self.label,
            "box": [x0, y0, x1, y1],
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": float(self.mask.sum()) if self.mask is not None else (x1 - x0) * (y1 - y0),
            "score": None if self.score is None else float(self.score),
        }
        if self.mask is not None:
            out["segmentation"] = mask_to_rle(self.mask)
        if self.seg_codes is not None:
            out["seg_codes"] = [int(c) for c in self.seg_codes]
        return out


@dataclass
class TaskResult:
    """A task's answer for one image.

    Attributes:
        task: the post-processor's name (``"detect"``, ``"caption"``, ...).
        text: the answer without ``<loc>``/``<seg>``/special tokens, whitespace normalised.
        raw_text: the generated text as it was parsed.
        objects: found objects (empty for text tasks).
        image_size: ``(width, height)`` of the original image, when known.
    """

    task: str
    text: str
    raw_text: str
    objects: list[DetectedObject] = field(default_factory=list)
    image_size: tuple[int, int] | None = None

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    @property
    def boxes(self) -> list[Box]:
        return [o.box for o in self.objects]

    def draw(self, image: Any, **options: Any):
        """The image with this result's boxes, labels and masks drawn on it (a new RGB PIL image).

        ``image`` is anything the processor accepts (PIL image, path, array); ``options`` go to
        `vlmzoo.tasks.draw_objects` (``colors``, ``mask_alpha``, ``line_width``, ``font_size``, ``font``).
        """
        return draw_objects(image, self.objects, **options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: task, text, raw text, image size and each object's `DetectedObject.to_dict`."""
        return {
            "task": self.task,
            "text": self.text,
            "raw_text": self.raw_text,
            "image_size": None if self.image_size is None else list(self.image_size),
            "objects": [o.to_dict() for o in self.objects],
        }

    def to_json(self, **dumps_options: Any) -> str:
        """`to_dict` as a JSON string (``dumps_options`` go to `json.dumps`)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, **dumps_options)


def clamp_box(box: Sequence[float], image_size: tuple[int, int]) -> Box:
    """Order the corners and clamp them to the image: ``0 <= x0 <= x1 <= width``, same for y."""
    width, height = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    if any(math.isnan(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box {tuple(box)} has NaN coordinates")
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    return (x0, y0, x1, y1)
