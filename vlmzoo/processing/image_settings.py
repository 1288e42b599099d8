"""A processor directory's image settings, read as transformers reads them and checked field by field.

Both families' processors take the same settings (SigLIP's image processor is PaliGemma's), so one
reader serves both; ``model`` names the family in its messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import PIL.Image

from vlmzoo.errors import InvalidFileError
from vlmzoo.processing.files import PREPROCESSOR_CONFIG_FILE, PROCESSOR_CONFIG_FILE, read_json
from vlmzoo.values import is_finite_number, is_integer


def check_image_config(config: dict, path: Path) -> None:
    """Every image setting `read_image_settings` reads has the type it needs, or the error names the field."""
    checks = {
        "image_seq_length": (lambda v: v is None or is_integer(v, 1), "a positive integer"),
        "image_mean": (lambda v: is_finite_number(v) or (isinstance(v, list) and len(v) == 3
                                                   and all(map(is_finite_number, v))), "3 numbers (R, G, B)"),
        "image_std": (lambda v: (is_finite_number(v) and v != 0) or (isinstance(v, list) and len(v) == 3
                                                             and all(is_finite_number(x) and x != 0 for x in v)),
                      "3 non-zero numbers (R, G, B)"),
        "rescale_factor": (lambda v: is_finite_number(v) and v > 0, "a positive number"),
        "resample": (lambda v: v is None or (is_integer(v, 0) and v <= 5), "a PIL resampling filter number (0-5)"),
        **{flag: (lambda v: v is None or isinstance(v, bool), "true or false")
           for flag in ("do_convert_rgb", "do_resize", "do_rescale", "do_normalize")},
    }  # fmt: skip
    for field, (ok, expected) in checks.items():
        if field in config and not ok(config[field]):
            raise InvalidFileError(path, f"must be {expected}, got {config[field]!r}", field)


def image_config(directory: Path) -> tuple[dict, Path] | None:
    """Image processor settings and their file, with transformers' priority: nested processor_config.json
    first; None when the directory has neither file."""
    processor_path = directory / PROCESSOR_CONFIG_FILE
    if processor_path.is_file():
        nested = read_json(processor_path).get("image_processor")
        if isinstance(nested, dict):
            return nested, processor_path
    preprocessor_path = directory / PREPROCESSOR_CONFIG_FILE
    if preprocessor_path.is_file():
        return read_json(preprocessor_path), preprocessor_path
    return None


def _image_size(config: dict, source: Path) -> int:
    size = config.get("size", {"height": 224, "width": 224})
    if is_integer(size, 1):
        return size
    if isinstance(size, dict) and is_integer(size.get("height"), 1) and is_integer(size.get("width"), 1):
        if size["height"] != size["width"]:
            raise InvalidFileError(
                source, f"{size} is not square; PaliGemma expects a square resolution (224, 448 or 896)", "size"
            )
        return int(size["height"])
    raise InvalidFileError(source, f"{size!r} should be {{'height': N, 'width': N}} with positive integers", "size")


def read_image_settings(directory: Path, model: str) -> dict[str, Any]:
    """The image settings of a processor directory, read as transformers reads them, checked field by field.

    Returns the keyword arguments a processor takes (``image_size``, ``image_mean``, ``image_std``,
    ``rescale_factor``, ``resample``, ``do_convert_rgb``) and the raw settings under ``"config"``. ``model``
    names the model family in error messages.
    """
    found = image_config(directory)
    if found is None:
        raise FileNotFoundError(
            f"{directory} is not a complete {model} processor directory: missing {PREPROCESSOR_CONFIG_FILE} or "
            f"{PROCESSOR_CONFIG_FILE} (with 'image_processor')"
        )
    config, config_path = found
    check_image_config(config, config_path)
    if config.get("do_resize") is False:
        raise InvalidFileError(
            config_path, f"is false, but {model} needs images resized to a fixed size; set it to true", "do_resize"
        )
    mean = config.get("image_mean", [0.5, 0.5, 0.5])
    std = config.get("image_std", [0.5, 0.5, 0.5])
    mean = [mean] * 3 if isinstance(mean, (int, float)) else mean
    std = [std] * 3 if isinstance(std, (int, float)) else std
    if config.get("do_normalize") is False:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    resample = config.get("resample")
    do_convert_rgb = config.get("do_convert_rgb")
    return {
        "image_size": _image_size(config, config_path),
        "image_mean": mean,
        "image_std": std,
        "rescale_factor": config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) is not False else 1.0,
        "resample": PIL.Image.Resampling.BICUBIC if resample is None else resample,
        "do_convert_rgb": True if do_convert_rgb is None else bool(do_convert_rgb),
        "config": config,
    }
