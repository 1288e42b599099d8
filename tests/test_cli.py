"""The command line end to end on a tiny checkpoint: tasks, batches and folders, JSON, drawing, errors.

A random tiny model writes random tokens, so a scripted sampler (registered by a plugin, as a user's
would be) decides what the model "says"; loading, prompting, generation, parsing and drawing are real.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import make_plugin
from PIL import Image
from tiny_tokenizer import make_tiny_checkpoint

import vlmzoo
from vlmzoo.cli import main
from vlmzoo.generation.samplers import Sampler

pytestmark = pytest.mark.usefixtures("single_thread")

SAID = "<loc0000><loc0000><loc0511><loc1023> cat ; <loc0512><loc0000><loc1023><loc0511> dog"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-cli"))


@pytest.fixture
def scripted(checkpoint):
    """Register the sampler ``scripted``, which writes `SAID` then ``<eos>`` on every row."""
    processor = vlmzoo.load_processor(checkpoint)
    said = processor.tokenizer.encode(SAID, add_special_tokens=False).ids + [processor.eos_token_id]

    class Scripted(Sampler):
        stochastic = False

        def __init__(self) -> None:
            self.start: int | None = None

        def __call__(self, logits, history, generator=None):
            self.start = history.shape[1] if self.start is None else self.start
            step = history.shape[1] - self.start
            return torch.full((history.shape[0],), said[step] if step < len(said) else processor.eos_token_id)

    def register_samplers(registry):
        registry.sampler.register("scripted", Scripted)

    with vlmzoo.plugins.plugin_registered(make_plugin(register_samplers=register_samplers), name="scripted"):
        yield


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 30), "red").save(folder / "a.png")
    Image.new("RGB", (100, 200), "blue").save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def run(checkpoint, *args: str) -> int:
    return main(["--quiet", "generate", str(checkpoint), "--sampler", "scripted", *args])


def test_detect_on_one_image_streams_the_text_then_the_boxes(checkpoint, scripted, images, capsys):
    assert run(checkpoint, "--image", str(images / "a.png"), "--task", "detect", "--labels", "cat; dog") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == SAID
    assert out[1] == f"  cat: box (0.0, 0.0, 40.0, {511 / 1023 * 30:.1f})"
    assert out[2].startswith("  dog: box (0.0, 15.0, ")


def test_a_folder_runs_as_a_batch_with_one_json_object_per_image(checkpoint, scripted, images, capsys):
    assert run(checkpoint, "--image", str(images), "--task", "detect", "--labels", "cat;dog", "--json") == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in records] == [str(images / "a.png"), str(images / "b.jpg")]
    assert all(r["prompt"] == "detect cat ; dog" and r["text"] == SAID for r in records)
    assert [o["label"] for o in records[1]["objects"]] == ["cat", "dog"]
    assert records[1]["image_size"] == [100, 200]
    assert records[1]["objects"][0]["bbox"] == pytest.approx([0.0, 0.0, 100.0, 511 / 1023 * 200])


def test_draw_saves_the_annotated_images(checkpoint, scripted, images, tmp_path, capsys):
    single = tmp_path / "one.png"
    assert run(checkpoint, "--image", str(images / "b.jpg"), "--task", "detect", "--labels", "cat", "--draw",
               str(single)) == 0  # fmt: skip
    drawn = Image.open(single)
    assert drawn.size == (100, 200)
    assert drawn.getpixel((50, 0)) != (0, 0, 255)  # the cat's box edge is drawn over the blue image
    assert drawn.getpixel((50, 150)) == Image.open(images / "b.jpg").convert("RGB").getpixel((50, 150))
    folder = tmp_path / "drawn"
    assert run(checkpoint, "--image", str(images), "--prompt", "detect cat ; dog", "--draw", str(folder)) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png"]
    assert "saved" in capsys.readouterr().err


def test_a_raw_prompt_prints_text_and_parses_what_it_can(checkpoint, scripted, images, capsys):
    assert run(checkpoint, "--image", str(images / "a.png"), "--prompt", "what is this", "--no-stream") == 0
    assert capsys.readouterr().out.splitlines() == [SAID]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "detect", "--prompt", "detect cat"], "not both"),
        ([], "give --task"),
        (["--task", "detekt", "--labels", "cat"], "detect"),
        (["--task", "detect"], "objects"),
        (["--prompt", "caption en", "--labels", "cat"], "--labels builds a task's prompt"),
        (["--prompt", "caption en", "--draw", "x.png"], "--draw needs a task"),
        (["--task", "caption", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_requests_are_one_line_errors(checkpoint, scripted, images, capsys, args, message):
    assert run(checkpoint, "--image", str(images / "a.png"), *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlmzoo: error: ") and err.count("\n") == 1 and message in err


def test_missing_images_and_empty_folders_are_one_line_errors(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for spec, message in ((tmp_path / "nope.png", "does not exist"), (tmp_path / "empty", "holds no images")):
        assert run(checkpoint, "--image", str(spec), "--task", "caption") == 2
        err = capsys.readouterr().err
        assert message in err and str(spec) in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "beam"], "unknown sampler 'beam'"),
        (["--device", "cuda"], "cuda"),
        (["--device", "tpu"], "tpu"),
        (["--temperature", "-1", "--sampler", "temperature"], "temperature"),
        (["--max-new-tokens", "100000"], "max_new_tokens"),
    ],
)
def test_bad_options_are_one_line_errors(checkpoint, images, capsys, args, message):
    code = main(["generate", str(checkpoint), "--image", str(images / "a.png"), "--task", "caption", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vlmzoo: error: ") and err.count("\n") == 1 and message in err, err


def test_a_bad_checkpoint_is_a_one_line_error_and_debug_shows_the_traceback(checkpoint, tmp_path, images, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "config.json").write_text("{not json")
    assert main(["generate", str(broken), "--image", str(images / "a.png"), "--task", "caption"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json" in err
    with pytest.raises(ValueError):
        main(["--debug", "generate", str(broken), "--image", str(images / "a.png"), "--task", "caption"])


def test_demo_runs_offline_and_saves_the_drawn_detections_and_masks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--quiet", "demo", "--images", "2", "--seed", "3", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("caption en") == 2 and out.count("  detect ") == 2 and out.count("  segment ") == 2
    assert out.count(" px") >= 4  # a mask found and a true one, in each scene
    drawn = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert drawn == [f"scene-{i}{part}.png" for i in (1, 2) for part in ("-detect", "-segment", "")]
    assert Image.open(tmp_path / "out" / "scene-1-detect.png").size == (224, 224)
    scene, masked = (np.asarray(Image.open(tmp_path / "out" / f"scene-1{part}.png")) for part in ("", "-segment"))
    assert (scene != masked).any(axis=-1).mean() > 0.02  # translucent masks drawn, not just box outlines
    assert main(["demo", "--images", "0"]) == 2
