"""Tasks: loc-token parsing, round trips through the text format, text tasks, results as dicts, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlmzoo
from vlmzoo.registry import UnknownKeyError
from vlmzoo.tasks import (
    DetectedObject,
    ImageSizeError,
    TaskError,
    clean_text,
    format_objects,
    get_postprocessor,
    parse_located_text,
)

W, H = 640, 480


def loc(*values):
    return "".join(f"<loc{v:04d}>" for v in values)


# ------------------------------------------------------------------------------------------------- detect


def test_detect_is_registered_by_the_builtin_plugin_and_exported_at_top_level():
    assert vlmzoo.get_postprocessor is get_postprocessor
    assert {"detect", "caption", "ocr", "answer"} <= set(vlmzoo.get_registries().postprocessor.keys())
    assert vlmzoo.get_registries().postprocessor.owner("detect") == "vlmzoo"
    info = {p.name: p for p in vlmzoo.list_plugins()}["vlmzoo.builtin.postprocessors"]
    assert "detect" in info.registered["postprocessor"]


def test_detect_scales_bins_to_pixels_with_big_vision_convention_by_default():
    result = get_postprocessor("detect").parse(loc(0, 1023, 1023, 0) + " tiger", image_size=(W, H))
    (obj,) = result.objects
    # ymin=0, xmin=1023, ymax=1023, xmax=0: corners are ordered, the far edge is the image edge with /1023.
    assert obj.label == "tiger" and obj.box == (0.0, 0.0, float(W), float(H))
    assert obj.mask is None and obj.score is None
    result = get_postprocessor("detect").parse(loc(190, 22, 980, 1023) + " tiger", image_size=(W, H))
    assert result.objects[0].box == pytest.approx((22 / 1023 * W, 190 / 1023 * H, W, 980 / 1023 * H))


def test_detect_bins_1024_is_the_official_demo_convention():
    text = loc(512, 256, 1023, 1023) + " cat"
    box = get_postprocessor("detect", bins=1024).parse(text, image_size=(1024, 2048)).objects[0].box
    assert box == (256.0, 1024.0, 1023.0, 2046.0)
    box = get_postprocessor("detect").parse(text, image_size=(1023, 1023)).objects[0].box
    assert box == (256.0, 512.0, 1023.0, 1023.0)


def test_detect_parses_tricky_strings():
    text = (
        "Here you go: " + loc(10, 20, 30, 40) + " teddy bear ; " + loc(1, 2, 3, 4) + " l'œuf 2 ; "
        "nothing here ; " + loc(5, 6, 7, 8) + " 猫  ;" + loc(9, 9, 99, 99) + "Straße-Nr. 5<eos><pad><pad>"
    )
    result = get_postprocessor("detect").parse(text, image_size=(W, H))
    assert result.labels == ["teddy bear", "l'œuf 2", "猫", "Straße-Nr. 5"]
    assert result.text == "Here you go: teddy bear ; l'œuf 2 ; nothing here ; 猫 ; Straße-Nr. 5"
    assert result.raw_text == text


@pytest.mark.parametrize(
    "tail",
    ["", loc(1), loc(1, 2), loc(1, 2, 3), loc(1, 2, 3, 4), loc(1, 2, 3, 4) + "  ", loc(1, 2, 3, 4) + "<eos>"],
)
def test_a_cut_off_last_object_is_dropped(tail):
    text = loc(100, 100, 200, 200) + " cat ; " + tail
    assert get_postprocessor("detect").parse(text, image_size=(W, H)).labels == ["cat"]


def test_damaged_groups_are_skipped_not_errors():
    text = loc(1, 2) + " stray words " + loc(10, 10, 20, 20) + " dog ; <seg001> ; " + loc(3, 4, 5) + ";"
    assert get_postprocessor("detect").parse(text, image_size=(W, H)).labels == ["dog"]
    assert get_postprocessor("detect").parse("", image_size=(W, H)).objects == []
    assert get_postprocessor("detect").parse("<eos>", image_size=(W, H)).text == ""


def test_boxes_are_clamped_to_the_image():
    # with a denominator smaller than the top bin a box would pass the image edge
    box = get_postprocessor("detect", bins=1000).parse(loc(0, 0, 1023, 1023) + " x", image_size=(W, H)).objects[0].box
    assert box == (0.0, 0.0, float(W), float(H))


# --------------------------------------------------------------------------------------------- round trips

_SCRIPTS = "abcxyzABCXYZ0123456789'-.éœßçøÅñ日本語猫犬한국어кошкаπαγκόσμιαعربي"
labels = st.text(alphabet=_SCRIPTS + " ", min_size=1, max_size=18).map(lambda s: " ".join(s.split())).filter(bool)


@st.composite
def objects_and_size(draw):
    width = draw(st.integers(1, 5000))
    height = draw(st.integers(1, 5000))
    objs = []
    for _ in range(draw(st.integers(0, 6))):
        locs = [draw(st.integers(0, 1023)) for _ in range(4)]
        ymin, ymax = sorted(locs[0::2])
        xmin, xmax = sorted(locs[1::2])
        objs.append((draw(labels), (ymin, xmin, ymax, xmax)))
    return objs, (width, height)


def _render(objs):
    return " ; ".join(loc(*locs) + " " + label for label, locs in objs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=objects_and_size(), bins=st.sampled_from([1023, 1024]))
def test_round_trip_random_objects_through_text(data, bins):
    objs, size = data
    # every box kept: random objects may repeat one another, which parsing drops by default
    result = get_postprocessor("detect", bins=bins, repeat_iou=None).parse(_render(objs) + "<eos>", image_size=size)
    assert result.labels == [label for label, _ in objs]
    for obj, (_, (ymin, xmin, ymax, xmax)) in zip(result.objects, objs, strict=True):
        width, height = size
        expected = tuple(
            min(v / bins * side, side) for v, side in ((xmin, width), (ymin, height), (xmax, width), (ymax, height))
        )
        assert obj.box == pytest.approx(expected, abs=1e-9)
    # format_objects writes the same bins back (for bins=1023 exactly the text the model would write)
    if bins == 1023:
        assert format_objects(result.objects, size) == _render(objs)


@settings(max_examples=150, deadline=None)
@given(data=objects_and_size(), cut=st.integers(0, 10_000))
def test_cut_off_tails_keep_every_complete_object(data, cut):
    objs, size = data
    pieces = []  # the text as generated token by token: 4 locs, label words, separators
    label_starts = []  # index of each object's first label word
    for i, (label, locs) in enumerate(objs):
        if i:
            pieces.append(" ;")
        pieces += [f"<loc{v:04d}>" for v in locs]
        label_starts.append(len(pieces))
        pieces += [" " + word for word in label.split(" ")]
    cut = cut % (len(pieces) + 1)
    # every box kept: random objects may repeat one another, which parsing drops by default
    parsed = get_postprocessor("detect", repeat_iou=None).parse("".join(pieces[:cut]), image_size=size).objects
    complete = parse_located_text("".join(pieces))
    # objects cut inside their boxes or before their labels are dropped; the last label may be cut short
    assert len(parsed) == sum(1 for start in label_starts if start < cut)
    for i, obj in enumerate(parsed):
        assert obj.box == complete[i].box(size)
        if i < len(parsed) - 1:
            assert obj.label == complete[i].label
        else:
            assert complete[i].label.startswith(obj.label) and obj.label


@settings(max_examples=100, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=5
    ),
    size=st.tuples(st.integers(1, 3000), st.integers(1, 3000)),
    bins=st.sampled_from([1023, 1024]),
)
def test_format_then_parse_is_within_half_a_bin(boxes, size, bins):
    width, height = size
    objs = [
        DetectedObject(f"obj {i}", (a * width, b * height, c * width, d * height))
        for i, (a, b, c, d) in enumerate(boxes)
    ]
    parsed = get_postprocessor("detect", bins=bins).parse(format_objects(objs, size, bins=bins), image_size=size)
    assert parsed.labels == [o.label for o in objs]
    for got, obj in zip(parsed.objects, objs, strict=True):
        x0, x1 = sorted((obj.box[0], obj.box[2]))
        y0, y1 = sorted((obj.box[1], obj.box[3]))
        tolerance = (0.5 + 1e-6) * max(width, height) / bins + (max(width, height) / bins if bins == 1024 else 0)
        assert got.box == pytest.approx((x0, y0, x1, y1), abs=tolerance)


def test_format_objects_accepts_pairs_and_dicts_and_rejects_separators():
    size = (1023, 1023)
    assert format_objects([("cat", (1, 2, 3, 4))], size) == loc(2, 1, 4, 3) + " cat"
    assert format_objects([{"label": "a b", "box": (0, 0, 1023, 1023)}], size) == loc(0, 0, 1023, 1023) + " a b"
    assert format_objects([("x", (0, 0, 1, 1)), ("y", (0, 0, 1, 1))], size).count(" ; ") == 1
    with pytest.raises(ValueError, match="';'"):
        format_objects([("cat ; dog", (1, 2, 3, 4))], size)


# ------------------------------------------------------------------------------------------------ text tasks


def test_text_tasks_strip_tokens_and_normalise_whitespace():
    for name in ("caption", "ocr", "answer"):
        result = get_postprocessor(name).parse("  a  cat<loc0001> on\n a mat <eos><pad>junk", image_size=(2, 3))
        assert (result.task, result.text, result.objects, result.image_size) == (name, "a cat on a mat", [], (2, 3))
    assert get_postprocessor("caption").parse("<bos>hello<eos>").text == "hello"
    assert clean_text("<image><image>x<seg012>  y") == "x y"


def test_prompts_are_the_ones_the_checkpoints_were_trained_with():
    assert get_postprocessor("detect").prompt(["cat", "dog"]) == "detect cat ; dog"
    assert get_postprocessor("detect").prompt("red  car") == "detect red car"
    assert get_postprocessor("caption").prompt() == "caption en"
    assert get_postprocessor("caption").prompt(lang="de", detail=True) == "describe de"
    assert get_postprocessor("ocr").prompt() == "ocr"
    assert get_postprocessor("answer").prompt("what is this?", lang="fr") == "answer fr what is this?"
    with pytest.raises(TaskError, match="non-empty"):
        get_postprocessor("detect").prompt([])
    with pytest.raises(TaskError, match="';'"):
        get_postprocessor("detect").prompt(["cat ; dog"])
    with pytest.raises(TaskError, match="language code"):
        get_postprocessor("caption").prompt(lang="english please")


# ----------------------------------------------------------------------------------------------- dict / JSON


def test_to_dict_has_coco_bbox_and_corners_and_is_json():
    result = get_postprocessor("detect").parse(loc(0, 0, 1023, 511) + " cat", image_size=(1023, 1023))
    data = json.loads(result.to_json())
    (obj,) = data["objects"]
    assert obj["box"] == [0.0, 0.0, 511.0, 1023.0] and obj["bbox"] == [0.0, 0.0, 511.0, 1023.0]
    assert obj["label"] == "cat" and obj["score"] is None and "segmentation" not in obj
    assert data["task"] == "detect" and data["image_size"] == [1023, 1023]


# --------------------------------------------------------------------------------------------------- errors


def test_unknown_task_names_the_closest():
    with pytest.raises(UnknownKeyError, match="did you mean 'detect'"):
        get_postprocessor("detcet")


def test_unknown_option_lists_the_ones_taken():
    with pytest.raises(TypeError, match="takes: bins"):
        get_postprocessor("detect", bin=1024)
    with pytest.raises(ValueError, match="1023"):
        get_postprocessor("detect", bins=0)


@pytest.mark.parametrize("size", [None, (640,), (640, 0), (-1, 5), (640.0, 480), ("640", "480"), (True, 3), 640])
def test_bad_image_size_is_one_clear_error(size):
    with pytest.raises((ImageSizeError, TaskError), match="image_size"):
        get_postprocessor("detect").parse(loc(1, 2, 3, 4) + " cat", image_size=size)


def test_prepare_task_routes_prompt_options_to_the_prompt_and_the_rest_to_the_postprocessor():
    from vlmzoo.tasks import prepare_task

    post, prompt = prepare_task("detect", ["cat", "dog"], bins=1024)
    assert prompt == "detect cat ; dog" and post.bins == 1024
    post, prompt = prepare_task("answer", "what is this?", lang="de")
    assert prompt == "answer de what is this?"
    same, prompt = prepare_task(post, "wie alt?", lang="fr")
    assert same is post and prompt == "answer fr wie alt?"
    with pytest.raises(TypeError, match="cannot change a post-processor object"):
        prepare_task(post, "why?", bins=1024)
    with pytest.raises(TypeError, match="a task is a name"):
        prepare_task(3, "why?")


def test_a_plugin_whose_postprocessor_raises_at_registration_breaks_nothing_else():
    import warnings

    from conftest import make_plugin

    from vlmzoo.plugins import PluginWarning, plugin_registered

    def register_postprocessors(registry):
        registry.postprocessor.register("half-done", object)
        raise RuntimeError("no model file")

    def register_good(registry):
        registry.postprocessor.register("shout", type("Shout", (vlmzoo.tasks.TextPostprocessor,), {"name": "shout"}))

    with (
        plugin_registered(make_plugin(register_postprocessors=register_postprocessors), "broken-task"),
        plugin_registered(make_plugin(register_postprocessors=register_good), "good-task"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        keys = vlmzoo.get_registries().postprocessor.keys()
        assert "half-done" not in keys and {"detect", "segment", "shout"} <= set(keys)
        assert get_postprocessor("detect").parse(loc(1, 2, 3, 4) + " cat", image_size=(W, H)).labels == ["cat"]
        assert get_postprocessor("shout").parse("hi<eos>").text == "hi"
        info = {p.name: p for p in vlmzoo.list_plugins()}
        assert "RuntimeError: no model file" in info["broken-task"].error and info["good-task"].error is None
    assert any(issubclass(w.category, PluginWarning) and "broken-task" in str(w.message) for w in caught)


def test_box_iou_by_hand():
    from vlmzoo.tasks import box_iou

    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0  # touching corners share no area
    assert box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 0.0  # empty boxes


def test_match_objects_pairs_one_to_one_by_label_best_first():
    from vlmzoo.tasks import match_objects

    truth = [("cat", (0, 0, 10, 10)), ("cat", (20, 0, 30, 10))]
    assert match_objects(truth, truth) == 2
    assert match_objects([("cat", (0, 0, 10, 10))] * 2, truth) == 1  # a repeated box finds one cat
    assert match_objects([("dog", (0, 0, 10, 10))], truth) == 0  # the label must agree
    assert match_objects([("cat", (2, 0, 12, 10))], truth) == 1  # IoU 80/120
    assert match_objects([("cat", (4, 0, 14, 10))], truth) == 0  # IoU 60/140 is under 0.5
