"""The prefix-LM attention mask, for full and sliding-window layers, prefill and decode alike.

Queries and keys are identified by their column in the (left-padded) batch. A query may see a key
when the key is real (not padding) and either both are in the prefix (bidirectional) or the key is
not later than the query and, on a sliding layer, fewer than ``window`` columns earlier. Every query
also sees itself, so padding rows never turn into NaN.
"""

from __future__ import annotations

import torch


def attention_mask(
    q_columns: torch.Tensor,
    k_columns: torch.Tensor,
    key_valid: torch.Tensor,
    q_prefix: torch.Tensor | None = None,
    k_prefix: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Boolean mask [B, 1, Tq, Tk], True where attention is allowed.

    Args:
        q_columns: [Tq] or [B, Tq] column of each query.
        k_columns: [Tk] or [B, Tk] column of each key (a ring buffer's slots may be out of order).
        key_valid: [B, Tk] False for padding keys and empty cache slots.
        q_prefix: [B, Tq] True for queries that are real prefix tokens (token_type 0).
        k_prefix: [B, Tk] True for keys that are real prefix tokens.
        window: sliding window of the layer, None for full attention.
    """
    q = q_columns[..., :, None]
    k = k_columns[..., None, :]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (q - k < window)
    allowed = allowed & key_valid[:, None, :]
    if q_prefix is not None and k_prefix is not None:
        allowed = allowed | (q_prefix[:, :, None] & k_prefix[:, None, :])
    allowed = allowed | (q == k)
    return allowed[:, None]
