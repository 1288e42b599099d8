"""Fuzz targets: every reader of untrusted input, fed random and mutated input by hypothesis.

A target is a function of one generated example, registered with `fuzz_target` together with the
strategy that generates its examples and the error types it may raise. Anything else that escapes is a
finding. ``tests/test_fuzz.py`` runs a few hundred examples of each in CI; ``scripts/fuzz.py`` runs as
many as asked (``--examples 10000``) and prints a table.

Allowed errors must be raised on purpose: a `vlmzoo.VlmzooError`, or a plain ``ValueError`` /
``TypeError`` only where a target allows it and only when raised by vlmzoo's own code (the last
frame of the traceback lies in the ``vlmzoo`` package), never from deep inside a library.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from hypothesis import strategies as st

import vlmzoo
from vlmzoo.errors import VlmzooError

VLMZOO_DIR = Path(vlmzoo.__file__).resolve().parent
SCRATCH = Path(tempfile.mkdtemp(prefix="vlmzoo-fuzz-"))


@dataclass(frozen=True)
class FuzzTarget:
    """One reader under fuzzing: how to make examples, what to run, which errors are expected."""

    name: str
    strategy: st.SearchStrategy
    run: Callable[[Any], None]
    allowed: tuple[type[BaseException], ...]
    plain_allowed: tuple[type[BaseException], ...]


TARGETS: dict[str, FuzzTarget] = {}


def fuzz_target(
    name: str,
    strategy: st.SearchStrategy,
    allowed: tuple[type[BaseException], ...] = (VlmzooError,),
    plain_allowed: tuple[type[BaseException], ...] = (),
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register the decorated function as the fuzz target ``name``."""

    def register(run: Callable[[Any], None]) -> Callable[[Any], None]:
        if name in TARGETS:
            raise ValueError(f"fuzz target {name!r} is registered twice")
        TARGETS[name] = FuzzTarget(name, strategy, run, allowed, plain_allowed)
        return run

    return register


def _raised_by_vlmzoo(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(VLMZOO_DIR)


def check(target: FuzzTarget, example: Any) -> None:
    """Run one example; an error that is neither allowed nor deliberate propagates as a finding."""
    try:
        target.run(example)
    except target.allowed as error:
        assert str(error).strip(), f"{type(error).__name__} with an empty message"
    except target.plain_allowed as error:
        if not _raised_by_vlmzoo(error):
            raise
        assert str(error).strip(), f"{type(error).__name__} with an empty message"


# ------------------------------------------------------------------------------------------ strategies

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _mutated(base: dict, keys: list[str]) -> st.SearchStrategy:
    """``base`` with up to three fields (some nested, path ``a.b``) replaced by random JSON or deleted."""
    mutation = st.tuples(st.sampled_from(keys) | st.text(max_size=8), st.one_of(json_values, st.just("<delete>")))

    def apply(changes: list[tuple[str, Any]]) -> dict:
        data = json.loads(json.dumps(base))
        for path, value in changes:
            *parents, leaf = path.split(".")
            node = data
            for parent in parents:
                node = node.get(parent) if isinstance(node, dict) else None
            if isinstance(node, dict):
                if value == "<delete>":
                    node.pop(leaf, None)
                else:
                    node[leaf] = value
        return data

    return st.lists(mutation, min_size=1, max_size=3).map(apply)


def _flat_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


# ------------------------------------------------------------------------------------------ safetensors

_DTYPE_NAMES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "U16", "", "f32"]


@st.composite
def _safetensors_files(draw) -> bytes:
    kind = draw(st.sampled_from(["raw", "structured", "mutated", "consistent", "consistent"]))
    if kind == "raw":
        return draw(st.binary(max_size=300))
    if kind == "consistent":  # a well-formed file, then perhaps one field of one entry changed
        header, offset = {}, 0
        for key in draw(st.lists(st.text(max_size=5), max_size=4, unique=True)):
            dtype = draw(st.sampled_from(_DTYPE_NAMES[:10]))
            shape = draw(st.lists(st.integers(0, 4), max_size=3))
            size = int(np.prod(shape)) * {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2}.get(
                dtype, 1
            )
            header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        if header and draw(st.booleans()):
            entry = header[draw(st.sampled_from(sorted(header)))]
            entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(json_values)
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + draw(st.binary(min_size=offset, max_size=offset + 2))
    if kind == "mutated":
        from safetensors.torch import save

        tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3, dtype=torch.bfloat16)}
        blob = bytearray(save(tensors))
        for _ in range(draw(st.integers(1, 6))):
            position = draw(st.integers(0, len(blob) - 1))
            blob[position] = draw(st.integers(0, 255))
        return bytes(blob[: draw(st.integers(0, len(blob)))])
    entry = st.fixed_dictionaries(
        {
            "dtype": st.sampled_from(_DTYPE_NAMES) | json_values,
            "shape": st.lists(st.integers(-3, 2**40) | st.integers(0, 5), max_size=3) | json_values,
            "data_offsets": st.lists(st.integers(-5, 2**34) | st.integers(0, 64), min_size=2, max_size=2) | json_values,
        }
    )
    header = draw(st.dictionaries(st.text(max_size=6), entry | json_values, max_size=4) | json_values)
    if draw(st.booleans()) and isinstance(header, dict):
        header["__metadata__"] = draw(json_values)
    text = json.dumps(header).encode()
    size = len(text) if draw(st.booleans()) else draw(st.integers(0, 2**64 - 1))
    return struct.pack("<Q", size) + text + draw(st.binary(max_size=64))


@fuzz_target("safetensors reader", _safetensors_files())
def fuzz_safetensors(content: bytes) -> None:
    from vlmzoo.checkpoints.safetensors_io import iter_tensors, read_header

    path = SCRATCH / "fuzz.safetensors"
    path.write_bytes(content)
    read_header(path)
    for _, tensor in iter_tensors(path, dtype=torch.bfloat16):
        tensor.sum()


# ------------------------------------------------------------------------------------------ config.json


def _saved_configs() -> list[dict]:
    """config.json as vlmzoo writes it: Hugging Face fields plus its own section, or its own format only."""
    from vlmzoo.paligemma.config_json import config_to_json

    tiny = vlmzoo.get_config("paligemma2-tiny")
    hf = config_to_json(tiny)
    hf_only = {key: value for key, value in hf.items() if key != "vlmzoo"}
    own_format = config_to_json(tiny.replace(projector={"bias": False}))
    return [hf, hf_only, own_format]


_CONFIGS = _saved_configs()
_configs = st.one_of(json_values, *(_mutated(config, _flat_keys(config)) for config in _CONFIGS))


@fuzz_target("config reader", _configs)
def fuzz_config(data: Any) -> None:
    from vlmzoo.paligemma.config_json import config_from_json

    if not isinstance(data, dict):  # the file reader refuses non-objects before conversion
        from vlmzoo.checkpoints.hf_fields import check_hf_config

        check_hf_config(data)
    config = config_from_json(data)
    if config.vision.num_layers + config.decoder.num_layers <= 64:
        vlmzoo.build(config, device="meta")


# -------------------------------------------------------------------------------------- checkpoint index

_INDEX_DIR = SCRATCH / "index"


def _index_dir() -> Path:
    if not (_INDEX_DIR / "model-00001-of-00001.safetensors").is_file():
        from safetensors.torch import save_file

        _INDEX_DIR.mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.zeros(2)}, _INDEX_DIR / "model-00001-of-00001.safetensors")
    return _INDEX_DIR


_shard_names = st.sampled_from(["model-00001-of-00001.safetensors", "missing.safetensors", "../x.safetensors",
                                "/etc/passwd", "model.safetensors", ""]) | json_values  # fmt: skip
_indexes = st.one_of(
    st.text(max_size=60),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"weight_map": st.dictionaries(st.text(max_size=6), _shard_names, max_size=3) | json_values},
        optional={"metadata": json_values},
    ).map(json.dumps),
)


@fuzz_target("checkpoint index", _indexes)
def fuzz_index(content: str) -> None:
    from vlmzoo.checkpoints.loading import weight_files
    from vlmzoo.checkpoints.safetensors_io import read_header

    directory = _index_dir()
    (directory / "model.safetensors.index.json").write_text(content, encoding="utf-8", errors="surrogatepass")
    for path in weight_files(directory):
        read_header(path)


# ---------------------------------------------------------------------------------------------- images

PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "I;16B", "I;16L",
             "LA", "La", "PA", "RGBa", "RGBX"]  # fmt: skip
ARRAY_DTYPES = ["uint8", "uint16", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool",
                ">u2", "complex64"]  # fmt: skip


@st.composite
def pil_images(draw) -> PIL.Image.Image:
    mode = draw(st.sampled_from(PIL_MODES))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    blank = PIL.Image.new(mode, size)
    raw = np.random.RandomState(draw(st.integers(0, 2**31 - 1))).bytes(len(blank.tobytes()))
    image = PIL.Image.frombytes(mode, size, raw)
    if mode == "P" and draw(st.booleans()):
        image.info["transparency"] = draw(st.integers(0, 255))
    return image


@st.composite
def arrays(draw) -> np.ndarray | torch.Tensor:
    dtype = np.dtype(draw(st.sampled_from(ARRAY_DTYPES)))
    h, w, c = draw(st.integers(0, 40)), draw(st.integers(0, 40)), draw(st.integers(1, 5))
    shape = draw(st.sampled_from([(h, w), (h, w, c), (c, h, w), (h,), (2, h, w, c), (h, w, 1, 1)]))
    rng = np.random.RandomState(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([1.0, 255.0, 65535.0, 1e9]))
    values = rng.uniform(-0.1 if draw(st.booleans()) else 0.0, 1.0, size=shape) * scale
    if dtype.kind == "f" and draw(st.booleans()) and values.size:
        values.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with np.errstate(invalid="ignore", over="ignore"):
        array = values.astype(dtype)
    if draw(st.booleans()) and dtype.kind in "uif" and dtype.isnative and dtype != np.float16:
        return torch.from_numpy(array)
    return array


def _image_file(draw_image: PIL.Image.Image, fmt: str) -> Path:
    path = SCRATCH / f"image.{fmt.lower()}"
    draw_image.save(path, format=fmt)
    return path


def _as_rgba(image: PIL.Image.Image) -> PIL.Image.Image:
    return (image.convert("LA") if image.mode == "La" else image).convert("RGBA")


@st.composite
def image_files(draw) -> Path:
    image = draw(pil_images())
    chosen = draw(st.sampled_from(["PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP"]))
    for fmt, stored in ((chosen, image), ("TIFF", image), ("PNG", _as_rgba(image))):
        try:
            return _image_file(stored, fmt)
        except (OSError, ValueError, KeyError):  # this format cannot hold this mode: try the next
            continue
    raise AssertionError("unreachable: PNG holds RGBA")


images = st.one_of(pil_images(), arrays(), image_files())

_PROMPT_PIECES = st.sampled_from(["caption en", "detect cat ; dog", "<image>", "<bos>", "<eos>", "<loc0042>",
                                  "<seg007>", "\n", " ", "日本", "🙂", "é", "\x00", "a" * 50])  # fmt: skip
prompts = st.lists(_PROMPT_PIECES | st.text(max_size=8), max_size=6).map("".join)


def _tiny_processor():
    from tiny_tokenizer import make_tiny_tokenizer

    return vlmzoo.PaliGemmaProcessor(make_tiny_tokenizer(), image_size=28, num_image_tokens=4, max_length=48)


_PROCESSOR: list = []


@st.composite
def processor_calls(draw) -> tuple[list, list[str], list[str] | None]:
    count = draw(st.integers(1, 3))
    batch_images = [draw(images) for _ in range(count)]
    batch_prompts = [draw(prompts) for _ in range(count)]
    suffixes = [draw(prompts) for _ in range(count)] if draw(st.booleans()) else None
    return batch_images, batch_prompts, suffixes


@fuzz_target("processor (prompts, images)", processor_calls(), plain_allowed=(ValueError,))
def fuzz_processor(call: tuple[list, list[str], list[str] | None]) -> None:
    if not _PROCESSOR:
        _PROCESSOR.append(_tiny_processor())
    processor = _PROCESSOR[0]
    batch_images, batch_prompts, suffixes = call
    batch = processor(images=batch_images, prompts=batch_prompts, suffixes=suffixes)
    pixels = batch["pixel_values"]
    assert pixels.shape == (len(batch_images), 3, 28, 28) and bool(torch.isfinite(pixels).all())
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0


# ------------------------------------------------------------------------------------------ processor files

_PROCESSOR_TEMPLATE = SCRATCH / "processor-template"
_PROCESSOR_FILES = ["preprocessor_config.json", "tokenizer_config.json", "config.json", "tokenizer.json"]


def _processor_template() -> Path:
    if not (_PROCESSOR_TEMPLATE / "tokenizer.json").is_file():
        _tiny_processor().save_pretrained(_PROCESSOR_TEMPLATE)
        (_PROCESSOR_TEMPLATE / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 64}}))
    return _PROCESSOR_TEMPLATE


_IMAGE_FIELDS = ["size", "size.height", "size.width", "image_seq_length", "image_mean", "image_std", "rescale_factor",
                 "resample", "do_convert_rgb", "do_resize", "do_rescale", "do_normalize"]  # fmt: skip
_TOKENIZER_FIELDS = ["bos_token", "eos_token", "pad_token", "extra_special_tokens", "extra_special_tokens.image_token"]


@st.composite
def processor_dirs(draw) -> tuple[str, Any]:
    name = draw(st.sampled_from(_PROCESSOR_FILES))
    if name == "tokenizer.json":
        how = draw(st.sampled_from(["truncate", "flip", "json"]))
        if how == "json":
            return name, json.dumps(draw(json_values | st.fixed_dictionaries({"model": json_values})))
        return name, (how, draw(st.floats(0, 1)), draw(st.integers(0, 255)))
    fields = {"preprocessor_config.json": _IMAGE_FIELDS, "tokenizer_config.json": _TOKENIZER_FIELDS,
              "config.json": ["text_config", "text_config.max_position_embeddings"]}[name]  # fmt: skip
    content = draw(st.one_of(_mutated({}, fields), json_values, st.text(max_size=20)))
    return name, content


@fuzz_target("processor files", processor_dirs())
def fuzz_processor_files(change: tuple[str, Any]) -> None:
    directory = SCRATCH / "processor"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(_processor_template(), directory)
    name, content = change
    path = directory / name
    if isinstance(content, tuple):
        how, where, byte = content
        blob = bytearray(path.read_bytes())
        position = int(where * (len(blob) - 1))
        if how == "truncate":
            blob = blob[:position]
        else:
            blob[position] = byte
        path.write_bytes(bytes(blob))
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        base = json.loads(path.read_text())
        base.update(content) if isinstance(content, dict) else None
        path.write_text(json.dumps(base if isinstance(content, dict) else content))
    processor = vlmzoo.load_processor(directory)
    if processor.image_size <= 64 and processor.num_image_tokens <= 64:
        processor(images=PIL.Image.new("RGB", (9, 7)), prompts="caption en")


# ----------------------------------------------------------------------------------------------- tasks

_TASK_PIECES = st.sampled_from(["<loc0000>", "<loc0511>", "<loc1023>", "<loc9999>", "<seg000>", "<seg127>", "<seg128>",
                                " cat", " ; ", ";", "<eos>", "\n", " ", "<loc", "seg>", "dog ; <loc0001>"])  # fmt: skip
task_texts = st.lists(_TASK_PIECES | st.text(max_size=6), max_size=30).map("".join)
image_sizes = st.one_of(
    st.tuples(st.integers(1, 512), st.integers(1, 512)),
    st.tuples(st.integers(-5, 5), st.integers(-5, 5)),
    st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True)),
    json_values,
)
_SEGMENT: list = []


_task_examples = st.tuples(st.sampled_from(["detect", "segment"]), task_texts, image_sizes)


@fuzz_target("task parsers (detect, segment)", _task_examples)
def fuzz_task_parsers(example: tuple[str, str, Any]) -> None:
    from vlmzoo.tasks import MaskDecoder, get_postprocessor

    task, text, size = example
    if task == "segment":
        if not _SEGMENT:
            _SEGMENT.append(get_postprocessor("segment", vae=MaskDecoder()))
        postprocessor = _SEGMENT[0]
    else:
        postprocessor = get_postprocessor(task)
    result = postprocessor.parse(text, image_size=size)
    result.to_dict()
    for obj in result.objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 <= x1 <= result.image_size[0] and 0 <= y0 <= y1 <= result.image_size[1], obj.box


_rle_counts = st.one_of(st.lists(st.integers(-3, 40), max_size=8), st.text(max_size=12), st.binary(max_size=12))


@st.composite
def _valid_rles(draw) -> dict:
    from vlmzoo.tasks import mask_to_rle

    shape = (draw(st.integers(0, 12)), draw(st.integers(0, 12)))
    mask = np.random.RandomState(draw(st.integers(0, 2**31 - 1))).rand(*shape) < draw(st.floats(0, 1))
    rle = mask_to_rle(mask)
    if draw(st.booleans()):
        counts = rle["counts"]
        cut = draw(st.integers(0, len(counts)))
        rle["counts"] = counts[:cut] + draw(st.text(max_size=2)) + counts[cut + 1 :]
    return rle


_rles = st.one_of(
    _valid_rles(),
    json_values,
    st.fixed_dictionaries({"size": st.lists(st.integers(-2, 12), max_size=3) | json_values, "counts": _rle_counts}),
)


@fuzz_target("COCO RLE reader", _rles, plain_allowed=(ValueError,))
def fuzz_rle(rle: Any) -> None:
    from vlmzoo.tasks import mask_to_rle, rle_to_mask

    mask = rle_to_mask(rle)
    assert mask.dtype == np.bool_
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)


# ------------------------------------------------------------------------------------------ training data

_record_lines = st.one_of(
    st.fixed_dictionaries(
        {"image": st.sampled_from(["a.png", "/abs/b.jpg", "http://x/y.png", ""]) | json_values,
         "suffix": st.text(max_size=8) | json_values},
        optional={"prefix": st.text(max_size=8) | json_values, "extra": json_values},
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=30).filter(lambda line: "\n" not in line and "\r" not in line),
)  # fmt: skip
_jsonl_files = st.tuples(st.lists(_record_lines, max_size=6), st.binary(max_size=8))


@fuzz_target("training data (JSONL)", _jsonl_files)
def fuzz_training_data(example: tuple[list[str], bytes]) -> None:
    from vlmzoo.training.data import load_records

    lines, tail = example
    path = SCRATCH / "train.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogatepass") + tail)
    for record in load_records(path):
        assert isinstance(record.prefix, str) and isinstance(record.suffix, str) and record.suffix.strip()
