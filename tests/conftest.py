"""Shared fixtures: every test starts and ends with the default plugin state."""

from __future__ import annotations

import os
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
import torch

import vlmzoo
import vlmzoo.plugins
from vlmzoo.components import cpu_kernels
from vlmzoo.generation import GenerationStep

# Kernel choice by timing is tested on its own (tests/test_linear_kernels.py); elsewhere the fixed order
# keeps runs reproducible and spares every test process a calibration.
os.environ.setdefault("VLMZOO_LINEAR_CALIBRATION", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN_DIR = REPO_ROOT / "plugins" / "vlmzoo-example-plugin"
EXAMPLE_PLUGIN_SRC = EXAMPLE_PLUGIN_DIR / "src"


def installed_plugin_names() -> list[str]:
    """Entry-point names of the third-party plugins installed beside vlmzoo (e.g. by ``setup.sh --dev``)."""
    return sorted({ep.name for ep in metadata.entry_points(group="vlmzoo")})


# Test modules parametrize over the registries when they are collected: built-in plugins only, then too.
if installed_plugin_names():
    os.environ["VLMZOO_DISABLE_PLUGINS"] = ",".join(installed_plugin_names())


@pytest.fixture(autouse=True)
def _default_plugin_state(monkeypatch, request):
    """Only the built-in plugins (unless a test asks for ``installed_plugins``), no plugin environment
    variables, no hand-registered plugins left over, registries rebuilt after."""
    if "installed_plugins" in request.fixturenames or not installed_plugin_names():
        monkeypatch.delenv("VLMZOO_DISABLE_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("VLMZOO_DISABLE_PLUGINS", ",".join(installed_plugin_names()))
    monkeypatch.delenv("VLMZOO_STRICT_PLUGINS", raising=False)
    before = set(vlmzoo.plugins._extra)
    vlmzoo.plugins.reset()
    yield
    for name in set(vlmzoo.plugins._extra) - before:
        vlmzoo.plugins.unregister_plugin(name)
    vlmzoo.plugins.reset()


@pytest.fixture(autouse=True)
def _auto_device_is_the_cpu(monkeypatch, request):
    """``device="auto"`` means the CPU in tests (unless a test asks for ``real_auto_device``): the tests
    compare with references computed on the CPU, and must give the same results on a machine with a GPU."""
    if "real_auto_device" not in request.fixturenames:
        monkeypatch.setattr("vlmzoo.devices._best", lambda: torch.device("cpu"))


@pytest.fixture
def real_auto_device() -> None:
    """``device="auto"`` picks the best device of this machine, as it does outside the tests."""


@pytest.fixture
def installed_plugins() -> list[str]:
    """The installed third-party plugins are loaded in this test (they are off in every other test)."""
    return installed_plugin_names()


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run faster, and far more steadily on a busy machine, on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def example_plugin_path(monkeypatch):
    """Make the example plugin importable without installing it; forget its modules afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN_SRC))
    yield EXAMPLE_PLUGIN_DIR
    for name in [m for m in sys.modules if m == "vlmzoo_example_plugin" or m.startswith("vlmzoo_example_plugin.")]:
        del sys.modules[name]


def make_plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object whose attributes are the given hook functions, marked with ``vlmzoo.hookimpl``."""
    return types.SimpleNamespace(**{name: vlmzoo.hookimpl(function) for name, function in hooks.items()})


def tiny_config(**decoder) -> vlmzoo.PaliGemmaConfig:
    """A very small model: 4 image tokens, a 2-layer decoder; ``decoder`` overrides decoder fields."""
    vision = vlmzoo.VisionConfig(
        image_size=28, patch_size=14, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2
    )
    fields = {
        "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
        "num_kv_heads": 2, "head_dim": 8,
    }  # fmt: skip
    fields.update(decoder)
    dec = vlmzoo.DecoderConfig(**fields)
    return vlmzoo.PaliGemmaConfig(
        name="test-tiny",
        vision=vision,
        projector=vlmzoo.ProjectorConfig(input_size=vision.hidden_size, output_size=dec.hidden_size),
        decoder=dec,
        image_token_id=dec.vocab_size - 1,
    )


class ScriptedAnswers(torch.nn.Module):
    """Stands in for a model that answers with fixed texts (one per row, through ``processor``'s tokenizer),
    every chosen token at probability 1, so what scores its answers is checked exactly."""

    def __init__(self, processor, texts: list[str]) -> None:
        super().__init__()
        self.processor, self.texts = processor, texts
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def generate(self, input_ids, callback=None, **_):
        tokenizer, pad = self.processor.tokenizer, self.processor.pad_token_id
        ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in self.texts]
        width = max(map(len, ids))
        tokens = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
        for index, column in enumerate(tokens.T):
            logits = torch.zeros(len(ids), tokenizer.get_vocab_size()).scatter(1, column[:, None], 100.0)
            callback(GenerationStep(index, column, torch.zeros(len(ids), dtype=torch.bool), logits))
        return tokens


def tiny_inputs(config: vlmzoo.PaliGemmaConfig, batch: int = 2, text: int = 5, seed: int = 0):
    """Images plus ``<image>`` x n, then ``text`` random text tokens (the first is ``<bos>``), all prefix."""
    g = torch.Generator().manual_seed(seed)
    n_img = config.num_image_tokens
    ids = torch.randint(3, config.decoder.vocab_size - 1, (batch, n_img + text), generator=g)
    ids[:, :n_img] = config.image_token_id
    ids[:, n_img] = config.bos_token_id
    size = config.vision.image_size
    pixels = torch.rand(batch, config.vision.num_channels, size, size, generator=g) * 2 - 1
    return ids, pixels


@pytest.fixture
def fresh_extension(monkeypatch):
    """Let a test change the CPU kernels' switch; the extension loader's cached answer is dropped before
    and after."""
    cpu_kernels.load_extension.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    cpu_kernels.load_extension.cache_clear()
