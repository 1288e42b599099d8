"""Quality of the bundled shapes-demo model on freshly generated scenes.

Prints detection precision and recall at IoU 0.5 for each kind of detect prompt, caption accuracy
(the multiset of shapes a caption names is exactly right), and for ``segment <shape>`` prompts mIoU,
box accuracy at IoU 0.5 and the share of invalid answers (big_vision's definitions, see
`vlmzoo.tasks.segmentation_metrics`), on scenes drawn from seeds the model never saw in training (its
data uses seeds 0 and 1)::

    python scripts/evaluate_shapes_demo.py --images 200 --seed 1000
    python scripts/evaluate_shapes_demo.py --model path/to/checkpoint --size 300 --json
    python scripts/evaluate_shapes_demo.py --quantize int8          # the same figures, int8 weights
    python scripts/evaluate_shapes_demo.py --model runs/shapes-demo-segment --segment   # segmentation bars too

The tests import `evaluate` from this file, so the figures in the docs and the bars the tests hold
the bundled model to are computed the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import torch

import vlmzoo
from vlmzoo.data import shapes
from vlmzoo.tasks import match_objects
from vlmzoo.tasks.segmentation_metrics import SegmentationTally, TrueObject

#: The quality the bundled model must reach (precision and recall for detection, accuracy for captions).
QUALITY_BARS = {"detect_shape": 0.9, "detect_colour_shape": 0.8, "detect_two_shapes": 0.9, "caption": 0.8}
#: The segmentation a model must reach to be bundled as one that segments (``--segment``): mIoU and box
#: accuracy at IoU 0.5, and at most this share of invalid answers (not 4 <loc> + 16 <seg>, valid box).
SEGMENT_BARS = {"miou": 0.85, "boxacc@0.5": 0.9}
MAX_INVALID_RATE = 0.02


def evaluate(
    vlm: vlmzoo.VisionLanguageModel, seed: int = 1000, num_images: int = 200, size: int = 224, batch_size: int = 32
) -> dict[str, dict[str, float]]:
    """Score `vlm` on `num_images` fresh scenes of `size` pixels, one record of each prompt kind per scene.

    Returns, per prompt kind, ``{"precision", "recall", "prompts", "objects"}`` for detection,
    ``{"accuracy", "prompts"}`` for captions and ``{"miou", "boxacc@0.5", "invalid", "invalid_rate",
    "objects", "prompts"}`` for segmentation.
    """
    scenes = shapes.make_records(seed, num_images, size=size)
    items = [(scene, record) for scene, records in scenes for record in records]
    detect = vlmzoo.get_postprocessor("detect")  # big_vision's bins (/1023), as the data is written
    vae = {"vae": vlm.processor.mask_vae} if vlm.processor.mask_vae is not None else {}
    segment = vlmzoo.get_postprocessor("segment", **vae)
    segments = SegmentationTally()
    tallies: dict[str, Counter] = {kind: Counter() for kind in shapes.PROMPT_KINDS}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        with torch.inference_mode():
            answers = vlm.generate([scene.image for scene, _ in chunk], [r.prefix for _, r in chunk], max_new_tokens=80)
        for (scene, record), answer in zip(chunk, answers, strict=True):
            tally = tallies[record.kind]
            tally["prompts"] += 1
            if record.kind == "segment_shape":
                query = record.prefix.removeprefix("segment ")
                truth = [TrueObject(kind, box, mask) for kind, box, mask in record.objects if kind == query]
                segments.add(segment.parse(answer, image_size=scene.size).objects, truth)
                continue
            if record.kind == "caption":
                tally["correct"] += shapes.parse_caption(answer) == Counter(s.label for s in scene.shapes)
                continue
            queries = record.prefix.removeprefix("detect ").split(" ; ")
            expected = shapes.expected_objects(scene, queries)
            predicted = [(obj.label, obj.box) for obj in detect.parse(answer, image_size=scene.size).objects]
            tally["true_positives"] += match_objects(predicted, expected)
            tally["predicted"] += len(predicted)
            tally["objects"] += len(expected)
    results: dict[str, dict[str, float]] = {}
    for kind, tally in tallies.items():
        if kind == "segment_shape":
            results[kind] = {**segments.metrics(), "prompts": tally["prompts"]}
        elif kind == "caption":
            results[kind] = {"accuracy": tally["correct"] / max(1, tally["prompts"]), "prompts": tally["prompts"]}
        else:
            results[kind] = {
                # No prediction at all is perfectly precise: nothing claimed was wrong.
                "precision": tally["true_positives"] / tally["predicted"] if tally["predicted"] else 1.0,
                "recall": tally["true_positives"] / tally["objects"] if tally["objects"] else 1.0,
                "prompts": tally["prompts"],
                "objects": tally["objects"],
            }
    return results


def below_bars(results: dict[str, dict[str, float]], segment: bool = False) -> list[str]:
    """The figures that miss :data:`QUALITY_BARS` (and :data:`SEGMENT_BARS` with ``segment``), as readable
    strings (empty when all pass)."""
    misses = []
    bars = {kind: dict.fromkeys(("accuracy",) if kind == "caption" else ("precision", "recall"), bar)
            for kind, bar in QUALITY_BARS.items()}  # fmt: skip
    if segment:
        bars["segment_shape"] = SEGMENT_BARS
    for kind, least_by_metric in bars.items():
        for metric, least in least_by_metric.items():
            value = results[kind][metric]
            if value < least:
                misses.append(f"{kind} {metric} {value:.3f} < {least}")
    invalid = results["segment_shape"]["invalid_rate"]
    if segment and invalid > MAX_INVALID_RATE:
        misses.append(f"segment_shape invalid_rate {invalid:.3f} > {MAX_INVALID_RATE}")
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes-demo", help="checkpoint directory or name (default: bundled)")
    parser.add_argument("--seed", type=int, default=1000, help="scene seed; training used 0 and 1")
    parser.add_argument("--images", type=int, default=200, help="number of scenes (5 prompts each)")
    parser.add_argument("--size", type=int, default=224, help="scene side in pixels (the processor resizes)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quantize", help="weight-only quantization to evaluate: int8 or int4 (default: none)")
    parser.add_argument("--segment", action="store_true", help="also hold the model to the segmentation bars")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    vlm = vlmzoo.load(args.model, quantize=args.quantize)
    start = time.perf_counter()
    results = evaluate(vlm, seed=args.seed, num_images=args.images, size=args.size)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"results": results, "seconds": round(seconds, 1)}, indent=2))
    else:
        print(f"{args.model}: {args.images} scenes of {args.size} px, seed {args.seed}, {seconds:.1f} s")
        for kind, figures in results.items():
            shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
            print(f"  {kind:<20} {shown}")
    misses = below_bars(results, segment=args.segment)
    if misses:
        print("below the quality bars: " + "; ".join(misses), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
