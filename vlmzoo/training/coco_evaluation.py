"""COCO evaluation of a model: answer ``detect`` / ``segment`` prompts, score each object, compute COCO mAP.

Two entry points share one generation loop:

- `evaluate_coco` runs a model over a COCO instances file (``vlmzoo eval CKPT --coco instances.json
  --images DIR``): one prompt per image naming the classes (all of them, or groups of
  ``classes_per_prompt``), the answers written as COCO results and evaluated with pycocotools;
- `records_coco_metrics` scores training records (``detect`` prompts with their true objects) the same
  way, so training evaluation reports the same figures.

Each object's score is `vlmzoo.tasks.scoring`'s: the geometric mean of the probabilities of its
``<loc>`` (and ``<seg>``) and label tokens. Repeated boxes are dropped by the task's ``repeat_iou``. An
*invalid object* is a part of an answer (text between `` ; ``) that is not a complete object of a
prompted class (a cut-off box, an unknown label, stray text); the model's no-match text is not one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmzoo.data.coco import CocoDataset, read_coco
from vlmzoo.generation.constrained import ClosedSetSampler
from vlmzoo.processing import PaliGemmaProcessor, load_image
from vlmzoo.progress import progress_bar
from vlmzoo.tasks import Postprocessor, TaskResult, get_postprocessor
from vlmzoo.tasks.coco_metrics import CocoMetrics, coco_metrics, detection_results, metrics_table
from vlmzoo.tasks.locations import parse_located_text, strip_generation_tail
from vlmzoo.tasks.rle import mask_to_rle
from vlmzoo.tasks.scoring import parse_scored

__all__ = [
    "CocoEvaluation",
    "answer_prompts",
    "count_invalid",
    "evaluate_coco",
    "gather_answers",
    "records_coco_metrics",
    "write_results",
]


@dataclass(frozen=True)
class CocoEvaluation:
    """What `evaluate_coco` found.

    Attributes:
        results: COCO results entries (``image_id``, ``category_id``, ``bbox``, ``score`` [, ``segmentation``]).
        metrics: bbox figures, and segm figures when the answers carried masks.
        answers: how many answers were generated (images x prompts per image).
        invalid_objects: parts of answers that were not a valid object of a prompted class.
    """

    results: list[dict[str, Any]]
    metrics: list[CocoMetrics]
    answers: int = 0
    invalid_objects: int = 0

    def table(self) -> str:
        """The per-class and overall table, then the count of invalid objects."""
        return metrics_table(self.metrics) + f"\n\ninvalid objects: {self.invalid_objects} in {self.answers} answers"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {m.iou_type: m.to_dict() for m in self.metrics},
            "answers": self.answers,
            "invalid_objects": self.invalid_objects,
        }


def count_invalid(text: str, classes: Sequence[str], *, segment: bool = False, no_match: str | None = None) -> int:
    """Parts of an answer (between `` ; ``) that are not a complete object of one of ``classes``."""
    answer = strip_generation_tail(text)
    parts = [p for p in answer.split(";") if p.strip() and (no_match is None or p.strip() != no_match)]
    named = set(classes)
    valid = sum(
        1
        for obj in parse_located_text(answer)
        if obj.label in named and (not segment or obj.seg_codes is not None) and (segment or not obj.has_seg)
    )
    return max(len(parts) - valid, 0)


@torch.no_grad()
def answer_prompts(
    model,
    processor: PaliGemmaProcessor,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    post: Postprocessor,
    sampler: Any = "greedy",
    max_new_tokens: int | None = None,
) -> list[tuple[TaskResult, str]]:
    """One batch: generate an answer per (image, prompt), parse it with scores; (result, raw text) pairs."""
    arrays = [load_image(image) for image in images]
    inputs = processor(images=arrays, prompts=list(prompts))
    chosen: list[torch.Tensor] = []

    def record(step) -> None:
        probabilities = torch.softmax(step.logits, dim=-1)
        chosen.append(probabilities.gather(1, step.tokens[:, None].to(step.logits.device))[:, 0])

    tokens = model.generate(
        input_ids=inputs["input_ids"].to(model.device),
        pixel_values=inputs["pixel_values"].to(model.device, model.dtype),
        attention_mask=inputs["attention_mask"].to(model.device),
        token_type_ids=inputs["token_type_ids"].to(model.device),
        max_new_tokens=max_new_tokens or post.max_new_tokens,
        sampler=sampler,
        callback=record,
    )
    texts = processor.batch_decode(tokens, skip_special_tokens=True)
    probabilities = torch.stack(chosen, dim=1).cpu()
    out = []
    for row, (text, image) in enumerate(zip(texts, arrays, strict=True)):
        size = (image.shape[1], image.shape[0]) if hasattr(image, "shape") else image.size
        ids = tokens[row].tolist()
        result = parse_scored(post, text, size, ids, probabilities[row].tolist(), processor)
        raw = processor.decode(ids, skip_special_tokens=False)
        out.append((result, raw))
    return out


def _chunks(classes: Sequence[str], size: int | None) -> list[list[str]]:
    if size is None or size >= len(classes):
        return [list(classes)]
    if size < 1:
        raise ValueError(f"classes_per_prompt must be at least 1, got {size}")
    return [list(classes[i : i + size]) for i in range(0, len(classes), size)]


def evaluate_coco(
    model,
    processor: PaliGemmaProcessor,
    annotations: str | os.PathLike | CocoDataset,
    images: str | os.PathLike | None = None,
    *,
    task: str = "detect",
    postprocessor: Postprocessor | None = None,
    classes_per_prompt: int | None = None,
    constrained: bool = False,
    no_match: str | None = None,
    batch_size: int = 8,
    max_images: int | None = None,
    max_new_tokens: int | None = None,
    progress: bool | None = None,
) -> CocoEvaluation:
    """Answer ``{task} {classes}`` for every image of a COCO file and evaluate the answers with pycocotools.

    Args:
        annotations: the COCO instances file (the ground truth), or a `CocoDataset`.
        images: the folder of its ``file_name`` entries (default: the file's folder).
        task: ``"detect"`` (bbox metrics) or ``"segment"`` (bbox and segm metrics; needs a post-processor
            with a mask decoder, given as ``postprocessor``).
        classes_per_prompt: name at most this many classes per prompt, asking several prompts per image
            (many classes in one prompt hurt recall); None: all in one.
        constrained: decode with `vlmzoo.generation.constrained.ClosedSetSampler` (only valid objects
            of the prompted classes).
        no_match: the text the model writes when nothing matches (``"none"`` for ``shapes-demo``); not
            counted as an invalid object, and allowed by the constrained sampler.
        max_images: evaluate only the first N images of the file.
    """
    dataset = annotations if isinstance(annotations, CocoDataset) else read_coco(annotations)
    folder = Path(images) if images is not None else dataset.path.parent
    post = postprocessor or get_postprocessor(task)
    segment = post.name == "segment"
    entries = list(dataset.images.values())[:max_images]
    missing = [e["file_name"] for e in entries if not (folder / e["file_name"]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of {dataset.path} are not in {folder}, e.g. {missing[0]!r}; pass the image folder"
        )
    ids = {name: category for category, name in dataset.categories.items()}
    results: list[dict[str, Any]] = []
    invalid = answers = 0
    jobs = [(entry, chunk) for chunk in _chunks(dataset.class_names, classes_per_prompt) for entry in entries]
    bar = progress_bar(total=len(jobs), enabled=progress, desc="COCO eval", unit="answer")
    samplers: dict[tuple[str, ...], ClosedSetSampler] = {}
    budget = max_new_tokens or post.max_new_tokens
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        by_chunk: dict[tuple[str, ...], list[tuple[dict[str, Any], list[str]]]] = {}
        for entry, chunk in batch:
            by_chunk.setdefault(tuple(chunk), []).append((entry, chunk))
        for chunk, group in by_chunk.items():
            if constrained and chunk not in samplers:  # one per class group: it reads the vocabulary once
                samplers[chunk] = ClosedSetSampler(
                    chunk, processor, segment=segment, no_match=no_match, max_new_tokens=budget
                )
            sampler = samplers[chunk] if constrained else "greedy"
            prompts = [post.prompt(list(chunk)) for _ in group]
            paths = [str(folder / entry["file_name"]) for entry, _ in group]
            answered = answer_prompts(
                model, processor, paths, prompts, post=post, sampler=sampler, max_new_tokens=budget
            )
            for (entry, _), (result, raw) in zip(group, answered, strict=True):
                invalid += count_invalid(raw, chunk, segment=segment, no_match=no_match)
                named = {name: ids[name] for name in chunk}
                results += detection_results(entry["id"], result.objects, named)
                answers += 1
        bar.update(len(batch))
    bar.close()
    image_ids = [e["id"] for e in entries]
    metrics = [coco_metrics(dataset.data, results, "bbox", image_ids=image_ids)]
    if segment:
        metrics.append(coco_metrics(dataset.data, [r for r in results if "segmentation" in r], "segm", image_ids))
    return CocoEvaluation(results, metrics, answers, invalid)


def write_results(results: Sequence[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Write COCO results JSON (under a temporary name, renamed when complete)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(list(results)), encoding="utf-8")
    os.replace(partial, out)
    return out


def gather_answers(answered: list[Any], group: Any) -> list[Any]:
    """Every process's answered records (for `records_coco_metrics`), on every process."""
    if not getattr(group, "active", False):
        return answered
    import torch.distributed as dist

    from vlmzoo.tasks import DetectedObject

    def plain(objects: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [(o.label, tuple(o.box), getattr(o, "score", None), o.mask) for o in objects]

    def rebuilt(objects: Sequence[Any]) -> list[DetectedObject]:
        return [DetectedObject(label, box, mask=mask, score=score) for label, box, score, mask in objects]

    everyone: list[Any] = [None] * group.world_size
    dist.all_gather_object(everyone, [(i, c, s, plain(t), plain(f)) for i, c, s, t, f in answered])
    return [(i, c, s, rebuilt(t), rebuilt(f)) for part in everyone for i, c, s, t, f in part]


def records_coco_metrics(
    answered: Sequence[tuple[int, Sequence[str], tuple[int, int], Sequence[Any], Sequence[Any]]],
    iou_type: str = "bbox",
) -> CocoMetrics | None:
    """COCO metrics over answered records: ``(index, classes, size, true objects, found objects)`` each.

    Objects are anything with ``label`` and ``box`` (``[x0, y0, x1, y1]`` pixels of an image of ``size``);
    found objects also have ``score``; for ``iou_type="segm"`` both have a full-image bool ``mask`` (found
    objects without one are left out). Each record is one COCO image whose categories are the classes
    its prompt names. None when no record has a true object (COCO gives no AP then).
    """
    names = sorted({name for _, classes, _, _, _ in answered for name in classes})
    ids = {name: i + 1 for i, name in enumerate(names)}
    truth: dict[str, Any] = {"images": [], "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    annotations, results = [], []
    for index, classes, (width, height), true_objects, found in answered:
        truth["images"].append({"id": index + 1, "width": width, "height": height, "file_name": str(index)})
        for obj in true_objects:
            if obj.label not in ids:
                continue
            x0, y0, x1, y1 = (float(v) for v in obj.box)
            annotation = {"id": len(annotations) + 1, "image_id": index + 1, "category_id": ids[obj.label],
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}  # fmt: skip
            if iou_type == "segm":
                annotation["segmentation"] = mask_to_rle(obj.mask)
                annotation["area"] = float(obj.mask.sum())
            annotations.append(annotation)
        named = {name: ids[name] for name in classes}
        kept = [o for o in found if o.mask is not None] if iou_type == "segm" else found
        results += detection_results(index + 1, kept, named)
    if not annotations:
        return None
    truth["annotations"] = annotations
    if iou_type == "bbox":
        for entry in results:
            entry.pop("segmentation", None)
    return coco_metrics(truth, results, iou_type)
