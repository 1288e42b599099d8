"""Make the pictures in docs/images from the library itself, so that they show what the code does.

    python scripts/make_doc_images.py            # every picture
    python scripts/make_doc_images.py masks      # only some

The attention-mask pictures are drawn from `vlmzoo.model.attention_mask`, the function the model
uses; the task pictures come from the shipped ``shapes-demo`` model, the SigLIP ones from ``shapes-siglip``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from vlmzoo.model import attention_mask

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"

CELL = 28
PREFIX_COLOUR = (66, 133, 244)
SUFFIX_COLOUR = (52, 168, 83)
BLOCKED = (236, 236, 236)
PADDING = (250, 250, 250)

#: A short example sequence: 4 image tokens, <bos>, a two-word prompt, the newline; then a suffix.
TOKENS = ["img", "img", "img", "img", "<bos>", "detect", "cat", "\\n", "loc", "loc", "cat", "<eos>"]
PREFIX_LENGTH = 8


def _mask_figure(allowed: torch.Tensor, labels: list[str], prefix: list[bool], valid: list[bool], title: str):
    """Rows are queries, columns keys; a coloured cell means the query may attend to the key."""
    font = ImageFont.load_default(size=13)
    n = len(labels)
    margin_left, margin_top = 70, 100
    width, height = margin_left + n * CELL + 20, margin_top + n * CELL + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin_left, 8), title, fill="black", font=ImageFont.load_default(size=15))
    for i, label in enumerate(labels):
        colour = "black" if valid[i] else (170, 170, 170)
        draw.text((margin_left - 8, margin_top + i * CELL + CELL // 2), label, fill=colour, font=font, anchor="rm")
        column = Image.new("RGBA", (70, 16), (255, 255, 255, 0))
        ImageDraw.Draw(column).text((0, 0), label, fill=colour, font=font)
        rotated = column.rotate(90, expand=True)
        image.paste(rotated, (margin_left + i * CELL + 6, margin_top - 74), rotated)
    for q in range(n):
        for k in range(n):
            if not valid[q]:
                fill = PADDING
            elif bool(allowed[q, k]):
                fill = PREFIX_COLOUR if prefix[q] else SUFFIX_COLOUR
            else:
                fill = BLOCKED
            x, y = margin_left + k * CELL, margin_top + q * CELL
            draw.rectangle([x, y, x + CELL - 2, y + CELL - 2], fill=fill)
    return image


def _mask(labels: list[str], prefix_length: int, padding: int = 0, window: int | None = None):
    n = len(labels)
    columns = torch.arange(n)
    valid = torch.tensor([[i >= padding for i in range(n)]])
    prefix = torch.tensor([[padding <= i < padding + prefix_length for i in range(n)]])
    allowed = attention_mask(columns, columns, valid, prefix, prefix, window=window)[0, 0]
    return allowed, prefix[0].tolist(), valid[0].tolist()


def masks() -> list[Path]:
    """The prefix-LM mask, with left padding, and on a sliding-window layer."""
    written = []
    figures = {
        "mask_prefix_lm.png": (TOKENS, 0, None, "prefix-LM: the prefix sees itself both ways; the suffix is causal"),
        "mask_left_padding.png": (["<pad>", "<pad>", *TOKENS], 2, None, "left padding: no one attends to <pad>"),
        "mask_sliding_window.png": (TOKENS, 0, 3, "sliding window 3: the prefix still sees the whole prefix"),
    }
    for name, (labels, padding, window, title) in figures.items():
        allowed, prefix, valid = _mask(labels, PREFIX_LENGTH, padding, window)
        path = IMAGES / name
        _mask_figure(allowed, labels, prefix, valid, title).save(path)
        written.append(path)
    return written


def _grid(images: list[Image.Image], columns: int, gap: int = 8) -> Image.Image:
    """Images of one size side by side, ``columns`` per row, on white."""
    width, height = images[0].size
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), "white")
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * (width + gap), (index // columns) * (height + gap)))
    return sheet


def tasks() -> list[Path]:
    """Detections and masks drawn by the bundled ``shapes-demo`` model on scenes it never saw (seeds training
    did not use)."""
    import random

    import vlmzoo
    from vlmzoo.data.shapes import generate_scene
    from vlmzoo.tasks import draw_objects

    vlm = vlmzoo.load("shapes-demo", device="cpu")
    rng = random.Random(2024)
    scenes = [generate_scene(rng, size=320) for _ in range(4)]
    drawn = []
    for scene in scenes:  # `detect <colour> <shape>` for each shape in the scene
        labels = sorted({shape.label for shape in scene.shapes})
        found = [obj for label in labels for obj in vlm.detect(scene.image, label).objects]
        drawn.append(draw_objects(scene.image, found))
    written = {"readme_detections.png": _grid(drawn, columns=4)}
    rng = random.Random(2026)
    scenes = [generate_scene(rng, size=320) for _ in range(4)]
    drawn = []
    for scene in scenes:  # `segment <shape>` for each kind of shape in the scene
        kinds = sorted({shape.kind for shape in scene.shapes})
        found = [obj for kind in kinds for obj in vlm.segment(scene.image, kind).objects]
        grey = scene.image.convert("L").convert("RGB")  # so that a mask never hides in a shape of its colour
        drawn.append(draw_objects(grey, found, mask_alpha=0.7))
    written["task_segment.png"] = _grid(drawn, columns=4)
    for name, image in written.items():
        image.save(IMAGES / name)
    return [IMAGES / name for name in written]


def _with_caption(image: Image.Image, text: str) -> Image.Image:
    """The image with ``text`` under it, wrapped to the image's width: a result card."""
    font = ImageFont.load_default(size=15)
    measure = ImageDraw.Draw(image)
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and measure.textlength(candidate, font=font) > image.width - 12:
            lines.append(line)
            candidate = word
        line = candidate
    lines.append(line)
    card = Image.new("RGB", (image.width, image.height + 12 + 22 * len(lines)), "white")
    card.paste(image, (0, 0))
    draw = ImageDraw.Draw(card)
    for index, line in enumerate(lines):
        draw.text((6, image.height + 8 + 22 * index), line, fill="black", font=font)
    return card


def _pad(image: Image.Image, height: int) -> Image.Image:
    padded = Image.new("RGB", (image.width, height), "white")
    padded.paste(image, (0, 0))
    return padded


def captions() -> list[Path]:
    """``caption en`` answers of the bundled ``shapes-demo`` model, under the scenes (a seed training did not use)."""
    import random

    import vlmzoo
    from vlmzoo.data.shapes import generate_scene

    vlm = vlmzoo.load("shapes-demo", device="cpu")
    rng = random.Random(2025)
    scenes = [generate_scene(rng, size=280) for _ in range(3)]
    answers = vlm.caption([scene.image for scene in scenes])
    cards = [
        _with_caption(scene.image, f"caption en: {answer.text!r}")
        for scene, answer in zip(scenes, answers, strict=True)
    ]
    height = max(card.height for card in cards)
    written = {"task_caption.png": _grid([_pad(card, height) for card in cards], columns=3)}
    for name, image in written.items():
        image.save(IMAGES / name)
    return [IMAGES / name for name in written]


def _plot(draw: ImageDraw.ImageDraw, box, curves, x_range, y_range, title: str, x_label: str) -> None:
    """Line plot of ``curves`` ([(points, colour, name)]) inside ``box`` (x0, y0, x1, y1), axes and labels."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(120, 120, 120))

    def at(x: float, y: float) -> tuple[float, float]:
        fx = (x - x_range[0]) / (x_range[1] - x_range[0])
        fy = (y - y_range[0]) / (y_range[1] - y_range[0])
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    for value in (y_range[0], (y_range[0] + y_range[1]) / 2, y_range[1]):
        draw.text((x0 - 34, at(0, value)[1] - 6), f"{value:g}", fill=(60, 60, 60))
    for value in (x_range[0], (x_range[0] + x_range[1]) / 2, x_range[1]):
        draw.text((at(value, 0)[0] - 10, y1 + 4), f"{value:g}", fill=(60, 60, 60))
    for i, (points, colour, name) in enumerate(curves):
        clipped = [at(x, min(max(y, y_range[0]), y_range[1])) for x, y in points]
        draw.line(clipped, fill=colour, width=2)
        draw.text((x0 + 8, y0 + 6 + 14 * i), name, fill=colour)
    draw.text((x0, y0 - 18), title, fill=(0, 0, 0))
    draw.text(((x0 + x1) / 2 - 40, y1 + 18), x_label, fill=(60, 60, 60))


def siglip() -> list[Path]:
    """The sigmoid loss of one pair against its logit, and the bundled ``shapes-siglip`` model's training loss;
    zero-shot classification by ``shapes-siglip`` of scenes it never saw."""
    import json
    import math
    import random

    import vlmzoo
    from vlmzoo.data.shapes import COLOURS, KINDS, generate_scene

    image = Image.new("RGB", (900, 350), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    logits = [x / 10 for x in range(-150, 151)]
    curves = [
        ([(x, -math.log(1 / (1 + math.exp(-x)))) for x in logits], SUFFIX_COLOUR, "matching pair (z = +1)"),
        ([(x, -math.log(1 / (1 + math.exp(x)))) for x in logits], (219, 68, 55), "other pair (z = -1)"),
    ]
    _plot(draw, (60, 40, 420, 280), curves, (-15, 15), (0, 15), "-log sigmoid(z * logit) for one pair",
          "logit = t * x.y + b")  # fmt: skip
    start = 1 / (1 + math.exp(-(10 * 1 - 10)))
    draw.text((70, 326), f"at t = 10, b = -10 a perfect match scores sigmoid(0) = {start:.1f}", fill=(60, 60, 60))
    metrics = vlmzoo.checkpoints.hub.bundled_checkpoint("shapes-siglip") / "metrics.jsonl"
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    points = [(line["step"], line["loss"]) for line in steps if "loss" in line]
    top = max(y for _, y in points)
    _plot(draw, (520, 40, 880, 280), [(points, PREFIX_COLOUR, "training loss (global batch 64)")],
          (0, points[-1][0]), (0, math.ceil(top)), "shapes-siglip: sigmoid loss while training", "step")  # fmt: skip
    written = {"siglip_loss.png": image}

    clip = vlmzoo.load("shapes-siglip")
    labels = [f"{colour} {kind}" for colour in sorted(COLOURS) for kind in KINDS]
    rng = random.Random(2024)
    scenes = [generate_scene(rng, size=160, max_shapes=shapes) for shapes in (1, 1, 2, 3)]
    pictures = []
    for scene in scenes:
        pictures.append(clip.classify(scene.image, labels).draw(scene.image, width=200, top=5))
    written["siglip_classify.png"] = _grid(pictures, columns=2)
    for name, picture in written.items():
        picture.save(IMAGES / name)
    return [IMAGES / name for name in written]


FIGURES: dict[str, Callable[[], list[Path]]] = {"masks": masks, "tasks": tasks, "captions": captions, "siglip": siglip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="*", choices=[*FIGURES, []], help="which pictures (default: all)")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in args.figures or FIGURES:
        for path in FIGURES[name]():
            print(path.relative_to(IMAGES.parents[1]))


if __name__ == "__main__":
    main()
