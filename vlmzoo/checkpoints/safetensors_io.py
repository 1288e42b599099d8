"""Read safetensors files tensor by tensor with plain reads, so loading holds one copy of the weights.

Memory-mapping a file and copying tensors out of it keeps the file's pages resident next to the
copies (twice the model in RSS); reading each tensor straight into its own buffer does not. A tensor
that changes dtype is converted a chunk at a time, so no full-size copy in the stored dtype is made. The
format (an 8-byte header length, a JSON header, raw little-endian data) is simple and stable.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vlmzoo.errors import InvalidFileError

#: The weight files of a checkpoint directory: one file, or an index naming the shards.
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


class SafetensorsError(InvalidFileError):
    """A file that is not a readable safetensors file; the message names the file (and the tensor)."""


#: The largest header the safetensors library itself accepts.
MAX_HEADER_BYTES = 100_000_000


def _check_entry(path: str | Path, key: str, entry: Any, data_size: int) -> tuple[int, int]:
    """Validate one tensor entry; its (start, end) byte offsets within the data section."""
    field = f"tensor {key!r}"
    if not isinstance(entry, dict):
        raise SafetensorsError(path, f"its header entry is a {type(entry).__name__}, not an object", field)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SafetensorsError(
            path,
            f"dtype {dtype!r} is not one vlmzoo reads ({', '.join(DTYPES)}); re-save the weights as F32/BF16/F16",
            field,
        )
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise SafetensorsError(path, f"shape {shape!r} is not a list of non-negative integers", field)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise SafetensorsError(path, f"data_offsets {offsets!r} are not two ordered non-negative integers", field)
    start, end = offsets
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if end - start != nbytes:
        raise SafetensorsError(
            path, f"shape {shape} of dtype {dtype} needs {nbytes} bytes but data_offsets give it {end - start}", field
        )
    if end > data_size:
        raise SafetensorsError(
            path,
            f"data ends at byte {end} of the data section, past its end ({data_size} bytes): the file is truncated "
            "or damaged; download or save it again",
            field,
        )
    return start, end


def read_header(path: str | Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The tensor entries of a safetensors file and the byte offset where their data starts.

    Every entry is checked before anything is read: known dtype, a shape of non-negative integers whose
    size matches its byte range, byte ranges inside the file that do not overlap. A file that fails any
    check raises `SafetensorsError` naming the file and the tensor.
    """
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        raw = handle.read(8)
        if len(raw) != 8:
            raise SafetensorsError(path, f"not a safetensors file: {len(raw)} bytes long, shorter than any header")
        (size,) = struct.unpack("<Q", raw)
        if size > MAX_HEADER_BYTES or size > file_size - 8:
            raise SafetensorsError(
                path, f"not a safetensors file: a header of {size} bytes does not fit the file ({file_size} bytes)"
            )
        try:
            header = json.loads(handle.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise SafetensorsError(path, f"not a safetensors file: its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(path, f"not a safetensors file: its header is a {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise SafetensorsError(path, f"is a {type(metadata).__name__}, not an object", "__metadata__")
    data_size = file_size - 8 - size
    reached, owner = 0, None  # the furthest byte any earlier tensor uses, and that tensor
    for (start, end), key in sorted((_check_entry(path, key, entry, data_size), key) for key, entry in header.items()):
        if start < reached and end > start:
            raise SafetensorsError(
                path, f"its bytes overlap those of tensor {owner!r}; the file is damaged", f"tensor {key!r}"
            )
        if end > reached:
            reached, owner = end, key
    _library_check(path)
    return header, 8 + size


def _library_check(path: str | Path) -> None:
    """Let the safetensors library judge the header too, so vlmzoo never reads a file transformers refuses.

    ``safe_open`` maps the file but touches only the header's pages, so this costs no memory.
    """
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np"):
            pass
    except Exception as exc:  # the library's SafetensorError, or an OSError from mapping the file
        raise SafetensorsError(path, f"not a valid safetensors file ({exc})") from None


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    return {key: tuple(entry["shape"]) for key, entry in read_header(path)[0].items()}


#: Bytes read per step when a tensor is converted to another dtype as it is read.
CHUNK_BYTES = 64 * 2**20


def _read_exactly(handle, view: memoryview, path: str | Path, key: str) -> None:
    read = 0
    while read < len(view):
        got = handle.readinto(view[read:])
        if not got:
            raise SafetensorsError(path, "ends past the end of the file: the file is truncated", f"tensor {key!r}")
        read += got


def iter_row_blocks(
    path: str | Path, key: str, dtype: torch.dtype | None = None, block_bytes: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_row, rows)`` blocks of one tensor, each read into fresh memory (and converted to `dtype`).

    For a loader that turns a large weight into something smaller (quantized rows) as it reads: only
    one block of the stored tensor is ever in memory. Blocks hold whole rows along the first dimension.
    """
    header, data_start = read_header(path)
    if key not in header:
        raise SafetensorsError(path, "has no such tensor", f"tensor {key!r}")
    entry = header[key]
    stored, shape = DTYPES[entry["dtype"]], entry["shape"]
    if not shape:
        raise SafetensorsError(path, "is a scalar; it has no rows to read in blocks", f"tensor {key!r}")
    target = dtype if dtype is not None and stored.is_floating_point else stored
    row_numel = math.prod(shape[1:])
    block_bytes = CHUNK_BYTES if block_bytes is None else block_bytes
    rows_per_block = max(1, block_bytes // max(1, row_numel * stored.itemsize))
    with open(path, "rb", buffering=0) as handle:
        handle.seek(data_start + entry["data_offsets"][0])
        for first in range(0, shape[0], rows_per_block):
            rows = min(rows_per_block, shape[0] - first)
            raw = torch.empty(rows * row_numel * stored.itemsize, dtype=torch.uint8)
            _read_exactly(handle, memoryview(raw.numpy()), path, key)
            block = raw.view(stored).reshape(rows, *shape[1:])
            yield first, block if target == stored else block.to(target)


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
            stored, shape = DTYPES[entry["dtype"]], entry["shape"]
            start, end = entry["data_offsets"]
            numel = math.prod(shape)
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
