"""``<locNNNN>`` / ``<segNNN>`` text ↔ objects: the format PaliGemma writes boxes and masks in.

One object is ``<loc{ymin}><loc{xmin}><loc{ymax}><loc{xmax}>`` (+ 16 ``<segNNN>`` for a mask) followed
by its label; objects are joined by ``" ; "``. A coordinate is a bin 0..1023 of the image side.

Two conventions turn a bin back into a fraction of the side, and the option ``bins`` picks one:

- ``bins=1023`` (the default): big_vision, where the checkpoints were trained and evaluated, encodes
  ``round(fraction * 1023)`` and decodes ``bin / 1023``, so ``<loc1023>`` is the far edge;
- ``bins=1024``: the official PaliGemma demo (and the supervision library) decode ``bin / 1024``, so
  ``<loc1023>`` stops one 1024th short of the edge.

The difference is under a tenth of a percent of the side (about 0.2 px on a 224 px image).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vlmzoo.tasks.results import Box, DetectedObject, check_image_size, clamp_box

DEFAULT_BINS = 1023
NUM_LOCATIONS = 1024
NUM_SEG_CODES = 128
SEG_TOKENS_PER_MASK = 16
SEPARATOR = " ; "

_TOKEN = re.compile(r"<loc(\d{4})>|<seg(\d{3})>|;")
_LOC_OR_SEG = re.compile(r"<(?:loc\d{4}|seg\d{3})>")
_DROPPED_TOKENS = re.compile(r"<(?:pad|bos|image|unk|mask)>")
_END = re.compile(r"<eos>|</s>")
_SPACES = re.compile(r"\s+")


def check_bins(bins: Any) -> int:
    """``bins`` as an int, or a clear error (1023: big_vision, 1024: the official demo)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(
            f"bins must be a positive integer: 1023 (big_vision, the default) or 1024 (the official demo), got {bins!r}"
        )
    return bins


@dataclass(frozen=True)
class LocatedText:
    """One object as written in the text, before it is turned into pixels.

    Attributes:
        locs: the four bins ``(ymin, xmin, ymax, xmax)`` as written.
        label: the text after the tokens up to the next ``;`` or object, whitespace normalised.
        seg_codes: the 16 ``<segNNN>`` codes, or None when there were none or fewer than 16.
        has_seg: whether any ``<segNNN>`` token followed the box (a cut-off mask has has_seg and no codes).
    """

    locs: tuple[int, int, int, int]
    label: str
    seg_codes: tuple[int, ...] | None = None
    has_seg: bool = False

    def box(self, image_size: tuple[int, int], bins: int = DEFAULT_BINS) -> Box:
        """The box in pixels of an image of ``image_size`` (width, height), clamped to it."""
        width, height = image_size
        ymin, xmin, ymax, xmax = self.locs
        return clamp_box(
            (xmin / bins * width, ymin / bins * height, xmax / bins * width, ymax / bins * height), image_size
        )


def strip_generation_tail(text: str) -> str:
    """Drop everything from the first ``<eos>`` on, and ``<pad>``/``<bos>``/``<image>`` tokens anywhere."""
    return _DROPPED_TOKENS.sub("", _END.split(text, maxsplit=1)[0])


def clean_text(text: str) -> str:
    """The text a person reads: no special, ``<loc>`` or ``<seg>`` tokens, whitespace normalised."""
    return normalize_spaces(_LOC_OR_SEG.sub(" ", strip_generation_tail(text)))


def clean_located_text(text: str) -> str:
    """`clean_text` of a detection / segmentation answer, without separators left dangling at either end."""
    return clean_text(text).strip(" ;")


def normalize_spaces(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


class _Group:
    def __init__(self, loc: int) -> None:
        self.locs = [loc]
        self.segs: list[int] = []
        self.label: list[str] = []

    @property
    def boxed(self) -> bool:
        return len(self.locs) == 4


def parse_located_text(text: str, *, keep_unlabelled_tail: bool = False) -> list[LocatedText]:
    """Every complete object in ``text``, in order.

    Free text before, between and after objects is skipped. Dropped, never an error: a group of fewer
    than four ``<loc>`` tokens (cut off or damaged), stray ``<seg>`` tokens, and (unless
    ``keep_unlabelled_tail``) a last box with no label after it, which generation cut off.
    """
    text = strip_generation_tail(text)
    found: list[LocatedText] = []

    def finish(group: _Group | None, at_end: bool = False) -> None:
        if group is None or not group.boxed:
            return
        label = normalize_spaces(" ".join(group.label))
        if at_end and not label and not keep_unlabelled_tail:
            return
        codes = tuple(group.segs) if len(group.segs) == SEG_TOKENS_PER_MASK else None
        found.append(LocatedText(tuple(group.locs), label, codes, bool(group.segs)))  # type: ignore[arg-type]

    group: _Group | None = None
    position = 0
    for match in _TOKEN.finditer(text):
        between = text[position : match.start()]
        position = match.end()
        if between.strip() and group is not None:
            if group.boxed:
                group.label.append(between)
            else:  # text inside a box's four tokens: a damaged box
                group = None
        loc, seg = match.group(1), match.group(2)
        if loc is not None:
            if group is not None and not group.boxed and not group.label:
                group.locs.append(int(loc))
            else:
                finish(group)
                group = _Group(int(loc))
        elif seg is not None:
            if group is not None and group.boxed and not group.label and len(group.segs) < SEG_TOKENS_PER_MASK:
                group.segs.append(int(seg))
        else:  # ";" ends the object
            finish(group)
            group = None
    if group is not None and group.boxed and text[position:].strip():
        group.label.append(text[position:])
    finish(group, at_end=True)
    return found


def located_objects(
    text: str,
    image_size: Any,
    *,
    bins: int = DEFAULT_BINS,
    keep_unlabelled_tail: bool = False,
) -> list[DetectedObject]:
    """`parse_located_text` turned into `DetectedObject`s with boxes in pixels (no masks decoded)."""
    size = check_image_size(image_size)
    bins = check_bins(bins)
    return [
        DetectedObject(label=item.label, box=item.box(size, bins), seg_codes=item.seg_codes, locs=item.locs)
        for item in parse_located_text(text, keep_unlabelled_tail=keep_unlabelled_tail)
    ]


def location_tokens(box: Sequence[float], image_size: Any, *, bins: int = DEFAULT_BINS) -> str:
    """``<loc>`` x 4 for a pixel box ``(x0, y0, x1, y1)``: ``round(fraction * bins)``, clipped to 0..1023."""
    width, height = check_image_size(image_size)
    bins = check_bins(bins)
    x0, y0, x1, y1 = clamp_box(box, (width, height))

    def to_bin(value: float, side: int) -> int:
        return min(max(round(value / side * bins), 0), NUM_LOCATIONS - 1)

    return "".join(f"<loc{to_bin(v, side):04d}>" for v, side in ((y0, height), (x0, width), (y1, height), (x1, width)))


def seg_tokens(codes: Sequence[int]) -> str:
    """``<segNNN>`` x 16 for a mask's VQ-VAE codes."""
    codes = [int(c) for c in codes]
    if len(codes) != SEG_TOKENS_PER_MASK or not all(0 <= c < NUM_SEG_CODES for c in codes):
        raise ValueError(f"a mask needs {SEG_TOKENS_PER_MASK} codes in 0..{NUM_SEG_CODES - 1}, got {codes}")
    return "".join(f"<seg{c:03d}>" for c in codes)


def _as_object(item: Any) -> DetectedObject:
    if isinstance(item, DetectedObject):
        return item
    if isinstance(item, Mapping):
        return DetectedObject(label=item["label"], box=tuple(item["box"]), seg_codes=item.get("seg_codes"))
    label, box = item
    return DetectedObject(label=label, box=tuple(box))


def format_objects(
    objects: Iterable[DetectedObject | Mapping[str, Any] | tuple[str, Sequence[float]]],
    image_size: Any,
    *,
    bins: int = DEFAULT_BINS,
) -> str:
    """Objects as the text PaliGemma writes: ``<loc>`` x 4 (+ ``<seg>`` x 16) + ``" label"``, joined by ``" ; "``.

    The inverse of the ``detect`` / ``segment`` post-processors (to within half a bin), e.g. to make
    training targets. ``objects`` are `DetectedObject`s, dicts with ``label`` and ``box`` (and optional
    ``seg_codes``), or ``(label, box)`` pairs; boxes are ``(x0, y0, x1, y1)`` pixels of an image of
    ``image_size`` (width, height). A label may not contain ``;``, which separates objects.
    """
    parts = []
    for item in objects:
        obj = _as_object(item)
        label = normalize_spaces(str(obj.label))
        if ";" in label or _LOC_OR_SEG.search(label):
            raise ValueError(f"label {obj.label!r} cannot be written: ';', <loc> and <seg> would split or end it")
        tokens = location_tokens(obj.box, image_size, bins=bins)
        if obj.seg_codes is not None:
            tokens += seg_tokens(obj.seg_codes)
        parts.append(f"{tokens} {label}" if label else tokens)
    return SEPARATOR.join(parts)
