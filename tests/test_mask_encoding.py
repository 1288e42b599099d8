"""Masks into <seg> codes: the VQ-VAE encoder against an independent one, the default VQ-VAE download."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import PIL.Image
import pytest
import torch
from vae_weights import ENCODER_CONVS, random_vae_weights

import vlmzoo
from vlmzoo.tasks import MaskEncoder, VaeFileError, get_postprocessor, load_mask_encoder
from vlmzoo.tasks.mask_encoding import crop_masks
from vlmzoo.tasks.vae_files import default_vae_file, default_vae_path


def reference_crop(mask: np.ndarray, box) -> np.ndarray:
    """big_vision's preprocessing from its description: crop to the rounded box, resize to 64x64 bilinear
    with antialiasing (here PIL's, which widens its filter when shrinking), values in [0, 1]."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = PIL.Image.fromarray(mask[y0:y1, x0:x1].astype(np.float32))
    return np.asarray(crop.resize((64, 64), resample=PIL.Image.Resampling.BILINEAR))


def _same_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """TensorFlow's conv2d with padding='SAME' on NHWC input, written with numpy windows (no torch)."""
    n, h, w, c = x.shape
    out_ch, in_ch, k, _ = kernel.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - w, 0)
    x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    hwio = kernel.transpose(2, 3, 1, 0)  # [k, k, in, out], as big_vision transposes the PyTorch kernels
    return np.einsum("nyxcij,ijco->nyxo", windows, hwio) + bias


def reference_vectors(weights: dict[str, np.ndarray], crops: np.ndarray) -> np.ndarray:
    """The encoder from big_vision's layer list, in float64 NHWC: 2(x - 0.5); four stride-2 SAME convs with
    ReLU (encoder.0/2/4/6); residual blocks encoder.8.net / encoder.9.net (conv3, relu, conv3, relu, conv1,
    + input); conv1 encoder.10. Returns the [N * 16, 512] vectors, row-major per mask."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    x = 2.0 * (crops[..., None].astype(np.float64) - 0.5)

    def conv(x, name, stride=1):
        return _same_conv(x, w[f"{name}.weight"], w[f"{name}.bias"], stride)

    for i in (0, 2, 4, 6):
        x = np.maximum(conv(x, f"encoder.{i}", stride=2), 0)
    for block in (8, 9):
        h = np.maximum(conv(x, f"encoder.{block}.net.0"), 0)
        h = np.maximum(conv(h, f"encoder.{block}.net.2"), 0)
        x = x + conv(h, f"encoder.{block}.net.4")
    return conv(x, "encoder.10").reshape(-1, 512)


def reference_encode(weights: dict[str, np.ndarray], crops: np.ndarray) -> np.ndarray:
    """`reference_vectors`, then the nearest codebook row by squared distance: 16 codes per mask."""
    x = reference_vectors(weights, crops)
    codebook = weights["_vq_vae._embedding"].astype(np.float64)
    distances = (x**2).sum(1)[:, None] + (codebook**2).sum(1)[None] - 2 * x @ codebook.T
    return distances.argmin(1).reshape(-1, 16)


def random_masks(seed: int, count: int = 6, size: tuple[int, int] = (90, 70)):
    """Ellipses and rectangles of random sizes on a (width, height) image, with their tight boxes."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[:height, :width]
    masks, boxes = [], []
    for i in range(count):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        x1, y1 = rng.integers(x0 + 5, width + 1), rng.integers(y0 + 5, height + 1)
        if i % 2:
            mask = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        else:
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            mask = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1
        masks.append(mask)
        boxes.append((float(x0), float(y0), float(x1), float(y1)))
    return np.stack(masks), boxes


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    """Random weights whose codebook rows are encoder outputs of other masks (plus noise), so that masks
    get different codes, as with a trained VQ-VAE."""
    weights = random_vae_weights(3)
    vectors = reference_vectors(weights, crop_masks(*random_masks(99, count=40)).numpy())
    rng = np.random.default_rng(3)
    picked = vectors[rng.choice(len(vectors), 128, replace=False)]
    weights["_vq_vae._embedding"] = (picked + rng.normal(size=picked.shape) * 0.01).astype(np.float32)
    path = tmp_path_factory.mktemp("vae") / "vae-oid.npz"
    np.savez(path, **weights)
    return path


def test_the_encoder_layers_are_the_npz_keys():
    names = {key.rsplit(".", 1)[0] for key in MaskEncoder().encoder.state_dict()}
    assert {f"encoder.{name}" for name in names} == set(ENCODER_CONVS)


def test_crops_match_big_visions_preprocessing():
    masks, boxes = random_masks(0)
    boxes[1] = (boxes[1][0] + 0.4, boxes[1][1] - 0.4, boxes[1][2] + 0.3, boxes[1][3])  # rounded to whole pixels
    got = crop_masks(masks, boxes).numpy()
    expected = np.stack([reference_crop(m, b) for m, b in zip(masks, boxes, strict=True)])
    assert got.shape == (6, 64, 64) and got.min() >= 0 and got.max() <= 1
    assert np.abs(got - expected).max() < 2e-3  # two antialiased bilinear filters: equal up to rounding


def test_encode_masks_matches_an_independent_encoder(vae_file):
    weights = dict(np.load(vae_file))
    masks, boxes = random_masks(1)
    segment = get_postprocessor("segment", vae=vae_file)
    codes = segment.encode_masks(masks, boxes)
    assert codes.dtype == torch.long and codes.shape == (6, 16)
    expected = reference_encode(weights, crop_masks(masks, boxes).numpy())
    assert np.array_equal(codes.numpy(), expected)
    assert len(np.unique(expected)) > 3  # the masks do give different codes: the test can fail
    # the same from the hand-written crops, and one mask alone as in a batch
    by_hand = np.stack([reference_crop(m, b) for m, b in zip(masks, boxes, strict=True)])
    assert np.array_equal(reference_encode(weights, by_hand), expected)
    assert torch.equal(segment.encode_masks(masks[2:3], boxes[2:3]), codes[2:3])


def test_the_encoder_pads_like_tensorflow_same_for_odd_kernels():
    """A 3x3 stride-2 kernel pads 0 before and 1 after on an even side in TensorFlow (not 1 and 1)."""
    weights = random_vae_weights(4)
    for name in ("encoder.0", "encoder.2", "encoder.4", "encoder.6"):
        weights[f"{name}.weight"] = np.ascontiguousarray(weights[f"{name}.weight"][:, :, :3, :3])
    crops = crop_masks(*random_masks(5, count=3)).numpy()
    encoder = MaskEncoder(kernel_size=3)
    state = {("codebook" if k == "_vq_vae._embedding" else k): torch.from_numpy(v) for k, v in weights.items()}
    encoder.load_state_dict({k: v for k, v in state.items() if k == "codebook" or k.startswith("encoder.")})
    assert np.array_equal(encoder.encode(torch.from_numpy(crops)).numpy(), reference_encode(weights, crops))


def test_encode_masks_errors_name_the_problem(vae_file, tmp_path):
    segment = get_postprocessor("segment", vae=vae_file)
    masks, boxes = random_masks(2, count=2)
    with pytest.raises(ValueError, match="mask 1: box .* covers no pixel"):
        segment.encode_masks(masks, [boxes[0], (500, 500, 600, 600)])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        segment.encode_masks(masks, boxes[:1])
    decoder_only = tmp_path / "decoder-only.npz"
    np.savez(decoder_only, **{k: v for k, v in np.load(vae_file).items() if not k.startswith("encoder.")})
    with pytest.raises(VaeFileError, match="lacks the encoder weights encoder.0.weight"):
        load_mask_encoder(decoder_only)


def test_the_shapes_demo_vae_round_trips_shapes_masks():
    """decode(encode(mask)) placed in its box gives the mask back; encoding that again gives the codes back."""
    import random

    from vlmzoo.data import shapes
    from vlmzoo.tasks import place_mask
    from vlmzoo.tasks.segmentation_metrics import mask_iou

    segment = get_postprocessor("segment", vae=vlmzoo.load_processor("shapes-demo").mask_vae)
    rng = random.Random(2024)  # scenes the VQ-VAE never saw (it trained on seed 0)
    ious, kept = [], []
    for size in (64, 224):
        for _ in range(10):
            scene = shapes.generate_scene(rng, size=size)
            boxes, masks = [s.box for s in scene.shapes], scene.masks()
            codes = segment.encode_masks(masks, boxes)
            logits = segment.decode_masks(codes).numpy()
            placed = [place_mask(logit, box, scene.size) for logit, box in zip(logits, boxes, strict=True)]
            ious += [mask_iou(p, m) for p, m in zip(placed, masks, strict=True)]
            kept.append((segment.encode_masks(np.stack(placed), boxes) == codes).float())
    assert np.mean(ious) > 0.98 and min(ious) > 0.9
    assert torch.cat(kept).mean() > 0.85


# ------------------------------------------------------------------------------------------- default VQ-VAE


class _Server:
    """A loopback HTTP server for one file (optionally cut short, or missing)."""

    def __init__(self, payload: bytes, *, status: int = 200, truncate: bool = False) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                outer.requests += 1
                if status != 200:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2] if truncate else payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/big_vision/paligemma/vae-oid.npz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_default_vae_is_downloaded_once_checked_and_converted(vae_file, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with _Server(vae_file.read_bytes()) as server:
        path = default_vae_file(cache_dir=tmp_path, url=server.url)
        assert path == default_vae_path(tmp_path) and path.suffix == ".safetensors"
        assert default_vae_file(cache_dir=tmp_path, url=server.url) == path and server.requests == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # the download is removed
    codes = np.arange(16)[None] * 7 % 128
    segment = get_postprocessor("segment", vae=path)
    assert torch.equal(segment.decode_masks(codes), get_postprocessor("segment", vae=vae_file).decode_masks(codes))
    masks, boxes = random_masks(6, count=2)
    original = get_postprocessor("segment", vae=vae_file)
    assert torch.equal(segment.encode_masks(masks, boxes), original.encode_masks(masks, boxes))
    # with HF_HUB_CACHE there, segment needs no vae= and no network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(get_postprocessor("segment").decode_masks(codes), segment.decode_masks(codes))


@pytest.mark.parametrize("problem", ["missing", "truncated", "not a vae", "no server"])
def test_a_failed_download_is_one_clear_error_and_leaves_nothing(problem, vae_file, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    payload = b"not an npz" if problem == "not a vae" else vae_file.read_bytes()
    server = _Server(payload, status=404 if problem == "missing" else 200, truncate=problem == "truncated")
    with server:
        url = server.url if problem != "no server" else "http://127.0.0.1:9/vae-oid.npz"
        with pytest.raises(VaeFileError) as info:
            default_vae_file(cache_dir=tmp_path, url=url)
    message = str(info.value)
    assert "\n" not in message
    expected = {"missing": "404", "truncated": "stopped at", "not a vae": "not a readable", "no server": "download"}
    assert expected[problem] in message
    assert not default_vae_path(tmp_path).exists() and not any(default_vae_path(tmp_path).parent.iterdir())
