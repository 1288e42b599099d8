"""The count plugin: found by vlmzoo, counts detections per label, works end to end on a tiny checkpoint.

Only vlmzoo's public API is used, as any third-party package would.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch
import vlmzoo
import vlmzoo.plugins
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from vlmzoo.generation import Sampler

# Fixtures live here rather than in a conftest.py: vlmzoo's own tests import helpers from theirs by name.
SRC = Path(__file__).resolve().parents[1] / "src"


def installed() -> bool:
    try:
        importlib.metadata.distribution("vlmzoo-count-plugin")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(autouse=True)
def _fresh_registries(monkeypatch):
    monkeypatch.delenv("VLMZOO_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("VLMZOO_STRICT_PLUGINS", raising=False)
    vlmzoo.plugins.reset()
    yield
    vlmzoo.plugins.reset()


@pytest.fixture
def count_plugin(monkeypatch):
    """The plugin's module: found through its entry point when the package is installed (as CI does),
    otherwise imported from src/ and registered by hand for the test."""
    if installed():
        import vlmzoo_count_plugin.plugin as module

        yield module
        return
    monkeypatch.syspath_prepend(str(SRC))
    import vlmzoo_count_plugin.plugin as module

    with vlmzoo.plugins.plugin_registered(module, "count"):
        yield module
    for name in [m for m in sys.modules if m.startswith("vlmzoo_count_plugin")]:
        del sys.modules[name]


def loc(*values):
    return "".join(f"<loc{v:04d}>" for v in values)


def test_vlmzoo_lists_the_plugin_and_its_task(count_plugin):
    (info,) = [p for p in vlmzoo.list_plugins() if p.name == "count"]
    assert info.error is None and info.registered == {"postprocessor": ["count"]}
    if installed():
        assert info.distribution == "vlmzoo-count-plugin" and info.version == "0.1.0"
        assert vlmzoo.get_registries().postprocessor.owner("count") == "vlmzoo-count-plugin"
    assert "count" in vlmzoo.tasks.list_tasks()
    assert isinstance(vlmzoo.get_postprocessor("count"), count_plugin.Count)


def test_counts_per_label_with_repeated_boxes_counted_once(count_plugin):
    text = (
        loc(0, 0, 100, 100) + " cat ; " + loc(0, 0, 100, 101) + " cat ; " + loc(500, 500, 600, 600) + " cat ; "
        + loc(10, 10, 50, 50) + " dog ; " + loc(1, 2)
    )  # fmt: skip
    result = vlmzoo.get_postprocessor("count").parse(text, image_size=(1023, 1023))
    assert result.counts == {"cat": 2, "dog": 1} and list(result.counts) == ["cat", "dog"]
    assert result.count("bird") == 0 and result.total == 3 and len(result.objects) == 3
    assert result.to_dict()["counts"] == {"cat": 2, "dog": 1}
    everything = vlmzoo.get_postprocessor("count", duplicate_iou=None).parse(text, image_size=(1023, 1023))
    assert everything.counts == {"cat": 3, "dog": 1}
    assert vlmzoo.get_postprocessor("count").prompt(["cat", "dog"]) == "detect cat ; dog"
    with pytest.raises(ValueError, match="duplicate_iou"):
        vlmzoo.get_postprocessor("count", duplicate_iou=2)


class Scripted(Sampler):
    """Writes the given token ids for every row, then <eos>; records the prompt ids."""

    stochastic = False

    def __init__(self, tokens):
        self.tokens = tokens
        self.prompt = None

    def __call__(self, logits, history, generator=None):
        if self.prompt is None:
            self.prompt = history.clone()
        step = history.shape[1] - self.prompt.shape[1]
        return torch.full((history.shape[0],), self.tokens[step] if step < len(self.tokens) else 1)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny PaliGemma 2 and a word-level tokenizer, saved and loaded like any checkpoint."""
    words = ["<pad>", "<eos>", "<bos>", "<unk>", "detect", "cat", "dog", ";"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(w, special=True) for w in words[:4]])
    processor = vlmzoo.PaliGemmaProcessor(tokenizer, image_size=28, num_image_tokens=4)
    config = vlmzoo.get_config("paligemma2-tiny").with_overrides(
        {"vision": {"image_size": 28}, "decoder": {"vocab_size": processor.vocab_size},
         "image_token_id": processor.image_token_id}
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("count-tiny")
    vlmzoo.build(config, seed=0).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_count_end_to_end_on_a_tiny_checkpoint(count_plugin, tiny_checkpoint):
    vlm = vlmzoo.load(tiny_checkpoint)
    said = loc(0, 0, 511, 511) + " cat ; " + loc(0, 512, 511, 1023) + " cat ; " + loc(512, 0, 1023, 1023) + " dog"
    sampler = Scripted(vlm.processor.tokenizer.encode(said, add_special_tokens=False).ids + [1])
    images = [Image.new("RGB", (64, 48), "white"), Image.new("RGB", (30, 30), "black")]
    results = vlm.run("count", images, ["cat", "dog"], sampler=sampler)
    assert torch.equal(sampler.prompt, vlm.processor(images=images, prompts=["detect cat ; dog"] * 2)["input_ids"])
    assert [r.counts for r in results] == [{"cat": 2, "dog": 1}] * 2
    assert results[0].objects[2].box == pytest.approx((0, 512 / 1023 * 48, 64, 48))
    assert results[1].image_size == (30, 30)
    drawn = results[0].draw(images[0])
    assert drawn.size == (64, 48)
