"""Reading a checkpoint's tokenizer: ``tokenizer.json`` through the ``tokenizers`` library, and the special
tokens its ``tokenizer_config.json`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from vlmzoo.errors import InvalidFileError


def load_tokenizer(path: Path) -> Tokenizer:
    """A ``tokenizer.json`` as a ``tokenizers.Tokenizer``; a damaged file raises `InvalidFileError` naming it."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises plain Exception for every parse problem
        problem = " ".join(str(err).split()) or type(err).__name__
        raise InvalidFileError(
            path, f"cannot be read as a tokenizer ({problem}); download or save the processor files again"
        ) from None


def token_content(value: Any) -> str | None:
    """Special tokens appear as plain strings or as AddedToken dicts ({"content": ...}) in configs."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None
