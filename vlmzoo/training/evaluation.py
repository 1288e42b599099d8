"""Evaluation: mean suffix loss over a data set (token-weighted, summed over all processes)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vlmzoo.processing import PaliGemmaProcessor
from vlmzoo.training.data import Collator, RecordDataset, load_records, validate
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


def evaluate(
    model: nn.Module,
    processor: PaliGemmaProcessor,
    data: str | os.PathLike | Sequence[Any],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (a JSONL path or records): ``{"loss": ..., "examples": ...}``."""
    records = load_records(data)
    validate(records, processor, max_length=max_length)
    batches = [list(range(i, min(i + batch_size, len(records)))) for i in range(0, len(records), batch_size)]
    loader = torch.utils.data.DataLoader(
        RecordDataset(records), batch_sampler=batches, collate_fn=Collator(processor), num_workers=num_workers
    )
    was_training = model.training
    model.eval()
    try:
        loss = evaluate_loss(SuffixLoss(model), loader, device=model.device)
    finally:
        model.train(was_training)
    return {"loss": loss, "examples": len(records)}
