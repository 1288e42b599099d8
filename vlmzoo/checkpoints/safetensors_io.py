"""Read safetensors files tensor by tensor with plain reads, so loading holds one copy of the weights.

Memory-mapping a file and copying tensors out of it keeps the file's pages resident next to the
copies (twice the model in RSS); reading each tensor straight into its own buffer does not. A tensor
that changes dtype is converted a chunk at a time, so no full-size copy in the stored dtype is made. The
format (an 8-byte header length, a JSON header, raw little-endian data) is simple and stable.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


class SafetensorsError(ValueError):
    """A file that is not a readable safetensors file."""


def read_header(path: str | Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The tensor entries of a safetensors file and the byte offset where their data starts."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise SafetensorsError(f"{path} is not a safetensors file (header size {size} is implausible)")
        try:
            header = json.loads(handle.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsError(f"{path} is not a safetensors file: its header is not JSON ({exc})") from None
    header.pop("__metadata__", None)
    return header, 8 + size


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    return {key: tuple(entry["shape"]) for key, entry in read_header(path)[0].items()}


#: Bytes read per step when a tensor is converted to another dtype as it is read.
CHUNK_BYTES = 64 * 2**20


def _read_exactly(handle, view: memoryview, path: str | Path, key: str) -> None:
    read = 0
    while read < len(view):
        got = handle.readinto(view[read:])
        if not got:
            raise SafetensorsError(f"{path} is truncated: tensor {key!r} ends past the end of the file")
        read += got


def iter_tensors(
    path: str | Path, keys: set[str] | None = None, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(key, tensor)`` for each tensor (or each of ``keys``) in file order, read into fresh memory.

    With ``dtype``, floating-point tensors are converted while they are read, a chunk at a time, so a
    float32 file loaded as bfloat16 never holds a whole float32 copy of its biggest tensor.
    """
    header, data_start = read_header(path)
    entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    with open(path, "rb", buffering=0) as handle:
        for key, entry in entries:
            if keys is not None and key not in keys:
                continue
            if entry["dtype"] not in DTYPES:
                raise SafetensorsError(f"{path}: tensor {key!r} has unsupported dtype {entry['dtype']}")
            stored, shape = DTYPES[entry["dtype"]], entry["shape"]
            start, end = entry["data_offsets"]
            numel = math.prod(shape)
            if end - start != numel * stored.itemsize:
                raise SafetensorsError(
                    f"{path}: tensor {key!r} of shape {shape} and dtype {entry['dtype']} needs "
                    f"{numel * stored.itemsize} bytes but the header gives it {end - start}"
                )
            handle.seek(data_start + start)
            target = dtype if dtype is not None and stored.is_floating_point else stored
            if target == stored:
                buffer = torch.empty(end - start, dtype=torch.uint8)
                _read_exactly(handle, memoryview(buffer.numpy()), path, key)
                yield key, buffer.view(stored).reshape(shape)
                continue
            result = torch.empty(shape, dtype=target)
            flat = result.view(-1)
            step = max(1, CHUNK_BYTES // stored.itemsize)
            scratch = torch.empty(min(step, numel) * stored.itemsize, dtype=torch.uint8)
            for first in range(0, numel, step):
                count = min(step, numel - first)
                chunk = scratch[: count * stored.itemsize]
                _read_exactly(handle, memoryview(chunk.numpy()), path, key)
                flat[first : first + count].copy_(chunk.view(stored))
            del scratch
            yield key, result
