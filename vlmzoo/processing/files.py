"""The files a processor directory holds (Hugging Face layout), and reading its JSON ones.

Shared by every family's processor: the tokenizer files, and the image settings in
``preprocessor_config.json`` (hub layout, at the top level) or ``processor_config.json`` (newer
transformers, under ``image_processor``).
"""

from __future__ import annotations

from pathlib import Path

from vlmzoo.errors import InvalidFileError
from vlmzoo.json_files import read_json_object
from vlmzoo.values import is_integer

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json"
PROCESSOR_CONFIG_FILE = "processor_config.json"
MODEL_CONFIG_FILE = "config.json"


def read_json(path: Path) -> dict:
    """A processor file that must hold a JSON object; anything else raises `InvalidFileError` naming it."""
    return read_json_object(path, "re-download or re-save the processor files")


def text_config_length(path: Path, data: dict, default: int) -> int:
    """The text length a model's ``config.json`` (`data`, read from `path`) gives in
    ``text_config.max_position_embeddings``, `default` where it gives none; a bad value names the field."""
    text_config = data.get("text_config")
    if text_config is None:
        return default
    if not isinstance(text_config, dict):
        raise InvalidFileError(path, f"must be an object, not a {type(text_config).__name__}", "text_config")
    value = text_config.get("max_position_embeddings")
    if value is None:
        return default
    if not is_integer(value, 1):
        field = "text_config.max_position_embeddings"
        raise InvalidFileError(path, f"must be a positive integer, got {value!r}", field)
    return value
