"""vlmzoo.processing against transformers' PaliGemmaProcessor (the test-only oracle) on tiny files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlmzoo.processing import (
    BatchEncoding,
    ImageLoadError,
    PaliGemmaProcessor,
    load_image,
    load_processor,
)

try:
    from tiny_tokenizer import TINY_VOCAB_SIZE, make_tiny_processor_dir, make_tiny_tokenizer
except ImportError:  # tests/ imported as a package
    from tests.tiny_tokenizer import TINY_VOCAB_SIZE, make_tiny_processor_dir, make_tiny_tokenizer

import transformers  # noqa: E402  (the reference oracle must be importable: a failure, never a skip)

transformers.utils.logging.set_verbosity_error()  # silences the "pass <image> tokens" advice

IMAGE_SIZE, NUM_IMAGE_TOKENS = 28, 4
# transformers' processor trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def proc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Processor directory written by transformers (processor_config.json layout)."""
    path = tmp_path_factory.mktemp("proc")
    make_tiny_processor_dir(path, image_size=IMAGE_SIZE, num_image_tokens=NUM_IMAGE_TOKENS)
    return path


@pytest.fixture(scope="module")
def ours(proc_dir: Path) -> PaliGemmaProcessor:
    return load_processor(proc_dir)


def hf_processor(path: Path):
    return transformers.PaliGemmaProcessor.from_pretrained(str(path), backend="pil")


@pytest.fixture(scope="module")
def hf(proc_dir: Path):
    return hf_processor(proc_dir)


def rng_image(seed: int, height: int, width: int, mode: str = "RGB") -> Image.Image:
    """A deterministic noise image of the given size and PIL mode (RGB, RGBA, LA, L or P)."""
    rs = np.random.RandomState(seed)
    if mode == "RGBA":
        return Image.fromarray(rs.randint(0, 256, (height, width, 4), dtype=np.uint8))
    rgb = Image.fromarray(rs.randint(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "LA":  # random alpha, so compositing onto white matters
        alpha = Image.fromarray(rs.randint(0, 256, (height, width), dtype=np.uint8))
        return Image.merge("LA", (rgb.convert("L"), alpha))
    return rgb.quantize(16) if mode == "P" else rgb.convert(mode)


def both(ours, hf, images, prompts, suffixes=None):
    a = ours(images=images, prompts=prompts, suffixes=suffixes)
    b = hf(images=images, text=prompts, suffix=suffixes, padding="longest", return_tensors="pt")
    return a, b


def assert_parity(a: BatchEncoding, b, with_labels: bool) -> None:
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert a[key].dtype == torch.long, key
        assert torch.equal(a[key], b[key]), f"{key} differs:\n{a[key]}\n{b[key]}"
    assert a["pixel_values"].dtype == torch.float32
    assert a["pixel_values"].shape == b["pixel_values"].shape
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"], atol=1e-5, rtol=0)
    if with_labels:
        assert torch.equal(a["labels"], b["labels"])
    else:
        assert "labels" not in a


# ---------------------------------------------------------------------- parity


PROMPTS = ["caption en", "answer en how many cats are there?", "", "detect cat ; dog"]


def test_batch_left_padding_matches_transformers(ours, hf) -> None:
    images = [rng_image(i, 30 + 7 * i, 41 - 5 * i) for i in range(len(PROMPTS))]
    a, b = both(ours, hf, images, PROMPTS)
    assert_parity(a, b, with_labels=False)
    assert a.input_ids.shape[1] == a.attention_mask.sum(1).max()
    short = int(a.attention_mask.sum(1).argmin())
    pads = int((a.attention_mask[short] == 0).sum())
    assert pads > 0 and torch.all(a.input_ids[short, :pads] == ours.pad_token_id)  # left padding
    assert torch.all(a.attention_mask[short, pads:] == 1)
    row = a.input_ids[short, pads:].tolist()
    assert row[:NUM_IMAGE_TOKENS] == [ours.image_token_id] * NUM_IMAGE_TOKENS
    assert row[NUM_IMAGE_TOKENS] == ours.bos_token_id
    assert torch.all(a.token_type_ids == 0)


def test_suffixes_give_labels_like_transformers(ours, hf) -> None:
    images = [rng_image(10 + i, 33, 20) for i in range(len(PROMPTS))]
    suffixes = ["a cat", "<loc0010><loc0020><loc0900><loc1023> two cats", "x", "dog ; cat\n"]
    a, b = both(ours, hf, images, PROMPTS, suffixes)
    assert_parity(a, b, with_labels=True)
    for row in range(len(PROMPTS)):
        suffix_positions = a.token_type_ids[row] == 1
        assert torch.equal(a.labels[row][suffix_positions], a.input_ids[row][suffix_positions])
        assert torch.all(a.labels[row][~suffix_positions] == -100)
        assert a.input_ids[row, -1] == ours.eos_token_id  # suffix ends with <eos>, padding is on the left
    assert ours.tokenizer.token_to_id("<loc0900>") in a.labels[1].tolist()


def test_single_image_and_prompt(ours, hf) -> None:
    image = rng_image(3, 64, 48)
    a, b = both(ours, hf, image, "caption en")
    assert_parity(a, b, with_labels=False)
    assert a.input_ids.shape[0] == 1 and a.pixel_values.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    a2, b2 = both(ours, hf, image, "caption en", "a picture")
    assert_parity(a2, b2, with_labels=True)


def test_explicit_leading_image_token_is_accepted(ours, hf) -> None:
    image = rng_image(4, 20, 20)
    a = ours(images=[image], prompts=["<image>caption en"])
    b = hf(images=[image], text=["<image>caption en"], padding="longest", return_tensors="pt")
    assert_parity(a, b, with_labels=False)
    assert torch.equal(a.input_ids, ours(images=[image], prompts=["caption en"]).input_ids)


@pytest.mark.parametrize(
    ("mode", "height", "width"),
    [("RGB", 1, 1), ("RGB", 301, 97), ("RGBA", 50, 17), ("L", 13, 29), ("P", 20, 33), ("LA", 9, 40)],
)
def test_image_modes_and_odd_sizes(ours, hf, mode: str, height: int, width: int) -> None:
    image = rng_image(7, height, width, mode)
    if mode == "P":
        image.info["transparency"] = 3  # palette transparency: composited onto white, like RGBA
    a, b = both(ours, hf, [image], ["ocr"])
    assert_parity(a, b, with_labels=False)


def test_transparency_composited_on_white(ours) -> None:
    clear = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    pixels = ours(images=clear, prompts="").pixel_values
    assert torch.allclose(pixels, torch.ones_like(pixels))  # white → +1 after SigLIP normalization


def test_numpy_and_tensor_inputs(ours, hf) -> None:
    rs = np.random.RandomState(5)
    hwc = rs.randint(0, 256, (37, 23, 3), dtype=np.uint8)
    rgba = rs.randint(0, 256, (16, 24, 4), dtype=np.uint8)
    chw = torch.from_numpy(rs.randint(0, 256, (3, 19, 31), dtype=np.uint8))
    images = [hwc, rgba, chw]
    a, b = both(ours, hf, images, ["a", "b", "c"])
    assert_parity(a, b, with_labels=False)

    reference = ours(images=[hwc], prompts="x").pixel_values
    variants = [
        hwc.astype(np.float32) / 255,  # float in [0, 1]
        torch.from_numpy(hwc).permute(2, 0, 1),  # CHW tensor
        torch.from_numpy(hwc),  # HWC tensor
        torch.from_numpy(hwc).permute(2, 0, 1).float() / 255,
        Image.fromarray(hwc),
    ]
    for variant in variants:
        torch.testing.assert_close(ours(images=[variant], prompts="x").pixel_values, reference, atol=0, rtol=0)
    gray = rs.randint(0, 256, (12, 12), dtype=np.uint8)
    torch.testing.assert_close(
        ours(images=gray, prompts="x").pixel_values,
        ours(images=Image.fromarray(gray), prompts="x").pixel_values,
        atol=0,
        rtol=0,
    )
    batch = np.stack([hwc, hwc])  # a 4-D array is a batch of images
    assert ours(images=batch, prompts=["x", "y"]).pixel_values.shape[0] == 2


def test_path_inputs(ours, hf, tmp_path: Path) -> None:
    rgb_path = tmp_path / "photo.jpg"
    rng_image(8, 40, 60).save(rgb_path, quality=90)
    rgba_path = tmp_path / "icon.png"
    rng_image(9, 25, 25, "RGBA").save(rgba_path)
    paths = [str(rgb_path), str(rgba_path)]
    a, b = both(ours, hf, paths, ["caption en", "ocr"])
    assert_parity(a, b, with_labels=False)
    a_path = ours(images=[rgb_path, rgba_path], prompts=["caption en", "ocr"])  # pathlib.Path works too
    assert torch.equal(a_path.pixel_values, a.pixel_values)
    assert load_image(rgb_path).mode == "RGB"


# Text that stresses the tokenizer: spaces, newlines, unicode (byte fallback), loc/seg/special strings.
_ALPHABET = st.sampled_from(
    list("abcdet ?;.\n") + [" cat", " the", "  ", "é", "日本", "🙂", "<loc0042>", "<seg007>", "<eos>", "<bos>"]
)
_TEXT = st.lists(_ALPHABET, max_size=12).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=st.lists(_TEXT, min_size=1, max_size=3), data=st.data())
def test_random_text_matches_transformers(ours, hf, prompts: list[str], data: st.DataObject) -> None:
    suffixes = data.draw(st.none() | st.lists(_TEXT, min_size=len(prompts), max_size=len(prompts)))
    images = [rng_image(i, 16, 16) for i in range(len(prompts))]
    a, b = both(ours, hf, images, prompts, suffixes)
    assert_parity(a, b, with_labels=suffixes is not None)


# ---------------------------------------------------------------------- decoding


def test_decode_keeps_loc_and_seg_tokens(ours) -> None:
    tok = ours.tokenizer
    text = "<loc0001><loc0002><loc1000><loc1023> cat ; <seg000><seg127> dog"
    ids = [ours.pad_token_id, ours.image_token_id, ours.bos_token_id]
    ids += tok.encode(text, add_special_tokens=False).ids + [ours.eos_token_id]
    assert ours.decode(ids) == text
    assert ours.decode(torch.tensor(ids)) == text
    assert ours.decode(torch.tensor([ids])) == text
    assert ours.decode(np.array(ids)) == text
    assert ours.decode(ids, skip_special_tokens=False) == "<pad><image><bos>" + text + "<eos>"
    assert ours.batch_decode(torch.tensor([ids, ids])) == [text, text]
    assert ours.batch_decode([ids, ids[:3]]) == [text, ""]
    with pytest.raises(ValueError, match="batch_decode"):
        ours.decode(torch.tensor([ids, ids]))


def test_decode_roundtrips_generated_suffix(ours) -> None:
    enc = ours(images=rng_image(0, 10, 10), prompts="detect cat", suffixes="<loc0100><loc0200> cat héllo")
    suffix_ids = enc.input_ids[0][enc.token_type_ids[0] == 1]
    assert ours.decode(suffix_ids) == "<loc0100><loc0200> cat héllo"


# ---------------------------------------------------------------------- errors


def test_non_image_file_raises_image_load_error(ours, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image")
    with pytest.raises(ImageLoadError, match="not a readable image") as info:
        ours(images=[bad], prompts=["caption en"])
    assert str(bad) in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_bad_array_values_raise(ours) -> None:
    with pytest.raises(ImageLoadError, match=r"image 0 of the batch.*\[0, 1\]"):
        ours(images=[np.full((4, 4, 3), -0.5, dtype=np.float32)], prompts=["x"])
    with pytest.raises(ImageLoadError, match="shape"):
        ours(images=[np.zeros((5, 5, 7), dtype=np.uint8)], prompts=["x"])


def test_count_mismatch_raises(ours) -> None:
    images = [rng_image(0, 8, 8)] * 2
    with pytest.raises(ValueError, match=r"2 image\(s\) for 3 prompt\(s\)"):
        ours(images=images, prompts=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"1 suffix\(es\) for 2 prompt\(s\)"):
        ours(images=images, prompts=["a", "b"], suffixes=["x"])
    with pytest.raises(ValueError, match="one image per prompt"):
        ours(images=[[images[0], images[1]]], prompts=["a"])


def test_too_long_prompt_raises(proc_dir: Path) -> None:
    proc = load_processor(proc_dir, max_length=12)
    assert proc.max_length == 12
    proc(images=rng_image(0, 8, 8), prompts="ocr")  # 4 image + bos + 2 or so: fits
    with pytest.raises(ValueError, match=r"more than max_length=12") as info:
        proc(images=rng_image(0, 8, 8), prompts="the quick brown fox jumps over the lazy dog")
    message = str(info.value)
    assert "4 image tokens" in message and "shorter prompt" in message and "smaller image resolution" in message


def test_missing_files_raise_file_not_found(proc_dir: Path, tmp_path: Path) -> None:
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(proc_dir, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json") as info:
        load_processor(no_tokenizer)
    assert str(no_tokenizer) in str(info.value) and "preprocessor_config.json" in str(info.value)

    no_images = tmp_path / "no_image_config"
    shutil.copytree(proc_dir, no_images)
    (no_images / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json or processor_config.json"):
        load_processor(no_images)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_processor(tmp_path / "nowhere")


# ---------------------------------------------------------------------- config layouts and saving


def test_processor_config_layout_is_what_transformers_writes(proc_dir: Path, ours) -> None:
    saved = json.loads((proc_dir / "processor_config.json").read_text())
    assert saved["image_processor"]["image_seq_length"] == NUM_IMAGE_TOKENS
    assert not (proc_dir / "preprocessor_config.json").exists()
    assert (ours.image_size, ours.num_image_tokens, ours.max_length) == (IMAGE_SIZE, NUM_IMAGE_TOKENS, 8192)


def test_hub_preprocessor_config_layout(tmp_path: Path) -> None:
    make_tiny_tokenizer(tmp_path)  # tokenizer.json + tokenizer_config.json, not touched by transformers
    hub_config = {  # the layout of google/paligemma*-224 preprocessor_config.json, at another size
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_seq_length": 16,
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "PaliGemmaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": 56, "width": 56},
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(hub_config))
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 64}}))
    proc = load_processor(tmp_path)
    assert (proc.image_size, proc.num_image_tokens, proc.max_length) == (56, 16, 64)
    images = [rng_image(1, 70, 30), rng_image(2, 5, 90)]
    a, b = both(proc, hf_processor(tmp_path), images, ["caption en", "ocr"], ["a cat", "<loc0001> x"])
    assert_parity(a, b, with_labels=True)
    # "do_convert_rgb": null makes transformers skip RGB conversion (RGBA then fails there); we convert.
    assert proc.do_convert_rgb
    assert proc(images=rng_image(1, 70, 30, "RGBA"), prompts="x").pixel_values.shape == (1, 3, 56, 56)

    # A processor_config.json with a nested image processor takes priority, as in transformers.
    nested = dict(hub_config, image_seq_length=4, size={"height": 28, "width": 28})
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": nested}))
    assert load_processor(tmp_path).image_size == 28


def test_save_pretrained_roundtrip(ours, tmp_path: Path) -> None:
    ours.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    }
    images = [rng_image(1, 30, 30, "RGBA"), rng_image(2, 12, 40)]
    prompts, suffixes = ["caption en", "detect cat"], ["a b", "<loc0005><loc0006><loc0007><loc0008> cat"]
    reloaded = load_processor(tmp_path)
    a = ours(images=images, prompts=prompts, suffixes=suffixes)
    r = reloaded(images=images, prompts=prompts, suffixes=suffixes)
    for key in a:
        assert torch.equal(a[key], r[key]), key
    a2, b2 = both(ours, hf_processor(tmp_path), images, prompts, suffixes)
    assert_parity(a2, b2, with_labels=True)


def test_hub_download_path(monkeypatch: pytest.MonkeyPatch, proc_dir: Path) -> None:
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(proc_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    proc = load_processor("google/paligemma-3b-pt-224", revision="bfloat16")
    assert proc.num_image_tokens == NUM_IMAGE_TOKENS
    repo_id, kwargs = calls[0]
    assert repo_id == "google/paligemma-3b-pt-224" and kwargs["revision"] == "bfloat16"
    assert set(kwargs["allow_patterns"]) == {"*.json", "tokenizer.model"}  # no weights for a processor

    def failing(repo_id, **kwargs):
        raise RuntimeError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(OSError, match="google/nope.*HF_HUB_OFFLINE"):
        load_processor("google/nope")


# ---------------------------------------------------------------------- misc API


def test_public_attributes_and_batch_encoding(ours) -> None:
    assert (ours.pad_token_id, ours.eos_token_id, ours.bos_token_id) == (0, 1, 2)
    assert ours.image_token_id == ours.tokenizer.token_to_id("<image>")
    assert ours.vocab_size == TINY_VOCAB_SIZE
    enc = ours(images=rng_image(0, 8, 8), prompts="x")
    assert enc.input_ids is enc["input_ids"]
    moved = enc.to("cpu", dtype=torch.float64)
    assert moved.pixel_values.dtype == torch.float64 and moved.input_ids.dtype == torch.long
    with pytest.raises(AttributeError, match="labels"):
        _ = enc.labels
    fixed = ours(images=[rng_image(0, 8, 8)] * 2, prompts=["x", "the lazy dog"], padding="max_length")
    assert fixed.input_ids.shape == (2, ours.max_length)
    right = PaliGemmaProcessor(ours.tokenizer, IMAGE_SIZE, NUM_IMAGE_TOKENS, padding_side="right")
    enc = right(images=[rng_image(0, 8, 8)] * 2, prompts=["x", "the lazy dog"])
    assert enc.attention_mask[0, 0] == 1 and enc.attention_mask[0, -1] == 0
    assert enc.input_ids[0, -1] == ours.pad_token_id


def test_tiny_tokenizer_matches_autotokenizer(tmp_path: Path) -> None:
    tok = make_tiny_tokenizer(tmp_path)
    assert tok.get_vocab_size() == TINY_VOCAB_SIZE < 1600
    assert [tok.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>")] == [0, 1, 2, 3]
    assert tok.token_to_id("<loc1023>") is not None and tok.token_to_id("<seg127>") is not None
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(hf_tok) == TINY_VOCAB_SIZE
    for text in ["caption en", "a cat sitting on a bench", "héllo 🙂 <loc0001> x\n"]:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text).ids
