"""The training objective: cross-entropy on the suffix tokens only, summed, with its token count.

Returning a sum (not a mean) lets the trainer divide by the number of suffix tokens in the whole
global batch, so the gradient is the same however the batch is split over micro-batches and processes.
Logits are computed only at positions that predict a suffix token: the image and prompt positions,
most of a PaliGemma sequence, never go through the (vocabulary-sized) output head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.processing import IGNORE_INDEX


def target_mask(labels: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T-1] bool: position t predicts token t+1, which is a real suffix token with a label."""
    return (labels[:, 1:] != IGNORE_INDEX) & (token_type_ids[:, 1:] == 1) & (attention_mask[:, 1:] != 0)


class SuffixLoss(nn.Module):
    """Wraps a model so that one forward call returns the summed suffix loss (what DDP and FSDP wrap)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        model = self.model
        prepared = model.prepare(input_ids, pixel_values, attention_mask, token_type_ids)
        hidden = model.language_model(prepared.embeds, model.masks(prepared), prepared.positions)
        mask = target_mask(labels, token_type_ids, attention_mask)
        logits = model.language_model.logits(hidden[:, :-1][mask])
        return F.cross_entropy(logits.float(), labels[:, 1:][mask], reduction="sum")


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    """Suffix tokens that contribute to the loss in a batch."""
    return int(target_mask(batch["labels"], batch["token_type_ids"], batch["attention_mask"]).sum())
