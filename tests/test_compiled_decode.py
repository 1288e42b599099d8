"""The compiled decode step makes the same tokens as the eager one, with one graph for every step."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config, tiny_inputs

import vlmzoo
from vlmzoo.generation import engine

pytestmark = pytest.mark.usefixtures("single_thread")


def test_compiled_decode_gives_the_eager_tokens(monkeypatch):
    counters = torch._dynamo.utils.counters
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(engine, "_compiled_step", None)
    config = tiny_config(num_layers=1)
    model = vlmzoo.build(config, seed=0)
    ids, pixels = tiny_inputs(config, batch=2)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # a left-padded row
    eager = model.generate(ids, pixels, attention_mask=mask, max_new_tokens=6, stop_at_eos=False)
    compiled = model.generate(ids, pixels, attention_mask=mask, max_new_tokens=6, stop_at_eos=False, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 1  # steps 2..6 reuse one graph: no recompiling per column
