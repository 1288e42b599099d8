"""The synthetic shapes dataset and the demo tokenizer: what the bundled shapes-demo model learns from."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import numpy as np
import PIL.Image
import pytest

from vlmzoo.data import shapes
from vlmzoo.data.shapes_tokenizer import build_tokenizer
from vlmzoo.processing import IGNORE_INDEX, PaliGemmaProcessor
from vlmzoo.tasks import box_iou, rle_to_mask

LOC = re.compile(r"<loc(\d{4})>")


def scenes(seed: int, count: int, size: int = 224) -> list[shapes.Scene]:
    rng = random.Random(seed)
    return [shapes.generate_scene(rng, size=size) for _ in range(count)]


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, b, c = scenes(3, 5), scenes(3, 5), scenes(4, 5)
    assert [s.shapes for s in a] == [s.shapes for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b, strict=True))
    assert [s.shapes for s in a] != [s.shapes for s in c]


@pytest.mark.parametrize("size", [64, 224])
def test_scenes_follow_the_rules(size):
    counts = Counter()
    for scene in scenes(0, 200, size=size):
        assert scene.size == (size, size)
        assert 1 <= len(scene.shapes) <= 3
        counts[len(scene.shapes)] += 1
        for shape in scene.shapes:
            x0, y0, x1, y1 = shape.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert round(0.15 * size) <= x1 - x0 <= round(0.35 * size)
            assert shape.kind in shapes.KINDS and shape.colour in shapes.COLOURS
        for i, a in enumerate(scene.shapes):
            for b in scene.shapes[i + 1 :]:
                assert box_iou(a.box, b.box) == 0
        assert [s.box[1] for s in scene.shapes] == sorted(s.box[1] for s in scene.shapes)
    assert set(counts) == {1, 2, 3}


def test_shapes_are_drawn_where_their_boxes_say():
    for scene in scenes(1, 30):
        pixels = np.asarray(scene.image).astype(int)
        background = pixels[0, 0] if not any(s.box[0] == 0 and s.box[1] == 0 for s in scene.shapes) else None
        for shape in scene.shapes:
            x0, y0, x1, y1 = shape.box
            colour = np.array(shapes.COLOURS[shape.colour])
            inside = np.all(pixels[y0:y1, x0:x1] == colour, axis=-1)
            # The shape touches all four sides of its box, and fills the expected share of it.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            share = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}[shape.kind]
            assert inside.mean() == pytest.approx(share, abs=0.08)
            # Nothing of its colour outside a one-pixel ring around its box, apart from other shapes.
            mask = np.all(pixels == colour, axis=-1)
            mask[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = False
            for other in scene.shapes:
                if other.colour == shape.colour:
                    ox0, oy0, ox1, oy1 = other.box
                    mask[max(0, oy0 - 1) : oy1 + 1, max(0, ox0 - 1) : ox1 + 1] = False
            assert not mask.any()
        if background is not None:
            assert background.min() >= 225


def test_loc_tokens_use_big_vision_bins():
    assert shapes.loc_tokens((0, 0, 224, 224), (224, 224)) == "<loc0000><loc0000><loc1023><loc1023>"
    # y first, then x; round(v * 1023)
    assert shapes.loc_tokens((10, 20, 30, 40), (100, 200)) == "<loc0102><loc0102><loc0205><loc0307>"


def test_detect_suffix_lists_every_match_in_query_order():
    scene = shapes.Scene(
        PIL.Image.new("RGB", (100, 100), "white"),
        (
            shapes.Shape("circle", "red", (0, 0, 20, 20)),
            shapes.Shape("square", "blue", (50, 10, 80, 40)),
            shapes.Shape("circle", "blue", (10, 60, 40, 90)),
        ),
    )
    box = {s.box: shapes.loc_tokens(s.box, (100, 100)) for s in scene.shapes}
    first, second, third = (box[s.box] for s in scene.shapes)
    assert shapes.detect_suffix(scene, ["circle"]) == f"{first} circle ; {third} circle"
    assert shapes.detect_suffix(scene, ["blue circle"]) == f"{third} blue circle"
    assert shapes.detect_suffix(scene, ["square", "circle"]) == (f"{second} square ; {first} circle ; {third} circle")
    assert shapes.detect_suffix(scene, ["triangle"]) == shapes.NO_MATCH == "none"
    assert shapes.detect_suffix(scene, ["green circle"]) == "none"
    assert shapes.caption_text(scene.shapes) == "a red circle, a blue square and a blue circle"


def test_captions_count_repeats_and_parse_back():
    red = shapes.Shape("circle", "red", (0, 0, 1, 1))
    blue = shapes.Shape("square", "blue", (0, 0, 1, 1))
    assert shapes.caption_text([red]) == "a red circle"
    assert shapes.caption_text([red, blue, red]) == "two red circles and a blue square"
    assert shapes.caption_text([red, red, red]) == "three red circles"
    for scene in scenes(2, 100):
        text = shapes.caption_text(scene.shapes)
        assert shapes.parse_caption(text) == Counter(s.label for s in scene.shapes)
    assert shapes.parse_caption("a red circle and a red circle") == Counter({"red circle": 2})
    assert shapes.parse_caption("a cat on a mat") == Counter()


def test_records_cover_every_prompt_kind_with_answers_and_empty_answers():
    kinds = Counter()
    empty = Counter()
    for scene, records in shapes.make_records(5, 200):
        assert [r.kind for r in records] == list(shapes.PROMPT_KINDS)
        for record in records:
            kinds[record.kind] += 1
            if record.kind == "caption":
                assert record.prefix == "caption en"
                assert record.suffix == shapes.caption_text(scene.shapes)
                continue
            if record.kind == "segment_shape":
                query = record.prefix.removeprefix("segment ")
                assert record.suffix is None and query in shapes.KINDS
                assert [(label, box) for label, box, _ in record.objects] == [(s.kind, s.box) for s in scene.shapes]
                empty[record.kind] += all(label != query for label, _, _ in record.objects)
                continue
            queries = record.prefix.removeprefix("detect ").split(" ; ")
            assert record.suffix == shapes.detect_suffix(scene, queries)
            empty[record.kind] += record.suffix == shapes.NO_MATCH
            if record.kind == "detect_shape":
                assert len(queries) == 1 and queries[0] in shapes.KINDS
            elif record.kind == "detect_colour_shape":
                assert len(queries) == 1 and queries[0].split()[0] in shapes.COLOURS
            else:
                assert len(queries) == 2 and queries[0] != queries[1]
    assert all(0.05 < empty[k] / kinds[k] < 0.8 for k in ("detect_shape", "detect_colour_shape", "detect_two_shapes"))
    assert 0.02 < empty["segment_shape"] / kinds["segment_shape"] < 0.25  # mostly a kind that is there


def test_masks_are_the_pixels_each_shape_is_drawn_with():
    for scene in scenes(11, 20, size=96):
        masks = scene.masks()
        assert masks.shape == (len(scene.shapes), 96, 96) and masks.dtype == bool
        image = np.asarray(scene.image)
        background = image[masks.sum(0) == 0]
        assert (background == background[0]).all()  # nothing drawn outside the masks
        for shape, mask in zip(scene.shapes, masks, strict=True):
            assert (image[mask] == shapes.COLOURS[shape.colour]).all()
            rows, cols = np.nonzero(mask)
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == shape.box
        assert not (masks.sum(0) > 1).any()


def test_write_dataset_writes_fine_tuning_jsonl(tmp_path):
    path = shapes.write_dataset(tmp_path / "data", seed=9, num_images=3, size=64)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3 * len(shapes.PROMPT_KINDS)
    assert not list((tmp_path / "data").glob("*.partial"))
    expected = [r for _, records in shapes.make_records(9, 3, size=64) for r in records]
    for line, record in zip(lines, expected, strict=True):
        if record.kind == "segment_shape":  # objects with COCO RLE masks, read back by the training loader
            assert set(line) == {"image", "prefix", "objects"} and line["prefix"] == record.prefix
            assert [o["box"] for o in line["objects"]] == [list(box) for _, box, _ in record.objects]
            for obj, (_, _, mask) in zip(line["objects"], record.objects, strict=True):
                assert np.array_equal(rle_to_mask(obj["mask"]), mask)
            continue
        assert set(line) == {"image", "prefix", "suffix"}
        assert (line["prefix"], line["suffix"]) == (record.prefix, record.suffix)
        with PIL.Image.open(path.parent / line["image"]) as image:
            assert image.size == (64, 64)


# ------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_has_gemma_special_ids_and_paligemma_tokens():
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>")}
    assert ids == {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    locs = [tokenizer.token_to_id(f"<loc{i:04d}>") for i in range(1024)]
    segs = [tokenizer.token_to_id(f"<seg{i:03d}>") for i in range(128)]
    assert locs == list(range(locs[0], locs[0] + 1024))
    assert segs == list(range(locs[-1] + 1, locs[-1] + 129))
    assert tokenizer.token_to_id("<image>") == segs[-1] + 1 == tokenizer.get_vocab_size() - 1
    assert tokenizer.encode("\n", add_special_tokens=False).tokens == ["\n"]
    assert build_tokenizer().to_str() == tokenizer.to_str()  # deterministic


def test_tokenizer_round_trips_any_text_and_keeps_demo_words_whole():
    tokenizer = build_tokenizer()
    for text in ["detect red circle ; yellow triangles", "two blue squares and a green circle", "ünïcödé 42!"]:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        assert "<unk>" not in encoding.tokens
        assert tokenizer.decode(encoding.ids, skip_special_tokens=False) == text
    tokens = tokenizer.encode("detect yellow triangle ; square", add_special_tokens=False).tokens
    assert tokens == ["detect", "▁yellow", "▁triangle", "▁;", "▁square"]


def test_processor_lays_out_demo_prompts_and_labels_the_suffix_only():
    tokenizer = build_tokenizer()
    processor = PaliGemmaProcessor(tokenizer, image_size=64, num_image_tokens=64, max_length=512)
    scene, records = next(shapes.make_records(0, 1, size=64))
    by_kind = {r.kind: r for r in records}
    prompts = ["detect circle", "caption en"]
    suffixes = ["<loc0010><loc0020><loc0300><loc0400> circle", by_kind["caption"].suffix]
    batch = processor(images=[scene.image] * 2, prompts=prompts, suffixes=suffixes)
    for row, (prompt, suffix) in enumerate(zip(prompts, suffixes, strict=True)):
        ids = batch.input_ids[row][batch.attention_mask[row] == 1].tolist()
        types = batch.token_type_ids[row][batch.attention_mask[row] == 1].tolist()
        labels = batch.labels[row][batch.attention_mask[row] == 1].tolist()
        assert ids[:64] == [processor.image_token_id] * 64
        assert ids[64] == processor.bos_token_id
        prefix_len = 64 + 1 + len(tokenizer.encode(prompt + "\n", add_special_tokens=False).ids)
        assert types == [0] * prefix_len + [1] * (len(ids) - prefix_len)
        assert labels[:prefix_len] == [IGNORE_INDEX] * prefix_len and labels[prefix_len:] == ids[prefix_len:]
        assert ids[-1] == processor.eos_token_id
        assert processor.decode(ids[prefix_len:]) == suffix
        assert processor.decode(ids[65:prefix_len]) == prompt + "\n"
    # Left padding: the shorter row starts with pad tokens that are neither attended nor labelled.
    short = int(batch.attention_mask.sum(1).argmin())
    assert batch.input_ids[short, 0] == processor.pad_token_id and batch.labels[short, 0] == IGNORE_INDEX
    # No match: the answer is one word, then <eos>.
    empty = processor(images=[scene.image], prompts=["detect green triangle"], suffixes=[shapes.NO_MATCH])
    assert [t for t in empty.labels[0].tolist() if t != IGNORE_INDEX] == [
        tokenizer.token_to_id("none"),
        processor.eos_token_id,
    ]
