"""Draw objects on an image with pillow: translucent masks, boxes, and labels on a filled tag.

Colours come from a hash of the label, so ``cat`` has the same colour in every picture and every
run; line width and font size follow the image size, so labels stay readable on a 64 px thumbnail
and on a 4000 px photo.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from vlmzoo.processing.images import load_image


class Drawable(Protocol):
    """What drawing reads of an object: plain data, so any result type (a `DetectedObject`, a plugin's own)
    can be drawn without this module knowing it."""

    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    mask: Any  # bool [height, width], or None
    score: float | None


# Tableau-like colours that stay distinct from each other and readable under black or white text.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141),
    (158, 218, 229), (57, 59, 121),
)  # fmt: skip


def label_color(label: str) -> tuple[int, int, int]:
    """The RGB colour of a label: the same for the same label, in every process (CRC32, not ``hash``)."""
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _font(size: int, font: str | None) -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    """The given font file, else DejaVu Sans when the system has it (wide script coverage), else pillow's own."""
    if font is not None:
        return PIL.ImageFont.truetype(font, size)
    try:
        return PIL.ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return PIL.ImageFont.load_default(size=size)  # a scalable font when pillow has FreeType
    except (TypeError, OSError, ImportError):  # pragma: no cover - pillow built without FreeType
        return PIL.ImageFont.load_default()


def _as_rgb_image(image: Any) -> PIL.Image.Image:
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")  # a copy: the caller's image is never drawn on
    return load_image(image)


def draw_objects(
    image: Any,
    objects: Iterable[Drawable],
    *,
    colors: Mapping[str, tuple[int, int, int]] | None = None,
    mask_alpha: float = 0.45,
    line_width: int | None = None,
    font_size: int | None = None,
    show_labels: bool = True,
    font: str | None = None,
) -> PIL.Image.Image:
    """A new RGB image: ``image`` with each object's mask (translucent), box and label drawn on it.

    Args:
        image: a PIL image, a file path, an array or a tensor (anything the processor accepts).
        objects: what to draw: anything with ``label``, ``box`` (pixels of ``image``), ``mask`` and ``score``,
            such as the `DetectedObject`s the post-processors return.
        colors: label → RGB overrides; other labels get `label_color`.
        mask_alpha: opacity of mask fills, 0..1.
        line_width: box outline width in pixels; default about 0.4% of the shorter side, at least 1.
        font_size: label height in pixels; default about 3.5% of the shorter side, at least 10.
        show_labels: draw the label tags (boxes and masks only when False).
        font: a TrueType/OpenType font file for the labels; default DejaVu Sans if installed, else pillow's.
    """
    if not 0.0 <= mask_alpha <= 1.0:
        raise ValueError(f"mask_alpha must be in [0, 1], got {mask_alpha}")
    canvas = _as_rgb_image(image)
    objects = list(objects)
    width, height = canvas.size
    short = min(width, height)
    line_width = max(1, round(short / 250)) if line_width is None else int(line_width)
    font_size = max(10, round(short * 0.035)) if font_size is None else int(font_size)
    colors = dict(colors or {})

    def color_of(obj: Drawable) -> tuple[int, int, int]:
        return tuple(colors.get(obj.label, label_color(obj.label)))  # type: ignore[return-value]

    masked = [o for o in objects if o.mask is not None]
    if masked and mask_alpha > 0:
        pixels = np.asarray(canvas, dtype=np.float32).copy()
        for obj in masked:
            mask = np.asarray(obj.mask, dtype=bool)
            if mask.shape != (height, width):
                raise ValueError(
                    f"object {obj.label!r} has a mask of shape {mask.shape}, but the image is {height}x{width}; "
                    "draw on the image the result was parsed for"
                )
            pixels[mask] = (1 - mask_alpha) * pixels[mask] + mask_alpha * np.asarray(color_of(obj), np.float32)
        canvas = PIL.Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")

    draw = PIL.ImageDraw.Draw(canvas)
    font = _font(font_size, font)
    for obj in objects:
        color = color_of(obj)
        x0, y0, x1, y1 = obj.box
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=line_width)
        if not show_labels or not obj.label:
            continue
        text = obj.label if obj.score is None else f"{obj.label} {obj.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(1, font_size // 5)
        tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
        tag_x = min(max(0.0, x0), max(0.0, width - tag_w))
        tag_y = y0 - tag_h if y0 - tag_h >= 0 else min(y0, max(0.0, height - tag_h))  # above the box, else inside
        draw.rectangle([tag_x, tag_y, tag_x + tag_w, tag_y + tag_h], fill=color)
        draw.text((tag_x + pad - left, tag_y + pad - top), text, fill=_text_color(color), font=font)
    return canvas
