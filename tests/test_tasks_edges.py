"""Task details a user would feel if they broke: IoU of small boxes, COCO figures and inputs, result keys,
segmentation validity and one-to-one matching, readable label tags, a changed VAE file reloaded."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

from vlmzoo.tasks import DetectedObject
from vlmzoo.tasks.coco_metrics import coco_metrics
from vlmzoo.tasks.matching import box_iou
from vlmzoo.tasks.results import TaskResult
from vlmzoo.tasks.segmentation_metrics import SegmentationTally, TrueObject


def test_box_iou_holds_for_boxes_smaller_than_a_unit():
    assert box_iou((0.1, 0.1, 0.5, 0.5), (0.1, 0.1, 0.5, 0.5)) == pytest.approx(1.0)
    assert box_iou((0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 0.5, 1.0)) == pytest.approx(0.5)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def _ground_truth(images: int = 2, per_image: int = 12) -> dict:
    rng = np.random.default_rng(0)
    annotations = []
    for image in range(1, images + 1):
        for _ in range(per_image):
            x, y = rng.uniform(0, 80, size=2)
            annotations.append({"image_id": image, "category_id": 1, "bbox": [float(x), float(y), 15.0, 15.0]})
    return {
        "images": [{"id": i, "width": 100, "height": 100} for i in range(1, images + 1)],
        "categories": [{"id": 1, "name": "dot"}],
        "annotations": annotations,
    }


def test_coco_figures_are_pycocotools_at_100_detections_and_leave_the_callers_data_alone(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = _ground_truth()
    before = copy.deepcopy(truth)
    rng = np.random.default_rng(1)
    results = []
    for ann in truth["annotations"]:  # 12 detections an image: AP at 10 and 100 differ
        x, y, w, h = ann["bbox"]
        results.append({"image_id": ann["image_id"], "category_id": 1, "score": float(rng.uniform()),
                        "bbox": [x + float(rng.uniform(-3, 3)), y + float(rng.uniform(-3, 3)), w, h]})  # fmt: skip
    got = coco_metrics(truth, results)
    assert truth == before  # areas, ids and crowd flags are filled in on a copy

    reference = COCO()
    reference.dataset = copy.deepcopy(truth)
    for i, ann in enumerate(reference.dataset["annotations"]):
        ann.update(id=i + 1, iscrowd=0, area=ann["bbox"][2] * ann["bbox"][3])
    reference.createIndex()
    evaluator = COCOeval(reference, reference.loadRes(copy.deepcopy(results)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert got.overall["mAP"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert got.overall["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-9)
    assert got.overall["AR100"] == pytest.approx(evaluator.stats[8], abs=1e-9)

    path = tmp_path / "instances.json"
    path.write_text(json.dumps(truth))
    assert coco_metrics(path, results).overall == got.overall  # a file gives the same figures
    table = got.table().splitlines()
    assert table[-1].split() == ["all", *(f"{got.overall[k]:.3f}" for k in ("mAP", "AP50", "AP75", "AR100"))]


def test_task_results_serialise_under_their_documented_keys():
    obj = DetectedObject("cat", (1.0, 2.0, 5.0, 10.0), score=0.5)
    result = TaskResult("detect", "cat", "<loc0001><loc0002><loc0003><loc0004> cat", [obj], (20, 30))
    out = result.to_dict()
    assert out == {"task": "detect", "text": "cat", "raw_text": result.raw_text, "image_size": [20, 30],
                   "objects": [obj.to_dict()]}  # fmt: skip
    assert out["objects"][0]["bbox"] == [1.0, 2.0, 4.0, 8.0] and out["objects"][0]["label"] == "cat"


def _square(size: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_a_flat_segment_box_is_invalid_and_one_prediction_matches_one_object():
    truth = [TrueObject("a", (0, 0, 10, 10), _square(20, 0, 0, 10, 10))]
    flat = DetectedObject("a", (0, 0, 10, 0), mask=_square(20, 0, 0, 10, 10), seg_codes=(0,) * 16,
                          locs=(0, 0, 0, 500))  # fmt: skip  # ymin == ymax: no box
    tally = SegmentationTally()
    tally.add([flat], truth)
    assert tally.metrics()["invalid"] == 1 and tally.metrics()["miou"] == 0.0

    two = [TrueObject("a", (0, 0, 10, 10), _square(20, 0, 0, 10, 10)),
           TrueObject("a", (0, 0, 10, 11), _square(20, 0, 0, 10, 11))]  # fmt: skip
    one = DetectedObject("a", (0, 0, 10, 10), mask=_square(20, 0, 0, 10, 10), seg_codes=(0,) * 16,
                         locs=(0, 0, 500, 500))  # fmt: skip
    tally = SegmentationTally()
    tally.add([one], two)  # the one prediction pairs with the better object only
    assert tally.metrics()["boxacc@0.5"] == pytest.approx(0.5) and tally.metrics()["miou"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("color", "ink"),
    [((250, 230, 40), (0, 0, 0)), ((20, 20, 160), (255, 255, 255)), ((120, 140, 255), (0, 0, 0))],
)
def test_label_tags_are_written_in_ink_that_reads_on_their_colour(color, ink):
    import PIL.Image

    from vlmzoo.tasks.drawing import draw_objects

    image = PIL.Image.new("RGB", (200, 120), (128, 128, 128))
    drawn = draw_objects(image, [DetectedObject("label", (40, 60, 160, 110))], colors={"label": color}, font_size=16)
    pixels = {tuple(p) for p in np.asarray(drawn).reshape(-1, 3)}
    assert ink in pixels and color in pixels


def test_a_replaced_vae_file_is_read_again(tmp_path):
    from vae_weights import random_vae_weights

    from vlmzoo.tasks.mask_decoding import load_mask_decoder

    path = tmp_path / "vae-oid.npz"
    np.savez(path, **random_vae_weights(0))
    codes = np.arange(16).reshape(1, 16)
    first = load_mask_decoder(path).decode_masks(codes)
    stat = path.stat()
    np.savez(path, **random_vae_weights(1))  # same size, new weights
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == stat.st_size
    assert not torch.equal(load_mask_decoder(path).decode_masks(codes), first)


def test_empty_masks_round_trip_through_rle_and_bad_names_say_which_argument():
    from vlmzoo.tasks.base import TaskError, check_names
    from vlmzoo.tasks.rle import mask_to_rle, rle_to_mask

    for shape in ((0, 5), (5, 0), (0, 0)):
        empty = np.zeros(shape, dtype=bool)
        assert rle_to_mask(mask_to_rle(empty)).shape == shape
    with pytest.raises(TaskError, match=r"^objects must be a name or a non-empty list"):
        check_names([])
    with pytest.raises(TaskError, match=r"^each of objects must be a non-empty string"):
        check_names(["cat", " "])


def test_a_broken_vae_file_is_named_with_its_kind(tmp_path):
    from vlmzoo.tasks.mask_decoding import VaeFileError, load_mask_decoder

    broken = tmp_path / "vae-oid.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(VaeFileError, match=r"vae-oid.npz' is not a readable .npz file"):
        load_mask_decoder(broken)
