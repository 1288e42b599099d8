"""Masks as COCO run-length encoding (RLE), the form COCO results files and pycocotools use.

An RLE is ``{"size": [height, width], "counts": str}``: the mask is read column by column (Fortran
order), ``counts`` are the lengths of alternating runs starting with zeros, compressed into the ASCII
string of the COCO API. Encoding and decoding are pycocotools' own (the library vlmzoo evaluates
with), wrapped to take and give JSON-ready values and to reject sizes and counts that do not fit.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

#: Larger masks are refused rather than allocated (four times Pillow's decompression-bomb limit).
MAX_MASK_PIXELS = 4 * 89_478_485


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A boolean mask ``[height, width]`` as a COCO compressed RLE dict (JSON-ready: ``counts`` is a str)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D [height, width], got shape {tuple(mask.shape)}")
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encoded["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE dict (compressed string/bytes or uncompressed list ``counts``) as a boolean mask."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        elif not isinstance(counts, bytes):
            counts = [int(c) for c in counts]
    except (KeyError, TypeError, ValueError, OverflowError, UnicodeEncodeError) as exc:
        raise ValueError(f"not a COCO RLE dict with 'size' [height, width] and 'counts': {rle!r}") from exc
    if height < 0 or width < 0 or height * width > MAX_MASK_PIXELS:
        raise ValueError(f"RLE size {height}x{width} is out of range (0 to {MAX_MASK_PIXELS} pixels)")
    if isinstance(counts, list):
        if sum(counts) != height * width or any(c < 0 for c in counts):
            raise ValueError(f"RLE counts cover {sum(counts)} pixels, but size {height}x{width} has {height * width}")
        compressed = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        compressed = {"size": [height, width], "counts": counts}
    try:
        with warnings.catch_warnings():  # pycocotools' own numpy 2 deprecation notice, not the caller's to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            return coco_mask.decode(compressed).astype(bool)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"RLE counts do not describe a {height}x{width} mask ({exc})") from None
