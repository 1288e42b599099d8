"""Does a contrastively trained image tower help shapes-demo learn? Two short runs, one difference.

    OMP_NUM_THREADS=1 python scripts/compare_siglip_init.py --steps 800 --out runs/siglip-init

Both runs train the ``shapes-demo`` architecture from the same seed, data and options (those of
configs/shapes-demo.toml, shortened); in the second its image tower starts from the bundled
``shapes-siglip`` model's (the same ViT shape), as PaliGemma starts from a SigLIP image encoder. The
script prints the eval loss along the way and the guide's detection/caption figures at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch

import vlmzoo

HERE = Path(__file__).resolve().parent


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("evaluate_shapes_demo", HERE / "evaluate_shapes_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shapes_demo_model(image_tower_from: str | None, seed: int, init_std: float = 0.06):
    """A randomly initialised shapes-demo, its image tower optionally copied from a SigLIP checkpoint."""
    model = vlmzoo.build("shapes-demo", device="cpu", dtype=torch.float32, seed=seed, init_std=init_std)
    if image_tower_from is not None:
        siglip = vlmzoo.from_pretrained(image_tower_from, dtype=torch.float32)
        model.vision_tower.load_state_dict(siglip.vision_model.state_dict())
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--siglip", default="shapes-siglip", help="the SigLIP checkpoint whose image tower is used")
    parser.add_argument("--out", required=True, help="directory for the two runs and comparison.json")
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="random,siglip", help="which runs (comma-separated): random, siglip")
    args = parser.parse_args()
    out = Path(args.out)
    evaluate = _evaluate_module().evaluate
    path = out / "comparison.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    for run, tower in (("random", None), ("siglip", args.siglip)):
        if run not in args.runs.split(","):
            continue
        model = shapes_demo_model(tower, args.seed)
        trained = vlmzoo.train(
            model, "shapes-demo",
            {"generator": "shapes", "seed": 0, "images": 20000, "size": 64,
             "kinds": ["detect_shape", "detect_shape", "detect_colour_shape", "detect_two_shapes", "caption"]},
            {"generator": "shapes", "seed": 1, "images": 100, "size": 64},
            output_dir=str(out / run), max_steps=args.steps, batch_size=16, learning_rate=5e-4,
            adam_betas=(0.9, 0.95), warmup_steps=50, seed=args.seed, device="cpu", eval_every=max(1, args.steps // 4),
            log_every=100, eval_detection=False, overwrite=True,
        )  # fmt: skip
        lines = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines()]
        vlm = vlmzoo.load(out / run)
        figures[run] = {
            "eval_loss": {line["step"]: round(line["eval_loss"], 4) for line in lines if "eval_loss" in line},
            "quality": evaluate(vlm, seed=1000, num_images=args.eval_images, size=64),
        }
        del trained
        path.write_text(json.dumps(figures, indent=2) + "\n")  # after each run, so runs may be made apart
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
