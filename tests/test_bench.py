"""vlmzoo.bench and `vlmzoo bench`: the figures behind the bandwidth-bound fractions."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

import vlmzoo
from vlmzoo.bench import decode_weight_bytes, measure, random_inputs, read_bandwidth
from vlmzoo.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


def test_read_bandwidth_is_a_positive_rate():
    speed = read_bandwidth(nbytes=2**22, repeats=1)
    assert 1e6 < speed < 1e13  # bytes per second, between a megabyte and ten terabytes


def test_decode_weight_bytes_counts_the_decoder_once_and_not_the_vision_tower():
    model = vlmzoo.build(tiny_config(num_layers=2), seed=0)
    decoder = model.language_model
    expected = sum(t.numel() * t.element_size() for t in {id(t): t for t in decoder.parameters()}.values())
    assert decode_weight_bytes(model) == expected
    assert decode_weight_bytes(model) < sum(p.numel() * p.element_size() for p in model.parameters())
    model.quantize("int8")
    assert decode_weight_bytes(model) < expected  # quantized weights count at their packed size


def test_measure_times_every_generated_token():
    model = vlmzoo.build(tiny_config(num_layers=2), seed=0)
    inputs = random_inputs(model.config, batch=2, text_tokens=4)
    assert inputs["input_ids"].shape[0] == 2 and not bool(inputs["attention_mask"][1].all())  # left padded
    result = measure(model, inputs, new_tokens=3, repeats=1)
    assert result.ttft_s > 0 and result.step_s > 0 and result.decode_tok_s == pytest.approx(2 / result.step_s)


def test_the_command_prints_the_fraction_of_the_bound(tmp_path, capsys):
    vlmzoo.build(tiny_config(num_layers=2), seed=0).save_pretrained(tmp_path)
    assert main(["bench", str(tmp_path), "--dtype", "float32", "--new-tokens", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "of bound" in out and "GB/s" in out and torch.get_num_threads() == 1
