"""COCO evaluation of a checkpoint: results JSON, the mAP table, invalid objects, constrained decoding."""

from __future__ import annotations

import json

import pytest

import vlmzoo
from vlmzoo.cli import main
from vlmzoo.data.shapes_coco import write_coco_dataset
from vlmzoo.tasks.coco_metrics import coco_metrics
from vlmzoo.training.coco_evaluation import count_invalid, evaluate_coco

#: Class names shapes-demo never saw, to make a long class list.
DISTRACTORS = ["star", "hexagon", "heart", "arrow", "cross", "diamond", "oval", "pentagon", "ring", "cube"]


@pytest.fixture(scope="module")
def demo():
    return vlmzoo.from_pretrained("shapes-demo"), vlmzoo.load_processor("shapes-demo")


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("coco"), seed=1000, num_images=6, size=64)


def test_vlmzoo_eval_coco_writes_results_and_prints_the_table(unseen, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["eval", "shapes-demo", "--coco", str(unseen), "--out", str(out), "--classes-per-prompt", "1",
                 "--no-match", "none", "--metrics-out", str(tmp_path / "m.json")])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results and all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert all(0 < r["score"] <= 1 for r in results)
    overall = coco_metrics(unseen, results).overall
    assert printed.splitlines()[0].split()[:3] == ["class", "bbox", "mAP"]
    assert f"{overall['mAP']:.3f}" in [line.split()[1] for line in printed.splitlines() if line.startswith("all")]
    assert overall["mAP"] > 0.8  # the demo model finds its shapes, one class per prompt
    figures = json.loads((tmp_path / "m.json").read_text())
    assert figures["metrics"]["bbox"]["overall"]["mAP"] == pytest.approx(overall["mAP"])


def test_constrained_decoding_leaves_no_invalid_object_on_a_long_class_list(demo, unseen, tmp_path):
    data = json.loads(unseen.read_text())
    data["categories"] += [{"id": 10 + i, "name": name} for i, name in enumerate(DISTRACTORS)]
    long_list = tmp_path / "instances.json"
    long_list.write_text(json.dumps(data))
    model, processor = demo
    free = evaluate_coco(model, processor, long_list, unseen.parent, no_match="none", progress=False)
    fixed = evaluate_coco(model, processor, long_list, unseen.parent, no_match="none", constrained=True, progress=False)
    assert free.answers == fixed.answers == 6
    assert fixed.invalid_objects == 0
    assert free.invalid_objects > 0  # the thirteen-class prompt is new to the model: it writes broken objects


def test_invalid_objects_are_parts_that_are_not_whole_objects_of_a_named_class():
    good = "<loc0001><loc0002><loc0003><loc0004> cat"
    assert count_invalid(f"{good} ; {good}<eos>", ["cat"]) == 0
    assert count_invalid(f"{good} ; <loc0001><loc0002> cat ; {good[:-3]} cow ; blah", ["cat"]) == 3
    assert count_invalid("none", ["cat"], no_match="none") == 0
    assert count_invalid(good, ["cat"], segment=True) == 1  # a segment object needs its 16 <seg> tokens


def test_eval_needs_data_or_coco(capsys):
    assert main(["eval", "shapes-demo"]) == 2
    assert "give --data (JSONL records) or --coco" in capsys.readouterr().err


def test_segment_evaluation_reports_box_and_mask_figures_from_the_models_own_vae(demo, tmp_path):
    from vlmzoo.tasks import get_postprocessor

    model, processor = demo
    shapes = write_coco_dataset(tmp_path, seed=1001, num_images=2, size=112)
    post = get_postprocessor("segment", vae=processor.mask_vae)
    evaluation = evaluate_coco(model, processor, shapes, task="segment", postprocessor=post,
                               classes_per_prompt=1, no_match="none", progress=False)  # fmt: skip
    assert [m.iou_type for m in evaluation.metrics] == ["bbox", "segm"]
    masks = [r for r in evaluation.results if "segmentation" in r]
    assert masks and evaluation.metrics[1].overall == coco_metrics(shapes, masks, "segm").overall
    assert evaluation.metrics[1].overall["AP50"] > 0.5  # the demo model's masks cover its shapes
