"""Boxes, labels and scores from task text, pinned to hand-computed values.

test_tasks.py checks round trips and properties; these check exact numbers at the edges (the last bin,
the clamp at the image border, IoU at the threshold, the order objects come back in), where an
off-by-one would move a user's box or drop a label without breaking a round trip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import vlmzoo
from vlmzoo.tasks import (
    DetectedObject,
    LocatedText,
    TaskResult,
    box_iou,
    clean_text,
    format_objects,
    located_suffix,
    match_objects,
    parse_located_text,
)
from vlmzoo.tasks.repeats import drop_repeated

# --- bins to pixels and back -------------------------------------------------------------------------------


def test_each_location_goes_to_its_own_side_of_the_box():
    # <loc ymin><loc xmin><loc ymax><loc xmax>, on a wide image so x and y cannot be confused.
    text = "<loc0100><loc0200><loc0300><loc0400> cat"
    result = vlmzoo.get_postprocessor("detect").parse(text, image_size=(2046, 1023))
    assert result.objects[0].box == pytest.approx((400.0, 100.0, 800.0, 300.0))
    assert result.objects[0].locs == (100, 200, 300, 400)
    official = vlmzoo.get_postprocessor("detect", bins=1024).parse(
        "<loc0256><loc0512><loc0768><loc1023> cat", image_size=(1024, 512)
    )
    assert official.objects[0].box == pytest.approx((512.0, 128.0, 1023.0, 384.0))


def test_located_text_box_is_in_pixels_of_the_given_size():
    item = LocatedText(locs=(0, 1023, 1023, 0), label="x")
    assert item.box((640, 480)) == (0.0, 0.0, 640.0, 480.0)  # corners are ordered
    assert item.box((640, 480), bins=1024) == pytest.approx((0.0, 0.0, 640 * 1023 / 1024, 480 * 1023 / 1024))


def test_format_objects_writes_the_bins_big_vision_writes():
    size = (200, 100)
    text = format_objects([("a", (50.0, 25.0, 150.0, 100.0))], size)
    # round(fraction * 1023): y 0.25 -> 256, x 0.25 -> 256, y 1.0 -> 1023, x 0.75 -> 767
    assert text == "<loc0256><loc0256><loc1023><loc0767> a"
    assert format_objects([("a", (50.0, 25.0, 150.0, 100.0))], size, bins=1024) == (
        "<loc0256><loc0256><loc1023><loc0768> a"  # 1024 clips to the last bin
    )
    outside = format_objects([("b", (-10.0, -5.0, 999.0, 999.0))], size)
    assert outside == "<loc0000><loc0000><loc1023><loc1023> b"


def test_format_objects_joins_objects_and_masks_in_order():
    codes = tuple(range(0, 128, 8))
    objects = [
        DetectedObject(label="  big   dog ", box=(0.0, 0.0, 100.0, 100.0), seg_codes=codes),
        {"label": "cat", "box": [0, 0, 50, 50]},
        ("", (0, 0, 100, 100)),
    ]
    text = format_objects(objects, (100, 100))
    seg = "".join(f"<seg{c:03d}>" for c in codes)
    assert text == (
        f"<loc0000><loc0000><loc1023><loc1023>{seg} big dog ; "
        "<loc0000><loc0000><loc0512><loc0512> cat ; "
        "<loc0000><loc0000><loc1023><loc1023>"
    )
    with pytest.raises(ValueError, match="16 codes in 0..127"):
        format_objects([DetectedObject("a", (0, 0, 1, 1), seg_codes=(128,) * 16)], (10, 10))
    with pytest.raises(ValueError, match="16 codes in 0..127"):
        format_objects([DetectedObject("a", (0, 0, 1, 1), seg_codes=(0,) * 15)], (10, 10))
    with pytest.raises(ValueError, match="16 codes in 0..127"):
        format_objects([DetectedObject("a", (0, 0, 1, 1), seg_codes=(-1,) + (0,) * 15)], (10, 10))
    with pytest.raises(ValueError, match="cannot be written"):
        format_objects([("a <loc0001> b", (0, 0, 1, 1))], (10, 10))


# --- parsing: labels, order, masks ----------------------------------------------------------------------


def test_labels_stay_with_their_own_box_in_order():
    text = (
        "<loc0001><loc0002><loc0003><loc0004> red  car ;<loc0005><loc0006><loc0007><loc0008>dog"
        "<loc0009><loc0010><loc0011><loc0012> cat<eos> junk"
    )
    items = parse_located_text(text)
    assert [(i.locs, i.label) for i in items] == [
        ((1, 2, 3, 4), "red car"),
        ((5, 6, 7, 8), "dog"),
        ((9, 10, 11, 12), "cat"),
    ]
    assert all(i.seg_codes is None and not i.has_seg for i in items)


def test_seg_codes_belong_to_the_box_before_them():
    codes = list(range(16))
    seg = "".join(f"<seg{c:03d}>" for c in codes)
    text = f"<loc0001><loc0002><loc0003><loc0004>{seg} a ; <loc0005><loc0006><loc0007><loc0008><seg001><seg002> b"
    first, second = parse_located_text(text)
    assert first.seg_codes == tuple(codes) and first.has_seg and first.label == "a"
    assert second.seg_codes is None and second.has_seg and second.label == "b"  # a cut-off mask
    seventeen = "<loc0001><loc0002><loc0003><loc0004>" + seg + "<seg099> c"
    assert parse_located_text(seventeen)[0].seg_codes == tuple(codes)  # a 17th code is not part of the mask


def test_an_unlabelled_last_box_is_dropped_unless_asked_for():
    text = "<loc0001><loc0002><loc0003><loc0004> a ; <loc0005><loc0006><loc0007><loc0008>"
    assert [i.label for i in parse_located_text(text)] == ["a"]
    assert [i.label for i in parse_located_text(text, keep_unlabelled_tail=True)] == ["a", ""]
    # An unlabelled box in the middle is an object (its label is empty), not a cut-off tail.
    middle = "<loc0001><loc0002><loc0003><loc0004> ; <loc0005><loc0006><loc0007><loc0008> b"
    assert [(i.locs, i.label) for i in parse_located_text(middle)] == [((1, 2, 3, 4), ""), ((5, 6, 7, 8), "b")]


def test_text_inside_a_box_damages_only_that_box():
    text = "<loc0001><loc0002> oops <loc0003><loc0004> a ; <loc0005><loc0006><loc0007><loc0008> b"
    assert [(i.locs, i.label) for i in parse_located_text(text)] == [((5, 6, 7, 8), "b")]
    five = "<loc0001><loc0002><loc0003><loc0004><loc0005> x"
    # A fifth loc ends the first box (an object without a label) and starts a new, incomplete one.
    assert parse_located_text(five) == [LocatedText((1, 2, 3, 4), "")]


def test_detect_result_text_and_labels():
    text = "<bos> <loc0000><loc0000><loc0511><loc1023> big cat ; <loc0100><loc0100><loc0200><loc0200> dog ;<eos><pad>"
    result = vlmzoo.get_postprocessor("detect", repeat_iou=None).parse(text, image_size=(100, 100))
    assert result.labels == ["big cat", "dog"]
    assert result.text == "big cat ; dog"
    assert result.raw_text == text
    assert result.image_size == (100, 100)
    assert all(o.seg_codes is None and o.mask is None for o in result.objects)


def test_clean_text_drops_tokens_and_the_tail():
    assert clean_text("<bos>a  <loc0001>b<seg001>\n c<eos> d <pad>") == "a b c"
    assert clean_text("<image><image>ocr text</s>more") == "ocr text"
    assert vlmzoo.get_postprocessor("caption").parse("<pad>a   cat<unk> sits<eos>x").text == "a cat sits"


# --- IoU, matching and repeats --------------------------------------------------------------------------


def test_box_iou_partial_and_touching_boxes():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (0, 5, 10, 15)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)
    assert box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 0.0


def test_match_objects_counts_iou_exactly_at_the_threshold():
    truth = [("a", (0, 0, 10, 10))]
    half = [("a", (0, 0, 10, 5))]  # IoU exactly 0.5
    assert match_objects(half, truth) == 1
    assert match_objects([("a", (0, 0, 10, 4.9))], truth) == 0
    assert match_objects(half, truth, threshold=0.51) == 0
    assert match_objects([("b", (0, 0, 10, 10))], truth) == 0  # a different label never matches
    # Two predictions of one object: one true positive; best first takes the better box.
    two = [("a", (0, 0, 10, 6)), ("a", (0, 0, 10, 10))]
    assert match_objects(two, truth + [("a", (0, 0, 10, 6))]) == 2
    assert match_objects(two, truth) == 1


def test_repeats_keep_the_best_scored_box_of_each_label():
    objects = [
        DetectedObject("cat", (0, 0, 10, 10), score=0.4),
        DetectedObject("cat", (0, 0, 10, 9), score=0.9),  # IoU 0.9 with the first
        DetectedObject("dog", (0, 0, 10, 10), score=0.1),  # another label: stays
        DetectedObject("cat", (0, 0, 10, 7), score=0.8),  # IoU 0.7 exactly with the first: not more than
        DetectedObject("cat", (50, 50, 60, 60), score=None),
    ]
    kept = drop_repeated(objects, 0.7)
    assert [(o.label, o.box) for o in kept] == [
        ("cat", (0, 0, 10, 9)),
        ("dog", (0, 0, 10, 10)),
        ("cat", (50, 50, 60, 60)),
    ]
    assert drop_repeated(objects, None) == objects
    no_scores = [DetectedObject("a", (0, 0, 10, 10)), DetectedObject("a", (0, 0, 10, 10))]
    assert drop_repeated(no_scores) == no_scores[:1]  # the first written stays


def test_detect_drops_repeats_by_default_and_keeps_them_when_told():
    text = (
        "<loc0000><loc0000><loc1023><loc1023> a ; <loc0000><loc0000><loc1023><loc1000> a ; "
        "<loc0000><loc0000><loc1023><loc1023> b"
    )
    assert vlmzoo.get_postprocessor("detect").parse(text, image_size=(100, 100)).labels == ["a", "b"]
    assert vlmzoo.get_postprocessor("detect", repeat_iou=None).parse(text, (100, 100)).labels == ["a", "a", "b"]
    assert vlmzoo.get_postprocessor("detect", repeat_iou=0.99).parse(text, (100, 100)).labels == ["a", "a", "b"]


# --- targets for training and results as data ---------------------------------------------------------


def test_located_suffix_writes_only_the_named_objects_in_the_given_order():
    objects = [
        DetectedObject("dog", (0, 0, 100, 100)),
        DetectedObject("cat", (0, 0, 50, 50), seg_codes=tuple([3] * 16)),
        DetectedObject("bird", (0, 0, 100, 100)),
    ]
    assert located_suffix("detect cat ; dog", objects, (100, 100)) == (
        "<loc0000><loc0000><loc1023><loc1023> dog ; <loc0000><loc0000><loc0512><loc0512> cat"
    )
    assert located_suffix("detect  horse ", objects, (100, 100)) == ""  # a negative example
    assert located_suffix("segment cat", objects, (100, 100)) == (
        "<loc0000><loc0000><loc0512><loc0512>" + "<seg003>" * 16 + " cat"
    )
    with pytest.raises(ValueError, match="'dog' has none"):
        located_suffix("segment dog ; cat", objects, (100, 100))
    with pytest.raises(ValueError, match="only those take objects"):
        located_suffix("caption en", objects, (100, 100))


def test_to_dict_area_bbox_and_mask_area():
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:5, 3:10] = True
    obj = DetectedObject("a", (3.0, 2.0, 10.0, 5.0), mask=mask, score=0.5, seg_codes=tuple(range(16)))
    data = obj.to_dict()
    assert data["bbox"] == [3.0, 2.0, 7.0, 3.0]
    assert data["area"] == 21.0 and data["score"] == 0.5
    assert data["seg_codes"] == list(range(16))
    assert "segmentation" in data
    plain = DetectedObject("b", (1.0, 2.0, 4.0, 10.0)).to_dict()
    assert plain["area"] == 24.0 and plain["score"] is None and "segmentation" not in plain
    assert (obj.width, obj.height) == (7.0, 3.0)
    result = TaskResult("detect", "a", "raw", [obj], (30, 20))
    assert json.loads(result.to_json()) == json.loads(json.dumps(result.to_dict()))
    assert result.to_dict()["image_size"] == [30, 20] and result.boxes == [obj.box]
