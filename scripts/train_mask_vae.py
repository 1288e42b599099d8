"""Train the mask VQ-VAE bundled with shapes-demo, on the masks the shapes generator draws.

The file has the layout of big_vision's ``vae-oid.npz`` (same keys, shapes, 16 codes of 128), so the
``segment`` task reads it like that one::

    OMP_NUM_THREADS=1 python scripts/train_mask_vae.py --out vlmzoo/bundled/shapes-demo/mask_vae.safetensors

Crops come from scenes of seed 0 (64 to 224 pixels, box edges moved by up to a pixel half of the time
so the codes hold up under a box a little off); the round trip is measured on scenes of seed 1000,
which training never saw. See docs/guides/demo-model.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np
import torch

from vlmzoo.data import shapes
from vlmzoo.tasks.mask_decoding import place_mask
from vlmzoo.tasks.mask_encoding import crop_masks
from vlmzoo.tasks.segmentation_metrics import mask_iou
from vlmzoo.training.mask_vae import save_mask_vae, train_mask_vae

SIZES = (64, 96, 128, 224)


def crop_pool(seed: int, count: int) -> torch.Tensor:
    """``count`` 64x64 crops of shapes-generator masks (seeded)."""
    rng = random.Random(seed)
    crops = []
    while sum(len(c) for c in crops) < count:
        scene = shapes.generate_scene(rng, size=rng.choice(SIZES))
        boxes = []
        for shape in scene.shapes:
            box = list(shape.box)
            if rng.random() < 0.5:
                box = [v + rng.randint(-1, 1) for v in box]
            boxes.append(box)
        crops.append(crop_masks(scene.masks(), boxes))
    return torch.cat(crops)[:count]


def round_trip(vae_path: str, seed: int, images: int) -> dict[str, float]:
    """Per scene size: the mean IoU of decode(encode(mask)) placed back in its box against the drawn mask,
    and the share of codes that encoding that placed mask again gives back."""
    import vlmzoo

    segment = vlmzoo.get_postprocessor("segment", vae=vae_path)
    figures: dict[str, float] = {}
    for size in (64, 112, 224):
        rng = random.Random(seed)
        ious, kept = [], []
        for _ in range(images):
            scene = shapes.generate_scene(rng, size=size)
            boxes = [shape.box for shape in scene.shapes]
            masks = scene.masks()
            codes = segment.encode_masks(masks, boxes)
            logits = segment.decode_masks(codes).numpy()
            placed = [place_mask(logit, box, scene.size) for logit, box in zip(logits, boxes, strict=True)]
            ious += [mask_iou(p, mask) for p, mask in zip(placed, masks, strict=True)]
            kept.append(segment.encode_masks(np.stack(placed), boxes) == codes)
        figures[f"mask_iou_{size}px"] = round(float(np.mean(ious)), 4)
        figures[f"codes_kept_{size}px"] = round(float(torch.cat(kept).float().mean()), 4)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where to write the .safetensors file")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=8000, help="crops drawn once, then sampled from")
    parser.add_argument("--check-images", type=int, default=100, help="unseen scenes (seed 1000) for the round trip")
    parser.add_argument("--check-only", action="store_true", help="only measure the round trip of --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.check_only:
        print(json.dumps(round_trip(args.out, seed=1000, images=args.check_images), indent=2))
        return 0
    pool = crop_pool(args.seed, args.pool)

    def sample(rng: random.Random, count: int) -> torch.Tensor:
        return pool[torch.tensor([rng.randrange(len(pool)) for _ in range(count)])]

    vae = train_mask_vae(sample, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    metadata = {"trained_on": "shapes", "seed": str(args.seed), "steps": str(args.steps)}
    save_mask_vae(vae, args.out, dtype=torch.float16, metadata=metadata)  # half the size, for the package
    print(json.dumps(round_trip(args.out, seed=1000, images=args.check_images), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
