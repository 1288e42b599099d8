"""Masks into ``<seg>`` codes: the encoder half of big_vision's VQ-VAE, for segmentation training targets.

big_vision writes a referring-segmentation target (``refcoco_mask2str`` in
``big_vision/pp/proj/paligemma/segmentation.py``) this way, and `encode_masks` does the same:

1. crop the object's mask to its box, each box edge rounded to the nearest pixel;
2. resize the crop to 64x64, bilinear with antialiasing, as values in [0, 1];
3. scale to [-1, 1] (``2 * (x - 0.5)``);
4. run the encoder: four stride-2 convolutions with "SAME" padding, each followed by ReLU
   (1→16→32→64→128 channels, 64x64 → 4x4; keys ``encoder.0/2/4/6``), two residual blocks
   (``encoder.8.net``, ``encoder.9.net``: Conv3x3 → ReLU → Conv3x3 → ReLU → Conv1x1, plus the input)
   and a Conv1x1 to 512 channels (``encoder.10``);
5. for each of the 16 cells (row-major), the nearest of the 128 codebook rows by L2 distance.

The weights come from the same file as the decoder's (``vae-oid.npz``, its safetensors conversion, or
a VQ-VAE vlmzoo trained in that layout).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.tasks.mask_decoding import (
    CODE_DIM,
    GRID,
    MASK_SIZE,
    NUM_CODES,
    SOURCE_HINT,
    MaskDecoder,
    ResBlock,
    VaeFileError,
    pixel_box,
    read_vae_weights,
    resolve_vae_file,
)

__all__ = [
    "MaskEncoder",
    "check_encoder_weights",
    "crop_masks",
    "encode_masks",
    "encoder_shapes",
    "load_mask_encoder",
    "nearest_codes",
]

#: Channels of the four downsampling convolutions (the decoder's upsampling ones, reversed).
DOWN_CHANNELS = (16, 32, 64, 128)


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's ``padding="SAME"``: output side ``ceil(side / stride)``, the odd
    pixel of padding (if any) at the bottom / right. For the 4x4 stride-2 kernels of ``vae-oid.npz`` on even
    sides this is one pixel on every side; the padding is computed so other kernel sizes are right too."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        sides = reversed(x.shape[-2:])  # F.pad takes the last dimension first
        for side, kernel, stride in zip(sides, reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max((math.ceil(side / stride) - 1) * stride + kernel - side, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MaskEncoder(nn.Module):
    """big_vision's VQ-VAE mask encoder: a 64x64 mask in [-1, 1] → a 4x4 grid of 512-d vectors → 16 codes.

    Layer indices match the ``encoder.N`` keys of ``vae-oid.npz`` (see the module docstring); the
    codebook is ``_vq_vae._embedding``. Build it with `load_mask_encoder`.

    Args:
        kernel_size: of the four downsampling convolutions (4 in ``vae-oid.npz``).
    """

    def __init__(self, kernel_size: int = 4) -> None:
        super().__init__()
        self.register_buffer("codebook", torch.zeros(NUM_CODES, CODE_DIM))
        layers: list[nn.Module] = []
        channels = 1
        for out in DOWN_CHANNELS:
            layers += [SameConv2d(channels, out, kernel_size, stride=2), nn.ReLU()]
            channels = out
        self.encoder = nn.Sequential(*layers, ResBlock(channels), ResBlock(channels), SameConv2d(channels, CODE_DIM, 1))

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks [N, 64, 64] in [-1, 1] → the encoder's output [N, 4, 4, 512] (before quantization)."""
        return self.encoder(masks[:, None]).permute(0, 2, 3, 1)

    def encode(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks [N, 64, 64] in [0, 1] (crops from `crop_masks`) → codes [N, 16], int64."""
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (MASK_SIZE, MASK_SIZE):
            raise ValueError(f"encode takes masks of shape [N, {MASK_SIZE}, {MASK_SIZE}], got {tuple(masks.shape)}")
        if masks.shape[0] == 0:
            return torch.zeros(0, GRID * GRID, dtype=torch.long)
        device = self.codebook.device
        with torch.inference_mode():
            vectors = self(2.0 * (masks.to(device=device, dtype=torch.float32) - 0.5))
            return nearest_codes(vectors.reshape(-1, CODE_DIM), self.codebook).reshape(-1, GRID * GRID).cpu()


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row (L2) for each row of ``vectors``; ties go to the lower index."""
    distances = vectors.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None] - 2.0 * vectors @ codebook.T
    return distances.argmin(1)


def crop_masks(masks: Any, boxes: Any) -> torch.Tensor:
    """Each full-image mask cropped to its pixel box ``(x0, y0, x1, y1)`` and resized to 64x64, in [0, 1].

    ``masks`` is [N, H, W] (bool, or numbers where non-zero is inside), ``boxes`` [N, 4]. Box edges are
    rounded to whole pixels (as `vlmzoo.tasks.segmentation.place_mask` does when decoding); the resize
    is bilinear with antialiasing, like big_vision's ``tf.image.resize(..., antialias=True)``.
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes, dtype=np.float64)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, height, width], got shape {masks.shape}")
    if boxes.shape != (len(masks), 4):
        raise ValueError(f"boxes must be [N, 4] (x0, y0, x1, y1 pixels), one per mask; got shape {boxes.shape}")
    height, width = masks.shape[1:]
    crops = []
    for index, (mask, box) in enumerate(zip(masks, boxes, strict=True)):
        x0, y0, x1, y1 = pixel_box(tuple(box))  # type: ignore[arg-type]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"mask {index}: box {tuple(box.tolist())} covers no pixel of the {width}x{height} mask")
        crop = torch.from_numpy(np.ascontiguousarray(mask[y0:y1, x0:x1] != 0, dtype=np.float32))
        crops.append(
            F.interpolate(crop[None, None], size=(MASK_SIZE, MASK_SIZE), mode="bilinear", antialias=True)[0, 0]
        )
    if not crops:
        return torch.zeros(0, MASK_SIZE, MASK_SIZE)
    return torch.stack(crops).clamp_(0.0, 1.0)


def encoder_shapes(kernel_size: int = 4) -> dict[str, tuple[int, ...]]:
    """Key → shape of every weight the encoder reads from a VQ-VAE file."""
    shapes: dict[str, tuple[int, ...]] = {"_vq_vae._embedding": (NUM_CODES, CODE_DIM)}
    for name, tensor in MaskEncoder(kernel_size).encoder.state_dict().items():
        shapes[f"encoder.{name}"] = tuple(tensor.shape)
    return shapes


def _encoder_state(weights: Mapping[str, np.ndarray], source: str) -> tuple[int, dict[str, torch.Tensor]]:
    first = weights.get("encoder.0.weight")
    kernel = int(np.shape(first)[-1]) if first is not None and np.ndim(first) == 4 else 4
    expected = encoder_shapes(kernel)
    missing = [key for key in expected if key not in weights]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VaeFileError(
            f"mask VAE file {source!r} lacks the encoder weights {shown}; encoding masks needs the whole VQ-VAE "
            f"({SOURCE_HINT}, converted with its encoder)"
        )
    state = {}
    for key, shape in expected.items():
        array = np.asarray(weights[key])
        if tuple(array.shape) != shape or not np.issubdtype(array.dtype, np.floating):
            raise VaeFileError(
                f"mask VAE file {source!r}: {key} is {array.dtype} {tuple(array.shape)}, expected float {shape}; "
                f"it is not {SOURCE_HINT}"
            )
        state["codebook" if key == "_vq_vae._embedding" else key] = torch.from_numpy(np.array(array, np.float32))
    return kernel, state


def check_encoder_weights(weights: Mapping[str, np.ndarray], source: str) -> list[str]:
    """The encoder's keys in ``weights`` (codebook included), after checking each is there with its shape;
    a `VaeFileError` naming ``source`` otherwise."""
    kernel, _ = _encoder_state(weights, source)
    return list(encoder_shapes(kernel))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> MaskEncoder:
    kernel, state = _encoder_state(read_vae_weights(Path(path)), path)
    encoder = MaskEncoder(kernel)
    encoder.load_state_dict(state)
    return encoder.eval().requires_grad_(False)


def load_mask_encoder(vae: str | os.PathLike | MaskEncoder) -> MaskEncoder:
    """The mask encoder from ``vae``: a `MaskEncoder`, or a path / ``hf://`` file of ``.npz`` or ``.safetensors``
    holding the ``encoder.*`` weights and the codebook. Cached per file version, like the decoder."""
    if isinstance(vae, MaskEncoder):
        return vae
    if isinstance(vae, MaskDecoder) or not isinstance(vae, (str, os.PathLike)):
        raise TypeError(
            f"encoding masks needs a VQ-VAE file path (or hf:// file) with the encoder, got {type(vae).__name__}"
        )
    path = resolve_vae_file(vae).resolve()
    if not path.is_file():
        raise VaeFileError(f"mask VAE file {str(vae)!r} does not exist; pass vae= the path of {SOURCE_HINT}")
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


def encode_masks(encoder: MaskEncoder, masks: Any, boxes: Sequence[Sequence[float]] | Any) -> torch.Tensor:
    """Full-image masks [N, H, W] and their pixel boxes [N, 4] → codes [N, 16] (`crop_masks`, then the encoder)."""
    return encoder.encode(crop_masks(masks, boxes))
