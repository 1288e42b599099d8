"""Training data: (image, prefix, suffix) records from JSONL or Python, checked up front, batched by the processor.

A JSONL file holds one object per line, the layout big_vision and the Hugging Face examples use::

    {"image": "images/0001.jpg", "prefix": "caption en", "suffix": "a cat on a red sofa"}

A ``detect`` or ``segment`` record may give ``objects`` instead of a written ``suffix`` (never both)::

    {"image": "images/0001.jpg", "prefix": "segment cat ; dog", "objects": [
        {"label": "cat", "box": [12.0, 30.5, 200.0, 180.0],
         "mask": [[12, 30, 200, 30, 200, 180]]},
        {"label": "dog", "mask": {"size": [480, 640], "counts": "PPYo0..."}},
        {"label": "dog", "mask": "masks/0001_dog.png"}]}

``box`` is ``[x0, y0, x1, y1]`` in pixels (optional with a mask: then the mask's tight box); ``mask`` is
COCO polygons, COCO RLE (compressed or not) or a mask image (non-zero is inside) the size of the image;
Python records may also give a bool array. The `Collator` writes the target in the DataLoader's workers
with `vlmzoo.tasks.targets.located_suffix`: objects whose label the prompt names, ``<loc>`` x 4 (+ the 16
``<seg>`` codes of the mask, from the model's mask VQ-VAE, encoded once and cached) + the label. In
training the order of the objects is shuffled anew each epoch (seeded by the training seed and the
epoch), as the public recipes do; in evaluation it is the record's.

Image and mask paths are relative to the JSONL file. `validate` reads every record before training starts and
raises one `DataError` that lists each bad record by file and line; nothing is skipped silently.
Images are decoded in the DataLoader's worker processes, by the `Collator`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from vlmzoo.errors import VlmzooError
from vlmzoo.processing import IGNORE_INDEX, BatchEncoding, ImageLoadError, PaliGemmaProcessor, load_image
from vlmzoo.tasks import DetectedObject
from vlmzoo.tasks.targets import located_prompt, located_suffix

__all__ = [
    "Collator",
    "DataError",
    "EpochIndex",
    "ObjectAnnotation",
    "PaddedDataset",
    "Record",
    "RecordDataset",
    "load_records",
    "validate",
]

#: At most this many problems are listed in one `DataError` (the count of the rest is given).
MAX_LISTED_PROBLEMS = 20


class DataError(VlmzooError, ValueError):
    """Training data that cannot be used; the message names the file and line of each bad record."""


@dataclass(frozen=True)
class ObjectAnnotation:
    """One object of a record that gives ``objects`` instead of a ``suffix``.

    Attributes:
        label: the object's name, as a ``detect`` / ``segment`` prompt names it.
        box: ``(x0, y0, x1, y1)`` in pixels of the image, or None for the tight box of ``mask``.
        mask: None, COCO polygons (a list of flat ``[x, y, ...]`` lists), COCO RLE (``{"size": [h, w],
            "counts": str | list}``), a mask image path, or a bool array ``[h, w]``.
    """

    label: str
    box: tuple[float, float, float, float] | None = None
    mask: Any = None

    def mask_array(self, image_size: tuple[int, int]) -> np.ndarray:
        """The mask as a bool array ``[height, width]``; ValueError if it does not fit the image or is empty."""
        width, height = image_size
        mask = self.mask
        if isinstance(mask, np.ndarray):
            array = mask != 0
        elif isinstance(mask, (str, os.PathLike)):
            try:
                with PIL.Image.open(mask) as opened:
                    array = np.asarray(opened)
            except (OSError, PIL.UnidentifiedImageError) as err:
                raise ValueError(f"mask image {str(mask)!r} cannot be read ({type(err).__name__}: {err})") from None
            array = (array != 0).any(axis=-1) if array.ndim == 3 else array != 0
        else:
            from pycocotools import mask as coco_mask

            if isinstance(mask, dict):
                if list(mask["size"]) != [height, width]:
                    raise ValueError(f"mask RLE size {list(mask['size'])} is not the image's [{height}, {width}]")
                rle = mask if isinstance(mask["counts"], (str, bytes)) else coco_mask.frPyObjects(mask, height, width)
                if isinstance(rle.get("counts"), str):
                    rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            else:
                rle = coco_mask.merge(coco_mask.frPyObjects([list(map(float, p)) for p in mask], height, width))
            with warnings.catch_warnings():  # pycocotools' own numpy 2 deprecation notice, not ours to fix
                warnings.simplefilter("ignore", DeprecationWarning)
                array = np.asarray(coco_mask.decode(rle), dtype=bool)
        if array.shape != (height, width):
            raise ValueError(f"mask is {array.shape[1]}x{array.shape[0]} pixels, the image {width}x{height}")
        if not array.any():
            raise ValueError("mask is empty (no pixel inside)")
        return array

    def pixel_box(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """``box``, or the tight box of the mask (pixel edges) when there is none."""
        if self.box is not None:
            return self.box
        rows, cols = np.nonzero(self.mask_array(image_size))
        return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


@dataclass(frozen=True)
class Record:
    """One training example. ``image`` is a path or an in-memory image; ``where`` says where it came from.

    Either ``suffix`` (the target text) or ``objects`` (the target written at load time) is set.
    """

    image: Any
    prefix: str
    suffix: str | None
    where: str
    #: A stand-in that fills a process's last evaluation batch: it is run but carries no loss.
    padding: bool = False
    #: The objects of a ``detect`` / ``segment`` record that has no written ``suffix``.
    objects: tuple[ObjectAnnotation, ...] | None = None
    #: The training epoch this example is drawn for (shuffles ``objects``); None keeps their order.
    epoch: int | None = None

    @property
    def image_path(self) -> Path | None:
        return Path(self.image) if isinstance(self.image, (str, os.PathLike)) else None


class EpochIndex(tuple):
    """A dataset index with the epoch it is drawn for: ``(index, epoch)`` (what `RecordDataset` takes)."""

    __slots__ = ()

    def __new__(cls, index: int, epoch: int) -> EpochIndex:
        return super().__new__(cls, (index, epoch))


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
    objects = None
    if "objects" in item:
        if suffix is not None:
            problems.append(f"{where}: give either 'suffix' or 'objects', not both")
        elif isinstance(prefix, str):
            objects = _objects(item["objects"], prefix, where, base, problems)
    elif suffix is None:
        problems.append(
            f"{where}: missing field 'suffix' (the text the model should learn to produce), or 'objects' for a "
            "detect / segment prompt"
        )
    elif not isinstance(suffix, str):
        problems.append(f"{where}: field 'suffix' must be a string, got {type(suffix).__name__}")
    elif not suffix.strip():
        problems.append(f"{where}: field 'suffix' is empty; every record needs a target text")
    unknown = sorted(set(item) - {"image", "prefix", "suffix", "objects"})
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; records hold image, prefix, suffix "
            "(or objects)"
        )
    if len(problems) > before:
        return None
    return Record(image=image, prefix=prefix, suffix=suffix, where=where, objects=objects)


_OBJECT_FIELDS = {"label", "box", "mask"}


def _objects(
    items: Any, prefix: str, where: str, base: Path | None, problems: list[str]
) -> tuple[ObjectAnnotation, ...] | None:
    """The checked objects of one record (what can be checked without the image), or None after a problem."""
    parsed = located_prompt(prefix)
    if parsed is None:
        problems.append(
            f"{where}: 'objects' need a prefix 'detect a ; b' or 'segment a ; b', got {prefix!r}; "
            "write a 'suffix' for other prompts"
        )
        return None
    if not isinstance(items, list):
        problems.append(f"{where}: field 'objects' must be a list of {{label, box, mask}} objects")
        return None
    segment = parsed[0] == "segment"
    before = len(problems)
    objects = []
    for i, obj in enumerate(items):
        at = f"{where}: object {i}"
        if not isinstance(obj, dict):
            problems.append(f"{at}: expected {{label, box, mask}}, got {type(obj).__name__}")
            continue
        unknown = sorted(set(obj) - _OBJECT_FIELDS)
        if unknown:
            problems.append(f"{at}: unknown field(s) {', '.join(map(repr, unknown))}; objects hold label, box, mask")
        label = obj.get("label")
        if not isinstance(label, str) or not label.strip() or ";" in label or "<" in label:
            problems.append(f"{at}: 'label' must be a non-empty string without ';' or '<', got {label!r}")
        box = obj.get("box")
        if box is not None:
            box = _box(box)
            if box is None:
                problems.append(
                    f"{at}: 'box' must be [x0, y0, x1, y1] pixels with x0 < x1 and y0 < y1, got {obj['box']!r}"
                )
        mask = obj.get("mask")
        if mask is None:
            if segment:
                problems.append(f"{at}: a segment record needs a 'mask' for every object")
            elif box is None:
                problems.append(f"{at}: needs a 'box' (or a 'mask' to take the box from)")
        else:
            mask, problem = _mask(mask, base)
            if problem:
                problems.append(f"{at}: {problem}")
        objects.append(ObjectAnnotation(label=str(label), box=box, mask=mask))
    return tuple(objects) if len(problems) == before else None


def _box(value: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    x0, y0, x1, y1 = (float(v) for v in value)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _mask(value: Any, base: Path | None) -> tuple[Any, str | None]:
    """The mask as stored on the record (paths resolved against ``base``), and a problem or None."""
    if isinstance(value, np.ndarray):
        return value, None if value.ndim == 2 else f"a mask array must be [height, width], got shape {value.shape}"
    if isinstance(value, str):
        path = Path(value) if base is None or Path(value).is_absolute() else base / value
        return str(path), None if path.is_file() else f"mask file {str(path)!r} does not exist"
    if isinstance(value, dict):
        size, counts = value.get("size"), value.get("counts")
        if sorted(value) != ["counts", "size"] or not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
        ):
            return value, "a mask RLE is {'size': [height, width], 'counts': ...} (COCO's form)"
        if not isinstance(counts, str) and not (
            isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts)
        ):
            return value, "a mask RLE's 'counts' must be a string (compressed) or a list of run lengths"
        if isinstance(counts, list) and sum(counts) != size[0] * size[1]:
            area = size[0] * size[1]
            return value, f"the mask RLE's run lengths add up to {sum(counts)}, not height x width = {area}"
        return value, None
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(p, list)
            and len(p) >= 6
            and len(p) % 2 == 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
            for p in value
        )
    ):
        return value, None
    return value, (
        "'mask' must be COCO polygons ([[x, y, x, y, ...], ...], at least 3 points each), COCO RLE "
        "({'size': [h, w], 'counts': ...}) or a mask image path"
    )


def _raise_if(problems: list[str], source: str) -> None:
    if not problems:
        return
    listed = problems[:MAX_LISTED_PROBLEMS]
    more = f"\n  ... and {len(problems) - len(listed)} more" if len(problems) > len(listed) else ""
    raise DataError(f"{len(problems)} bad record(s) in {source}; fix or remove them:\n  " + "\n  ".join(listed) + more)


def sequence_length(processor: PaliGemmaProcessor, record: Record) -> int:
    """Tokens of one example: image tokens, prompt, suffix and ``<eos>``."""
    ids, _ = processor.encode_text(record.prefix, _longest_suffix(record) if record.suffix is None else record.suffix)
    return len(ids)


def _longest_suffix(record: Record) -> str:
    """A target as long in tokens as any the record's objects can give (every ``<loc>`` / ``<seg>`` is one token)."""
    parsed = located_prompt(record.prefix)
    codes = (0,) * 16 if parsed and parsed[0] == "segment" else None
    stand_ins = [DetectedObject(label=o.label, box=(0.0, 0.0, 1.0, 1.0), seg_codes=codes) for o in record.objects or ()]
    return located_suffix(record.prefix, stand_ins, (1, 1))


def _image_size(image: Any) -> tuple[int, int]:
    """(width, height) of an image path, PIL image or [H, W, C] array, reading only the header of a file."""
    if isinstance(image, (str, os.PathLike)):
        with PIL.Image.open(image) as opened:
            return opened.size
    if isinstance(image, PIL.Image.Image):
        return image.size
    return int(image.shape[1]), int(image.shape[0])


def _object_problems(record: Record, size: tuple[int, int]) -> list[str]:
    """What is wrong with the objects of ``record`` on an image of ``size``: boxes outside it, bad masks."""
    width, height = size
    problems = []
    for i, obj in enumerate(record.objects or ()):
        at = f"{record.where}: object {i} ({obj.label!r})"
        if obj.box is not None:
            x0, y0, x1, y1 = obj.box
            if x0 < -0.5 or y0 < -0.5 or x1 > width + 0.5 or y1 > height + 0.5:
                problems.append(f"{at}: box {list(obj.box)} is outside the {width}x{height} image")
        if obj.mask is not None:
            try:
                obj.mask_array(size)
            except (ValueError, KeyError, TypeError) as err:
                problems.append(f"{at}: {err}")
    return problems


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
            elif record.objects:
                problems += _object_problems(record, _image_size(record.image))
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
    """A map-style dataset over records; items are records, turned into tensors by the `Collator`.

    An `EpochIndex` ``(index, epoch)`` gives the record marked with the epoch it is drawn for, which the
    `Collator` shuffles its objects by.
    """

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | EpochIndex) -> Record:
        if isinstance(index, tuple):
            index, epoch = index
            record = self.records[index]
            return dataclasses.replace(record, epoch=epoch) if record.objects else record
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

    Records with ``objects`` get their target written here (`suffix`): masks become ``<seg>`` codes
    through the mask VQ-VAE ``vae`` (by default the processor's own, else big_vision's), once per object
    (the codes are cached for the next epochs); objects of a record drawn for an epoch are shuffled by
    ``random.Random(f"{shuffle_seed}:{epoch}:{where}")``.
    """

    def __init__(
        self,
        processor: PaliGemmaProcessor,
        padding_side: str = "right",
        *,
        shuffle_seed: int | None = None,
        vae: str | os.PathLike | None = None,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.processor = copy.copy(processor)
        self.processor.padding_side = padding_side
        self.shuffle_seed = shuffle_seed
        self.vae = vae if vae is not None else processor.mask_vae
        self._segment: Any = None
        self._codes: dict[tuple[str, int], tuple[int, ...]] = {}

    def _encode(self, record: Record, size: tuple[int, int], indices: list[int]) -> None:
        """Put the seg codes of ``record``'s objects ``indices`` in the cache."""
        if self._segment is None:
            from vlmzoo.tasks import get_postprocessor

            self._segment = get_postprocessor("segment", **({"vae": self.vae} if self.vae is not None else {}))
        masks, boxes = [], []
        for i in indices:
            obj = record.objects[i]  # type: ignore[index]
            try:
                masks.append(obj.mask_array(size))
                boxes.append(obj.pixel_box(size))
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(f"{record.where}: object {i} ({obj.label!r}): {err}") from None
        try:
            codes = self._segment.encode_masks(np.stack(masks), boxes)
        except ValueError as err:
            raise DataError(f"{record.where}: {err}") from None
        for i, row in zip(indices, codes.tolist(), strict=True):
            self._codes[(record.where, i)] = tuple(row)

    def suffix(self, record: Record, image_size: tuple[int, int]) -> str:
        """The target of ``record``: its ``suffix``, or the one its objects give (see the class docstring)."""
        if record.objects is None:
            return record.suffix or ""
        parsed = located_prompt(record.prefix)
        segment = parsed is not None and parsed[0] == "segment"
        named = set(parsed[1]) if parsed else set()
        order = [i for i, obj in enumerate(record.objects) if " ".join(obj.label.split()) in named]
        if segment:
            missing = [i for i in order if (record.where, i) not in self._codes]
            if missing:
                self._encode(record, image_size, missing)
        if record.epoch is not None and self.shuffle_seed is not None:
            random.Random(f"{self.shuffle_seed}:{record.epoch}:{record.where}").shuffle(order)
        objects = []
        for i in order:
            obj = record.objects[i]
            try:
                box = obj.pixel_box(image_size)
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(f"{record.where}: object {i} ({obj.label!r}): {err}") from None
            codes = self._codes[(record.where, i)] if segment else None
            objects.append(DetectedObject(label=obj.label, box=box, seg_codes=codes))
        return located_suffix(record.prefix, objects, image_size)

    def __call__(self, records: Sequence[Record]) -> BatchEncoding:
        images = []
        for record in records:
            try:
                images.append(load_image(record.image) if record.image_path is not None else record.image)
            except ImageLoadError as err:
                raise DataError(f"{record.where}: {err}") from None
        suffixes = [self.suffix(r, _image_size(image)) for r, image in zip(records, images, strict=True)]
        batch = self.processor(images=images, prompts=[r.prefix for r in records], suffixes=suffixes)
        padding = torch.tensor([r.padding for r in records])
        if padding.any():
            batch["labels"][padding] = IGNORE_INDEX
        return batch
