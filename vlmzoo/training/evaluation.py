"""Evaluation: mean suffix loss over a data set; for ``detect`` prompts precision, recall and COCO mAP of
boxes; for ``segment`` prompts mIoU, box accuracy at IoU 0.5 and invalid answers.

Loss is token-weighted and summed over all processes. Detection records are answered by greedy
generation, both the answer and the record's suffix are read by the ``detect`` task post-processor,
and a predicted box counts as found when it overlaps an unmatched true box of the same label with an
intersection over union of at least 0.5. The same answers, with each object's score from its token
probabilities, give COCO's mAP@[.5:.95], AP50, AP75 and AR@100 (`vlmzoo.training.coco_evaluation`).
Segmentation records are answered the same way and scored by `vlmzoo.tasks.segmentation_metrics`
(big_vision's definitions), against the record's objects (their masks) or its written suffix (decoded
by the same mask VQ-VAE).
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
from vlmzoo.tasks.segmentation_metrics import SegmentationTally, TrueObject
from vlmzoo.tasks.targets import located_prompt
from vlmzoo.training.coco_evaluation import answer_prompts, gather_answers, records_coco_metrics
from vlmzoo.training.data import Collator, DataError, Record, RecordDataset, load_records, validate
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
    written = Collator(processor)  # writes the target of records given as objects, in the record's order
    indices = list(range(group.rank, len(selected), group.world_size))
    answered = []
    for start in range(0, len(indices), batch_size):
        chunk = [selected[i] for i in indices[start : start + batch_size]]
        images = [load_image(r.image) for r in chunk]
        suffixes = [written.suffix(r, image.size) for r, image in zip(chunk, images, strict=True)]
        longest = max(len(processor.tokenizer.encode(suffix, add_special_tokens=False).ids) for suffix in suffixes)
        answers = answer_prompts(
            model, processor, images, [r.prefix for r in chunk], post=post, max_new_tokens=longest + 4
        )
        for index, record, suffix, image, (result, _) in zip(
            indices[start : start + batch_size], chunk, suffixes, images, answers, strict=True
        ):
            truth_objects = post.parse(suffix, image_size=image.size).objects
            guess = [(o.label, o.box) for o in result.objects]
            truth = [(o.label, o.box) for o in truth_objects]
            found += match_objects(guess, truth)
            predicted += len(guess)
            true += len(truth)
            classes = located_prompt(record.prefix)[1]  # type: ignore[index]
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


def is_segmentation(record: Record) -> bool:
    return record.prefix.strip().startswith("segment ")


def _true_objects(record: Record, image_size: tuple[int, int], post: Any) -> list[TrueObject]:
    """The objects a ``segment`` record's answer should hold: from its objects, else from its suffix."""
    if record.objects is None:
        parsed = post.parse(record.suffix or "", image_size=image_size)
        return [TrueObject(o.label, o.box, o.mask) for o in parsed.objects if o.mask is not None]
    named = set(located_prompt(record.prefix)[1])  # type: ignore[index]
    truth = []
    for i, obj in enumerate(record.objects):
        if " ".join(obj.label.split()) not in named:
            continue
        try:
            truth.append(TrueObject(obj.label, obj.pixel_box(image_size), obj.mask_array(image_size)))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{record.where}: object {i} ({obj.label!r}): {err}") from None
    return truth


@torch.no_grad()
def segmentation_scores(
    model: nn.Module,
    processor: PaliGemmaProcessor,
    records: Sequence[Record],
    *,
    batch_size: int = 8,
    group: ProcessGroup | None = None,
    postprocessor: Any | None = None,
) -> dict[str, float] | None:
    """``segment_miou``, ``segment_boxacc@0.5``, ``segment_invalid`` (count), ``segment_invalid_rate`` and COCO's
    mask figures (``segment_mAP``, ``segment_AP50``, ``segment_AP75``, ``segment_AR100``) over the ``segment``
    records (greedy answers, masks by the processor's mask VQ-VAE or the default one); None when there
    are none."""
    selected = [r for r in records if is_segmentation(r)]
    if not selected:
        return None
    group = group or ProcessGroup(device=model.device)
    if postprocessor is None:
        vae = {"vae": processor.mask_vae} if processor.mask_vae is not None else {}
        postprocessor = get_postprocessor("segment", **vae)
    tally = SegmentationTally()
    indices = list(range(group.rank, len(selected), group.world_size))
    answered = []
    for start in range(0, len(indices), batch_size):
        chunk = [selected[i] for i in indices[start : start + batch_size]]
        images = [load_image(r.image) for r in chunk]
        answers = answer_prompts(model, processor, images, [r.prefix for r in chunk], post=postprocessor)
        for index, record, image, (answer, _) in zip(
            indices[start : start + batch_size], chunk, images, answers, strict=True
        ):
            truth = _true_objects(record, image.size, postprocessor)
            tally.add(answer.objects, truth)
            classes = located_prompt(record.prefix)[1]  # type: ignore[index]
            answered.append((index, classes, image.size, truth, answer.objects))
    sums = group.sum([sum(tally.ious), len(tally.ious), tally.box_hits, tally.invalid,
                      tally.predicted + tally.empty_answers, len(indices)])  # fmt: skip
    iou_sum, objects, hits, invalid, judged, examples = sums
    scores = {
        "segment_miou": iou_sum / objects if objects else 0.0,
        "segment_boxacc@0.5": hits / objects if objects else 0.0,
        "segment_invalid": int(invalid),
        "segment_invalid_rate": invalid / judged if judged else 0.0,
        "segment_examples": int(examples),
    }
    coco = records_coco_metrics(gather_answers(answered, group), "segm")
    if coco is not None:
        scores.update({f"segment_{name}": value for name, value in coco.overall.items()})
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
    ``detect_precision`` / ``detect_recall`` when the data has ``detect`` prompts and ``segment_miou``,
    ``segment_boxacc@0.5``, ``segment_invalid`` when it has ``segment`` prompts (unless ``detection=False``)."""
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
        if detection:
            metrics.update(detection_scores(model, processor, records, batch_size=batch_size) or {})
            metrics.update(segmentation_scores(model, processor, records, batch_size=batch_size) or {})
    finally:
        model.train(was_training)
    return metrics
