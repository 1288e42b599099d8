"""Accept dtypes the way users write them: ``torch.bfloat16``, ``"bfloat16"``, ``"bf16"``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_NAMES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}  # fmt: skip


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    key = str(dtype).removeprefix("torch.").lower()
    if key not in _NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(set(_NAMES)))}")
    return _NAMES[key]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Create parameters directly in ``dtype`` instead of casting a float32 copy afterwards."""
    if dtype is None:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
