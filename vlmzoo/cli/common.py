"""What every command does the same way: load a model, refuse a bad option, write its output.

Errors are raised, never printed: `vlmzoo.cli.main` turns each into one line on stderr and an exit code
(2 for what the user can fix). Output files are written beside their target and moved in once complete,
so an interrupted command never leaves a half-written file where an old one was.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from vlmzoo.cli.options import announce_device


def load_model(args: argparse.Namespace, name: str | None = None, **options: Any) -> Any:
    """``vlmzoo.from_pretrained`` on ``name`` (default ``args.model``) and ``args.device``, then the device line."""
    import vlmzoo

    model = vlmzoo.from_pretrained(name or args.model, device=args.device, **options)
    announce_device(model.device, args.device)
    return model


def load_pipeline(args: argparse.Namespace, name: str | None = None, **options: Any) -> Any:
    """``vlmzoo.load`` on ``name`` (default ``args.model``) and ``args.device``, then the device line."""
    import vlmzoo

    loaded = vlmzoo.load(name or args.model, device=args.device, **options)
    announce_device(loaded.model.device, args.device)
    return loaded


def load_processor(args: argparse.Namespace) -> Any:
    """The processor of ``--processor`` when given, else the model's own."""
    import vlmzoo

    return vlmzoo.load_processor(getattr(args, "processor", None) or args.model)


def check_range(option: str, value: int, low: int, high: int | None = None) -> int:
    """``value`` when ``low <= value (<= high)``, else the one-line error that names ``option``."""
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{option} must be {bounds}, got {value}")
    return value


def print_json(value: Any, indent: int | None = None) -> None:
    """One JSON document on stdout (one line unless ``indent``), flushed so a reader sees it at once."""
    print(json.dumps(value, indent=indent, ensure_ascii=False), flush=True)


def _replace(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """``value`` as JSON in ``path`` (folders made as needed); an old file is replaced only once this one is whole."""
    text = json.dumps(value, indent=indent, ensure_ascii=False) + "\n"
    return _replace(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def save_image(image: Any, path: str | os.PathLike) -> Path:
    """A PIL image in ``path``, its format from the suffix (folders made as needed), replacing an old file only
    once the new one is whole."""
    path = Path(path)
    image_format = _format_of(path)
    return _replace(path, lambda temporary: image.save(temporary, format=image_format))


def _format_of(path: Path) -> str:
    import PIL.Image

    PIL.Image.init()
    image_format = PIL.Image.EXTENSION.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot tell an image format from {path.name!r}; name the file .png or .jpg")
    return image_format
