"""Tasks end to end on a tiny checkpoint: the prompt each task builds, batched generation, parsing into
the original images' pixels.

A random tiny model writes random tokens, so a scripted sampler decides what the model "says"; the
rest (prompt layout, images, prefill and decode steps, decoding, parsing, scaling) is the real path.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny_tokenizer import make_tiny_checkpoint

import vlmzoo
from vlmzoo.generation.samplers import Sampler
from vlmzoo.tasks import TaskError

pytestmark = pytest.mark.usefixtures("single_thread")


class Scripted(Sampler):
    """Writes the given token ids, one row each, then ``<eos>``; records the prompts it was given."""

    stochastic = False

    def __init__(self, rows: list[list[int]]) -> None:
        self.rows = rows
        self.prompts: torch.Tensor | None = None

    def __call__(self, logits, history, generator=None):
        if self.prompts is None:
            self.prompts = history.clone()
        step = history.shape[1] - self.prompts.shape[1]
        return torch.tensor([row[step] if step < len(row) else 1 for row in self.rows])


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return vlmzoo.load(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-tasks")))


def ids(vlm, text):
    return vlm.processor.tokenizer.encode(text, add_special_tokens=False).ids + [vlm.processor.eos_token_id]


def test_detect_on_a_batch_returns_boxes_in_each_original_image(vlm):
    images = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (100, 200), "blue")]
    said = ["<loc0000><loc0000><loc1023><loc0511> cat ; <loc0100>", "<loc0512><loc0256><loc1023><loc1023> dog"]
    sampler = Scripted([ids(vlm, text) for text in said])
    results = vlm.detect(images, ["cat", "dog"], sampler=sampler)
    expected = vlm.processor(images=images, prompts=["detect cat ; dog"] * 2)
    assert torch.equal(sampler.prompts, expected["input_ids"])  # the prompt the checkpoints were trained with
    assert [r.labels for r in results] == [["cat"], ["dog"]]
    assert results[0].objects[0].box == pytest.approx((0, 0, 511 / 1023 * 40, 30))
    assert results[1].objects[0].box == pytest.approx((256 / 1023 * 100, 512 / 1023 * 200, 100, 200))
    assert [r.image_size for r in results] == [(40, 30), (100, 200)]
    assert results[0].raw_text == said[0]


def test_one_image_gives_one_result_and_options_reach_the_postprocessor(vlm, tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (1024, 512), "green").save(path)
    sampler = Scripted([ids(vlm, "<loc0000><loc0000><loc1023><loc1023> car")])
    result = vlm.detect(path, "car", bins=1024, sampler=sampler)
    assert isinstance(result, vlmzoo.TaskResult)
    assert result.objects[0].box == (0.0, 0.0, 1023.0, 511.5)


@pytest.mark.parametrize(
    ("call", "prompt"),
    [
        (lambda vlm, image, s: vlm.caption(image, sampler=s), "caption en"),
        (lambda vlm, image, s: vlm.caption(image, lang="de", detail=True, sampler=s), "describe de"),
        (lambda vlm, image, s: vlm.ocr(image, sampler=s), "ocr"),
        (lambda vlm, image, s: vlm.answer(image, "what colour?", lang="es", sampler=s), "answer es what colour?"),
        (lambda vlm, image, s: vlm.run("caption", image, "fr", sampler=s), "caption fr"),
    ],
)
def test_text_tasks_build_their_prompts_and_return_clean_text(vlm, call, prompt):
    image = Image.new("RGB", (20, 20), "white")
    sampler = Scripted([ids(vlm, "a  red car<loc0001>")])
    result = call(vlm, image, sampler)
    assert torch.equal(sampler.prompts, vlm.processor(images=image, prompts=prompt)["input_ids"])
    assert result.text == "a red car"


def test_run_takes_a_postprocessor_object_and_generation_options(vlm):
    image = Image.new("RGB", (50, 40), "white")
    post = vlmzoo.get_postprocessor("detect")
    result = vlm.run(post, image, ["cat"], max_new_tokens=2, generate_options={"stop_at_eos": False})
    assert result.task == "detect" and result.image_size == (50, 40)  # two random tokens: no complete box


def test_task_errors_are_clear(vlm):
    image = Image.new("RGB", (20, 20))
    with pytest.raises(vlmzoo.registry.UnknownKeyError, match="did you mean 'detect'"):
        vlm.run("detetc", image, ["cat"])
    with pytest.raises(TaskError, match="non-empty"):
        vlm.detect(image, [])
    with pytest.raises(TypeError, match="takes: bins"):
        vlm.detect(image, ["cat"], colour="red")
    with pytest.raises(ValueError, match="empty list of images"):
        vlm.caption([])


def test_segment_end_to_end_places_masks_in_the_original_image(vlm, tmp_path):
    import numpy as np

    from vlmzoo.tasks import format_objects

    path = tmp_path / "vae.npz"
    rng = np.random.default_rng(0)
    decoder = vlmzoo.tasks.MaskDecoder()
    weights = {"_vq_vae._embedding": rng.normal(size=(128, 512)).astype(np.float32)}
    for key, value in decoder.decoder.state_dict().items():
        weights[f"decoder.{key}"] = np.zeros(tuple(value.shape), np.float32)
    weights["decoder.12.bias"][:] = 1.0  # every decoded mask fills its box
    np.savez(path, **weights)
    image = Image.new("RGB", (90, 60), "white")
    text = format_objects([{"label": "cat", "box": (9, 6, 45, 30), "seg_codes": [5] * 16}], (90, 60))
    result = vlm.segment(image, "cat", vae=path, sampler=Scripted([ids(vlm, text)]))
    (obj,) = result.objects
    assert obj.label == "cat" and obj.mask.shape == (60, 90)
    assert obj.mask.sum() == 36 * 24 and obj.mask[6:30, 9:45].all()


def test_object_scores_are_the_geometric_mean_of_their_token_probabilities(vlm):
    import math

    tokenizer = vlm.processor.tokenizer

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False).ids

    first = encode("<loc0000><loc0000><loc0511><loc0511>") + encode(" cat")
    separator = encode(" ;")
    second = encode("<loc0100><loc0100><loc0900><loc0900>") + encode(" big dog")
    script = first + separator + second + [vlm.processor.eos_token_id]
    assert sum(";" in tokenizer.id_to_token(i) for i in separator) == 1
    image = Image.new("RGB", (32, 32), "white")
    result = vlm.detect(image, ["cat", "dog"], sampler=Scripted([script]))
    # the probabilities the model gave the scripted tokens, from a separate run of the same inputs
    inputs = vlm.processor(images=image, prompts="detect cat ; dog")
    steps = list(vlm.model.stream(**inputs, sampler=Scripted([script]), max_new_tokens=len(script)))
    probs = [torch.softmax(s.logits[0], -1)[s.tokens[0]].item() for s in steps]
    semicolon = next(i for i in range(len(first), len(script)) if ";" in tokenizer.id_to_token(script[i]))
    spans = [(0, semicolon), (len(first) + len(separator), len(script) - 1)]
    expected = [math.exp(sum(math.log(p) for p in probs[a:b]) / (b - a)) for a, b in spans]
    assert [o.label for o in result.objects] == ["cat", "big dog"]
    assert [o.score for o in result.objects] == pytest.approx(expected, rel=1e-5)
    assert all(0 < o.score <= 1 for o in result.objects)
    assert vlmzoo.get_postprocessor("detect").parse(result.raw_text, (32, 32)).objects[0].score is None
