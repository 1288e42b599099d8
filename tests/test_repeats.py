"""Repeated boxes: dropped when parsing, the higher-scored one kept when scores are known."""

from __future__ import annotations

import pytest

import vlmzoo
from vlmzoo.tasks import DetectedObject, get_postprocessor
from vlmzoo.tasks.repeats import REPEAT_IOU, drop_repeated
from vlmzoo.tasks.scoring import parse_scored

TWICE = "<loc0100><loc0100><loc0500><loc0500> cat ; <loc0102><loc0101><loc0502><loc0500> cat ; " \
        "<loc0100><loc0100><loc0500><loc0500> dog"  # fmt: skip


def test_detect_drops_a_repeated_box_of_the_same_label_by_default():
    objects = get_postprocessor("detect").parse(TWICE, image_size=(100, 100)).objects
    assert [o.label for o in objects] == ["cat", "dog"]  # the dog overlaps fully, but is another label
    assert objects[0].locs == (100, 100, 500, 500)  # no scores: the first written stays
    assert len(get_postprocessor("detect", repeat_iou=None).parse(TWICE, image_size=(100, 100)).objects) == 3


def test_the_higher_score_stays_and_the_threshold_is_strict():
    low, high = DetectedObject("a", (0, 0, 10, 10), score=0.2), DetectedObject("a", (0, 0, 10, 9), score=0.9)
    assert drop_repeated([low, high]) == [high]
    apart = DetectedObject("a", (0, 0, 10, 7), score=0.9)  # IoU 0.7 exactly: not above the threshold
    assert drop_repeated([low, apart], REPEAT_IOU) == [low, apart]
    with pytest.raises(ValueError, match="repeat_iou must be a number in"):
        get_postprocessor("detect", repeat_iou=1.5)


def test_parse_scored_keeps_the_repeat_the_model_was_surer_of():
    processor = vlmzoo.load_processor("shapes-demo")
    text = "<loc0100><loc0100><loc0500><loc0500> circle ; <loc0102><loc0101><loc0502><loc0500> circle"
    ids = processor.tokenizer.encode(text, add_special_tokens=False).ids + [processor.eos_token_id]
    split = ids.index(processor.tokenizer.token_to_id("<loc0102>"))
    probabilities = [0.3] * split + [0.9] * (len(ids) - split)
    result = parse_scored(get_postprocessor("detect"), text, (64, 64), ids, probabilities, processor)
    assert [o.locs for o in result.objects] == [(102, 101, 502, 500)]
    assert result.objects[0].score == pytest.approx(0.9)
