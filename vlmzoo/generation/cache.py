"""A preallocated key/value cache: static shapes, sized once for prompt + new tokens.

Full-attention layers keep one slot per column. Sliding-window layers keep a ring of ``window``
slots (when the window is shorter than the run), since a generated token never looks further back.
"""

from __future__ import annotations

import torch

from vlmzoo.config import DecoderConfig
from vlmzoo.model.masks import attention_mask


class LayerCache:
    """One layer's keys and values; ``update`` stores new ones and returns what the queries may see."""

    def __init__(self, owner: KVCache, size: int, batch: int, kv_heads: int, head_dim: int, dtype, device) -> None:
        self.owner = owner
        self.size = size
        self.keys = torch.zeros(batch, kv_heads, size, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, count = self.owner.column, k.shape[2]
        keep = min(count, self.size)
        if count == 1:  # a decode step: the slot is a tensor, so a compiled step does not see the column
            slots = self.owner.step_slots[self.size]
        else:
            slots = torch.arange(start + count - keep, start + count, device=k.device) % self.size
        self.keys.index_copy_(2, slots, k[:, :, count - keep :])
        self.values.index_copy_(2, slots, v[:, :, count - keep :])
        if count > 1:  # prefill attends over the prompt itself, not the (possibly shorter) ring
            return k, v
        return self.keys, self.values


class KVCache:
    """Caches for every layer of a decoder, plus which columns hold real tokens."""

    def __init__(
        self,
        config: DecoderConfig,
        batch: int,
        length: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.length = length
        self.column = 0
        self.valid = torch.zeros(batch, length, dtype=torch.bool, device=device)
        self.sizes: dict[int | None, int] = {}
        self.layers = []
        for i in range(config.num_layers):
            window = config.window_of(i)
            size = length if window is None else min(window, length)
            self.sizes[window] = size
            self.layers.append(LayerCache(self, size, batch, config.num_kv_heads, config.head_dim, dtype, device))
        self._slot_columns = {
            window: torch.full((size,), -1, dtype=torch.long, device=device) for window, size in self.sizes.items()
        }
        #: For a one-column step: the slot it writes in a cache of each size (a [1] tensor).
        self.step_slots: dict[int, torch.Tensor] = {}

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        return sum(c.keys.numel() * c.keys.element_size() * 2 for c in self.layers)

    def begin(self, columns: int, valid: torch.Tensor | None = None) -> None:
        """Record that the next forward writes ``columns`` columns (with their padding mask)."""
        if self.column + columns > self.length:
            raise ValueError(f"the cache holds {self.length} columns; cannot add {columns} after {self.column}")
        span = slice(self.column, self.column + columns)
        self.valid[:, span] = True if valid is None else valid
        for window, slots in self._slot_columns.items():
            size = self.sizes[window]
            new = torch.arange(self.column, self.column + columns, device=slots.device)[-size:]
            slots[new % size] = new
            if columns == 1:
                self.step_slots[size] = new % size

    def advance(self, columns: int) -> None:
        self.column += columns

    def decode_masks(self) -> dict[int | None, torch.Tensor]:
        """Masks [B, 1, 1, size] for a one-token step at the current column, one per window."""
        query = torch.tensor([self.column], device=self.valid.device)
        masks = {}
        for window, slots in self._slot_columns.items():
            key_valid = self.valid[:, slots.clamp(min=0)] & (slots >= 0)
            masks[window] = attention_mask(query, slots, key_valid, window=window)
        return masks
