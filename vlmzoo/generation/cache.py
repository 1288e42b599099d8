"""A preallocated key/value cache: static shapes, sized once for prompt + new tokens.

Full-attention layers keep one slot per column. Sliding-window layers keep a ring of ``window``
slots (when the window is shorter than the run), since a generated token never looks further back.

Each forward pass writes a chunk of columns: ``begin(n)``, the decoder call, ``advance(n)``. The chunk
that starts at column 0 is the prefill: its queries attend over the chunk itself, with the mask the
caller builds (the prefix-LM mask). Any later chunk, one token or several, attends over the cache with
`KVCache.decode_masks` (causal, windowed, padding excluded). A chunk of several tokens on a ring sees the
ring as it was before the chunk plus the chunk itself, so writing the chunk never hides a key that one of
its earlier queries still needs.
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
        if self.owner.decoding:  # one column after the prefill: the slot arrives as a tensor, so a compiled
            slots = self.owner.step_slots[self.size]  # step does not depend on the column number
            self.keys.index_copy_(2, slots, k)
            self.values.index_copy_(2, slots, v)
            return self.keys, self.values
        start, count = self.owner.column, k.shape[2]
        seen: tuple[torch.Tensor, torch.Tensor] | None = None
        if start == 0:  # the prefill attends over the prompt itself, not the (possibly shorter) ring
            seen = k, v
        elif count > 1 and self.size < self.owner.length:  # the ring before this chunk, then the chunk
            seen = torch.cat([self.keys, k], dim=2), torch.cat([self.values, v], dim=2)
        keep = min(count, self.size)
        slots = torch.arange(start + count - keep, start + count, device=k.device) % self.size
        self.keys.index_copy_(2, slots, k[:, :, count - keep :])
        self.values.index_copy_(2, slots, v[:, :, count - keep :])
        return (self.keys, self.values) if seen is None else seen


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
        self._key_columns = dict(self._slot_columns)
        #: For a one-column step after the prefill: the slot it writes in a cache of each size (a [1] tensor).
        self.step_slots: dict[int, torch.Tensor] = {}
        self.decoding = False

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        return sum(c.keys.numel() * c.keys.element_size() * 2 for c in self.layers)

    def begin(self, columns: int, valid: torch.Tensor | None = None) -> None:
        """Record that the next forward writes ``columns`` columns (with their padding mask)."""
        if columns < 1:
            raise ValueError(f"a chunk must hold at least one column, got {columns}")
        if self.column + columns > self.length:
            raise ValueError(f"the cache holds {self.length} columns; cannot add {columns} after {self.column}")
        span = slice(self.column, self.column + columns)
        self.valid[:, span] = True if valid is None else valid
        self.decoding = columns == 1 and self.column > 0
        chunk = torch.arange(self.column, self.column + columns, device=self.valid.device)
        for window, before in self._slot_columns.items():
            size = self.sizes[window]
            after = before.clone()
            new = chunk[-size:]
            after[new % size] = new
            self._slot_columns[window] = after
            # The column of each key `LayerCache.update` returns for this chunk (-1: an empty slot).
            if self.column == 0:
                self._key_columns[window] = chunk
            elif columns > 1 and size < self.length:
                self._key_columns[window] = torch.cat([before, chunk])
            else:
                self._key_columns[window] = after
            if self.decoding:
                self.step_slots[size] = new % size

    def advance(self, columns: int) -> None:
        self.column += columns

    def decode_masks(self, columns: int = 1) -> dict[int | None, torch.Tensor]:
        """Causal masks [B, 1, columns, S] for the chunk of ``columns`` begun at the current column, one per
        window; ``S`` is the number of keys the layers' `LayerCache.update` returns for that chunk."""
        queries = torch.arange(self.column, self.column + columns, device=self.valid.device)
        masks = {}
        for window, keys in self._key_columns.items():
            key_valid = self.valid[:, keys.clamp(min=0)] & (keys >= 0)
            masks[window] = attention_mask(queries, keys, key_valid, window=window)
        return masks
