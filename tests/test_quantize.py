"""Weight-only quantization: error bounds, whole-model closeness, loading, saving, plugin schemes."""

from __future__ import annotations

import pytest
import torch
from conftest import make_plugin, tiny_config, tiny_inputs

import vlmzoo
import vlmzoo.plugins
from vlmzoo.components.linear import LinearKernel
from vlmzoo.components.quantized import (
    INT8,
    QuantizationScheme,
    QuantizedEmbedding,
    QuantizedLinear,
    dequantize_int4,
    dequantize_int8,
    int8_dequantized,
    int8_weight_only,
    quantize_int4,
    quantize_int8,
)

pytestmark = pytest.mark.usefixtures("single_thread")

#: Largest logit error of the quantized tiny model, relative to the largest float logit.
MODEL_RTOL = {"int8": 0.02, "int4": 0.05}


def test_int8_error_is_at_most_half_a_step_per_row():
    weight = torch.randn(40, 96)
    qweight, scales = quantize_int8(weight)
    assert qweight.dtype == torch.int8 and scales.shape == (40,)
    step = scales.float()[:, None]
    error = (qweight.float() * step - weight).abs()
    assert bool((error <= step / 2 + 1e-6).all())
    assert bool((step * 127 >= weight.abs().amax(dim=1, keepdim=True)).all())  # nothing clipped


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 5, 40])
def test_int8_kernels_compute_the_dequantized_product(monkeypatch, dtype, rows):
    # A tiny slice budget makes int8_dequantized work in many slices (the last one short), bias included.
    monkeypatch.setattr("vlmzoo.components.quantized.DEQUANTIZE_BYTES", 7 * 96 * 4)
    qweight, scales = quantize_int8(torch.randn(40, 96))
    x, bias = torch.randn(rows, 96).to(dtype), torch.randn(40).to(dtype)
    weight = dequantize_int8(qweight, scales, torch.float32)
    expected = torch.nn.functional.linear(x.float(), weight, bias.float())
    half = {"rtol": 2e-2, "atol": 1e-1}  # products with bfloat16 activations
    for kernel, exact in ((int8_dequantized, dtype == torch.float32), (int8_weight_only, False)):
        out = kernel(x, qweight, bias, scales)
        assert out.dtype == dtype and out.shape == (rows, 40)
        torch.testing.assert_close(out.float(), expected, **({"rtol": 1e-5, "atol": 1e-5} if exact else half))


def test_int4_error_is_at_most_half_a_step_per_group():
    weight = torch.randn(32, 256)
    packed, scales_and_zeros = quantize_int4(weight)
    assert packed.shape == (32, 128) and scales_and_zeros.shape == (32, 2, 2)  # groups of 128
    step = scales_and_zeros[..., 0].float().repeat_interleave(128, dim=1)  # [out, in]
    error = (dequantize_int4(packed, scales_and_zeros, torch.float32) - weight).abs()
    # half a step, plus the bfloat16 rounding of the stored scale and zero point
    assert bool((error <= step / 2 + 0.02 * weight.abs().amax()).all())


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_model_is_close_to_float_and_generates(scheme):
    config = tiny_config(num_layers=2)
    ids, pixels = tiny_inputs(config)
    float_model = vlmzoo.build(config, seed=0)
    model = vlmzoo.build(config, seed=0, quantize=scheme)
    assert model.quantization == scheme and model.dtype == torch.float32
    layer = model.language_model.layers[0]
    assert isinstance(layer.mlp.down_proj, QuantizedLinear) and layer.mlp.down_proj.scheme == scheme
    assert isinstance(model.language_model.embed_tokens, QuantizedEmbedding)  # the tied head, in int8
    assert not any(isinstance(m, QuantizedLinear) for m in model.vision_tower.modules())
    with torch.no_grad():
        expected = float_model(ids, pixels).logits
        logits = model(ids, pixels).logits
    error = (logits - expected).abs().max().item()
    assert 0 < error <= MODEL_RTOL[scheme] * expected.abs().max().item()
    tokens = model.generate(ids, pixels, max_new_tokens=4, stop_at_eos=False)
    assert tokens.shape == (2, 4)
    torch.testing.assert_close(tokens, float_model.generate(ids, pixels, max_new_tokens=4, stop_at_eos=False))


def test_quantized_model_is_smaller():
    config = tiny_config(num_layers=2, hidden_size=64, intermediate_size=128, vocab_size=512, head_dim=16)
    sizes = {}
    for scheme in (None, "int8", "int4"):
        model = vlmzoo.build(config.replace(image_token_id=511), seed=0, quantize=scheme)
        decoder = model.language_model
        sizes[scheme] = sum(t.numel() * t.element_size() for t in (*decoder.parameters(), *decoder.buffers()))
    assert sizes["int4"] < sizes["int8"] < 0.35 * sizes[None]


@pytest.mark.parametrize("scheme,block_bytes", [("int8", None), ("int8", 200), ("int4", None)])
def test_from_pretrained_quantizes_while_loading(tmp_path, monkeypatch, scheme, block_bytes):
    # int8 quantizes rows independently, so loading reads its weights a block of rows at a time; tiny
    # blocks (a row or two) must give exactly the weights of quantizing the whole tensor.
    if block_bytes is not None:
        monkeypatch.setattr("vlmzoo.checkpoints.safetensors_io.CHUNK_BYTES", block_bytes)
    config = tiny_config(num_layers=2)
    ids, pixels = tiny_inputs(config)
    vlmzoo.build(config, seed=0).save_pretrained(tmp_path)
    loaded = vlmzoo.from_pretrained(tmp_path, quantize=scheme)
    reference = vlmzoo.from_pretrained(tmp_path).quantize(scheme)
    assert loaded.quantization == scheme
    assert loaded.state_dict().keys() == reference.state_dict().keys()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, pixels).logits, reference(ids, pixels).logits, rtol=0, atol=0)


def test_save_pretrained_refuses_a_quantized_model_unless_asked_to_dequantize(tmp_path):
    config = tiny_config(num_layers=2)
    model = vlmzoo.build(config, seed=0, quantize="int8")
    with pytest.raises(ValueError, match="dequantize=True"):
        model.save_pretrained(tmp_path / "refused")
    assert not (tmp_path / "refused" / "model.safetensors").exists()
    model.save_pretrained(tmp_path / "float", dequantize=True)
    reloaded = vlmzoo.from_pretrained(tmp_path / "float")
    assert reloaded.quantization is None and reloaded.dtype == torch.float32
    embed = model.language_model.embed_tokens
    torch.testing.assert_close(
        reloaded.language_model.embed_tokens.weight, embed.qweight.float() * embed.scales.float()[:, None]
    )
    # int8 round trip: quantizing the dequantized weights gives the integers back, within one step (the
    # largest weight of a row may land on the next bfloat16 scale)
    requantized = vlmzoo.from_pretrained(tmp_path / "float", quantize="int8")
    for name, tensor in model.state_dict().items():
        if name.endswith("qweight"):
            assert (requantized.state_dict()[name].int() - tensor.int()).abs().max() <= 1, name


def test_bad_requests_are_explained(tmp_path):
    config = tiny_config()
    with pytest.raises(LookupError, match="unknown quantization 'int3'.*int4, int8"):
        vlmzoo.build(config, seed=0, quantize="int3")
    with pytest.raises(ValueError, match="needs weights to quantize"):
        vlmzoo.build(config, device="meta", quantize="int8")
    model = vlmzoo.build(config, seed=0, quantize="int8")
    with pytest.raises(ValueError, match="already quantized"):
        model.quantize("int4")
    from vlmzoo.components.quantized import INT4
    from vlmzoo.model.quantize import check_device

    with pytest.raises(ValueError, match="quantize='int4' has a kernel on cpu, not on cuda"):
        check_device("int4", INT4, "cuda")


def test_a_plugin_adds_a_quantization_scheme_with_its_kernel():
    calls = []

    def kernel(x, qweight, bias=None, scales=None):
        calls.append(x.shape)
        return int8_weight_only(x, qweight, bias, scales)

    def register_components(registry):
        registry.quantization.register("my_int8", QuantizationScheme(**{**INT8.__dict__, "description": "mine"}))
        registry.linear_kernel.register("my_int8_kernel", LinearKernel(kernel, ("my_int8",), devices=("cpu",)))

    config = tiny_config(num_layers=1)
    ids, pixels = tiny_inputs(config)
    with vlmzoo.plugins.plugin_registered(make_plugin(register_components=register_components), "my-scheme"):
        model = vlmzoo.build(config, seed=0).quantize("my_int8")
        assert model.language_model.layers[0].mlp.up_proj.scheme == "my_int8"
        model.generate(ids, pixels, max_new_tokens=2, stop_at_eos=False)
    assert calls


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_a_quantized_model_still_runs_after_a_dtype_cast(scheme):
    config = tiny_config(num_layers=1)
    ids, pixels = tiny_inputs(config)
    model = vlmzoo.build(config, seed=0, quantize=scheme, dtype="bfloat16")
    with torch.no_grad():
        expected = model(ids, pixels.bfloat16()).logits.float()
        model.float()  # casts the bfloat16 scales too
        assert model.dtype == torch.float32
        logits = model(ids, pixels).logits
    assert (logits - expected).abs().max() <= 0.05 * expected.abs().max()
