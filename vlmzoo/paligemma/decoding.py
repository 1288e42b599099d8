"""Token ids back into text, keeping the ``<locNNNN>`` / ``<segNNN>`` tokens that carry boxes and masks."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

_LOC_SEG_RE = re.compile(r"<(?:loc\d{4}|seg\d{3})>")


def skipped_ids(tokenizer: Tokenizer, special_ids: Iterable[int]) -> frozenset[int]:
    """Ids dropped by ``skip_special_tokens``: ``special_ids`` and the tokenizer's special added tokens, but
    never loc/seg tokens."""
    skip = set(special_ids)
    for token_id, token in tokenizer.get_added_tokens_decoder().items():
        if token.special:
            skip.add(int(token_id))
    return frozenset(i for i in skip if not _LOC_SEG_RE.fullmatch(tokenizer.id_to_token(i) or ""))


def id_list(ids: Any, what: str) -> list[int]:
    """One sequence of ids (a tensor, array, list or a single id) as a list of ints; a batch is an error."""
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim > 1:
            raise ValueError(
                f"{what} got ids of shape {tuple(ids.shape)}; decode takes one sequence, use batch_decode for a batch."
            )
        return [int(i) for i in ids.reshape(-1).tolist()]
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    ids = list(ids)
    if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
        ids = list(ids[0])
    if any(isinstance(i, (list, tuple)) for i in ids):
        raise ValueError(f"{what} got nested lists; use batch_decode for a batch.")
    return [int(i) for i in ids]


def sequences_of(sequences: Any) -> Any:
    """A batch of id sequences: a 1-D tensor or array is one row; more than 2-D is an error."""
    if isinstance(sequences, (torch.Tensor, np.ndarray)):
        if sequences.ndim == 1:
            sequences = sequences[None]
        if sequences.ndim != 2:
            raise ValueError(f"batch_decode expects a 2-D batch of ids, got shape {tuple(sequences.shape)}.")
    return sequences
