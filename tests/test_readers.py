"""Damaged or hand-edited files give one error that names the file and the field, never a traceback."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import save_file

import vlmzoo
from vlmzoo.checkpoints import ConfigConversionError, SafetensorsError, config_from_hf, config_to_hf
from vlmzoo.checkpoints.safetensors_io import iter_tensors, read_header


def raw_safetensors(path, header, data: bytes = b"") -> None:
    """Write a safetensors file with exactly this header (no checks), for malformed cases."""
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize(
    "header,data,problem",
    [
        ([1, 2], b"", "header is a list"),
        ({"w": entry(shape=(-2,))}, b"\0" * 8, "non-negative integers"),
        ({"w": entry(shape=(2**40, 2**40), offsets=(0, 8))}, b"\0" * 8, "needs"),
        ({"w": entry(shape=(2**31,), offsets=(0, 2**33))}, b"\0" * 8, "past its end"),
        ({"w": entry(offsets=(0, 16), shape=(4,))}, b"\0" * 8, "past its end"),
        ({"a": entry(offsets=(0, 8)), "b": entry(offsets=(4, 12))}, b"\0" * 12, "overlap"),
        ({"w": entry(dtype="F8_E4M3", shape=(8,))}, b"\0" * 8, "dtype 'F8_E4M3'"),
        ({"w": entry(dtype=None)}, b"\0" * 8, "dtype None"),
        ({"w": entry(offsets=(8, 0))}, b"\0" * 8, "data_offsets"),
        ({"w": entry(shape=(True, 2))}, b"\0" * 8, "shape"),
        ({"w": "F32"}, b"", "not an object"),
        ({"__metadata__": [1], "w": entry()}, b"\0" * 8, "__metadata__"),
    ],
)
def test_malformed_safetensors_headers(tmp_path, header, data, problem):
    path = tmp_path / "model.safetensors"
    raw_safetensors(path, header, data)
    with pytest.raises(SafetensorsError, match=problem) as caught:
        read_header(path)
    assert str(path) in str(caught.value)
    assert caught.value.path == str(path)


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"", "shorter than any header"),
        (b"\x01\x02", "shorter than any header"),
        (struct.pack("<Q", 10**6) + b"{}", "does not fit the file"),
        (struct.pack("<Q", 4) + b"{no}", "not JSON"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "not JSON"),
    ],
)
def test_not_safetensors_at_all(tmp_path, content, problem):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsError, match=problem):
        read_header(path)


def test_valid_file_still_reads(tmp_path):
    path = tmp_path / "ok.safetensors"
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(0), "c": torch.tensor([1, 2], dtype=torch.int64)}
    save_file(tensors, path)
    header, _ = read_header(path)
    assert set(header) == {"a", "b", "c"}
    read = dict(iter_tensors(path))
    assert all(torch.equal(read[k], tensors[k]) for k in tensors)


def test_library_check_catches_what_the_structure_checks_allow(tmp_path):
    # Well-formed entries, but a gap the safetensors format does not allow between them.
    path = tmp_path / "gap.safetensors"
    raw_safetensors(path, {"a": entry(offsets=(0, 8)), "b": entry(offsets=(16, 24))}, b"\0" * 24)
    with pytest.raises(SafetensorsError, match="not a valid safetensors file"):
        read_header(path)


@pytest.fixture
def checkpoint(tmp_path):
    model = vlmzoo.build(tiny_config(), seed=0)
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_integer_typed_weight_is_named(checkpoint):
    path = checkpoint / "model.safetensors"
    from safetensors.torch import load_file

    tensors = load_file(path)
    key = "multi_modal_projector.linear.weight"
    tensors[key] = tensors[key].to(torch.int32)
    save_file(tensors, path)
    with pytest.raises(SafetensorsError, match=rf"model\.safetensors: tensor '{key}': stored as I32"):
        vlmzoo.from_pretrained(checkpoint)


def _edit_config(checkpoint, change):
    path = checkpoint / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change,field,problem",
    [
        (lambda d: d["text_config"].update(num_hidden_layers="three"), "text_config.num_hidden_layers",
         "non-negative integer, got 'three'"),
        (lambda d: d["text_config"].update(num_attention_heads=0), "text_config.num_attention_heads",
         "positive integer, got 0"),
        (lambda d: d["vision_config"].update(layer_norm_eps=-1), "vision_config.layer_norm_eps", "positive number"),
        (lambda d: d["text_config"].update(tie_word_embeddings="yes"), "text_config.tie_word_embeddings",
         "true or false"),
        (lambda d: d.update(text_config=[1, 2]), "text_config", "must be an object"),
        (lambda d: d.update(eos_token_id=-1), "eos_token_id", "token id"),
    ],
)  # fmt: skip
def test_config_field_of_wrong_type_is_named(checkpoint, change, field, problem):
    _edit_config(checkpoint, change)
    with pytest.raises(ConfigConversionError) as caught:
        vlmzoo.from_pretrained(checkpoint)
    message = str(caught.value)
    assert message.startswith(f"{checkpoint / 'config.json'}: {field}: ")
    assert problem in message
    assert "\n" not in message


def test_config_constraint_uses_hugging_face_names(checkpoint):
    _edit_config(checkpoint, lambda d: d["text_config"].update(num_key_value_heads=3))
    with pytest.raises(ConfigConversionError, match="text_config.num_attention_heads=4 must be divisible by "
                                                   "text_config.num_key_value_heads=3") as caught:  # fmt: skip
        vlmzoo.from_pretrained(checkpoint)
    assert "pydantic" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("content,problem", [("[1, 2]", "JSON object, not a list"), ("{", "not valid JSON"),
                                             ("", "not valid JSON")])  # fmt: skip
def test_config_that_is_not_an_object(checkpoint, content, problem):
    (checkpoint / "config.json").write_text(content)
    with pytest.raises(vlmzoo.InvalidFileError, match=problem) as caught:
        vlmzoo.from_pretrained(checkpoint)
    assert caught.value.path == str(checkpoint / "config.json")


def test_config_dtype_that_is_no_dtype(checkpoint):
    _edit_config(checkpoint, lambda d: d.update(dtype="int3"))
    with pytest.raises(vlmzoo.InvalidFileError, match=r"config\.json: dtype: unknown dtype 'int3'"):
        vlmzoo.from_pretrained(checkpoint)


def test_config_from_hf_rejects_non_objects():
    with pytest.raises(ConfigConversionError, match="must hold a JSON object, not a list"):
        config_from_hf([1, 2])


def test_round_trip_still_passes_the_checks():
    config = tiny_config()
    assert config_from_hf(config_to_hf(config)).model_copy(update={"name": config.name}) == config


@pytest.fixture
def sharded(tmp_path):
    vlmzoo.build(tiny_config(), seed=0).save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    return tmp_path / "ckpt"


@pytest.mark.parametrize(
    "content,problem",
    [
        ("{broken", "not valid JSON"),
        ("[]", "JSON object, not a list"),
        ('{"weight_map": {}}', "weight_map: missing or empty"),
        ('{"weight_map": {"a": 3}}', "weight_map\\['a'\\]: 3 is not the file name"),
        ('{"weight_map": {"a": "../model.safetensors"}}', "is not the file name of a .safetensors shard"),
    ],
)
def test_damaged_index_names_the_file(sharded, content, problem):
    index = sharded / "model.safetensors.index.json"
    index.write_text(content)
    with pytest.raises(vlmzoo.InvalidFileError, match=problem) as caught:
        vlmzoo.from_pretrained(sharded)
    assert caught.value.path == str(index)


# ----------------------------------------------------------------------------------- processor files


@pytest.fixture
def processor_dir(tmp_path):
    from tiny_tokenizer import make_tiny_tokenizer

    processor = vlmzoo.PaliGemmaProcessor(make_tiny_tokenizer(), image_size=28, num_image_tokens=4)
    processor.save_pretrained(tmp_path / "proc")
    return tmp_path / "proc"


@pytest.mark.parametrize("cut", [0, 1, 100, -50])
def test_corrupt_tokenizer_json_names_the_file(processor_dir, cut):
    path = processor_dir / "tokenizer.json"
    content = path.read_bytes()
    path.write_bytes(content[:cut] if cut else b"")
    with pytest.raises(vlmzoo.InvalidFileError, match="cannot be read as a tokenizer") as caught:
        vlmzoo.load_processor(processor_dir)
    assert caught.value.path == str(path)
    assert "\n" not in str(caught.value)


def test_tokenizer_json_of_the_wrong_shape(processor_dir):
    (processor_dir / "tokenizer.json").write_text('{"model": 3}')
    with pytest.raises(vlmzoo.InvalidFileError, match="tokenizer.json"):
        vlmzoo.load_processor(processor_dir)


@pytest.mark.parametrize(
    "field,value,problem",
    [
        ("image_seq_length", "many", "positive integer"),
        ("image_mean", [0.5, 0.5], "3 numbers"),
        ("image_std", [0, 0, 0], "non-zero"),
        ("rescale_factor", "1/255", "positive number"),
        ("resample", 99, "resampling filter"),
        ("do_convert_rgb", "yes", "true or false"),
        ("size", {"height": "224", "width": 224}, "positive integers"),
        ("do_resize", False, "resized to a fixed size"),
    ],
)
def test_processor_config_field_is_named(processor_dir, field, value, problem):
    path = processor_dir / "preprocessor_config.json"
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(vlmzoo.InvalidFileError, match=problem) as caught:
        vlmzoo.load_processor(processor_dir)
    assert caught.value.path == str(path) and caught.value.field == field


def test_processor_model_config_of_the_wrong_type(processor_dir):
    (processor_dir / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": "big"}}))
    with pytest.raises(vlmzoo.InvalidFileError, match="text_config.max_position_embeddings"):
        vlmzoo.load_processor(processor_dir)
    (processor_dir / "config.json").write_text("[]")
    with pytest.raises(vlmzoo.InvalidFileError, match="JSON object"):
        vlmzoo.load_processor(processor_dir)


def test_every_error_here_is_a_vlmzoo_error(processor_dir, tmp_path):
    shutil.copy(processor_dir / "tokenizer.json", tmp_path / "t.json")
    for error in (SafetensorsError, ConfigConversionError, vlmzoo.InvalidFileError):
        assert issubclass(error, vlmzoo.VlmzooError) and issubclass(error, ValueError)


def test_training_data_that_is_not_utf8_names_the_line(tmp_path):
    from vlmzoo.training.data import DataError, load_records

    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"image": "a.png", "suffix": "a cat"}\n\x80\xff\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: not UTF-8 text"):
        load_records(path)


def test_value_checks_refuse_booleans_and_non_finite_numbers():
    from vlmzoo.values import is_finite_number, is_integer

    assert is_integer(3) and is_integer(0, 0) and not is_integer(0, 1) and not is_integer(True) and not is_integer(3.0)
    assert is_finite_number(2.5) and is_finite_number(-1)
    for bad in (True, float("nan"), float("inf"), "1", None):
        assert not is_finite_number(bad)
