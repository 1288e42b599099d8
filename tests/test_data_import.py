"""Dataset importers: COCO instances, Roboflow PaliGemma JSONL and Hugging Face splits → records with objects."""

from __future__ import annotations

import json

import PIL.Image
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmzoo.cli import main
from vlmzoo.data import records_from_spec
from vlmzoo.data.annotations import AnnotationError, prompt_classes
from vlmzoo.data.coco import coco_records
from vlmzoo.data.huggingface import hf_records
from vlmzoo.data.roboflow import roboflow_records
from vlmzoo.data.shapes_coco import write_coco_dataset
from vlmzoo.tasks import format_objects, get_postprocessor

_COCO_KEYS = ["id", "image_id", "category_id", "bbox", "segmentation", "iscrowd", "file_name", "width", "height",
              "size", "counts"]  # fmt: skip


def _coco(tmp_path, annotations, images=None, categories=None):
    (tmp_path / "a.png").parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.new("RGB", (100, 80)).save(tmp_path / "a.png")
    PIL.Image.new("RGB", (100, 80)).save(tmp_path / "b.png")
    data = {
        "images": images or [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
                             {"id": 2, "file_name": "b.png", "width": 100, "height": 80}],
        "categories": categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": annotations,
    }  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_boxes_become_corner_boxes_with_category_names_and_negatives_stay(tmp_path):
    path = _coco(tmp_path, [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [0, 0, 100, 80]},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [50, 5, 40, 40], "iscrowd": 1},
    ])  # fmt: skip
    first, second = coco_records(path)
    assert first == {
        "image": str(tmp_path / "a.png"),
        "prefix": "detect cat ; dog",
        "objects": [
            {"label": "cat", "box": [10.0, 20.0, 40.0, 60.0]},
            {"label": "dog", "box": [0.0, 0.0, 100.0, 80.0]},
        ],
    }  # the crowd region (id 12) is left out, as COCO-trained detectors do
    assert second == {"image": str(tmp_path / "b.png"), "prefix": "detect cat ; dog", "objects": []}


def test_coco_segment_records_carry_polygons_and_rle_as_given(tmp_path):
    rle = {"size": [80, 100], "counts": [0, 8000]}
    path = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40],
         "segmentation": [[10, 20, 40, 20, 40, 60]]},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 100, 80], "segmentation": rle},
    ])  # fmt: skip
    first, second = coco_records(path, task="segment")
    assert first["prefix"] == "segment cat ; dog"
    assert first["objects"] == [{"label": "cat", "box": [10.0, 20.0, 40.0, 60.0], "mask": [[10, 20, 40, 20, 40, 60]]}]
    assert second["objects"][0]["mask"] == rle


def test_every_bad_coco_annotation_is_named_by_file_and_id(tmp_path):
    path = _coco(tmp_path, [
        {"id": 21, "image_id": 1, "category_id": 3, "bbox": [90, 20, 30, 40]},   # past the right edge
        {"id": 22, "image_id": 1, "category_id": 99, "bbox": [0, 0, 5, 5]},     # unknown category
        {"id": 23, "image_id": 5, "category_id": 3, "bbox": [0, 0, 5, 5]},      # unknown image
        {"id": 24, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 5]},      # empty
        {"id": 25, "image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5],
         "segmentation": {"size": [1, 1], "counts": "0"}},
        {"id": 26, "image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 100.4, 80.0],
         "segmentation": [[0, 0, 100, 0, 100, 80]]},  # within a pixel of the edge: clipped
    ], images=[{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
               {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
               {"id": 3, "file_name": "missing.png", "width": 100, "height": 80}])  # fmt: skip
    with pytest.raises(AnnotationError) as caught:
        coco_records(path, task="segment")
    message = str(caught.value)
    assert message.startswith(f"6 bad annotation(s) in {path}")
    assert (
        "annotation 21: bbox [90, 20, 30, 40] (x, y, width, height): box [90.0, 20.0, 120.0, 60.0] lies outside"
        in message
    )
    assert "annotation 22: category_id 99 is not in 'categories'" in message
    assert "annotation 23: image_id 5 is not in 'images'" in message
    assert "annotation 24: bbox [5, 5, 0, 5] (x, y, width, height): box [5.0, 5.0, 5.0, 10.0] is empty" in message
    assert "annotation 25: segmentation RLE size [1, 1] is not the image's [height, width] [80, 100]" in message
    assert "image 3: file" in message and "missing.png' does not exist" in message
    assert "annotation 26" not in message


def test_a_broken_coco_file_says_what_is_wrong(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"images": []')
    with pytest.raises(AnnotationError, match="x.json: not valid JSON"):
        coco_records(path)
    path.write_text('{"images": [], "annotations": []}')
    with pytest.raises(AnnotationError, match="'categories' is missing"):
        coco_records(path)
    path.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a;b"}]}')
    with pytest.raises(AnnotationError, match="category 1: class name 'a;b' contains ';'"):
        coco_records(path)


def test_many_classes_give_a_seeded_sample_with_present_and_absent_ones():
    import random

    classes = [f"c{i}" for i in range(80)]
    chosen = prompt_classes(classes, {"c3", "c50"}, 6, random.Random("0/1"))
    assert len(chosen) == 6 and {"c3", "c50"} <= set(chosen)  # up to half present, the rest absent
    assert chosen == prompt_classes(classes, {"c3", "c50"}, 6, random.Random("0/1"))
    assert chosen != prompt_classes(classes, {"c3", "c50"}, 6, random.Random("1/1"))
    assert prompt_classes(classes[:4], set(), 6, random.Random(0)) == classes[:4]


def test_the_shapes_coco_dataset_round_trips_through_the_importer(tmp_path):
    path = write_coco_dataset(tmp_path, seed=0, num_images=6, size=64)
    truth = json.loads(path.read_text())
    records = coco_records(path, task="segment")
    assert len(records) == 6 and all(r["prefix"] == "segment circle ; square ; triangle" for r in records)
    assert sum(len(r["objects"]) for r in records) == len(truth["annotations"])
    assert all(PIL.Image.open(r["image"]).size == (64, 64) for r in records)


def test_roboflow_lines_become_objects_whose_boxes_give_back_the_same_tokens(tmp_path):
    PIL.Image.new("RGB", (640, 480)).save(tmp_path / "p.jpg")
    suffix = "<loc0100><loc0200><loc0300><loc0400> cat ; <loc0000><loc0000><loc1023><loc1023> dog"
    lines = [
        {"image": "p.jpg", "prefix": "detect cat ; dog", "suffix": suffix},
        {"image": "p.jpg", "prefix": "detect cat ; dog", "suffix": ""},
        {"image": "p.jpg", "prefix": "caption en", "suffix": "a black picture"},
    ]
    path = tmp_path / "_annotations.train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    first, negative, caption = roboflow_records(path)
    assert first["prefix"] == "detect cat ; dog" and [o["label"] for o in first["objects"]] == ["cat", "dog"]
    assert format_objects([(o["label"], o["box"]) for o in first["objects"]], (640, 480)) == suffix
    assert negative == {"image": str(tmp_path / "p.jpg"), "prefix": "detect cat ; dog", "objects": []}
    assert caption == {"image": str(tmp_path / "p.jpg"), "prefix": "caption en", "suffix": "a black picture"}


def test_bad_roboflow_lines_are_named_by_line_and_object(tmp_path):
    PIL.Image.new("RGB", (64, 64)).save(tmp_path / "p.jpg")
    lines = [
        json.dumps({"image": "p.jpg", "prefix": "detect cat", "suffix": "<loc0100><loc0200><loc0300><loc0400> cow"}),
        json.dumps({"image": "p.jpg", "prefix": "detect cat", "suffix": "<loc0100><loc0200> cat"}),
        json.dumps({"image": "nowhere.jpg", "prefix": "detect cat", "suffix": ""}),
        "{not json",
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError) as caught:
        roboflow_records(path)
    message = str(caught.value)
    assert f"{path}:1: object 1: label 'cow' is not among the prompt's classes" in message
    assert f"{path}:2: suffix holds 1 object(s) but only 0 read" in message
    assert f"{path}:3: image" in message and "nowhere.jpg' does not exist" in message
    assert f"{path}:4: not valid JSON" in message


def test_a_hugging_face_split_with_an_objects_column_gives_detect_records():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "image": datasets.Image(),
        "objects": datasets.Sequence({
            "id": datasets.Value("int64"),
            "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
            "category": datasets.ClassLabel(names=["coverall", "mask"]),
        }),
    })  # fmt: skip
    images = [PIL.Image.new("RGB", (50, 40)), PIL.Image.new("RGB", (50, 40))]
    split = datasets.Dataset.from_dict(
        {"image": images, "objects": [{"id": [7, 8], "bbox": [[1, 2, 10, 20], [0, 0, 50, 40]], "category": [1, 0]},
                                      {"id": [], "bbox": [], "category": []}]},
        features=features,
    )  # fmt: skip
    first, negative = hf_records(split)
    assert first["prefix"] == "detect coverall ; mask" and first["image"].size == (50, 40)
    assert first["objects"] == [{"label": "mask", "box": [1.0, 2.0, 11.0, 22.0]},
                                {"label": "coverall", "box": [0.0, 0.0, 50.0, 40.0]}]  # fmt: skip
    assert negative["objects"] == []
    bad = datasets.Dataset.from_dict(
        {"image": images[:1], "objects": [{"id": [9], "bbox": [[45, 0, 10, 10]], "category": [0]}]}, features=features
    )
    with pytest.raises(AnnotationError, match=r"row 0 object 9: bbox \[45.0, 0.0, 10.0, 10.0\] \(xywh\): .* outside"):
        hf_records(bad)


def test_plain_rows_with_string_labels_and_corner_boxes_work_without_datasets():
    rows = [{"image": PIL.Image.new("RGB", (30, 30)), "objects": [{"bbox": [1, 1, 9, 9], "category": "dot"}]}]
    (record,) = hf_records(rows, bbox_format="xyxy")
    assert record["prefix"] == "detect dot" and record["objects"] == [{"label": "dot", "box": [1.0, 1.0, 9.0, 9.0]}]
    with pytest.raises(AnnotationError, match="row 0 object 0: category 4 is not a known class"):
        hf_records([{"image": rows[0]["image"], "objects": [{"bbox": [1, 1, 2, 2], "category": 4}]}])


def test_vlmzoo_data_convert_writes_records_relative_to_the_output(tmp_path, capsys):
    path = write_coco_dataset(tmp_path / "coco", seed=1, num_images=3, size=64)
    out = tmp_path / "out" / "train.jsonl"
    assert main(["data", "convert", str(path), "--task", "detect", "--out", str(out)]) == 0
    assert "wrote 3 records" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["image"] == "../coco/images/000000.png"
    assert lines == [dict(r, image=f"../coco/{r['image'].split('coco/')[1]}") for r in coco_records(path)]
    assert main(["data", "convert", str(tmp_path / "none.json"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_coco_table_in_a_spec_reads_the_dataset(tmp_path):
    path = write_coco_dataset(tmp_path, seed=2, num_images=2, size=64)
    assert records_from_spec({"coco": str(path), "task": "segment"}) == coco_records(path, task="segment")
    with pytest.raises(ValueError, match=r"coco data has no option\(s\) \['bins'\]"):
        records_from_spec({"coco": str(path), "bins": 3})


def test_parsed_boxes_of_converted_records_match_the_coco_boxes(tmp_path):
    path = write_coco_dataset(tmp_path, seed=3, num_images=2, size=64)
    record = coco_records(path)[0]
    text = format_objects([(o["label"], o["box"]) for o in record["objects"]], (64, 64))
    parsed = get_postprocessor("detect").parse(text, image_size=(64, 64)).objects
    for obj, expected in zip(parsed, record["objects"], strict=True):
        assert obj.box == pytest.approx(expected["box"], abs=64 / 1023)


def test_a_training_config_reads_a_coco_table_relative_to_itself(tmp_path):
    from vlmzoo.training import TrainingConfig

    write_coco_dataset(tmp_path / "data", seed=4, num_images=2, size=64)
    path = tmp_path / "run.toml"
    path.write_text(
        'model = "shapes-demo"\noutput_dir = "out"\nmax_steps = 1\nbatch_size = 1\n'
        'train_data = { coco = "data/instances.json", images = "data", task = "detect" }\n'
    )
    config = TrainingConfig.from_file(path)
    assert config.train_data == {
        "coco": str(tmp_path / "data" / "instances.json"),
        "images": str(tmp_path / "data"),
        "task": "detect",
    }
    assert records_from_spec(config.train_data) == coco_records(tmp_path / "data" / "instances.json")


def test_the_datasets_package_is_imported_only_when_a_dataset_is_named():
    import subprocess
    import sys

    code = "import sys, vlmzoo.data.huggingface, vlmzoo.data; assert 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_coco_segment_records_train_as_boxes_and_mask_codes(tmp_path):
    import vlmzoo
    from vlmzoo.tasks.locations import parse_located_text
    from vlmzoo.training import load_records
    from vlmzoo.training.data import Collator

    path = write_coco_dataset(tmp_path, seed=5, num_images=2, size=64)
    records = load_records(coco_records(path, task="segment"))
    collator = Collator(vlmzoo.load_processor("shapes-demo"))  # shapes-demo ships its mask VQ-VAE
    for record, source in zip(records, coco_records(path, task="segment"), strict=True):
        written = parse_located_text(collator.suffix(record, (64, 64)))
        assert [o.label for o in written] == [o["label"] for o in source["objects"]]
        assert all(o.seg_codes is not None for o in written)  # 4 <loc> + 16 <seg> + label per object
    assert collator(records)["labels"].shape[0] == 2


def test_roboflow_records_load_and_give_back_the_exported_suffix(tmp_path):
    import vlmzoo
    from vlmzoo.training import load_records
    from vlmzoo.training.data import Collator

    PIL.Image.new("RGB", (640, 480)).save(tmp_path / "p.jpg")
    suffix = "<loc0100><loc0200><loc0300><loc0400> cat ; <loc0000><loc0000><loc1023><loc1023> dog"
    path = tmp_path / "_annotations.valid.jsonl"
    path.write_text(json.dumps({"image": "p.jpg", "prefix": "detect cat ; dog", "suffix": suffix}) + "\n")
    (record,) = load_records(roboflow_records(path))
    assert Collator(vlmzoo.load_processor("shapes-demo")).suffix(record, (640, 480)) == suffix


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(-10, 300) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(_COCO_KEYS), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    annotations=st.lists(_JSON, max_size=4),
    images=st.lists(_JSON, max_size=3),
    task=st.sampled_from(["detect", "segment"]),
)
def test_any_coco_content_gives_records_or_one_annotation_error(tmp_path_factory, annotations, images, task):
    folder = tmp_path_factory.mktemp("fuzz")
    PIL.Image.new("RGB", (100, 80)).save(folder / "a.png")
    good = {"id": 1, "file_name": "a.png", "width": 100, "height": 80}
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": [good, *images], "categories": [{"id": 3, "name": "cat"}],
                                "annotations": annotations}))  # fmt: skip
    try:
        records = coco_records(path, task=task)
    except AnnotationError:
        return
    assert all(r["prefix"] == f"{task} cat" for r in records)
