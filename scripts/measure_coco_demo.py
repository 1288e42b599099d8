"""shapes-demo on unseen scenes as a COCO dataset: bbox mAP, and constrained decoding on a long class list.

    python scripts/measure_coco_demo.py --images 200 --json coco_demo.json

1. ``one class per prompt``: ``detect circle``, ``detect square``, ``detect triangle`` for every image,
   the prompt form the demo model was trained with: its bbox mAP@[.5:.95] on scenes it never saw
   (seed 1000; training used seeds 0 and 1).
2. ``three classes in one prompt``: ``detect circle ; square ; triangle`` (the model was trained on one or
   two classes per prompt), freely and constrained.
3. ``twelve classes``: the same scenes labelled by colour and kind (``red circle``, ...), all twelve
   classes in one prompt (the model was trained on one or two per prompt), answered freely and with
   constrained decoding (`vlmzoo.generation.constrained.ClosedSetSampler`): invalid objects and mAP.
4. ``thirteen classes``: the three shapes and ten classes the model never saw (``detect circle ;
   square ; triangle ; star ; ...``), freely and constrained.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import vlmzoo
from vlmzoo.data.shapes_coco import write_coco_dataset
from vlmzoo.training.coco_evaluation import evaluate_coco

DISTRACTORS = ["star", "hexagon", "heart", "arrow", "cross", "diamond", "oval", "pentagon", "ring", "cube"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    model, processor = vlmzoo.from_pretrained("shapes-demo"), vlmzoo.load_processor("shapes-demo")
    report = {"images": args.images, "seed": args.seed}
    with tempfile.TemporaryDirectory() as folder:
        path = write_coco_dataset(folder, seed=args.seed, num_images=args.images, size=64)
        runs = {
            "one class per prompt": (path, {"classes_per_prompt": 1}),
            "three classes in one prompt, free": (path, {}),
            "three classes in one prompt, constrained": (path, {"constrained": True}),
        }
        data = json.loads(path.read_text())
        data["categories"] += [{"id": 10 + i, "name": name} for i, name in enumerate(DISTRACTORS)]
        long_list = Path(folder) / "long.json"
        long_list.write_text(json.dumps(data))
        coloured = write_coco_dataset(folder, seed=args.seed, num_images=args.images, size=64, filename="colour.json",
                                      labels="colour")  # fmt: skip
        runs["twelve classes, free"] = (coloured, {})
        runs["twelve classes, constrained"] = (coloured, {"constrained": True})
        runs["thirteen classes with ten unknown, free"] = (long_list, {})
        runs["thirteen classes with ten unknown, constrained"] = (long_list, {"constrained": True})
        for name, (annotations, options) in runs.items():
            start = time.perf_counter()
            result = evaluate_coco(model, processor, annotations, folder, no_match="none",
                                   batch_size=args.batch_size, **options)  # fmt: skip
            seconds = time.perf_counter() - start
            bbox = result.metrics[0]
            print(f"\n## {name} ({result.answers} answers, {seconds:.0f} s)\n")
            print(result.table())
            report[name] = {**result.to_dict(), "seconds": seconds}
            del report[name]["metrics"]
            report[name]["bbox"] = bbox.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
