"""Linear kernels: every registered kernel computes F.linear, choice by priority or by timing, plugins."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from conftest import make_plugin

import vlmzoo
import vlmzoo.plugins
from vlmzoo.components import linear as linear_module
from vlmzoo.components.linear import (
    FLOAT_FORMATS,
    LinearKernel,
    choose_kernel,
    kernel_choices,
    linear,
    use_linear_kernel,
)

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS = (0, 1, 32, 33)
FORMATS = ("float32", "bfloat16", "float16", "int8", "int4")
#: Tolerance against a float64 product, relative to the largest output: float32 kernels must agree as
#: closely as the parity tests demand; half-precision kernels round their inputs and outputs.
RTOL = {"float32": 1e-6, "bfloat16": 2e-2, "float16": 2e-3, "int8": 2e-2, "int4": 2e-2}


def _weights(fmt: str, out_features: int = 48, in_features: int = 64):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=g) / 8
    if fmt in FLOAT_FORMATS.values():
        dtype = {v: k for k, v in FLOAT_FORMATS.items()}[fmt]
        return weight.to(dtype), None, weight.to(dtype).double(), dtype
    scheme = vlmzoo.get_registries().quantization.get(fmt)
    qweight, scales = scheme.quantize(weight)
    return qweight, scales, scheme.dequantize(qweight, scales, torch.float32).double(), torch.float32


def _cases():
    for entry in vlmzoo.get_registries().linear_kernel.entries():
        for fmt in entry.value.formats:
            for rows in ROWS:
                if entry.value.supports("cpu", fmt, rows):
                    yield pytest.param(entry.key, fmt, rows, id=f"{entry.key}-{fmt}-{rows}")


@pytest.mark.parametrize(("name", "fmt", "rows"), list(_cases()))
@pytest.mark.parametrize("with_bias", [False, True])
def test_every_kernel_computes_f_linear(name, fmt, rows, with_bias):
    kernel = vlmzoo.get_registries().linear_kernel.get(name)
    weight, scales, reference_weight, dtype = _weights(fmt)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, rows, weight.shape[-1] if fmt != "int4" else weight.shape[-1] * 2, generator=g).to(dtype)
    bias = torch.randn(reference_weight.shape[0], generator=g).to(dtype) if with_bias else None
    expected = F.linear(x.double(), reference_weight, None if bias is None else bias.double())
    out = kernel.fn(x, weight, bias, scales)
    assert out.shape == expected.shape and out.dtype == x.dtype
    if rows:
        assert (out.double() - expected).abs().max().item() <= RTOL[fmt] * expected.abs().max().item()
    # ... and linear() runs it when it is forced
    with use_linear_kernel(name):
        forced = linear(x, weight, bias, scales, format=None if fmt in FLOAT_FORMATS.values() else fmt)
    torch.testing.assert_close(forced, out, rtol=0, atol=0)


def test_every_format_has_a_kernel_for_every_row_count():
    for fmt in FORMATS:
        for rows in ROWS:
            name, kernel = choose_kernel("cpu", fmt, rows)
            assert kernel.supports("cpu", fmt, max(rows, 1)), (fmt, rows, name)


def test_float32_choice_matches_f_linear_to_parity_tolerance():
    layer = vlmzoo.components.linear.Linear(64, 48)
    for rows in ROWS:
        x = torch.randn(2, rows, 64)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=0, atol=1e-5)


def test_a_kernel_that_is_not_differentiable_gives_way_while_training():
    calls: list = []

    def register_components(registry):
        kernel = LinearKernel(lambda x, w, b=None, s=None: calls.append(1) or F.linear(x, w, b), ("float32",),
                              priority=100, differentiable=False)  # fmt: skip
        registry.linear_kernel.register("inference_only", kernel)

    layer = vlmzoo.components.linear.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    with vlmzoo.plugins.plugin_registered(make_plugin(register_components=register_components), "inference-only"):
        layer(x).sum().backward()
        assert x.grad is not None and layer.weight.grad is not None and not calls
        with torch.no_grad():
            layer(x)
        assert calls


def test_unknown_forced_kernel_is_named():
    with pytest.raises(LookupError, match="unknown linear_kernel 'nope'"), use_linear_kernel("nope"):
        pass


def _plugin_kernel(name: str, calls: list, priority: int, delay: float = 0.0):
    def fn(x, weight, bias=None, scales=None):
        calls.append(x.shape)
        if delay:
            time.sleep(delay)
        return F.linear(x, weight, bias)

    def register_components(registry):
        registry.linear_kernel.register(name, LinearKernel(fn, ("float32",), devices=("cpu",), priority=priority))

    return make_plugin(register_components=register_components)


def test_a_plugin_kernel_with_top_priority_runs_the_model():
    calls: list = []
    config = vlmzoo.get_config("paligemma2-224").with_overrides(
        {"decoder__num_layers": 1, "vision__num_layers": 1, "vision__hidden_size": 16, "vision__num_heads": 2,
         "vision__intermediate_size": 32, "decoder__hidden_size": 32, "decoder__intermediate_size": 64,
         "decoder__num_heads": 2, "decoder__num_kv_heads": 1, "decoder__head_dim": 16, "decoder__vocab_size": 300,
         "projector__input_size": 16, "projector__output_size": 32, "image_token_id": 299,
         "vision__image_size": 28, "vision__patch_size": 14}
    )  # fmt: skip
    model = vlmzoo.build(config, seed=0)
    ids = torch.tensor([[299] * 4 + [2, 5, 6]])
    with vlmzoo.plugins.plugin_registered(_plugin_kernel("fast_for_sure", calls, priority=100), "kernel-plugin"):
        assert choose_kernel("cpu", "float32", 1)[0] == "fast_for_sure"
        model.generate(ids, torch.zeros(1, 3, 28, 28), max_new_tokens=2, stop_at_eos=False)
        assert calls
    assert choose_kernel("cpu", "float32", 1)[0] != "fast_for_sure"  # forgotten with the plugin


def test_calibration_times_candidates_and_caches_the_fastest(monkeypatch):
    monkeypatch.setenv("VLMZOO_LINEAR_CALIBRATION", "1")
    monkeypatch.setattr(linear_module, "CALIBRATION_BYTES", 2**20)
    monkeypatch.setattr(linear_module, "CALIBRATION_ROUNDS", 2)
    monkeypatch.setattr(linear_module, "CALIBRATION_SHAPE", (64, 32))
    calls: list = []
    with vlmzoo.plugins.plugin_registered(_plugin_kernel("slow", calls, priority=100, delay=0.05), "slow-plugin"):
        name, _ = choose_kernel("cpu", "float32", 8)
        assert calls, "the slow kernel was timed"
        assert name != "slow"  # the default (top priority) lost clearly
        assert kernel_choices()[("cpu", "float32", "few")] == name
        calls.clear()
        assert choose_kernel("cpu", "float32", 20)[0] == name and not calls  # cached: no second timing
