"""Segmentation: the VQ-VAE mask decoder against an independent one, mask placement, vae files."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vae_weights import TRANSPOSED, random_vae_weights

import vlmzoo
from vlmzoo.tasks import (
    MaskDecoder,
    VaeFileError,
    convert_vae_to_safetensors,
    format_objects,
    get_postprocessor,
    load_mask_decoder,
    place_mask,
)


def reference_decode(weights: dict[str, np.ndarray], codes: np.ndarray) -> np.ndarray:
    """An independent decoder: NHWC codebook grid, then only plain conv2d (transposed convs written as a
    zero-stuffed input, padded by k-1-p, convolved with the flipped, channel-swapped kernel)."""
    w = {k: torch.from_numpy(v).double() for k, v in weights.items()}
    grid = w["_vq_vae._embedding"][torch.from_numpy(codes).long().reshape(-1)].reshape(len(codes), 4, 4, 512)
    x = grid.permute(0, 3, 1, 2)

    def conv(x, name, padding=0):
        return F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"], padding=padding)

    def transposed(x, name):
        n, c, h, wd = x.shape
        stuffed = torch.zeros(n, c, 2 * h - 1, 2 * wd - 1, dtype=x.dtype)
        stuffed[:, :, ::2, ::2] = x
        kernel = w[f"{name}.weight"].flip(2, 3).transpose(0, 1)  # [out, in, k, k]
        return F.conv2d(F.pad(stuffed, (2, 2, 2, 2)), kernel, w[f"{name}.bias"])

    x = torch.relu(conv(x, "decoder.0"))
    for block in (2, 3):
        h = torch.relu(conv(x, f"decoder.{block}.net.0", padding=1))
        h = torch.relu(conv(h, f"decoder.{block}.net.2", padding=1))
        x = x + conv(h, f"decoder.{block}.net.4")
    for name in TRANSPOSED:
        x = torch.relu(transposed(x, name))
    return conv(x, "decoder.12")[:, 0].numpy()


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "vae-oid.npz"
    np.savez(path, **random_vae_weights(0))
    return path


def test_decode_masks_matches_an_independent_decoder(vae_file):
    weights = dict(np.load(vae_file))
    codes = np.random.default_rng(1).integers(0, 128, size=(5, 16))
    got = get_postprocessor("segment", vae=vae_file).decode_masks(codes)
    assert got.dtype == torch.float32 and got.shape == (5, 64, 64)
    expected = reference_decode(weights, codes)
    assert np.abs(got.numpy() - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    # the batch is decoded row by row the same as alone, and the codes' grid is row-major
    alone = get_postprocessor("segment", vae=vae_file).decode_masks(torch.as_tensor(codes[2:3]))
    assert torch.allclose(alone[0], got[2], atol=1e-5)
    assert not torch.allclose(
        got[0], get_postprocessor("segment", vae=vae_file).decode_masks(codes[:1, ::-1].copy())[0]
    )


def test_the_safetensors_conversion_decodes_the_same(vae_file, tmp_path):
    out = convert_vae_to_safetensors(vae_file, tmp_path / "vae-oid.safetensors")
    from safetensors.numpy import load_file

    assert load_file(str(out)).keys() == np.load(vae_file).keys()  # both halves: it can encode masks too
    codes = np.arange(32).reshape(2, 16) % 128
    a = load_mask_decoder(vae_file).decode_masks(codes)
    b = get_postprocessor("segment", vae=str(out)).decode_masks(codes)
    assert torch.equal(a, b)
    assert load_mask_decoder(vae_file) is load_mask_decoder(str(vae_file))  # loaded once


def test_a_failed_conversion_leaves_the_existing_output_alone(tmp_path):
    output = tmp_path / "out.safetensors"
    output.write_bytes(b"precious")
    broken = tmp_path / "broken.npz"
    np.savez(broken, nothing=np.zeros(2))
    with pytest.raises(VaeFileError, match="lacks"):
        convert_vae_to_safetensors(broken, output)
    assert output.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == [
        "broken.npz",
        "out.safetensors",
    ]


# ------------------------------------------------------------------------------------------- placement


def test_place_mask_fills_the_hand_computed_box():
    logits = np.full((64, 64), -1.0, dtype=np.float32)
    logits[:, :32] = 1.0  # left half of the box
    mask = place_mask(logits, (10.4, 5.6, 30.4, 25.5), image_size=(50, 40))
    assert mask.shape == (40, 50) and mask.dtype == bool
    expected = np.zeros((40, 50), dtype=bool)
    expected[6:26, 10:20] = True  # box rounded to x 10..30, y 6..26; its left half
    assert np.array_equal(mask, expected)
    assert not place_mask(np.ones((64, 64), np.float32), (5, 5, 5.2, 9), (10, 10)).any()  # empty box


@pytest.mark.parametrize("bias", [1.0, -1.0])
def test_parse_places_decoded_masks_in_the_image(tmp_path, bias):
    path = tmp_path / "const.npz"
    np.savez(path, **random_vae_weights(2, final_bias=bias))  # a decoder whose output is the constant bias
    segment = get_postprocessor("segment", vae=path)
    size = (1023, 512)
    box = (100, 50, 600, 300)  # x0, y0, x1, y1
    codes = tuple(range(16))
    text = "here: " + format_objects([{"label": "the cat", "box": box, "seg_codes": codes}], size) + "<eos>"
    (obj,) = segment.parse(text, image_size=size).objects
    assert obj.label == "the cat" and obj.seg_codes == codes
    assert obj.box == pytest.approx(box, abs=0.5 * 512 / 1023)
    x0, y0, x1, y1 = (round(v) for v in obj.box)
    expected = np.zeros((512, 1023), dtype=bool)
    if bias > 0:
        expected[y0:y1, x0:x1] = True
    assert np.array_equal(obj.mask, expected)


def test_missing_or_cut_off_seg_tokens_keep_the_box_without_a_mask(vae_file):
    segment = get_postprocessor("segment", vae=vae_file)
    seg = "".join(f"<seg{i:03d}>" for i in range(16))
    text = (
        "<loc0000><loc0000><loc0511><loc0511>" + seg + " full ; <loc0000><loc0000><loc0100><loc0100> boxonly ; "
        "<loc0100><loc0100><loc0200><loc0200>" + seg[: 7 * 8]
    )
    objects = segment.parse(text, image_size=(64, 64)).objects
    assert [o.label for o in objects] == ["full", "boxonly", ""]
    assert objects[0].mask is not None and objects[0].mask.shape == (64, 64)
    assert (
        objects[1].mask is None
        and objects[2].mask is None
        and objects[2].box == pytest.approx((100 / 1023 * 64,) * 2 + (200 / 1023 * 64,) * 2)
    )
    assert segment.parse("<loc0001><loc0002>", image_size=(64, 64)).objects == []
    assert segment.prompt("cat") == "segment cat" and segment.prompt(["a", "b"]) == "segment a ; b"


# ---------------------------------------------------------------------------------------------- bad files


def test_segment_without_vae_offline_and_uncached_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VaeFileError, match="HF_HUB_OFFLINE") as info:
        get_postprocessor("segment")
    message = str(info.value)
    assert "\n" not in message and "vae-oid.npz" in message and str(tmp_path) in message


def _damaged_files(tmp_path, vae_file):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(vae_file.read_bytes()[:5000])
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("hello")
    wrong_shape = tmp_path / "shape.npz"
    weights = random_vae_weights(0)
    weights["decoder.6.weight"] = weights["decoder.6.weight"][:, :32]
    np.savez(wrong_shape, **weights)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**random_vae_weights(0), "_vq_vae._embedding": np.array([{"x": 1}], dtype=object)})
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x00" * 3)
    return {
        "missing": (tmp_path / "nope.npz", "does not exist"),
        "truncated": (truncated, "not a readable"),
        "not a zip": (not_zip, "not a readable"),
        "wrong shape": (
            wrong_shape,
            r"decoder.6.weight is float32 \(128, 32, 4, 4\), expected float \(128, 64, 4, 4\)",
        ),
        "pickled": (pickled, "not a readable|_vq_vae._embedding is object"),
        "bad safetensors": (bad_safetensors, "not a readable safetensors"),
    }


def test_missing_and_damaged_vae_files_get_one_clear_error(tmp_path, vae_file):
    for what, (path, message) in _damaged_files(tmp_path, vae_file).items():
        with pytest.raises(VaeFileError, match=message) as info:
            get_postprocessor("segment", vae=path)
        assert str(path.name) in str(info.value), what
    with pytest.raises(VaeFileError, match="hf://owner/repo/file.npz"):
        load_mask_decoder("hf://only-a-name")
    assert issubclass(VaeFileError, ValueError) and zipfile  # the CLI prints ValueErrors as one line


def test_decode_masks_checks_its_codes(vae_file):
    decoder = load_mask_decoder(vae_file)
    assert isinstance(decoder, MaskDecoder) and decoder.decode_masks(np.zeros((0, 16), int)).shape == (0, 64, 64)
    with pytest.raises(ValueError, match=r"\[N, 16\]"):
        decoder.decode_masks(np.zeros((2, 15), int))
    with pytest.raises(ValueError, match="0..127"):
        decoder.decode_masks(np.full((1, 16), 128))
    with pytest.raises(TypeError, match="integer"):
        decoder.decode_masks(np.zeros((1, 16)))


def test_segment_is_a_builtin_task():
    assert vlmzoo.get_registries().postprocessor.owner("segment") == "vlmzoo"


def test_cli_converts_and_reports_a_bad_file_on_one_line(vae_file, tmp_path, capsys):
    from vlmzoo.cli import main

    out = tmp_path / "vae.safetensors"
    assert main(["convert-vae", str(vae_file), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert torch.equal(
        load_mask_decoder(out).decode_masks([[3] * 16]), load_mask_decoder(vae_file).decode_masks([[3] * 16])
    )
    assert main(["convert-vae", str(tmp_path / "missing.npz"), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.npz" in err and "does not exist" in err


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("hf://big-vision/paligemma/vae-oid.npz", ("big-vision/paligemma", "vae-oid.npz", "model", None)),
        ("hf://spaces/big-vision/paligemma/vae-oid.npz", ("big-vision/paligemma", "vae-oid.npz", "space", None)),
        ("hf://datasets/a/b@v1/sub/dir/vae.npz", ("a/b", "sub/dir/vae.npz", "dataset", "v1")),
    ],
)
def test_hub_files_are_fetched_through_huggingface_hub(vae_file, monkeypatch, name, call):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, repo_type=None, revision=None):
        calls.append((repo_id, filename, repo_type, revision))
        return str(vae_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert isinstance(load_mask_decoder(name), MaskDecoder) and calls == [call]

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(VaeFileError, match="could not fetch"):
        load_mask_decoder(name)
