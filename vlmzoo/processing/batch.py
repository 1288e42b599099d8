"""`BatchEncoding`: the dict of model inputs every processor returns."""

from __future__ import annotations

from typing import Any

import torch


class BatchEncoding(dict):
    """A dict of model inputs with attribute access (``enc.input_ids``) and ``.to(device)``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; available: {', '.join(self.keys())}") from None

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> BatchEncoding:
        """Move tensors to `device`; `dtype` applies to floating tensors only (pixel_values), not ids."""
        out = BatchEncoding()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
            out[key] = value
        return out
