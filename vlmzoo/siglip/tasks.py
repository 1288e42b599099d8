"""The ``classify`` task: zero-shot labels for an image, scored by an image-text model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from vlmzoo.siglip.processor import DEFAULT_TEMPLATE
from vlmzoo.tasks.base import Postprocessor, TaskError

__all__ = ["Classification", "Classify"]


@dataclass
class Classification:
    """Zero-shot scores of one image against a list of labels.

    ``probabilities`` are per-label sigmoid probabilities, each the model's belief that *that* label fits
    the image on its own: they do not sum to 1 (several labels may fit, or none). ``logits`` are
    ``exp(t) * img . txt + b`` before the sigmoid.
    """

    labels: list[str]
    probabilities: list[float]
    logits: list[float]
    texts: list[str]

    @property
    def best(self) -> str:
        """The label with the highest probability."""
        return self.labels[int(np.argmax(self.probabilities))]

    def ranked(self) -> list[tuple[str, float]]:
        """(label, probability) pairs, most probable first."""
        return sorted(zip(self.labels, self.probabilities, strict=True), key=lambda item: -item[1])

    def to_dict(self) -> dict[str, Any]:
        return {"task": "classify", "best": self.best, "labels": self.labels, "probabilities": self.probabilities,
                "logits": self.logits, "texts": self.texts}  # fmt: skip

    def draw(self, image: Any, width: int = 220, top: int | None = None) -> PIL.Image.Image:
        """The image with a bar per label beside it (most probable first; ``top`` keeps the first few)."""
        from vlmzoo.processing import load_image

        picture = load_image(image).convert("RGB")
        row = 18
        rows = self.ranked()[:top]
        height = max(picture.height, row * len(rows) + 8)
        canvas = PIL.Image.new("RGB", (picture.width + width, height), (255, 255, 255))
        canvas.paste(picture, (0, 0))
        draw = PIL.ImageDraw.Draw(canvas)
        left = picture.width + 6
        for i, (label, p) in enumerate(rows):
            y = 4 + i * row
            draw.rectangle((left, y, left + int((width - 12) * p), y + row - 4), fill=(150, 185, 240))
            draw.text((left + 2, y + 1), f"{label}  {p:.2f}", fill=(0, 0, 0))
        return canvas


class Classify(Postprocessor):
    """Zero-shot classification: labels → texts through a template, then per-label sigmoid probabilities.

    It generates nothing, so it runs on image-text models (`ImageTextModel.classify`), not on PaliGemma.
    """

    name = "classify"

    def prompt(self, *args: Any, **options: Any) -> str:
        raise TaskError(
            "classify scores labels against an image with an image-text model such as SigLIP: "
            "vlmzoo.load('google/siglip-so400m-patch14-384').classify(image, labels)"
        )

    def parse(self, text: str, image_size: Any = None):
        raise TaskError("classify does not parse generated text; run it on an image-text model with .classify()")

    def texts(
        self, labels: str | Sequence[str], template: str | None = None, default_template: str | None = None
    ) -> tuple[list[str], list[str]]:
        """(labels, the texts the model reads): each label put into the template's ``{}``."""
        names = [labels] if isinstance(labels, str) else list(labels)
        if not names or not all(isinstance(name, str) and name.strip() for name in names):
            raise TaskError(f"labels must be a label or a non-empty list of non-empty labels, got {labels!r}")
        template = template or default_template or DEFAULT_TEMPLATE
        if template.count("{}") != 1:
            raise TaskError(f"template must hold one '{{}}' where the label goes, got {template!r}")
        names = [" ".join(name.split()) for name in names]
        return names, [template.replace("{}", name) for name in names]

    def result(self, labels: list[str], texts: list[str], logits: torch.Tensor) -> Classification:
        """The `Classification` of one image from its row of logits."""
        return Classification(labels, torch.sigmoid(logits).tolist(), logits.tolist(), texts)
