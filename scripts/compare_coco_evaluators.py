"""Compare the two COCO evaluators vlmzoo could use: pycocotools and faster-coco-eval.

Both are installed from wheels that need only numpy. This script makes a synthetic COCO ground truth
(default 5,000 images, 80 categories, boxes and polygon masks) and synthetic predictions (every true
object found with jitter, some missed, some false positives, scores that mostly rank hits first),
then times each library's bbox and segm evaluation (load results + evaluate + accumulate + summarize)
and compares the twelve summary figures and the per-class AP@[.5:.95].

    python scripts/compare_coco_evaluators.py --images 5000

The comparison behind the choice of evaluator is in the COCO guide of the documentation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import numpy as np


def synthetic(images: int, categories: int, seed: int) -> tuple[dict, list[dict]]:
    """Ground truth (a COCO dataset dict) and predictions (a COCO results list with RLE masks)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    width, height = 320, 240
    gt: dict = {
        "images": [{"id": i + 1, "width": width, "height": height, "file_name": f"{i:06d}.jpg"} for i in range(images)],
        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(categories)],
        "annotations": [],
    }
    results: list[dict] = []

    def polygon(x: float, y: float, w: float, h: float) -> list[float]:
        # an irregular hexagon inside the box
        xs = [x + w * 0.5, x + w, x + w, x + w * 0.5, x, x]
        ys = [y, y + h * 0.3, y + h * 0.7, y + h, y + h * 0.7, y + h * 0.3]
        return [float(v) for pair in zip(xs, ys, strict=True) for v in pair]

    def prediction(image_id: int, category: int, x: float, y: float, w: float, h: float, score: float) -> dict:
        rle = mask_utils.frPyObjects([polygon(x, y, w, h)], height, width)[0]
        rle["counts"] = rle["counts"].decode("ascii")
        return {"image_id": image_id, "category_id": category, "bbox": [x, y, w, h], "score": score,
                "segmentation": rle}  # fmt: skip

    annotation_id = 1
    for image in gt["images"]:
        for _ in range(rng.integers(1, 12)):
            w, h = rng.uniform(8, 160), rng.uniform(8, 120)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            category = int(rng.integers(1, categories + 1))
            seg = polygon(x, y, w, h)
            area = float(mask_utils.area(mask_utils.frPyObjects([seg], height, width))[0])
            gt["annotations"].append({"id": annotation_id, "image_id": image["id"], "category_id": category,
                                      "bbox": [x, y, w, h], "area": area, "segmentation": [seg],
                                      "iscrowd": 0})  # fmt: skip
            annotation_id += 1
            if rng.random() < 0.85:  # found, with jitter
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                px, py = max(0.0, x + jitter[0]), max(0.0, y + jitter[1])
                pw, ph = max(2.0, w + jitter[2]), max(2.0, h + jitter[3])
                pw, ph = min(pw, width - px), min(ph, height - py)
                results.append(prediction(image["id"], category, px, py, pw, ph, float(rng.uniform(0.3, 1.0))))
        for _ in range(rng.integers(0, 4)):  # false positives, mostly scored low
            w, h = rng.uniform(8, 100), rng.uniform(8, 80)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            category = int(rng.integers(1, categories + 1))
            results.append(prediction(image["id"], category, x, y, w, h, float(rng.uniform(0.0, 0.6))))
    return gt, results


def per_class_ap(evaluator) -> np.ndarray:
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [iou, recall, class], all areas, 100 dets
    out = np.full(precision.shape[2], np.nan)
    for k in range(precision.shape[2]):
        values = precision[:, :, k]
        values = values[values > -1]
        if values.size:
            out[k] = values.mean()
    return out


def run_pycocotools(gt: dict, results: list[dict], iou_type: str):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        start = time.perf_counter()
        detections = truth.loadRes(results)
        evaluator = COCOeval(truth, detections, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        seconds = time.perf_counter() - start
    return seconds, np.array(evaluator.stats), per_class_ap(evaluator)


def run_faster(gt: dict, results: list[dict], iou_type: str):
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(gt)
        start = time.perf_counter()
        detections = truth.loadRes(results)
        evaluator = COCOeval_faster(truth, detections, iou_type, print_function=lambda *a: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        seconds = time.perf_counter() - start
    return seconds, np.array(evaluator.stats[:12]), per_class_ap(evaluator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--categories", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    gt, results = synthetic(args.images, args.categories, args.seed)
    report = {"images": args.images, "annotations": len(gt["annotations"]), "predictions": len(results)}
    print(f"{args.images} images, {len(gt['annotations'])} true objects, {len(results)} predictions")
    for iou_type in ("bbox", "segm"):
        # fresh copies: loadRes adds fields to the dicts it is given
        slow_s, slow_stats, slow_ap = run_pycocotools(json.loads(json.dumps(gt)), json.loads(json.dumps(results)),
                                                      iou_type)  # fmt: skip
        fast_s, fast_stats, fast_ap = run_faster(json.loads(json.dumps(gt)), json.loads(json.dumps(results)), iou_type)
        stat_diff = float(np.max(np.abs(slow_stats - fast_stats)))
        class_diff = float(np.nanmax(np.abs(slow_ap - fast_ap)))
        identical = int(np.sum(slow_stats == fast_stats))
        print(
            f"{iou_type}: pycocotools {slow_s:.2f} s, faster-coco-eval {fast_s:.2f} s "
            f"({slow_s / fast_s:.1f}x); mAP {slow_stats[0]:.4f} vs {fast_stats[0]:.4f}; "
            f"{identical}/12 summary figures identical, largest difference {stat_diff:.2e}; "
            f"per-class AP largest difference {class_diff:.2e}"
        )
        report[iou_type] = {
            "pycocotools_s": slow_s,
            "faster_coco_eval_s": fast_s,
            "map": [slow_stats[0], fast_stats[0]],
            "identical_summary_figures": identical,
            "max_summary_difference": stat_diff,
            "max_per_class_difference": class_diff,
        }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
