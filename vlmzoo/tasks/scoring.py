"""Per-object confidence from the model's token probabilities, and parsing that uses it.

PaliGemma's text carries no score, but COCO evaluation ranks detections by one and repeated boxes are
told apart by it. An object's score is the geometric mean of the probabilities the model gave the
tokens it chose for that object: its four ``<loc>`` tokens, its ``<seg>`` tokens (segment), and its
label's tokens up to (not including) the token holding the `` ;`` separator, ``<eos>`` or the next
object's first ``<loc>``. The probabilities are the softmax of the raw logits at each step, before any
sampler changed them (so constrained decoding does not inflate them).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from vlmzoo.tasks.base import Postprocessor
from vlmzoo.tasks.results import DetectedObject, TaskResult

__all__ = ["parse_scored", "score_objects"]


def score_objects(
    objects: Sequence[DetectedObject], ids: Sequence[int], probabilities: Sequence[float], processor
) -> None:
    """Set each parsed object's ``score`` from the generated ``ids`` and the ``probabilities`` of each.

    An object's tokens are its four ``<loc>`` tokens, found in order in ``ids``, and what follows them
    up to the next ``<loc>``, a token holding ``;``, ``<eos>``/``<pad>`` or the end. Objects without
    ``locs`` (not parsed from loc tokens) keep their score.
    """
    tokenizer = processor.tokenizer
    stops = {processor.eos_token_id, processor.pad_token_id}
    loc_ids = {tokenizer.token_to_id(f"<loc{i:04d}>") for i in range(1024)}
    start = 0
    for obj in objects:
        if obj.locs is None:
            continue
        wanted = [tokenizer.token_to_id(f"<loc{v:04d}>") for v in obj.locs]
        at = next((i for i in range(start, len(ids) - 3) if list(ids[i : i + 4]) == wanted), None)
        if at is None:
            continue
        end = at + 4
        while end < len(ids) and ids[end] not in stops and ids[end] not in loc_ids:
            if ";" in (tokenizer.id_to_token(ids[end]) or ""):
                break
            end += 1
        span = probabilities[at:end]
        obj.score = float(math.exp(sum(math.log(max(p, 1e-45)) for p in span) / len(span)))
        start = end


def parse_scored(
    post: Postprocessor,
    text: str,
    image_size: Any,
    ids: Sequence[int],
    probabilities: Sequence[float],
    processor,
) -> TaskResult:
    """``post.parse`` with each object's score set (`score_objects`), repeats dropped by score afterwards.

    A post-processor with a ``repeat_iou`` (``detect``, ``segment``) parses with every box kept, the
    objects are scored, and then ``post.drop_repeats`` keeps the higher-scored of each repeated pair.
    """
    threshold = getattr(post, "repeat_iou", None)
    if threshold is None:
        result = post.parse(text, image_size=image_size)
        score_objects(result.objects, ids, probabilities, processor)
        return result
    keep_all = copy.copy(post)
    keep_all.repeat_iou = None
    result = keep_all.parse(text, image_size=image_size)
    score_objects(result.objects, ids, probabilities, processor)
    result.objects = post.drop_repeats(result.objects)
    return result
