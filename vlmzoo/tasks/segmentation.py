"""``segment``: masks from ``<seg>`` tokens through big_vision's VQ-VAE mask decoder.

Each object is ``<loc>`` x 4 + ``<seg>`` x 16 + label. The 16 codes index a 128 x 512 codebook and are
laid out row-major on a 4x4 grid; the decoder upsamples that grid to a 64x64 mask of the box, which is
resized into the box (bilinear, as big_vision's evaluator does) and thresholded at 0.

The weights are big_vision's ``vae-oid.npz`` (``gs://big_vision/paligemma/vae-oid.npz``), stored in
PyTorch layout: ``_vq_vae._embedding`` [128, 512] and ``decoder.*`` (its ``encoder.*`` half makes masks into
codes, for training data: `vlmzoo.tasks.mask_encoding`). The file is read with
``numpy.load(allow_pickle=False)``, never unpickled; `convert_vae_to_safetensors` writes the same
weights as safetensors.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch

from vlmzoo.tasks.base import Postprocessor, TaskError, check_names
from vlmzoo.tasks.locations import DEFAULT_BINS, check_bins, clean_located_text, located_objects
from vlmzoo.tasks.mask_decoding import (  # noqa: F401 - importable from here too
    CODE_DIM,
    CODEBOOK_KEY,
    GRID,
    MASK_SIZE,
    NUM_CODES,
    SOURCE_HINT,
    MaskDecoder,
    ResBlock,
    VaeFileError,
    load_mask_decoder,
    pixel_box,
    place_mask,
    read_vae_weights,
    resolve_vae_file,
)
from vlmzoo.tasks.mask_encoding import encode_masks, load_mask_encoder
from vlmzoo.tasks.repeats import REPEAT_IOU, check_repeat_iou
from vlmzoo.tasks.results import DetectedObject, TaskResult, check_image_size
from vlmzoo.tasks.vae_files import convert_vae_to_safetensors, default_vae_file  # noqa: F401


class Segment(Postprocessor):
    """Segmentation: ``segment cat`` → objects with a box and a full-image boolean mask.

    Args:
        vae: the VQ-VAE: a path or ``hf://`` file of big_vision's ``vae-oid.npz`` or its safetensors
            conversion (or of a VQ-VAE trained in that layout), or a loaded `MaskDecoder`. By default
            big_vision's file, downloaded once (see `vlmzoo.tasks.vae_files.default_vae_file`); a model
            that ships its own (``shapes-demo``) passes it through its processor.
        bins: the ``<loc>`` convention, as for ``detect`` (1023: big_vision, 1024: the official demo).
        repeat_iou: drop repeated boxes of one label, as for ``detect`` (default 0.7; None keeps them).
    """

    name: ClassVar[str] = "segment"
    max_new_tokens: ClassVar[int] = 256

    def __init__(
        self,
        *,
        vae: str | os.PathLike | MaskDecoder | None = None,
        bins: int = DEFAULT_BINS,
        repeat_iou: float | None = REPEAT_IOU,
    ) -> None:
        self.bins = check_bins(bins)
        self.repeat_iou = check_repeat_iou(repeat_iou)
        if vae is None:
            vae = default_vae_file()
        self.vae = vae
        self.decoder = load_mask_decoder(vae)

    def encode_masks(self, masks: Any, boxes: Any) -> torch.Tensor:
        """Full-image masks [N, H, W] (bool) and their pixel boxes [N, 4] ``(x0, y0, x1, y1)`` → codes [N, 16].

        The inverse of `decode_masks`, as big_vision makes training targets: each mask cropped to its
        box, resized to 64x64 and run through the VQ-VAE encoder of the same file (see
        `vlmzoo.tasks.mask_encoding`). Needs a file, not a `MaskDecoder` object.
        """
        if isinstance(self.vae, MaskDecoder):
            raise TaskError("encode_masks needs the VQ-VAE file (vae= a path), not a MaskDecoder object")
        return encode_masks(load_mask_encoder(self.vae), masks, boxes)

    def prompt(self, objects: str | list[str]) -> str:
        return f"segment {' ; '.join(check_names(objects))}"

    def decode_masks(self, codes: Any) -> torch.Tensor:
        """Integer codes [N, 16] → the decoder's raw output [N, 64, 64] (float32; > 0 is inside)."""
        return self.decoder.decode_masks(codes)

    def parse(self, text: str, image_size: Any = None) -> TaskResult:
        if not isinstance(text, str):
            raise TypeError(f"{self.name}: parse takes the generated text (a str), got {type(text).__name__}")
        if image_size is None:
            raise TaskError(f"{self.name}: parse needs image_size=(width, height) of the original image")
        size = check_image_size(image_size)
        objects: list[DetectedObject] = located_objects(text, size, bins=self.bins, keep_unlabelled_tail=True)
        objects = self.drop_repeats(objects)
        with_codes = [obj for obj in objects if obj.seg_codes is not None]
        if with_codes:
            logits = self.decode_masks([obj.seg_codes for obj in with_codes]).numpy()
            for obj, logit in zip(with_codes, logits, strict=True):
                obj.mask = place_mask(logit, obj.box, size)
        return TaskResult(self.name, clean_located_text(text), text, objects, size)
