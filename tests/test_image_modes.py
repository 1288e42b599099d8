"""Every pixel format Pillow opens gives the right RGB pixels; EXIF and decompression bombs as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from tiny_tokenizer import make_tiny_tokenizer

from vlmzoo.processing import ImageLoadError, PaliGemmaProcessor, load_image, to_rgb_array

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ours() -> PaliGemmaProcessor:
    return PaliGemmaProcessor(make_tiny_tokenizer(), image_size=28, num_image_tokens=4)


def _gradient16(height: int = 12, width: int = 20) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) * (65535 // (height * width - 1))).astype(np.uint16)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    gray16 = _gradient16()
    path = tmp_path / "depth.png"
    PIL.Image.fromarray(gray16).save(path)
    assert PIL.Image.open(path).mode == "I;16"
    expected = np.round(gray16 / 257).astype(np.uint8)
    tensor = torch.from_numpy(gray16.astype(np.int32)).to(torch.uint16)
    for source in (path, str(path), PIL.Image.open(path), gray16, gray16.astype(">u2"), tensor):
        rgb = to_rgb_array(source)
        assert rgb.dtype == np.uint8 and rgb.shape == (12, 20, 3)
        np.testing.assert_array_equal(rgb[..., 0], expected)
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    assert 100 < to_rgb_array(path).mean() < 155  # clipping would make it almost all white (about 254)


def test_sixteen_bit_pixels_reach_the_model_scaled(ours, tmp_path: Path) -> None:
    gray16 = _gradient16()
    path = tmp_path / "g.png"
    PIL.Image.fromarray(gray16).save(path)
    from_file = ours(images=str(path), prompts="x").pixel_values
    from_8bit = ours(images=np.round(gray16 / 257).astype(np.uint8), prompts="x").pixel_values
    torch.testing.assert_close(from_file, from_8bit, atol=0, rtol=0)


@pytest.mark.parametrize(
    "values,expected",
    [
        (np.array([[0, 255, 128]], dtype=np.int32), [0, 255, 128]),  # 8-bit values in a 32-bit image
        (np.array([[0, 65535, 257 * 100]], dtype=np.int32), [0, 255, 100]),  # 16-bit values
    ],
)
def test_thirty_two_bit_integer_mode(values, expected) -> None:
    image = PIL.Image.fromarray(values)
    assert image.mode == "I"
    np.testing.assert_array_equal(to_rgb_array(image)[0, :, 0], expected)


def test_thirty_two_bit_values_beyond_sixteen_bits_are_refused() -> None:
    image = PIL.Image.fromarray(np.array([[0, 70000]], dtype=np.int32))
    with pytest.raises(ImageLoadError, match="mode 'I'"):
        to_rgb_array(image)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_mode(scale: float) -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32) * scale
    image = PIL.Image.fromarray(values)
    np.testing.assert_array_equal(to_rgb_array(image)[0, :, 1], [0, 128, 255])


def test_float_mode_out_of_range_is_refused() -> None:
    with pytest.raises(ImageLoadError, match="float values"):
        to_rgb_array(PIL.Image.fromarray(np.array([[-3.0, 900.0]], dtype=np.float32)))


def _rng_rgb(seed: int, height: int = 17, width: int = 23) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK", "1", "RGBA", "L", "YCbCr", "RGBX", "PA", "La", "RGBa", "HSV"])
def test_eight_bit_modes_match_pillow_and_the_reference(ours, mode: str) -> None:
    image = _rng_rgb(3).convert("RGBA").convert(mode) if mode in ("PA", "La", "RGBa") else _rng_rgb(3).convert(mode)
    rgb = to_rgb_array(image)
    assert rgb.dtype == np.uint8 and rgb.shape == (17, 23, 3)
    if "A" not in image.getbands() and mode not in ("La", "RGBa"):
        np.testing.assert_array_equal(rgb, np.asarray(image.convert("RGB")))
    if mode in ("P", "LA", "CMYK", "1", "RGBA", "L"):
        hf = transformers.SiglipImageProcessor(size={"height": 28, "width": 28}, resample=3)
        expected = hf(images=[image], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(ours(images=image, prompts="x").pixel_values, expected, atol=1e-6, rtol=0)


def _exif_rotated_file(path: Path) -> PIL.Image.Image:
    """A 10x20 image whose EXIF says 'rotate 90 degrees clockwise to display' (orientation 6)."""
    image = PIL.Image.new("RGB", (20, 10), (200, 0, 0))
    image.paste((0, 0, 200), (0, 0, 5, 10))  # left edge blue
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())
    return PIL.Image.open(path)


def test_exif_orientation_is_applied_as_the_reference_does(tmp_path: Path) -> None:
    path = tmp_path / "rotated.png"
    opened = _exif_rotated_file(path)
    from_path = to_rgb_array(path)
    assert from_path.shape == (20, 10, 3)  # rotated upright: taller than wide
    expected = np.asarray(transformers.image_utils.load_image(str(path)))
    np.testing.assert_array_equal(from_path, expected)
    # An in-memory image is used as given, as transformers' processors use it (no EXIF rotation).
    assert to_rgb_array(opened).shape == (10, 20, 3)


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    PIL.Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="decompression bomb.*MAX_IMAGE_PIXELS") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_empty_pil_image_is_refused() -> None:
    with pytest.raises(ImageLoadError, match="empty"):
        to_rgb_array(PIL.Image.new("RGB", (0, 5)))


def test_odd_sizes_reach_the_model(ours) -> None:
    for size in [(1, 1), (1, 300), (300, 1), (2, 3)]:
        pixels = ours(images=PIL.Image.new("RGB", size, (255, 0, 0)), prompts="x").pixel_values
        assert pixels.shape == (1, 3, 28, 28) and torch.isfinite(pixels).all()


def test_arrays_of_other_kinds_are_refused_before_reading_values() -> None:
    for dtype in (np.complex64, object):
        with pytest.raises(ImageLoadError, match="unsupported dtype"):
            to_rgb_array(np.zeros((3, 3), dtype=dtype))
