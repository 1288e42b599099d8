"""Training records that give objects (boxes, masks) instead of a written suffix."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
import torch
from conftest import ScriptedAnswers
from tiny_tokenizer import make_tiny_processor_dir

import vlmzoo
from vlmzoo.tasks import format_objects, get_postprocessor, mask_to_rle
from vlmzoo.training import Collator, DataError, load_records, validate
from vlmzoo.training.data import EpochIndex, RecordDataset

WIDTH, HEIGHT = 60, 40
TRIANGLE = [10, 5, 30, 5, 10, 25]  # polygon x, y, ...
SQUARE_BOX = [35, 10, 55, 30]


@pytest.fixture(scope="module")
def vae():
    """The shapes demo's mask VQ-VAE: trained, so circles, squares and triangles get different codes."""
    return vlmzoo.load_processor("shapes-demo").mask_vae


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    directory = make_tiny_processor_dir(tmp_path_factory.mktemp("proc"), image_size=28, num_image_tokens=4)["path"]
    return vlmzoo.load_processor(directory)


def polygon_mask(points) -> np.ndarray:
    canvas = PIL.Image.new("L", (WIDTH, HEIGHT), 0)
    PIL.ImageDraw.Draw(canvas).polygon(list(zip(points[::2], points[1::2], strict=True)), fill=1)
    return np.asarray(canvas) > 0


def square_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    x0, y0, x1, y1 = SQUARE_BOX
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def data_dir(tmp_path):
    PIL.Image.new("RGB", (WIDTH, HEIGHT), "white").save(tmp_path / "scene.png")
    PIL.Image.fromarray(square_mask().astype(np.uint8) * 255).save(tmp_path / "square.png")
    return tmp_path


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def coco_mask(points):
    """pycocotools' own rasterisation of a polygon (what the loader must give back)."""
    from pycocotools import mask as coco

    with warnings.catch_warnings():  # pycocotools' numpy 2 deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.decode(coco.merge(coco.frPyObjects([points], HEIGHT, WIDTH))).astype(bool)


def test_each_mask_form_becomes_the_same_segment_target(data_dir, processor, vae):
    square_rle = mask_to_rle(square_mask())
    uncompressed = {"size": [HEIGHT, WIDTH], "counts": _runs(square_mask())}
    forms = {
        "polygon": [[35, 10, 55, 10, 55, 30, 35, 30]],
        "RLE": square_rle,
        "uncompressed RLE": uncompressed,
        "image file": "square.png",
    }
    lines = [{"image": "scene.png", "prefix": "segment square", "objects": [{"label": "square", "mask": m}]}
             for m in forms.values()]  # fmt: skip
    records = load_records(write_jsonl(data_dir / "data.jsonl", lines))
    validate(records, processor)
    collator = Collator(processor, vae=vae)
    suffixes = [collator.suffix(r, (WIDTH, HEIGHT)) for r in records]
    segment = get_postprocessor("segment", vae=vae)
    masks = [r.objects[0].mask_array((WIDTH, HEIGHT)) for r in records]
    assert all(np.array_equal(m, masks[1]) for m in masks[1:]) and np.array_equal(masks[1], square_mask())
    # the polygon as pycocotools rasterises it (its edge pixels differ from a filled numpy square)
    assert np.array_equal(masks[0], coco_mask([35, 10, 55, 10, 55, 30, 35, 30]))
    for record, mask, suffix in zip(records, masks, suffixes, strict=True):
        rows, cols = np.nonzero(mask)
        box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)  # the tight box: no box was given
        codes = segment.encode_masks(mask[None], [box])[0].tolist()
        expected = format_objects([{"label": "square", "box": box, "seg_codes": codes}], (WIDTH, HEIGHT))
        assert suffix == expected, record.where
    assert suffixes[1].count("<seg") == 16 and suffixes[1].endswith(" square")


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def test_only_named_objects_in_record_order_and_detect_writes_no_codes(data_dir, processor, vae):
    objects = [
        {"label": "triangle", "mask": [TRIANGLE]},
        {"label": "square", "box": SQUARE_BOX, "mask": "square.png"},
        {"label": "dog", "box": [0, 0, 5, 5]},
    ]
    lines = [
        {"image": "scene.png", "prefix": "segment square ; triangle", "objects": objects[:2]},
        {"image": "scene.png", "prefix": "detect square ; triangle ; dog", "objects": objects},
        {"image": "scene.png", "prefix": "segment circle", "objects": objects[:2]},
    ]
    records = load_records(write_jsonl(data_dir / "data.jsonl", lines))
    collator = Collator(processor, vae=vae)
    segment, detect, negative = (collator.suffix(r, (WIDTH, HEIGHT)) for r in records)
    rows, cols = np.nonzero(coco_mask(TRIANGLE))  # no box given: the tight box of the rasterised polygon
    triangle_box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    located = get_postprocessor("segment", vae=vae).parse(segment, image_size=(WIDTH, HEIGHT)).objects
    assert [o.label for o in located] == ["triangle", "square"]
    assert located[0].seg_codes != located[1].seg_codes  # each object's own mask
    expected_detect = format_objects(
        [("triangle", triangle_box), ("square", SQUARE_BOX), ("dog", (0, 0, 5, 5))], (WIDTH, HEIGHT)
    )
    assert detect == expected_detect and "<seg" not in detect
    assert negative == ""
    batch = collator(records)
    last = batch["labels"][2][batch["labels"][2] != -100].tolist()
    assert last == [processor.eos_token_id]  # a negative example: the model learns to answer nothing


def test_objects_are_shuffled_per_epoch_with_the_seed_and_codes_encoded_once(data_dir, processor, vae, monkeypatch):
    objects = [{"label": "shape", "box": [i * 6, i * 2, i * 6 + 5, i * 2 + 5]} for i in range(8)]
    objects.append({"label": "shape", "mask": [TRIANGLE]})
    line = {"image": "scene.png", "prefix": "segment shape", "objects": [o | {"mask": [TRIANGLE]} for o in objects]}
    records = load_records(write_jsonl(data_dir / "data.jsonl", [line]))
    dataset = RecordDataset(records)
    collator = Collator(processor, vae=vae, shuffle_seed=7)
    calls = []
    encode = collator._encode
    monkeypatch.setattr(collator, "_encode", lambda *args: calls.append(args[2]) or encode(*args))

    def order(item):
        text = collator.suffix(dataset[item], (WIDTH, HEIGHT))
        return [p.split("><seg")[0] for p in text.split(" ; ")]

    plain = order(0)
    epoch0, epoch1, again = order(EpochIndex(0, 0)), order(EpochIndex(0, 1)), order(EpochIndex(0, 0))
    assert epoch0 == again and epoch0 != epoch1 and epoch0 != plain and sorted(epoch0) == sorted(plain)
    assert calls == [list(range(9))]  # every mask encoded once, then read from the cache
    other_seed = Collator(processor, vae=vae, shuffle_seed=8)
    assert other_seed.suffix(dataset[EpochIndex(0, 0)], (WIDTH, HEIGHT)) != collator.suffix(
        dataset[EpochIndex(0, 0)], (WIDTH, HEIGHT)
    )


def test_python_records_take_mask_arrays(processor, vae):
    image = PIL.Image.new("RGB", (WIDTH, HEIGHT), "white")
    records = load_records([{"image": image, "prefix": "segment square",
                             "objects": [{"label": "square", "box": SQUARE_BOX, "mask": square_mask()}]}])  # fmt: skip
    validate(records, processor)
    suffix = Collator(processor, vae=vae).suffix(records[0], image.size)
    codes = get_postprocessor("segment", vae=vae).encode_masks(square_mask()[None], [SQUARE_BOX])[0].tolist()
    assert suffix == format_objects([{"label": "square", "box": SQUARE_BOX, "seg_codes": codes}], image.size)


def test_bad_objects_are_named_by_file_line_and_object(data_dir, processor):
    good = {"label": "square", "box": SQUARE_BOX, "mask": "square.png"}
    lines = [
        {"image": "scene.png", "prefix": "segment square", "objects": [good], "suffix": "x"},  # 1: both
        {"image": "scene.png", "prefix": "segment square", "objects": [{"label": "square", "box": SQUARE_BOX}]},
        {"image": "scene.png", "prefix": "detect square", "objects": [good, {"label": "a;b", "box": [1, 2, 3, 4]}]},
        {"image": "scene.png", "prefix": "detect square", "objects": [{"label": "square", "box": [5, 5, 2, 9]}]},
        {"image": "scene.png", "prefix": "segment square", "objects": [good | {"mask": "missing.png"}]},
        {"image": "scene.png", "prefix": "segment square", "objects": [good | {"mask": [[1, 2, 3]]}]},
        {"image": "scene.png", "prefix": "caption en", "objects": [good]},
        {"image": "scene.png", "prefix": "detect square", "objects": [good | {"colour": "red"}]},
    ]
    with pytest.raises(DataError) as info:
        load_records(write_jsonl(data_dir / "bad.jsonl", lines))
    message = str(info.value)
    for line, text in [
        (1, "give either 'suffix' or 'objects', not both"),
        (2, "object 0: a segment record needs a 'mask'"),
        (3, "object 1: 'label' must be"),
        (4, "object 0: 'box' must be [x0, y0, x1, y1]"),
        (5, "object 0: mask file"),
        (6, "object 0: 'mask' must be COCO polygons"),
        (7, "'objects' need a prefix 'detect a ; b' or 'segment a ; b'"),
        (8, "object 0: unknown field(s) 'colour'"),
    ]:
        assert f"bad.jsonl:{line}: {text}" in message, (line, message)


def test_objects_that_do_not_fit_the_image_are_found_before_training(data_dir, processor):
    empty = np.zeros((HEIGHT, WIDTH), dtype=bool)
    lines = [
        {"image": "scene.png", "prefix": "detect square", "objects": [{"label": "square", "box": [30, 10, 80, 20]}]},
        {"image": "scene.png", "prefix": "segment square",
         "objects": [{"label": "square", "mask": mask_to_rle(np.zeros((10, 10), dtype=bool) | True)}]},
        {"image": "scene.png", "prefix": "segment square",
         "objects": [{"label": "square", "mask": mask_to_rle(empty)}]},
    ]  # fmt: skip
    records = load_records(write_jsonl(data_dir / "fit.jsonl", lines))
    with pytest.raises(DataError) as info:
        validate(records, processor)
    message = str(info.value)
    assert "fit.jsonl:1: object 0 ('square'): box [30.0, 10.0, 80.0, 20.0] is outside the 60x40 image" in message
    assert "fit.jsonl:2: object 0 ('square'): mask RLE size [10, 10] is not the image's [40, 60]" in message
    assert "fit.jsonl:3: object 0 ('square'): mask is empty" in message


def test_a_segmentation_fine_tune_runs_from_records_with_masks(tmp_path, processor, vae):
    """One command's worth: records with masks in, a model and segment metrics out."""
    from conftest import tiny_config
    from tiny_tokenizer import TINY_VOCAB_SIZE

    image = PIL.Image.new("RGB", (WIDTH, HEIGHT), "white")
    PIL.ImageDraw.Draw(image).rectangle([35, 10, 54, 29], fill="red")
    records = [{"image": image, "prefix": "segment square",
                "objects": [{"label": "square", "box": SQUARE_BOX, "mask": square_mask()}]}] * 4  # fmt: skip
    processor = vlmzoo.load_processor(processor.save_pretrained(tmp_path / "proc")[0].parent)
    processor.mask_vae = vae
    torch.manual_seed(0)
    model = vlmzoo.train(
        vlmzoo.build(tiny_config(vocab_size=TINY_VOCAB_SIZE, num_layers=1), seed=0),
        processor,
        records,
        eval_data=records[:2],
        output_dir=tmp_path / "run",
        max_steps=30,
        batch_size=4,
        learning_rate=1e-2,
        eval_every=30,
    )
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [m for m in metrics if "eval_loss" in m][-1]
    assert final["segment_examples"] == 2 and 0 <= final["segment_miou"] <= 1
    assert final["eval_loss"] < 0.5 * [m["loss"] for m in metrics if "loss" in m][0]
    assert (tmp_path / "run" / "mask_vae.safetensors").is_file()  # the model keeps its VQ-VAE
    assert vlmzoo.load_processor(tmp_path / "run").mask_vae.name == "mask_vae.safetensors"
    assert not model.training


# ------------------------------------------------------------------------------------------ segment scores


def test_segmentation_tally_follows_big_visions_definitions():
    from vlmzoo.tasks import DetectedObject
    from vlmzoo.tasks.segmentation_metrics import SegmentationTally, TrueObject

    def square(x0, y0, x1, y1):
        mask = np.zeros((20, 20), dtype=bool)
        mask[y0:y1, x0:x1] = True
        return mask

    truth = [
        TrueObject("a", (0, 0, 10, 10), square(0, 0, 10, 10)),
        TrueObject("a", (10, 10, 20, 20), square(10, 10, 20, 20)),
    ]  # noqa: E501
    half = DetectedObject("a", (0, 0, 10, 10), mask=square(0, 0, 10, 5), seg_codes=(0,) * 16, locs=(0, 0, 500, 500))
    cut_off = DetectedObject("a", (10, 10, 20, 20), mask=None, seg_codes=None, locs=(500, 500, 1000, 1000))
    tally = SegmentationTally()
    tally.add([half, cut_off], truth)  # one half mask; one answer without its 16 codes: invalid, IoU 0
    tally.add([], truth[:1])  # nothing answered where an object was expected: invalid, IoU 0
    tally.add([], [])  # nothing to find, nothing found: not scored
    metrics = tally.metrics()
    assert metrics["miou"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert metrics["boxacc@0.5"] == pytest.approx(1 / 3)
    assert metrics["invalid"] == 2 and metrics["invalid_rate"] == pytest.approx(2 / 3)
    assert metrics["objects"] == 3


def test_segment_records_are_scored_from_generated_answers(processor, vae):
    from vlmzoo.training.evaluation import segmentation_scores

    image = PIL.Image.new("RGB", (WIDTH, HEIGHT), "white")
    records = load_records([
        {"image": image, "prefix": "segment square",
         "objects": [{"label": "square", "box": SQUARE_BOX, "mask": square_mask()}]},
        {"image": image, "prefix": "caption en", "suffix": "white"},
    ])  # fmt: skip
    processor.mask_vae = vae
    perfect = Collator(processor).suffix(records[0], image.size)

    try:
        scores = segmentation_scores(ScriptedAnswers(processor, [perfect]), processor, records)
        assert scores["segment_examples"] == 1 and scores["segment_invalid"] == 0
        assert scores["segment_miou"] > 0.85 and scores["segment_boxacc@0.5"] == 1.0  # the VQ-VAE's round trip
        assert scores["segment_AP50"] == pytest.approx(1.0) and scores["segment_AR100"] > 0.5  # COCO mask figures
        tokens = re.findall(r"<[^>]+>", perfect)
        assert len(tokens) == 20
        moved = "<loc0000><loc0000><loc0200><loc0200>" + "".join(tokens[4:]) + " square"
        scores = segmentation_scores(ScriptedAnswers(processor, [moved]), processor, records)
        assert scores["segment_miou"] == 0 and scores["segment_boxacc@0.5"] == 0 and scores["segment_mAP"] == 0
        truncated = "".join(tokens[:19]) + " square"  # 15 of the 16 codes
        scores = segmentation_scores(ScriptedAnswers(processor, [truncated]), processor, records)
        assert scores["segment_invalid"] == 1 and scores["segment_miou"] == 0
    finally:
        processor.mask_vae = None


def test_a_processor_names_its_mask_vae_and_saves_it_beside_its_files(tmp_path, processor, vae):
    from vlmzoo.errors import InvalidFileError

    processor.mask_vae = vae
    try:
        written = processor.save_pretrained(tmp_path / "proc")
    finally:
        processor.mask_vae = None
    assert tmp_path / "proc" / "mask_vae.safetensors" in written
    assert (tmp_path / "proc" / "mask_vae.safetensors").read_bytes() == vae.read_bytes()
    assert vlmzoo.load_processor(tmp_path / "proc").mask_vae == tmp_path / "proc" / "mask_vae.safetensors"
    (tmp_path / "proc" / "mask_vae.safetensors").unlink()
    with pytest.raises(InvalidFileError, match=r"preprocessor_config.json: mask_vae: 'mask_vae.safetensors' is not"):
        vlmzoo.load_processor(tmp_path / "proc")


def test_vlmzoo_eval_reports_segmentation_figures(tmp_path, capsys, monkeypatch):
    from vlmzoo.cli import main
    from vlmzoo.data import shapes

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = shapes.write_dataset(tmp_path / "data", seed=41, num_images=3, size=64, kinds=["segment_shape"])
    assert main(["eval", "shapes-demo", "--data", str(data)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["segment_examples"] == 3 and 0 <= metrics["segment_miou"] <= 1
    assert {"segment_boxacc@0.5", "segment_invalid", "segment_invalid_rate"} <= set(metrics)
