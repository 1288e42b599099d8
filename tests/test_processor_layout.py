"""Where every token and label of a processed batch goes, position by position.

test_processor.py compares with transformers on its defaults; these pin the layout itself for both
padding sides and every padding mode, so a label shifted by one position or a suffix token counted as
prompt fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_tokenizer import make_tiny_tokenizer

from vlmzoo.processing import IGNORE_INDEX, PaliGemmaProcessor

IMAGE = np.zeros((10, 12, 3), dtype=np.uint8)


def processor(**options) -> PaliGemmaProcessor:
    return PaliGemmaProcessor(make_tiny_tokenizer(), image_size=28, num_image_tokens=4, **options)


def text_ids(proc: PaliGemmaProcessor, text: str) -> list[int]:
    return proc.tokenizer.encode(text, add_special_tokens=False).ids


def test_one_example_is_image_tokens_bos_prompt_newline_then_suffix_eos():
    proc = processor()
    ids, types = proc.encode_text("caption en", "a cat")
    prompt = text_ids(proc, "caption en\n")
    suffix = text_ids(proc, "a cat")
    assert ids == [proc.image_token_id] * 4 + [proc.bos_token_id] + prompt + suffix + [proc.eos_token_id]
    assert types == [0] * (5 + len(prompt)) + [1] * (len(suffix) + 1)
    assert proc.encode_text("caption en") == (ids[: 5 + len(prompt)], [0] * (5 + len(prompt)))


@pytest.mark.parametrize("side", ["left", "right"])
def test_labels_are_the_suffix_tokens_at_their_own_positions(side):
    proc = processor(padding_side=side)
    prompts, suffixes = ["caption en", "detect cat ; dog"], ["a dog running in the park", "<loc0001> cat"]
    batch = proc(images=[IMAGE, IMAGE], prompts=prompts, suffixes=suffixes)
    rows = [proc.encode_text(p, s) for p, s in zip(prompts, suffixes, strict=True)]
    width = max(len(ids) for ids, _ in rows)
    assert batch["input_ids"].shape == (2, width)
    for b, (ids, types) in enumerate(rows):
        pad = width - len(ids)
        span = slice(pad, width) if side == "left" else slice(0, len(ids))
        outside = [i for i in range(width) if not span.start <= i < span.stop]
        assert batch["input_ids"][b, span].tolist() == ids
        assert batch["token_type_ids"][b, span].tolist() == types
        assert batch["attention_mask"][b, span].tolist() == [1] * len(ids)
        expected_labels = [i if t == 1 else IGNORE_INDEX for i, t in zip(ids, types, strict=True)]
        assert batch["labels"][b, span].tolist() == expected_labels
        assert batch["input_ids"][b, outside].tolist() == [proc.pad_token_id] * pad
        assert batch["attention_mask"][b, outside].tolist() == [0] * pad
        assert batch["token_type_ids"][b, outside].tolist() == [0] * pad
        assert batch["labels"][b, outside].tolist() == [IGNORE_INDEX] * pad
    assert all(batch[k].dtype == torch.long for k in ("input_ids", "attention_mask", "token_type_ids", "labels"))


def test_padding_modes():
    proc = processor(max_length=40)
    longest = proc(images=[IMAGE, IMAGE], prompts=["ocr", "caption en"])
    assert longest["input_ids"].shape[1] == max(len(proc.encode_text(p)[0]) for p in ("ocr", "caption en"))
    assert "labels" not in longest
    full = proc(images=[IMAGE], prompts=["ocr"], padding="max_length")
    assert full["input_ids"].shape == (1, 40)
    assert full["attention_mask"].sum() == len(proc.encode_text("ocr")[0])
    same = proc(images=[IMAGE, IMAGE], prompts=["ocr", "ocr"], padding=False)
    assert same["attention_mask"].all()
    with pytest.raises(ValueError, match="different lengths"):
        proc(images=[IMAGE, IMAGE], prompts=["ocr", "answer en what is in the image?"], padding=False)
    with pytest.raises(ValueError, match="padding='huge' is not supported"):
        proc(images=[IMAGE], prompts=["ocr"], padding="huge")


def test_max_length_counts_every_token_including_the_suffix():
    proc = processor()
    length = len(proc.encode_text("caption en", "a cat")[0])
    exact = processor(max_length=length)
    assert exact(images=[IMAGE], prompts=["caption en"], suffixes=["a cat"])["input_ids"].shape == (1, length)
    with pytest.raises(ValueError, match=f"is {length} tokens long .* more than max_length={length - 1}"):
        processor(max_length=length - 1)(images=[IMAGE], prompts=["caption en"], suffixes=["a cat"])
    with pytest.raises(ValueError, match="leaves no room for text"):
        processor(max_length=4)


def test_decode_drops_special_tokens_but_keeps_locations():
    proc = processor()
    ids = [proc.bos_token_id, *text_ids(proc, "<loc0012><seg003> cat"), proc.eos_token_id, proc.pad_token_id]
    assert proc.decode(ids) == "<loc0012><seg003> cat"
    assert proc.decode(torch.tensor([ids])) == "<loc0012><seg003> cat"
    assert proc.batch_decode(torch.tensor([ids, ids])) == ["<loc0012><seg003> cat"] * 2
    assert "<eos>" in proc.decode(ids, skip_special_tokens=False)


def test_decode_takes_one_sequence_in_every_form_and_refuses_a_batch():
    proc = processor()
    ids = [proc.bos_token_id, *text_ids(proc, "<loc0012> cat"), proc.eos_token_id]
    text = "<loc0012> cat"
    assert proc.decode(ids) == text
    assert proc.decode([ids]) == text  # a one-row batch as a list of lists
    assert proc.decode(tuple(ids)) == text
    assert proc.decode(np.array(ids)) == text
    loc = text_ids(proc, "<loc0012>")[0]
    assert proc.decode(loc) == "<loc0012>" and proc.decode(np.int64(loc)) == "<loc0012>"
    assert proc.decode([loc]) == "<loc0012>"
    with pytest.raises(ValueError, match="decode got nested lists; use batch_decode for a batch"):
        proc.decode([ids, ids])
    with pytest.raises(ValueError, match=r"decode got ids of shape \(2, \d+\); decode takes one sequence"):
        proc.decode(torch.tensor([ids, ids]))


def test_batch_decode_reads_a_single_row_as_a_batch_of_one_and_refuses_3d():
    proc = processor()
    ids = [*text_ids(proc, "<seg003> dog"), proc.eos_token_id]
    assert proc.batch_decode(torch.tensor(ids)) == ["<seg003> dog"]
    assert proc.batch_decode(np.array(ids)) == ["<seg003> dog"]
    assert proc.batch_decode([ids, ids[:1]]) == ["<seg003> dog", "<seg003>"]
    with pytest.raises(ValueError, match=r"batch_decode expects a 2-D batch of ids, got shape \(1, 1, \d+\)"):
        proc.batch_decode(torch.tensor([[ids]]))
