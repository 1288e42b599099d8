"""Train the bundled ``shapes-siglip`` model and measure its zero-shot classification on unseen scenes.

    OMP_NUM_THREADS=1 python scripts/train_shapes_siglip.py --output vlmzoo/bundled/shapes-siglip

Trains the ``shapes-siglip`` zoo variant from random weights with the sigmoid loss on shape scenes
(1 to 3 shapes) captioned with every shape they hold ("a red circle and two blue squares"), then scores
zero-shot colour+shape classification (12 labels, template "a {}") on single-shape scenes drawn from a
seed the training never used, and writes the figures to ``zero_shot.json`` beside the model.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import vlmzoo
from vlmzoo.data import shapes
from vlmzoo.data.shapes_tokenizer import build_tokenizer
from vlmzoo.siglip import SiglipProcessor

TEMPLATE = "a {}"
LABELS = [f"{colour} {kind}" for colour in sorted(shapes.COLOURS) for kind in shapes.KINDS]
EVAL_SEED = 424242


def zero_shot(model, scenes: int = 1000, seed: int = EVAL_SEED, max_shapes: int = 1) -> dict:
    """Top-1 accuracy over ``scenes`` unseen scenes: single-shape scenes must get their shape's label; with
    more shapes the best label must be one of the shapes present."""
    rng = random.Random(seed)
    drawn = [shapes.generate_scene(rng, size=model.processor.image_size, max_shapes=max_shapes) for _ in range(scenes)]
    results = model.classify([scene.image for scene in drawn], LABELS)
    pairs = zip(drawn, results, strict=True)
    hits = sum(result.best in {shape.label for shape in scene.shapes} for scene, result in pairs)
    return {"scenes": scenes, "max_shapes": max_shapes, "seed": seed, "top1": hits / scenes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory for the trained model (replaced when done)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--images", type=int, default=40000, help="training scenes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as processor_dir:
        SiglipProcessor(build_tokenizer(), image_size=64, max_length=16, prompt_template=TEMPLATE).save_pretrained(
            processor_dir
        )
        vlmzoo.train(
            "shapes-siglip", processor_dir, {"generator": "shapes", "seed": 1, "images": args.images, "size": 64},
            {"generator": "shapes", "seed": 2, "images": 512, "size": 64}, init="random", init_std=0.05,
            output_dir=args.output, max_steps=args.steps, batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_steps=300, weight_decay=1e-4, seed=args.seed, log_every=50,
            eval_every=1000, overwrite=True,
        )  # fmt: skip
    model = vlmzoo.load(args.output)
    figures = {"single_shape": zero_shot(model), "one_to_three_shapes": zero_shot(model, max_shapes=3)}
    (Path(args.output) / "zero_shot.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
