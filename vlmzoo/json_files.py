"""Reading the JSON files of checkpoints and processors, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

from vlmzoo.errors import InvalidFileError


def read_json_object(path: Path, remedy: str = "download or save it again") -> dict:
    """A JSON file that must hold an object; any other content raises `InvalidFileError` naming the file
    and ending with ``remedy`` (what to do) when it is not JSON at all."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidFileError(path, f"not valid JSON ({exc}); {remedy}") from None
    if not isinstance(data, dict):
        raise InvalidFileError(path, f"must hold a JSON object, not a {type(data).__name__}")
    return data
