"""The loading arguments Hugging Face users type, mapped onto vlmzoo's own.

``from_pretrained(..., torch_dtype=torch.bfloat16, device_map="auto", attn_implementation="sdpa")`` is
muscle memory for transformers users. Where an argument means something vlmzoo does, it is accepted
with transformers' meaning; where it does not (``load_in_8bit``, a ``device_map`` that splits the model),
the error says what to use instead rather than a bare ``unexpected keyword argument``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vlmzoo.devices import resolve_device
from vlmzoo.errors import UnsupportedArgumentError

__all__ = ["ATTENTION_IMPLEMENTATIONS", "attention_key", "load_device", "load_dtype", "check_extra_options"]

#: transformers' ``attn_implementation`` names and the `attention` registry keys they map to.
ATTENTION_IMPLEMENTATIONS = {"sdpa": "sdpa", "eager": "eager"}

#: Options transformers takes that change nothing here: vlmzoo always loads this way.
_HARMLESS = {
    "low_cpu_mem_usage": "weights are always loaded one tensor at a time",
    "trust_remote_code": "vlmzoo runs no code from checkpoints",
    "use_safetensors": "vlmzoo loads safetensors only",
}
_QUANTIZE_INSTEAD = {
    "load_in_8bit": "quantize='int8'",
    "load_in_4bit": "quantize='int4'",
    "quantization_config": "quantize='int8' or quantize='int4'",
}


def load_dtype(dtype: Any, torch_dtype: Any) -> Any:
    """``dtype`` or its transformers alias ``torch_dtype``; ``"auto"`` means the checkpoint's own (None)."""
    if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
        raise TypeError(f"got dtype={dtype!r} and torch_dtype={torch_dtype!r}; pass one (torch_dtype is an alias)")
    chosen = dtype if dtype is not None else torch_dtype
    return None if isinstance(chosen, str) and chosen.strip().lower() == "auto" else chosen


def load_device(device: Any, device_map: Any) -> torch.device:
    """The one device to load onto, from ``device`` or a single-device ``device_map``; checked to exist.

    Neither given (or ``device="auto"``): the best device here (see `vlmzoo.devices.resolve_device`).
    """
    if device_map is not None:
        if isinstance(device_map, Mapping):
            targets = {str(value) for value in device_map.values()}
            if len(targets) != 1:
                raise UnsupportedArgumentError(
                    f"a device_map that splits the model over {sorted(targets)} is not supported; vlmzoo loads a "
                    "model onto one device: pass device_map='auto', 'cuda', 'cpu' (or device=...)"
                )
            device_map = targets.pop()
        elif isinstance(device_map, str) and device_map in ("balanced", "balanced_low_0", "sequential"):
            raise UnsupportedArgumentError(
                f"device_map={device_map!r} spreads a model over several devices, which vlmzoo does not do; pass "
                "device_map='auto' (the best single device), 'cuda' or 'cpu'"
            )
        if device not in (None, "auto") and resolve_device(device) != resolve_device(device_map):
            raise TypeError(f"got device={device!r} and device_map={device_map!r}; pass one")
        device = device_map
    return resolve_device(device, default="auto")


def attention_key(attn_implementation: str | None, registries) -> str | None:
    """The `attention` registry key for transformers' ``attn_implementation`` (or a registry key itself)."""
    if attn_implementation is None:
        return None
    key = ATTENTION_IMPLEMENTATIONS.get(attn_implementation, attn_implementation)
    if key not in registries.attention:
        known = sorted(set(ATTENTION_IMPLEMENTATIONS) | set(registries.attention.keys()))
        hint = " (PyTorch's sdpa already uses flash kernels where it can)" if "flash" in str(key) else ""
        raise UnsupportedArgumentError(
            f"attn_implementation={attn_implementation!r} is not available{hint}; use one of {known}"
        )
    return key


def check_extra_options(options: dict[str, Any]) -> None:
    """Accept the transformers options that change nothing here; explain the ones vlmzoo does not take."""
    for name, value in options.items():
        if name in _QUANTIZE_INSTEAD:
            if value in (None, False):
                continue
            raise UnsupportedArgumentError(
                f"{name} is a bitsandbytes option of transformers; vlmzoo quantizes with "
                f"{_QUANTIZE_INSTEAD[name]} instead"
            )
        if name == "use_safetensors" and value is False:
            raise UnsupportedArgumentError("use_safetensors=False: vlmzoo never loads pickled weights")
        if name not in _HARMLESS:
            raise TypeError(f"from_pretrained() got an unexpected keyword argument {name!r}")
