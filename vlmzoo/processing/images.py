"""Image loading and pixel preprocessing for PaliGemma.

The steps reproduce transformers' SiglipImageProcessor (PIL backend) bit for bit, because the
checkpoints were evaluated with it and small pixel differences change generated text:

1. convert to RGB (transparent in-memory images are composited onto white; files are opened the way
   transformers' ``load_image`` opens them: EXIF orientation applied, then ``convert("RGB")``, which
   drops transparency; in-memory PIL images are not rotated by their EXIF tag, as in transformers);
2. resize to the square model resolution with PIL (bicubic by default);
3. ``float32(float64(x) * rescale_factor)``, then ``(x - mean) / std`` in float32.

One deliberate difference: images with more than 8 bits per sample (16-bit grayscale ``I;16``, 32-bit
``I``, float ``F``, uint16 arrays) are scaled to 0..255, where ``convert("RGB")`` would clip them (a
16-bit PNG turns almost white) and the model would run on garbage. A file whose pixel count exceeds
Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused with `ImageLoadError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from vlmzoo.errors import VlmzooError

__all__ = ["ImageInput", "ImageLoadError", "load_image", "to_rgb_array", "preprocess_images"]

#: Anything the processor accepts as one image.
ImageInput = PIL.Image.Image | str | os.PathLike | np.ndarray | torch.Tensor


class ImageLoadError(VlmzooError, ValueError):
    """An image file or object could not be turned into pixels."""


def _open_image_file(path: str | os.PathLike) -> PIL.Image.Image:
    """Open a file the way transformers' ``load_image`` does: EXIF orientation applied, RGB."""
    path_str = os.fspath(path)
    if path_str.startswith(("http://", "https://")):
        raise ImageLoadError(
            f"{path_str!r} is a URL; vlmzoo does not download images. Download it first and pass the local "
            "path, a PIL image, or an array."
        )
    if not os.path.exists(path_str):
        raise ImageLoadError(f"image file {path_str!r} does not exist. Check the path.")
    if os.path.isdir(path_str):
        raise ImageLoadError(f"{path_str!r} is a directory, not an image file. Pass the path of one image file.")
    try:
        with PIL.Image.open(path_str) as image:
            image.load()
            image = PIL.ImageOps.exif_transpose(image)
            wide = _wide_to_rgb(image, f"image file {path_str!r}")
            return image.convert("RGB") if wide is None else PIL.Image.fromarray(wide)
    except PIL.Image.DecompressionBombError as err:
        raise ImageLoadError(
            f"{path_str!r} is refused as a possible decompression bomb ({err}). If you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS, or shrink the image first."
        ) from None
    except ImageLoadError:
        raise
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(
            f"{path_str!r} is not a readable image ({type(err).__name__}: {err}). Pass a PNG/JPEG/... "
            "file that PIL can open, or an already-loaded image."
        ) from err


#: Pillow modes with more than 8 bits per sample, which ``convert("RGB")`` would clip instead of scale.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _wide_to_rgb(image: PIL.Image.Image, what: str) -> np.ndarray | None:
    """RGB uint8 pixels of a 16-bit, 32-bit or float single-channel image, scaled; None for other modes.

    ``I;16*`` and uint16 data span 0..65535; ``I`` (32-bit) is read as 8-bit when its values fit in
    0..255 and as 16-bit when they fit in 0..65535; ``F`` as a float image in [0, 1] or [0, 255].
    """
    if image.mode not in WIDE_MODES:
        return None
    array = np.asarray(image)
    sixteen_bit_values = image.mode == "I" and array.size and 255 < int(array.max()) <= 65535 and array.min() >= 0
    if image.mode.startswith("I;16") or sixteen_bit_values:
        array = array.astype(np.uint16)
    return np.repeat(_array_to_uint8(array, what)[..., None], 3, axis=-1)


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
    """RGB uint8 HWC array from a PIL image; transparency is composited onto white (as transformers does)."""
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(f"the PIL image is empty (size {image.size}).")
    wide = _wide_to_rgb(image, f"PIL image in mode {image.mode!r}")
    if wide is not None:
        return wide
    try:
        if image.mode in ("La", "RGBa", "PA"):  # premultiplied or palette alpha: into plain LA / RGBA first
            image = image.convert("LA" if image.mode == "La" else "RGBA")
        has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
        if has_alpha:
            rgba = image.convert("RGBA")
            background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = PIL.Image.alpha_composite(background, rgba).convert("RGB")
        else:
            rgb = image.convert("RGB")
    except ValueError as err:  # a mode Pillow cannot turn into RGB
        raise ImageLoadError(
            f"a PIL image in mode {image.mode!r} cannot be converted to RGB ({err}); convert it to RGB first."
        ) from None
    return np.asarray(rgb, dtype=np.uint8)


def _array_to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    """Bring an integer array in [0, 255] or a float array in [0, 1] (or [0, 255]) to uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind not in "uif":
        raise ImageLoadError(f"{what} has unsupported dtype {array.dtype}; use uint8, uint16 or float.")
    if array.size == 0:
        raise ImageLoadError(f"{what} is empty (shape {tuple(array.shape)}).")
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # 16-bit pixels (16-bit PNG / TIFF): 65535 is white
        return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    lo, hi = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise ImageLoadError(
                f"{what} has integer values in [{lo:g}, {hi:g}]; expected values in [0, 255], or a uint16 "
                "array for 16-bit pixels."
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{what} contains NaN or infinite values.")
        if lo >= 0.0 and hi <= 1.0:
            scaled = np.asarray(array, dtype=np.float64) * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = np.asarray(array, dtype=np.float64)
        else:
            raise ImageLoadError(
                f"{what} has float values in [{lo:g}, {hi:g}]; expected [0, 1] (or [0, 255]). Pass raw "
                "pixels, not already-normalized ones."
            )
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    raise ImageLoadError(f"{what} has unsupported dtype {array.dtype}; use uint8, uint16 or float.")


def _array_to_rgb(array: np.ndarray, channels_first: bool, what: str, require_rgb: bool = False) -> np.ndarray:
    """RGB uint8 HWC array from a 2-D (grayscale) or 3-D array with 1, 3 or 4 channels."""
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        first_ok, last_ok = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
        if first_ok and (channels_first or not last_ok):
            array = np.moveaxis(array, 0, -1)
        elif not last_ok:
            raise ImageLoadError(
                f"{what} has shape {tuple(array.shape)}; expected HxW, HxWxC or CxHxW with C in (1, 3, 4)."
            )
    else:
        raise ImageLoadError(
            f"{what} has {array.ndim} dimensions (shape {tuple(array.shape)}); expected one image as HxW, "
            "HxWxC or CxHxW. Pass a batch as a list of images."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"{what} has an empty spatial size (shape {tuple(array.shape)}).")
    channels = array.shape[-1]
    if require_rgb and channels != 3:
        raise ImageLoadError(
            f"{what} has {channels} channel(s) but do_convert_rgb=False; pass RGB or enable do_convert_rgb."
        )
    array = _array_to_uint8(np.ascontiguousarray(array), what)
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 4:
        # transformers' numpy path: blend onto white in float64, round to uint8.
        alpha = array[..., 3:4] / 255
        composite = alpha * array[..., :3] + (1 - alpha) * 255
        return np.round(composite).astype(np.uint8)
    return array


def to_rgb_array(image: ImageInput, do_convert_rgb: bool = True) -> np.ndarray:
    """Any supported image input as an RGB ``uint8`` array of shape (H, W, 3).

    numpy arrays are read as HWC (CHW when only the first axis looks like channels); torch tensors as
    CHW (HWC when only the last axis looks like channels). With ``do_convert_rgb=False`` the input must
    already be 3-channel RGB.
    """
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(_open_image_file(image), dtype=np.uint8)
    if isinstance(image, PIL.Image.Image):
        if not do_convert_rgb and image.mode != "RGB":
            raise ImageLoadError(
                f"got a PIL image in mode {image.mode!r} but do_convert_rgb=False; convert it to RGB "
                "first or enable do_convert_rgb."
            )
        return _pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.dtype in (torch.bfloat16, torch.float16):
            array = array.float()
        return _array_to_rgb(array.numpy(), True, "image tensor", require_rgb=not do_convert_rgb)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, False, "image array", require_rgb=not do_convert_rgb)
    raise ImageLoadError(
        f"unsupported image type {type(image).__name__}; pass a PIL image, a file path, a numpy array "
        "(HWC) or a torch tensor (CHW)."
    )


def load_image(image: ImageInput) -> PIL.Image.Image:
    """Load a file path (or convert a PIL image / array / tensor) into an RGB PIL image.

    Raises ImageLoadError (a ValueError) with the path in the message when a file is missing or not an
    image, so a bad file in a dataset is easy to find.
    """
    if isinstance(image, (str, os.PathLike)):
        return _open_image_file(image)
    return PIL.Image.fromarray(to_rgb_array(image))


def preprocess_images(
    images: Sequence[ImageInput],
    image_size: int,
    resample: int = PIL.Image.Resampling.BICUBIC,
    rescale_factor: float = 1 / 255,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    do_convert_rgb: bool = True,
) -> torch.Tensor:
    """Images → float32 ``pixel_values`` of shape (B, 3, image_size, image_size), SigLIP-normalized."""
    mean = np.asarray(image_mean, dtype=np.float32).reshape(1, 1, 3)
    std = np.asarray(image_std, dtype=np.float32).reshape(1, 1, 3)
    out = np.empty((len(images), 3, image_size, image_size), dtype=np.float32)
    for i, image in enumerate(images):
        try:
            rgb = to_rgb_array(image, do_convert_rgb=do_convert_rgb)
        except ImageLoadError as err:
            if isinstance(image, (str, os.PathLike)):
                raise  # the message already names the file
            raise ImageLoadError(f"image {i} of the batch: {err}") from err
        resized = PIL.Image.fromarray(rgb).resize((image_size, image_size), resample=resample)
        pixels = (np.asarray(resized).astype(np.float64) * rescale_factor).astype(np.float32)
        out[i] = ((pixels - mean) / std).transpose(2, 0, 1)
    return torch.from_numpy(out)
