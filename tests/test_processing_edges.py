"""Processing details a user would feel if they broke: image settings read with transformers' defaults,
image arrays and tensors in every accepted form, processors loaded from partial directories and saved
in a layout transformers reads back."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from tiny_tokenizer import make_tiny_processor_dir

import vlmzoo
from vlmzoo.processing.image_settings import read_image_settings
from vlmzoo.processing.images import ImageLoadError, preprocess_images, to_rgb_array


def _settings(tmp_path, **config):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}, **config}))
    return read_image_settings(tmp_path, "PaliGemma")


def test_image_settings_default_as_transformers_does(tmp_path):
    plain = _settings(tmp_path)
    assert plain["image_mean"] == plain["image_std"] == [0.5, 0.5, 0.5]
    assert plain["rescale_factor"] == pytest.approx(1 / 255) and plain["do_convert_rgb"] is True
    assert plain["resample"] == PIL.Image.Resampling.BICUBIC and plain["image_size"] == 32
    scalars = _settings(tmp_path, image_mean=0.25, image_std=0.75, rescale_factor=0.5, do_convert_rgb=False)
    assert scalars["image_mean"] == [0.25] * 3 and scalars["image_std"] == [0.75] * 3
    assert scalars["rescale_factor"] == 0.5 and scalars["do_convert_rgb"] is False
    assert _settings(tmp_path, do_rescale=False)["rescale_factor"] == 1.0
    unnormalized = _settings(tmp_path, do_normalize=False, image_mean=[0.1, 0.2, 0.3])
    assert unnormalized["image_mean"] == [0.0, 0.0, 0.0] and unnormalized["image_std"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"size": {"height": 32, "width": 0}}, "size", "positive integers"),
        ({"image_std": [0.5, 0.5]}, "image_std", r"3 non-zero numbers \(R, G, B\)"),
        ({"image_mean": [0.5, "x", 0.5]}, "image_mean", r"3 numbers \(R, G, B\)"),
    ],
)
def test_bad_image_settings_name_the_file_and_field(tmp_path, config, field, message):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"size": {"height": 32, "width": 32}, **config}))
    with pytest.raises(ValueError, match=message) as caught:
        read_image_settings(tmp_path, "PaliGemma")
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_image_arrays_and_tensors_in_every_accepted_form():
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    assert np.array_equal(to_rgb_array(rgb, do_convert_rgb=False), rgb)  # RGB passes without conversion
    with pytest.raises(ImageLoadError, match="4 channel"):
        to_rgb_array(np.zeros((5, 6, 4), dtype=np.uint8), do_convert_rgb=False)
    for empty in (np.zeros((0, 6, 3), dtype=np.float32), np.zeros((5, 0, 3), dtype=np.float32)):
        with pytest.raises(ImageLoadError, match="empty spatial size"):
            to_rgb_array(empty)
    halves = torch.rand(3, 5, 6).to(torch.bfloat16)  # bfloat16 and float16 tensors are read as float32
    assert np.array_equal(to_rgb_array(halves), to_rgb_array(halves.float()))
    assert np.array_equal(to_rgb_array(torch.rand(3, 5, 6).half()).shape, (5, 6, 3))
    with pytest.raises(ImageLoadError, match=r"a numpy array \(HWC\) or a torch tensor \(CHW\)\."):
        to_rgb_array([[0, 1]])


def test_preprocessing_gives_float32_and_honours_do_convert_rgb():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    kwargs = dict(image_size=8, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], rescale_factor=1 / 255)
    pixels = preprocess_images([rgba], **kwargs)
    assert pixels.dtype == torch.float32 and pixels.shape == (1, 3, 8, 8)
    with pytest.raises(ImageLoadError, match="do_convert_rgb=False"):
        preprocess_images([rgba], do_convert_rgb=False, **kwargs)


@pytest.fixture
def processor_dir(tmp_path):
    return make_tiny_processor_dir(tmp_path / "proc", image_size=28, num_image_tokens=4)["path"]


def test_processor_reads_special_tokens_lengths_and_image_tokens_from_its_files(processor_dir):
    config_path = processor_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    vocab = json.loads((processor_dir / "tokenizer.json").read_text())["model"]["vocab"]
    plain = vlmzoo.load_processor(processor_dir)
    assert plain.max_length == 8192  # no config.json: the default
    other = next(t for t in ("<eos>", "<bos>") if t in vocab and t != config.get("pad_token"))
    config["pad_token"] = {"content": other}  # the dict form transformers also writes
    config_path.write_text(json.dumps(config))
    assert vlmzoo.load_processor(processor_dir).pad_token_id == vocab[other] != plain.pad_token_id

    processor_config = processor_dir / "processor_config.json"
    settings = json.loads(processor_config.read_text())
    settings["image_processor"].pop("image_seq_length", None)
    settings.pop("image_seq_length", None)
    processor_config.write_text(json.dumps(settings))
    assert vlmzoo.load_processor(processor_dir).num_image_tokens == (28 // 14) ** 2

    (processor_dir / "config.json").write_text(json.dumps({"text_config": {"vocab_size": 10}}))
    assert vlmzoo.load_processor(processor_dir).max_length == 8192  # a config.json without the field

    (processor_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError) as caught:
        vlmzoo.load_processor(processor_dir)
    assert "missing tokenizer.json. " in str(caught.value)  # the image settings are there: not named missing


def test_a_saved_processor_is_read_back_by_transformers(processor_dir, tmp_path):
    from transformers import AutoProcessor, AutoTokenizer

    processor = vlmzoo.load_processor(processor_dir, max_length=512)
    out = tmp_path / "saved"
    processor.save_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GemmaTokenizer" and config["processor_class"] == "PaliGemmaProcessor"
    assert config["model_max_length"] == 512 and config["clean_up_tokenization_spaces"] is False
    vocab = processor.tokenizer.get_vocab(with_added_tokens=True)
    assert config["unk_token"] == ("<unk>" if "<unk>" in vocab else None)
    assert config["mask_token"] == ("<mask>" if "<mask>" in vocab else None)
    assert (out / "tokenizer_config.json").read_text().startswith('{\n  "')  # indented as transformers writes

    hf = AutoProcessor.from_pretrained(str(out))
    assert type(hf).__name__ == "PaliGemmaProcessor"
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.model_max_length == 512
    assert tokenizer.pad_token_id == processor.pad_token_id and tokenizer.bos_token_id == processor.bos_token_id


def _word_tokenizer(with_image: bool):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "b"] + (["<image>"] if with_image else [])
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens(["<pad>", "<eos>", "<bos>"])  # added tokens, none of them the image token
    return tokenizer


def test_a_processor_adds_a_missing_image_token_and_refuses_bad_settings_by_name():
    from vlmzoo.paligemma.processor import PaliGemmaProcessor

    processor = PaliGemmaProcessor(_word_tokenizer(with_image=False), 28, 4)
    assert processor.tokenizer.token_to_id("<image>") == processor.image_token_id
    kept = PaliGemmaProcessor(_word_tokenizer(with_image=True), 28, 4)
    assert kept.image_token_id == 6  # already in the vocabulary: not added again

    with pytest.raises(TypeError, match=r"tokenizer must be a tokenizers.Tokenizer, got dict"):
        PaliGemmaProcessor({}, 28, 4)
    with pytest.raises(ValueError, match="must be positive, got 28 and 0"):
        PaliGemmaProcessor(_word_tokenizer(True), 28, 0)
    with pytest.raises(ValueError, match=r"need 3 values \(RGB\)"):
        PaliGemmaProcessor(_word_tokenizer(True), 28, 4, image_mean=(0.5, 0.5))
    for name in ("bos_token", "eos_token"):
        with pytest.raises(ValueError, match=rf"^{name} '<nope>' is not in the tokenizer's vocabulary"):
            PaliGemmaProcessor(_word_tokenizer(True), 28, 4, **{name: "<nope>"})


def test_processor_calls_name_what_is_wrong(processor_dir):
    processor = vlmzoo.load_processor(processor_dir, max_length=6)
    image = np.zeros((28, 28, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match=r"got both suffixes= and suffix="):
        processor(image, "a", suffixes="b", suffix="b")
    with pytest.raises(ValueError, match="empty list of prompts"):
        processor([], [])
    with pytest.raises(ValueError, match="Use a shorter prompt and suffix,"):
        processor(image, "a", suffixes="a b a b a b")
    with pytest.raises(ValueError, match="Use a shorter prompt,"):
        processor(image, "a b a b a b")
    short = vlmzoo.load_processor(processor_dir)
    same = short([image, image], ["a", "b"], padding="do_not_pad")
    assert torch.equal(same["input_ids"], short([image, image], ["a", "b"], padding=False)["input_ids"])


def test_a_saved_processor_names_only_the_special_tokens_its_vocabulary_has(tmp_path):
    from vlmzoo.paligemma.processor import PaliGemmaProcessor

    PaliGemmaProcessor(_word_tokenizer(with_image=True), 28, 4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["unk_token"] == "<unk>" and config["mask_token"] is None  # no <mask> in this vocabulary
    image_config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert image_config["processor_class"] == "PaliGemmaProcessor" and image_config["image_seq_length"] == 4
