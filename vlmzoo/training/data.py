"""Training data: (image, prefix, suffix) records from JSONL or Python, checked up front, batched by the processor.

A JSONL file holds one object per line, the layout big_vision and the Hugging Face examples use::

    {"image": "images/0001.jpg", "prefix": "detect cat", "suffix": "<loc0100><loc0200><loc0300><loc0400> cat"}

Image paths are relative to the JSONL file. `validate` reads every record before training starts and
raises one `DataError` that lists each bad record by file and line; nothing is skipped silently.
Images are decoded in the DataLoader's worker processes, by the `Collator`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from vlmzoo.errors import VlmzooError
from vlmzoo.processing import IGNORE_INDEX, BatchEncoding, ImageLoadError, PaliGemmaProcessor, load_image

__all__ = ["Collator", "DataError", "PaddedDataset", "Record", "RecordDataset", "load_records", "validate"]

#: At most this many problems are listed in one `DataError` (the count of the rest is given).
MAX_LISTED_PROBLEMS = 20


class DataError(VlmzooError, ValueError):
    """Training data that cannot be used; the message names the file and line of each bad record."""


@dataclass(frozen=True)
class Record:
    """One training example. ``image`` is a path or an in-memory image; ``where`` says where it came from."""

    image: Any
    prefix: str
    suffix: str
    where: str
    #: A stand-in that fills a process's last evaluation batch: it is run but carries no loss.
    padding: bool = False

    @property
    def image_path(self) -> Path | None:
        return Path(self.image) if isinstance(self.image, (str, os.PathLike)) else None


def load_records(data: str | os.PathLike | Sequence[Any] | Mapping[str, Any]) -> list[Record]:
    """Records from a JSONL path, from a list of dicts / (image, prefix, suffix) tuples / `Record`s, or
    from a data generator spec such as ``{"generator": "shapes", "seed": 0, "images": 1000}``.

    In Python records the image may be a path (relative to the working directory), a PIL image or an
    array. Structural problems (bad JSON, missing or mistyped fields) are all reported at once.
    """
    if isinstance(data, (str, os.PathLike)):
        return _load_jsonl(Path(data))
    if isinstance(data, Mapping) and ("generator" in data or "coco" in data or "roboflow" in data):
        from vlmzoo.data import records_from_spec

        try:
            data = records_from_spec(data)
        except (TypeError, ValueError) as err:
            verb = "generate" if "generator" in data else "read"
            raise DataError(f"cannot {verb} training data from {dict(data)}: {err}") from None
    if isinstance(data, (dict, Record)) or not isinstance(data, Iterable):
        raise TypeError(
            f"training data must be a JSONL path, a list of records or a generator spec, got {type(data).__name__}; "
            "pass e.g. [{'image': 'a.jpg', 'prefix': 'caption en', 'suffix': 'a cat'}] or "
            "{'generator': 'shapes', 'seed': 0, 'images': 1000}"
        )
    records, problems = [], []
    for i, item in enumerate(data):
        where = f"record {i}"
        if isinstance(item, Record):
            records.append(item)
            continue
        if isinstance(item, (tuple, list)) and len(item) == 3:
            item = dict(zip(("image", "prefix", "suffix"), item, strict=True))
        record = _record(item, where, base=None, problems=problems)
        if record is not None:
            records.append(record)
    _raise_if(problems, "the training records")
    if not records:
        raise DataError("the list of training records is empty; pass at least one record")
    return records


def _load_jsonl(path: Path) -> list[Record]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist (expected a JSONL file of image/prefix/suffix records)")
    records, problems = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})")
                continue
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: not valid JSON ({err.msg} at column {err.colno})")
                continue
            record = _record(item, where, base=path.parent, problems=problems)
            if record is not None:
                records.append(record)
    _raise_if(problems, str(path))
    if not records:
        raise DataError(f"data file {path} holds no records (one JSON object per line)")
    return records


def _record(item: Any, where: str, base: Path | None, problems: list[str]) -> Record | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected an object with image, prefix and suffix, got {type(item).__name__}")
        return None
    before = len(problems)
    image = item.get("image")
    if image is None:
        problems.append(f"{where}: missing field 'image' (a path relative to the data file)")
    elif isinstance(image, str):
        if image.startswith(("http://", "https://")):
            problems.append(f"{where}: image {image!r} is a URL; download it and give the local path")
        elif base is not None and not Path(image).is_absolute():
            image = str(base / image)
    elif base is not None:
        problems.append(f"{where}: field 'image' must be a path string, got {type(image).__name__}")
    prefix = item.get("prefix", "")
    if not isinstance(prefix, str):
        problems.append(f"{where}: field 'prefix' must be a string, got {type(prefix).__name__}")
    suffix = item.get("suffix")
    if suffix is None:
        problems.append(f"{where}: missing field 'suffix' (the text the model should learn to produce)")
    elif not isinstance(suffix, str):
        problems.append(f"{where}: field 'suffix' must be a string, got {type(suffix).__name__}")
    elif not suffix.strip():
        problems.append(f"{where}: field 'suffix' is empty; every record needs a target text")
    unknown = sorted(set(item) - {"image", "prefix", "suffix"})
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; records hold image, prefix, suffix"
        )
    if len(problems) > before:
        return None
    return Record(image=image, prefix=prefix, suffix=suffix, where=where)


def _raise_if(problems: list[str], source: str) -> None:
    if not problems:
        return
    listed = problems[:MAX_LISTED_PROBLEMS]
    more = f"\n  ... and {len(problems) - len(listed)} more" if len(problems) > len(listed) else ""
    raise DataError(f"{len(problems)} bad record(s) in {source}; fix or remove them:\n  " + "\n  ".join(listed) + more)


def sequence_length(processor: PaliGemmaProcessor, record: Record) -> int:
    """Tokens of one example: image tokens, prompt, suffix and ``<eos>``."""
    ids, _ = processor.encode_text(record.prefix, record.suffix)
    return len(ids)


def validate(
    records: Sequence[Record],
    processor: PaliGemmaProcessor,
    max_length: int | None = None,
    check_images: bool = True,
) -> None:
    """Check every record before training: its image opens, its sequence fits ``max_length``.

    ``max_length`` defaults to the processor's limit. Raises one `DataError` that lists every bad record.
    """
    limit = min(max_length or processor.max_length, processor.max_length)
    problems = []
    for record in records:
        length = sequence_length(processor, record)
        if length > limit:
            problems.append(
                f"{record.where}: {length} tokens ({processor.num_image_tokens} image + "
                f"{length - processor.num_image_tokens} text), more than the limit of {limit}; "
                "shorten the prefix or suffix"
            )
        if check_images:
            problem = _image_problem(record.image)
            if problem:
                problems.append(f"{record.where}: {problem}")
    _raise_if(problems, "the training data")


def _image_problem(image: Any) -> str | None:
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            return f"image {str(path)!r} does not exist"
        try:
            with PIL.Image.open(path) as opened:
                opened.verify()
        except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            return f"image {str(path)!r} is not a readable image ({type(err).__name__}: {err})"
        return None
    if isinstance(image, PIL.Image.Image) or (hasattr(image, "shape") and hasattr(image, "dtype")):
        return None
    return f"image is a {type(image).__name__}; give a path, a PIL image or an array"


class RecordDataset(torch.utils.data.Dataset):
    """A map-style dataset over records; items are records, turned into tensors by the `Collator`."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]


class PaddedDataset(RecordDataset):
    """Records by index; a negative index ``-1 - i`` gives record ``i`` marked as `Record.padding`."""

    def __getitem__(self, index: int) -> Record:
        if index < 0:
            return dataclasses.replace(self.records[-1 - index], padding=True)
        return self.records[index]


class Collator:
    """Turns a list of records into a training batch with the processor (runs in DataLoader workers).

    Labels are the suffix tokens (``-100`` on the prefix and padding), ``token_type_ids`` mark the
    suffix for the prefix-LM mask. Training pads on the right by default; either side gives the same
    loss because positions come from the attention mask.
    """

    def __init__(self, processor: PaliGemmaProcessor, padding_side: str = "right") -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.processor = copy.copy(processor)
        self.processor.padding_side = padding_side

    def __call__(self, records: Sequence[Record]) -> BatchEncoding:
        images = []
        for record in records:
            try:
                images.append(load_image(record.image) if record.image_path is not None else record.image)
            except ImageLoadError as err:
                raise DataError(f"{record.where}: {err}") from None
        batch = self.processor(images=images, prompts=[r.prefix for r in records], suffixes=[r.suffix for r in records])
        padding = torch.tensor([r.padding for r in records])
        if padding.any():
            batch["labels"][padding] = IGNORE_INDEX
        return batch
