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

import functools
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from torch import nn

from vlmzoo.errors import VlmzooError
from vlmzoo.tasks.base import Postprocessor, TaskError, check_names
from vlmzoo.tasks.locations import DEFAULT_BINS, check_bins, clean_located_text, located_objects
from vlmzoo.tasks.repeats import REPEAT_IOU, check_repeat_iou
from vlmzoo.tasks.results import DetectedObject, TaskResult, check_image_size

NUM_CODES = 128
CODE_DIM = 512
GRID = 4
MASK_SIZE = 64
CODEBOOK_KEY = "_vq_vae._embedding"
SOURCE_HINT = "big_vision's vae-oid.npz (gs://big_vision/paligemma/vae-oid.npz) or its safetensors conversion"


class VaeFileError(VlmzooError, ValueError):
    """A mask decoder file that is missing, unreadable, or lacks the expected weights."""


class ResBlock(nn.Module):
    """Conv3x3 → ReLU → Conv3x3 → ReLU → Conv1x1, plus the input (keys ``net.0``, ``net.2``, ``net.4``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _upsample(in_dim: int, out_dim: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_dim, out_dim, kernel_size=4, stride=2, padding=1), nn.ReLU()]


class MaskDecoder(nn.Module):
    """big_vision's VQ-VAE mask decoder: 16 codes → a 64x64 mask logit map.

    Layer indices match the ``decoder.N`` keys of ``vae-oid.npz``: Conv1x1 512→128 + ReLU (0, 1); two
    residual blocks (2, 3); four ConvTranspose2d(k4, s2, p1) + ReLU, 128→128→64→32→16 (4..11); Conv1x1
    16→1 (12). Build it with `load_mask_decoder`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("codebook", torch.zeros(NUM_CODES, CODE_DIM))
        self.decoder = nn.Sequential(
            nn.Conv2d(CODE_DIM, 128, 1),
            nn.ReLU(),
            ResBlock(128),
            ResBlock(128),
            *_upsample(128, 128),
            *_upsample(128, 64),
            *_upsample(64, 32),
            *_upsample(32, 16),
            nn.Conv2d(16, 1, 1),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [N, 16] (ints 0..127) → mask logits [N, 64, 64]; positive means inside the object."""
        grid = self.codebook[codes].reshape(codes.shape[0], GRID, GRID, CODE_DIM).permute(0, 3, 1, 2)
        return self.decoder(grid).squeeze(1)

    def decode_masks(self, codes: Any) -> torch.Tensor:
        """Integer codes [N, 16] (tensor, array or lists) → raw decoder output [N, 64, 64], float32, in batch."""
        codes = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        if codes.ndim != 2 or codes.shape[1] != GRID * GRID:
            raise ValueError(f"decode_masks takes codes of shape [N, 16], got {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.dtype == torch.bool:
            raise TypeError(f"decode_masks takes integer codes, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= NUM_CODES):
            raise ValueError(f"mask codes must be in 0..{NUM_CODES - 1}, got {int(codes.min())}..{int(codes.max())}")
        if codes.shape[0] == 0:
            return torch.zeros(0, MASK_SIZE, MASK_SIZE)
        device = self.codebook.device
        with torch.inference_mode():
            return self(codes.to(device=device, dtype=torch.long)).float().cpu()


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {CODEBOOK_KEY: (NUM_CODES, CODE_DIM)}
    for name, tensor in MaskDecoder().decoder.state_dict().items():
        shapes[f"decoder.{name}"] = tuple(tensor.shape)
    return shapes


def read_vae_weights(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickle) or ``.safetensors`` file; one `VaeFileError` for any failure."""
    if not path.is_file():
        raise VaeFileError(f"mask decoder file {str(path)!r} does not exist; pass vae= the path of {SOURCE_HINT}")
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(str(path))
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError, SafetensorError) as exc:
        kind = "safetensors" if path.suffix == ".safetensors" else ".npz"
        raise VaeFileError(
            f"mask decoder file {str(path)!r} is not a readable {kind} file ({type(exc).__name__}: {exc}); it may be "
            f"truncated or the wrong file: download {SOURCE_HINT} again"
        ) from exc


def _decoder_state(weights: Mapping[str, np.ndarray], source: str) -> dict[str, torch.Tensor]:
    expected = _expected_shapes()
    missing = [key for key in expected if key not in weights]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VaeFileError(f"mask decoder file {source!r} lacks {shown}; it is not {SOURCE_HINT}")
    state = {}
    for key, shape in expected.items():
        array = np.asarray(weights[key])
        if tuple(array.shape) != shape or not np.issubdtype(array.dtype, np.floating):
            raise VaeFileError(
                f"mask decoder file {source!r}: {key} is {array.dtype} {tuple(array.shape)}, expected float {shape}; "
                f"it is not {SOURCE_HINT}"
            )
        state["codebook" if key == CODEBOOK_KEY else key] = torch.from_numpy(np.array(array, dtype=np.float32))
    return state


_HUB = re.compile(
    r"hf://(?:(?P<kind>models|datasets|spaces)/)?(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?/(?P<file>.+)"
)


def resolve_vae_file(vae: str | os.PathLike) -> Path:
    """A local path as is; ``hf://[datasets/|spaces/]owner/repo[@revision]/path/file`` downloaded from the hub."""
    name = os.fspath(vae)
    if not name.startswith("hf://"):
        return Path(name).expanduser()
    match = _HUB.fullmatch(name)
    if match is None:
        raise VaeFileError(
            f"{name!r} is not a hub file: write hf://owner/repo/file.npz (or hf://spaces/owner/repo/file.npz, "
            "hf://owner/repo@revision/file.npz)"
        )
    import huggingface_hub

    kind = {"datasets": "dataset", "spaces": "space"}.get(match["kind"] or "", "model")
    try:
        return Path(
            huggingface_hub.hf_hub_download(match["repo"], match["file"], repo_type=kind, revision=match["rev"])
        )
    except Exception as exc:  # network, auth, missing file: one message with the advice
        raise VaeFileError(
            f"could not fetch {name!r} from the hub ({type(exc).__name__}: {exc}); check the repo and file name, "
            "the network or HF_TOKEN, or download the file and pass its local path"
        ) from exc


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> MaskDecoder:
    decoder = MaskDecoder()
    decoder.load_state_dict(_decoder_state(read_vae_weights(Path(path)), path))
    return decoder.eval().requires_grad_(False)


def load_mask_decoder(vae: str | os.PathLike | MaskDecoder) -> MaskDecoder:
    """The mask decoder from ``vae``: a `MaskDecoder`, or a path / ``hf://`` file of ``.npz`` or ``.safetensors``.

    Loaded decoders are cached per file (and file version), so repeated ``segment`` calls load once.
    """
    if isinstance(vae, MaskDecoder):
        return vae
    if not isinstance(vae, (str, os.PathLike)):
        raise TypeError(f"vae must be a file path, an hf:// file or a MaskDecoder, got {type(vae).__name__}")
    path = resolve_vae_file(vae).resolve()
    if not path.is_file():
        raise VaeFileError(f"mask decoder file {str(vae)!r} does not exist; pass vae= the path of {SOURCE_HINT}")
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


def convert_vae_to_safetensors(npz: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write ``vae-oid.npz`` (codebook, ``decoder.*`` and, when present, ``encoder.*``; same key names) as safetensors.

    Every key and shape is checked first (the encoder's too, when the file has one); the file is written
    next to ``output`` under a temporary name, then moved into
    place, so an existing ``output`` is replaced only by a complete file.
    """
    from safetensors.numpy import save_file

    source = resolve_vae_file(npz)
    weights = read_vae_weights(source)
    _decoder_state(weights, str(source))  # the same checks as loading
    keys = list(_expected_shapes())
    if any(key.startswith("encoder.") for key in weights):
        from vlmzoo.tasks.mask_encoding import check_encoder_weights

        keys += [key for key in check_encoder_weights(weights, str(source)) if key not in keys]
    kept = {key: np.ascontiguousarray(weights[key], dtype=np.float32) for key in keys}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    try:
        save_file(kept, temporary, metadata={"format": "np", "source": source.name})
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return output


def pixel_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The whole-pixel rectangle a mask fills: each corner rounded to the nearest pixel edge."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return x0, y0, x1, y1


def place_mask(
    logits: np.ndarray | torch.Tensor, box: tuple[float, float, float, float], image_size: Any
) -> np.ndarray:
    """A 64x64 mask logit map resized into ``box`` (bilinear), thresholded at 0, in a full-image bool mask."""
    width, height = check_image_size(image_size)
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = pixel_box(box)
    if x1 <= x0 or y1 <= y0:
        return mask
    small = PIL.Image.fromarray(np.ascontiguousarray(logits, dtype=np.float32))  # mode "F"
    resized = np.asarray(small.resize((x1 - x0, y1 - y0), resample=PIL.Image.Resampling.BILINEAR))
    mask[y0:y1, x0:x1] = resized > 0
    return mask


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
            from vlmzoo.tasks.vae_files import default_vae_file

            vae = default_vae_file()
        self.vae = vae
        self.decoder = load_mask_decoder(vae)

    def encode_masks(self, masks: Any, boxes: Any) -> torch.Tensor:
        """Full-image masks [N, H, W] (bool) and their pixel boxes [N, 4] ``(x0, y0, x1, y1)`` → codes [N, 16].

        The inverse of `decode_masks`, as big_vision makes training targets: each mask cropped to its
        box, resized to 64x64 and run through the VQ-VAE encoder of the same file (see
        `vlmzoo.tasks.mask_encoding`). Needs a file, not a `MaskDecoder` object.
        """
        from vlmzoo.tasks.mask_encoding import encode_masks, load_mask_encoder

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
