"""Cost of turning segmentation text into masks: VQ-VAE decoding in batch against one mask at a time,
and the whole ``segment`` parse (decoding, resizing into boxes, full-image masks) per object.

The decoder has big_vision's layer list with random weights (the cost does not depend on their values),
written in the ``vae-oid.npz`` layout and loaded the way users load the real file.

    python benchmarks/segment_parse.py
    python benchmarks/segment_parse.py --objects 32 --image 1024x768 --repeats 5 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import vlmzoo
from vlmzoo.tasks import MaskDecoder, format_objects


def write_random_vae(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    weights = {"_vq_vae._embedding": rng.normal(size=(128, 512)).astype(np.float32)}
    for key, value in MaskDecoder().decoder.state_dict().items():
        fan_in = max(1, value[0].numel()) if value.ndim > 1 else 1
        weights[f"decoder.{key}"] = (rng.normal(size=tuple(value.shape)) / np.sqrt(fan_in)).astype(np.float32)
    np.savez(path, **weights)
    return path


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=16, help="masks per answer")
    parser.add_argument("--image", default="640x480", help="original image size WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.image.lower().split("x"))
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 128, size=(args.objects, 16))

    with tempfile.TemporaryDirectory() as tmp:
        segment = vlmzoo.get_postprocessor("segment", vae=write_random_vae(Path(tmp) / "vae-oid.npz"))
    segment.decode_masks(codes[:1])  # warm-up
    batched = best_of(args.repeats, lambda: segment.decode_masks(codes))
    one_by_one = best_of(args.repeats, lambda: [segment.decode_masks(codes[i : i + 1]) for i in range(len(codes))])

    boxes = []
    for _ in range(args.objects):
        x0, x1 = sorted(rng.uniform(0, width, 2))
        y0, y1 = sorted(rng.uniform(0, height, 2))
        boxes.append((x0, y0, x1, y1))
    objects = [
        {"label": f"thing {i}", "box": b, "seg_codes": c} for i, (b, c) in enumerate(zip(boxes, codes, strict=True))
    ]
    text = format_objects(objects, (width, height)) + "<eos>"
    parse = best_of(args.repeats, lambda: segment.parse(text, image_size=(width, height)))

    figures = {
        "objects": args.objects,
        "image": [width, height],
        "threads": args.threads,
        "decode_batched_ms": round(batched * 1e3, 2),
        "decode_one_by_one_ms": round(one_by_one * 1e3, 2),
        "batch_speedup": round(one_by_one / batched, 2),
        "parse_ms": round(parse * 1e3, 2),
        "parse_ms_per_object": round(parse * 1e3 / args.objects, 2),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.objects} masks, {width}x{height} image, {args.threads} thread(s), best of {args.repeats}")
    print(f"  decode_masks in one batch:   {figures['decode_batched_ms']:8.2f} ms")
    print(f"  decode_masks one at a time:  {figures['decode_one_by_one_ms']:8.2f} ms  ({figures['batch_speedup']}x)")
    print(f"  segment.parse (all objects): {figures['parse_ms']:8.2f} ms  ({figures['parse_ms_per_object']} ms/object)")


if __name__ == "__main__":
    main()
