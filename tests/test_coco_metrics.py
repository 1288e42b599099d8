"""COCO metrics: numbers computed by hand, and pycocotools' own summary on the same data."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from vlmzoo.tasks import DetectedObject
from vlmzoo.tasks.coco_metrics import coco_metrics, detection_results, metrics_table

TRUTH = {
    "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cow"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 0, 10, 10]},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20]},
    ],
}
RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # exact
    {"image_id": 1, "category_id": 1, "bbox": [20, 0, 10, 6.2], "score": 0.8},  # IoU 0.62 with the second cat
    {"image_id": 1, "category_id": 2, "bbox": [0, 50, 20, 20], "score": 0.95},  # misses the dog, ranked first
    {"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.5},  # exact
]


def test_map_ap50_ap75_and_ar100_match_a_case_computed_by_hand():
    metrics = coco_metrics(TRUTH, RESULTS)
    # cat: both found at IoU 0.50, 0.55, 0.60 (AP 1); at the 7 higher thresholds only the first, so
    # precision is 1 up to recall 0.5: 51 of COCO's 101 recall points, AP 51/101.
    cat_ap = (3 * 1 + 7 * 51 / 101) / 10
    # dog: the false positive comes first, so the one hit is at precision 1/2 at every threshold.
    assert metrics.per_class["cat"] == pytest.approx({"mAP": cat_ap, "AP50": 1.0, "AP75": 51 / 101, "AR100": 0.65})
    assert metrics.per_class["dog"] == pytest.approx({"mAP": 0.5, "AP50": 0.5, "AP75": 0.5, "AR100": 1.0})
    assert "cow" not in metrics.per_class  # no ground truth: no AP, as in COCO
    assert metrics.overall == pytest.approx(
        {"mAP": (cat_ap + 0.5) / 2, "AP50": 0.75, "AP75": (51 / 101 + 0.5) / 2, "AR100": 0.825}
    )


def test_overall_figures_are_pycocotools_summary():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = COCO()
    truth.dataset = {**TRUTH, "annotations": [dict(a, area=a["bbox"][2] * a["bbox"][3], iscrowd=0)
                                              for a in TRUTH["annotations"]]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes([dict(r) for r in RESULTS]), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    overall = coco_metrics(TRUTH, RESULTS).overall
    assert [overall["mAP"], overall["AP50"], overall["AP75"]] == pytest.approx(list(evaluator.stats[:3]))
    assert overall["AR100"] == pytest.approx(evaluator.stats[8])


def test_no_results_score_zero_and_masks_are_evaluated_as_segm():
    empty = coco_metrics(TRUTH, [])
    assert empty.overall == {"mAP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR100": 0.0}
    mask = np.zeros((100, 100), dtype=bool)
    mask[50:70, 50:70] = True
    truth = {**TRUTH, "annotations": [dict(TRUTH["annotations"][2], segmentation=[[50, 50, 70, 50, 70, 70, 50, 70]])]}
    found = detection_results(1, [DetectedObject("dog", (50.0, 50.0, 70.0, 70.0), mask=mask, score=0.7)], {"dog": 2})
    assert found[0]["bbox"] == [50.0, 50.0, 20.0, 20.0] and found[0]["score"] == 0.7
    segm = coco_metrics(truth, found, "segm")
    assert segm.overall["AP50"] == pytest.approx(1.0) and segm.per_class["dog"]["AR100"] > 0.5
    with pytest.raises(ValueError, match="1 result.* no 'segmentation'"):
        coco_metrics(truth, RESULTS[3:], "segm")


def test_results_leave_out_unknown_labels_and_default_the_score():
    objects = [DetectedObject("cat", (1.0, 2.0, 5.0, 8.0)), DetectedObject("unicorn", (0.0, 0.0, 1.0, 1.0), score=0.3)]
    assert detection_results(4, objects, {"cat": 1}) == [
        {"image_id": 4, "category_id": 1, "bbox": [1.0, 2.0, 4.0, 6.0], "score": 1.0}
    ]


def test_the_table_lists_each_class_and_all():
    table = metrics_table([coco_metrics(TRUTH, RESULTS)])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "bbox", "mAP", "bbox", "AP50", "bbox", "AP75", "bbox", "AR100"]
    assert lines[2].split()[0] == "cat" and lines[3].split() == ["dog", "0.500", "0.500", "0.500", "1.000"]
    assert lines[4].split()[0] == "all"
