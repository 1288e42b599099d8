"""Masks as COCO run-length encoding (RLE), the form COCO results files and pycocotools use.

An RLE is ``{"size": [height, width], "counts": str}``: the mask is read column by column (Fortran
order), ``counts`` are the lengths of alternating runs starting with zeros, compressed into the ASCII
string of the COCO API. ``pycocotools.mask.decode(rle)`` reads it back (``counts`` may be passed as
str or bytes); so does `rle_to_mask` here, without pycocotools.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _run_lengths(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def _encode_counts(counts: list[int]) -> str:
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def _decode_counts(text: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("RLE counts string ends in the middle of a number")
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


#: Larger masks are refused rather than allocated (four times Pillow's decompression-bomb limit).
MAX_MASK_PIXELS = 4 * 89_478_485


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A boolean mask ``[height, width]`` as a COCO compressed RLE dict (JSON-ready)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D [height, width], got shape {tuple(mask.shape)}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _encode_counts(_run_lengths(mask))}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE dict (compressed string/bytes or uncompressed list ``counts``) as a boolean mask."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        runs = _decode_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    except (KeyError, TypeError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a COCO RLE dict with 'size' [height, width] and 'counts': {rle!r}") from exc
    if height < 0 or width < 0 or height * width > MAX_MASK_PIXELS:
        raise ValueError(f"RLE size {height}x{width} is out of range (0 to {MAX_MASK_PIXELS} pixels)")
    if sum(runs) != height * width or any(r < 0 for r in runs):
        raise ValueError(f"RLE counts cover {sum(runs)} pixels, but size {height}x{width} has {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((height, width), order="F")
