"""big_vision's VQ-VAE mask decoder: 16 ``<seg>`` codes → a 64x64 mask of a box, placed in the image.

The 16 codes index a 128 x 512 codebook and are laid out row-major on a 4x4 grid; the decoder upsamples
that grid to a 64x64 mask of the box, which is resized into the box (bilinear, as big_vision's evaluator
does) and thresholded at 0. The weights are big_vision's ``vae-oid.npz``
(``gs://big_vision/paligemma/vae-oid.npz``) or its safetensors conversion, in PyTorch layout:
``_vq_vae._embedding`` [128, 512] and ``decoder.*``. The file is read with ``numpy.load(allow_pickle=False)``,
never unpickled.
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import nn

from vlmzoo.errors import VlmzooError
from vlmzoo.tasks.results import check_image_size

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


def decoder_shapes() -> dict[str, tuple[int, ...]]:
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


def decoder_state(weights: Mapping[str, np.ndarray], source: str) -> dict[str, torch.Tensor]:
    expected = decoder_shapes()
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
    decoder.load_state_dict(decoder_state(read_vae_weights(Path(path)), path))
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
