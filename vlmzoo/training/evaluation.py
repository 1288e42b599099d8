"""Evaluation: mean suffix loss over a data set, and for ``detect`` prompts precision, recall and COCO mAP.

Loss is token-weighted and summed over all processes. Detection records are answered by greedy
generation, both the answer and the record's suffix are read by the ``detect`` task post-processor,
and a predicted box counts as found when it overlaps an unmatched true box of the same label with an
intersection over union of at least 0.5. The same answers, with each object's score from its token
probabilities, give COCO's mAP@[.5:.95], AP50, AP75 and AR@100 (`vlmzoo.training.coco_evaluation`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vlmzoo.processing import PaliGemmaProcessor, load_image
from vlmzoo.tasks import get_postprocessor, match_objects
from vlmzoo.training.coco_evaluation import answer_prompts, gather_answers, records_coco_metrics
from vlmzoo.training.data import Collator, Record, RecordDataset, load_records, validate
from vlmzoo.training.distributed import ProcessGroup
from vlmzoo.training.loss import SuffixLoss, count_targets

_INPUTS = ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "labels")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate_loss(
    loss_module: nn.Module,
    loader: torch.utils.data.DataLoader,
    group: ProcessGroup | None = None,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
) -> float:
    """Mean cross-entropy per suffix token over every batch of ``loader`` (and every process of ``group``)."""
    group = group or ProcessGroup()
    device = device or group.device
    total, count = 0.0, 0
    for batch in loader:
        with autocast(device, amp):
            inputs = {name: batch[name].to(device) for name in _INPUTS}
            total += float(loss_module(**inputs))
        count += count_targets(batch)
    total, count = group.sum([total, float(count)])
    return total / max(count, 1.0)


def detect_postprocessor() -> Any | None:
    """The ``detect`` task post-processor, or None where a plugin set-up has no such task registered."""
    from vlmzoo.registry import UnknownKeyError

    try:
        return get_postprocessor("detect")
    except UnknownKeyError:
        return None


def is_detection(record: Record) -> bool:
    return record.prefix.strip().startswith("detect ")


@torch.no_grad()
def detection_scores(
    model: nn.Module,
    processor: PaliGemmaProcessor,
    records: Sequence[Record],
    *,
    batch_size: int = 8,
    group: ProcessGroup | None = None,
    postprocessor: Any | None = None,
) -> dict[str, float] | None:
    """Precision and recall at IoU 0.5 and COCO bbox figures (``detect_mAP``, ``detect_AP50``, ``detect_AP75``,
    ``detect_AR100``) over the ``detect`` records (greedy answers); None when there are none or no
    ``detect`` post-processor is registered."""
    group = group or ProcessGroup(device=model.device)
    post = postprocessor or detect_postprocessor()
    selected = [r for r in records if is_detection(r)]
    if post is None or not selected:
        return None
    found = predicted = true = 0
    indices = list(range(group.rank, len(selected), group.world_size))
    answered = []
    for start in range(0, len(indices), batch_size):
        chunk = [selected[i] for i in indices[start : start + batch_size]]
        images = [load_image(r.image) for r in chunk]
        longest = max(len(processor.tokenizer.encode(r.suffix, add_special_tokens=False).ids) for r in chunk)
        answers = answer_prompts(
            model, processor, images, [r.prefix for r in chunk], post=post, max_new_tokens=longest + 4
        )
        for index, record, image, (result, _) in zip(
            indices[start : start + batch_size], chunk, images, answers, strict=True
        ):
            truth_objects = post.parse(record.suffix, image_size=image.size).objects
            guess = [(o.label, o.box) for o in result.objects]
            truth = [(o.label, o.box) for o in truth_objects]
            found += match_objects(guess, truth)
            predicted += len(guess)
            true += len(truth)
            classes = [c.strip() for c in record.prefix.strip()[len("detect ") :].split(";") if c.strip()]
            answered.append((index, classes, image.size, truth_objects, result.objects))
    found, predicted, true, examples = group.sum([found, predicted, true, len(indices)])
    scores = {
        "detect_precision": found / predicted if predicted else 0.0,
        "detect_recall": found / true if true else 0.0,
        "detect_examples": int(examples),
    }
    coco = records_coco_metrics(gather_answers(answered, group))
    if coco is not None:
        scores.update({f"detect_{name}": value for name, value in coco.overall.items()})
    return scores


def evaluate(
    model: nn.Module,
    processor: PaliGemmaProcessor,
    data: str | os.PathLike | Sequence[Any],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    num_workers: int = 0,
    detection: bool = True,
) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (a JSONL path or records): ``{"loss": ..., "examples": ...}``, plus
    ``detect_precision`` / ``detect_recall`` when the data has ``detect`` prompts (and ``detection``)."""
    records = load_records(data)
    validate(records, processor, max_length=max_length)
    batches = [list(range(i, min(i + batch_size, len(records)))) for i in range(0, len(records), batch_size)]
    loader = torch.utils.data.DataLoader(
        RecordDataset(records), batch_sampler=batches, collate_fn=Collator(processor), num_workers=num_workers
    )
    was_training = model.training
    model.eval()
    try:
        metrics: dict[str, float] = {"loss": evaluate_loss(SuffixLoss(model), loader, device=model.device)}
        metrics["examples"] = len(records)
        scores = detection_scores(model, processor, records, batch_size=batch_size) if detection else None
        metrics.update(scores or {})
    finally:
        model.train(was_training)
    return metrics
