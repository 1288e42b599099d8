"""Results drawn with pillow, and masks as COCO RLE that pycocotools reads."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from vlmzoo.tasks import DetectedObject, TaskResult, draw_objects, label_color, mask_to_rle, rle_to_mask


def _result(objects, size):
    return TaskResult("detect", "", "", objects, size)


@pytest.mark.parametrize("size", [(40, 30), (640, 480), (3000, 1200)])
def test_boxes_are_drawn_in_the_label_colour_where_the_box_is(size):
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    box = (width * 0.25, height * 0.5, width * 0.75, height * 0.9)
    drawn = _result([DetectedObject("cat", box)], size).draw(image)
    assert drawn.size == size and drawn.mode == "RGB" and drawn is not image
    assert image.getpixel((0, 0)) == (255, 255, 255)  # the caller's image is untouched
    pixels = np.asarray(drawn)
    color = label_color("cat")
    x0, y0, x1, y1 = (round(v) for v in box)
    assert tuple(pixels[(y0 + y1) // 2, x0]) == color  # left edge
    assert tuple(pixels[y1 - 1, (x0 + x1) // 2]) == color  # bottom edge
    assert tuple(pixels[(y0 + y1) // 2, (x0 + x1) // 2]) == (255, 255, 255)  # inside stays clear
    assert tuple(pixels[height - 1, 0]) == (255, 255, 255)  # outside too
    # the label tag sits above the box, filled with the colour, and holds text pixels of another colour
    tag = pixels[max(0, y0 - 8) : y0, x0 : x0 + 8].reshape(-1, 3)
    assert (tag == color).all(axis=1).any()


def test_label_text_scales_with_the_image():
    def tag_height(size):
        image = Image.new("RGB", size, (255, 255, 255))
        w, h = size
        drawn = np.asarray(draw_objects(image, [DetectedObject("dog", (0, h / 2, w / 2, h))]))
        column = drawn[: h // 2, 2]
        return int((column == label_color("dog")).all(axis=1).sum())

    small, large = tag_height((64, 64)), tag_height((2000, 2000))
    assert 10 <= small < 30 and large > 4 * small


def test_colours_are_stable_per_label_and_overridable():
    assert label_color("cat") == label_color("cat")
    assert len({label_color(f"label {i}") for i in range(50)}) > 10
    image = Image.new("RGB", (50, 50))
    drawn = draw_objects(image, [DetectedObject("cat", (10, 10, 40, 40))], colors={"cat": (1, 2, 3)}, show_labels=False)
    assert drawn.getpixel((10, 25)) == (1, 2, 3)


def test_masks_are_translucent_fills():
    size = (20, 10)
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:5, 3:8] = True
    image = Image.new("RGB", size, (0, 0, 0))
    obj = DetectedObject("blob", (0, 0, 20, 10), mask=mask)
    drawn = np.asarray(draw_objects(image, [obj], mask_alpha=0.5, show_labels=False, line_width=1)).astype(int)
    expected = np.round(0.5 * np.asarray(label_color("blob")))
    assert (np.abs(drawn[3, 5] - expected) <= 1).all()
    assert (drawn[7, 10] == 0).all()
    with pytest.raises(ValueError, match="mask of shape"):
        draw_objects(Image.new("RGB", (5, 5)), [obj])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_drawn_images_save_as_png_and_jpeg(fmt, tmp_path):
    rgba = Image.new("RGBA", (64, 48), (10, 20, 30, 128))
    drawn = _result([DetectedObject("été", (5, 5, 40, 40), score=0.9)], (64, 48)).draw(rgba)
    path = tmp_path / f"out.{fmt.lower()}"
    drawn.save(path)
    with Image.open(path) as loaded:
        assert loaded.format == fmt and loaded.size == (64, 48)
    buffer = io.BytesIO()
    drawn.save(buffer, format=fmt)
    assert buffer.tell() > 0


def test_draw_accepts_a_path_and_an_array(tmp_path):
    path = tmp_path / "in.png"
    Image.new("RGB", (30, 20), (9, 9, 9)).save(path)
    objs = [DetectedObject("a", (0, 0, 10, 10))]
    assert draw_objects(path, objs).size == (30, 20)
    assert draw_objects(np.zeros((20, 30, 3), np.uint8), objs).size == (30, 20)


# ------------------------------------------------------------------------------------------------------ RLE


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
@settings(max_examples=200, deadline=None)
@given(mask=arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_rle_round_trips_and_matches_pycocotools(mask):
    rle = mask_to_rle(mask)
    assert rle["size"] == list(mask.shape)
    assert np.array_equal(rle_to_mask(rle), mask)
    assert np.array_equal(rle_to_mask(json.loads(json.dumps(rle))), mask)
    coco = pytest.importorskip("pycocotools.mask")
    theirs = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert theirs["counts"].decode("ascii") == rle["counts"]
    assert np.array_equal(coco.decode(rle).astype(bool), mask)  # pycocotools reads ours (str counts)


def test_rle_reads_uncompressed_counts_and_rejects_bad_ones():
    assert rle_to_mask({"size": [2, 2], "counts": [1, 2, 1]}).tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError, match="cover"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="COCO RLE"):
        rle_to_mask({"counts": "0"})


def test_to_dict_writes_masks_as_rle_and_area_from_the_mask():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:5] = True
    data = _result([DetectedObject("m", (2, 1, 5, 3), mask=mask, seg_codes=tuple(range(16)))], (6, 4)).to_dict()
    (obj,) = data["objects"]
    assert obj["area"] == 6 and obj["bbox"] == [2.0, 1.0, 3.0, 2.0] and obj["seg_codes"] == list(range(16))
    assert np.array_equal(rle_to_mask(obj["segmentation"]), mask)
    json.dumps(data)
