"""Training targets of ``detect`` and ``segment`` prompts, written from objects instead of by hand.

``detect a ; b`` → per object ``<loc>`` x 4 + `` label``; ``segment a ; b`` → ``<loc>`` x 4 + ``<seg>`` x 16
+ `` label``; objects joined by `` ; `` (both through `vlmzoo.tasks.format_objects`, the one writer of the
format). Only objects whose label the prompt names are written, in the order given; none gives an
empty target (a negative example).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmzoo.tasks.locations import DEFAULT_BINS, format_objects, normalize_spaces
from vlmzoo.tasks.results import DetectedObject

__all__ = ["LOCATED_TASKS", "located_prompt", "located_suffix"]

#: The prompts whose answers are objects.
LOCATED_TASKS = ("detect", "segment")


def located_prompt(prefix: str) -> tuple[str, list[str]] | None:
    """``("detect" | "segment", [labels])`` for a prompt such as ``"segment cat ; dog"``, else None."""
    words = prefix.strip().split(maxsplit=1)
    if len(words) != 2 or words[0] not in LOCATED_TASKS:
        return None
    labels = [normalize_spaces(label) for label in words[1].split(";")]
    return words[0], [label for label in labels if label]


def located_suffix(prefix: str, objects: Sequence[DetectedObject], image_size: Any, *, bins: int = DEFAULT_BINS) -> str:
    """The target text of a ``detect`` / ``segment`` prompt for ``objects`` (label, box and, to segment,
    ``seg_codes``), in the order given. Raises ValueError for another prompt or a segment object
    without codes."""
    parsed = located_prompt(prefix)
    if parsed is None:
        raise ValueError(f"prompt {prefix!r} is not 'detect a ; b' or 'segment a ; b'; only those take objects")
    task, labels = parsed
    named = set(labels)
    chosen = [obj for obj in objects if normalize_spaces(obj.label) in named]
    if task == "segment":
        missing = [obj.label for obj in chosen if obj.seg_codes is None]
        if missing:
            raise ValueError(f"segment targets need mask codes for every object; {missing[0]!r} has none")
    else:
        chosen = [DetectedObject(label=obj.label, box=obj.box) for obj in chosen]
    return format_objects(chosen, image_size, bins=bins)
