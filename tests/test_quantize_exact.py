"""int8 / int4 weights at their edges: zero rows, the extremes of a row or group, constant groups.

test_quantize.py bounds the error of random weights; these pin the values a quantizer must hit
exactly, so a scale off by one step or a clamp in the wrong place fails here.
"""

from __future__ import annotations

import pytest
import torch

from vlmzoo.components.quantized import dequantize_int4, dequantize_int8, quantize_int4, quantize_int8


def test_int8_uses_the_full_range_and_keeps_zero_rows_zero():
    weight = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-2.54, 1.27, 0.0, 2.54], [0.5, -0.25, 0.125, 0.0]])
    qweight, scales = quantize_int8(weight)
    assert qweight[0].tolist() == [0, 0, 0, 0]
    # Each integer is the weight over its row's stored scale, rounded; the largest magnitude uses the
    # top of the range (126 or 127: the scale is nudged up so the largest weight never clips).
    assert torch.equal(qweight.float(), (weight / scales.float()[:, None]).round())
    assert qweight[1].abs().max() >= 126 and qweight[2].abs().max() >= 126
    assert qweight[1].tolist()[2] == 0 and qweight[1][0] == -qweight[1][3]
    restored = dequantize_int8(qweight, scales, torch.float32)
    assert restored[0].tolist() == [0.0, 0.0, 0.0, 0.0] and torch.isfinite(restored).all()
    step = scales.float()[:, None]
    assert bool(((restored - weight).abs() <= step / 2 + 1e-7).all())
    assert dequantize_int8(qweight, scales, torch.bfloat16).dtype == torch.bfloat16


def test_int4_keeps_zero_rows_constant_groups_and_every_weight_near_a_level():
    weight = torch.zeros(16, 192)
    weight[1] = torch.linspace(-1, 2, 192)
    weight[2, :64] = 0.75  # a constant group
    weight[2, 64:128] = torch.linspace(-3, 0, 64)
    packed, scales_and_zeros = quantize_int4(weight)
    assert scales_and_zeros.shape == (16, 3, 2)  # 192 inputs: groups of 64
    restored = dequantize_int4(packed, scales_and_zeros, torch.float32)
    assert restored[0].abs().max() == 0 and restored[3:].abs().max() == 0
    torch.testing.assert_close(restored[2, :64], torch.full((64,), 0.75), atol=4e-3, rtol=0)
    for row, start in ((1, 0), (1, 64), (1, 128), (2, 64)):
        group = weight[row, start : start + 64]
        got = restored[row, start : start + 64]
        # evenly spread weights: the fitted levels span the group, each weight within half a step of one
        assert abs(float(got[0] - group[0])) < 0.05 and abs(float(got[-1] - group[-1])) < 0.05
        step = float(group[-1] - group[0]) / 15
        assert bool(((got - group).abs() <= step / 2 + 0.02).all())


def test_int4_levels_fit_each_group_better_than_min_max():
    """Least-squares levels: less squared error than 16 levels from a group's min to its max (the
    reference, in float64), never more in any group beyond the bfloat16 rounding of scale and zero."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 256, generator=g) * torch.rand(64, 1, generator=g)
    groups = weight.double().reshape(64, 2, 128)
    low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
    step = (high - low) / 15
    min_max_error = (((groups - low) / step).round() * step + low - groups).pow(2).sum(dim=-1)
    packed, scales_and_zeros = quantize_int4(weight)
    assert packed.dtype == torch.uint8 and scales_and_zeros.dtype == torch.bfloat16
    restored = dequantize_int4(packed, scales_and_zeros, torch.float64).reshape(64, 2, 128)
    error = (restored - groups).pow(2).sum(dim=-1)
    assert float(error.sum() / min_max_error.sum()) < 0.96
    assert bool((error <= 1.01 * min_max_error).all())


# ---- the kernels' edges: guards, slices, biases, casts (each pinned by a surviving mutant) ------------


def test_int8pack_guard_takes_only_inputs_in_multiples_of_32():
    from vlmzoo.components.quantized import int8pack_handles

    assert [int8pack_handles(40, n) for n in (32, 64, 2048, 33, 70, 16, 1)] == [True] * 3 + [False] * 4


@pytest.mark.parametrize("in_features", [64, 70])  # PyTorch's kernel, and the dequantized path it crashes on
@pytest.mark.parametrize("with_bias", [False, True])
def test_int8_weight_only_computes_the_dequantized_product(in_features, with_bias):
    from vlmzoo.components.quantized import int8_dequantized, int8_weight_only

    g = torch.Generator().manual_seed(in_features)
    x, weight = torch.randn(3, in_features, generator=g), torch.randn(24, in_features, generator=g)
    bias = torch.randn(24, generator=g) if with_bias else None
    qweight, scales = quantize_int8(weight)
    expected = torch.nn.functional.linear(x.double(), dequantize_int8(qweight, scales, torch.float64),
                                          None if bias is None else bias.double())  # fmt: skip
    got = int8_weight_only(x, qweight, bias, scales)
    assert got.dtype == x.dtype and got.shape == (3, 24)
    torch.testing.assert_close(got.double(), expected, rtol=2e-2, atol=5e-2)  # bfloat16 activations
    exact = int8_dequantized(x, qweight, bias, scales)
    if in_features % 32:  # the exact float32 path
        torch.testing.assert_close(got, exact, rtol=0, atol=0)
    else:  # PyTorch's kernel, with its bfloat16 activations
        assert not torch.equal(got, exact)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dequantizing_kernels_give_the_same_product_in_slices(monkeypatch, scheme, with_bias):
    """Large weights are dequantized a few megabytes of rows at a time: the slices join to the whole."""
    from vlmzoo.components import quantized

    kernel, quantize, dequantize = {
        "int8": (quantized.int8_dequantized, quantize_int8, dequantize_int8),
        "int4": (quantized.int4_dequantized, quantize_int4, dequantize_int4),
    }[scheme]
    g = torch.Generator().manual_seed(5)
    x, weight = torch.randn(2, 3, 64, generator=g), torch.randn(80, 64, generator=g)  # more rows than inputs
    bias = torch.randn(80, generator=g) if with_bias else None
    qweight, scales = quantize(weight)
    expected = torch.nn.functional.linear(x, dequantize(qweight, scales, torch.float32), bias)
    whole = kernel(x, qweight, bias, scales)
    monkeypatch.setattr(quantized, "DEQUANTIZE_BYTES", 8 * 64 * 4)  # 8 rows a slice: ten slices
    sliced = kernel(x, qweight, bias, scales)
    for got in (whole, sliced):
        assert got.shape == (2, 3, 80)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 64), (8, 70), (8, 32)])
def test_int4_refuses_shapes_its_tiles_cannot_hold(shape):
    message = rf"int4 needs out_features divisible by 4 and in_features by 64, got \[{shape[0]}, {shape[1]}\]"
    with pytest.raises(ValueError, match=message):
        quantize_int4(torch.randn(*shape))


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_a_quantized_linear_keeps_its_float_bias(scheme):
    from torch import nn

    from vlmzoo.components.quantized import SCHEMES, QuantizedLinear

    torch.manual_seed(0)
    layer = nn.Linear(64, 12, bias=True)
    quantized = QuantizedLinear.from_float(layer, scheme, SCHEMES[scheme])
    assert torch.equal(quantized.bias, layer.bias) and not quantized.bias.requires_grad
    x = torch.randn(5, 64)
    weight = SCHEMES[scheme].dequantize(quantized.qweight, quantized.scales, torch.float32)
    torch.testing.assert_close(quantized(x), torch.nn.functional.linear(x, weight, layer.bias), rtol=2e-2, atol=3e-2)
    assert not torch.allclose(quantized(x), torch.nn.functional.linear(x, weight), atol=1e-2)  # the bias counts

    # an empty one, as loading makes it: on the meta device, in the stored dtypes, with a bias of the model's dtype
    (qshape, qdtype), (sshape, sdtype) = SCHEMES[scheme].packed_shapes(12, 64)
    empty = QuantizedLinear(64, 12, scheme, ((qshape, qdtype), (sshape, sdtype)), bias=True, device="meta",
                            dtype=torch.bfloat16)  # fmt: skip
    assert empty.qweight.device.type == empty.scales.device.type == empty.bias.device.type == "meta"
    assert (empty.qweight.shape, empty.qweight.dtype) == (qshape, qdtype)
    assert (empty.scales.shape, empty.scales.dtype) == (sshape, sdtype)
    assert empty.bias.shape == (12,) and empty.bias.dtype == torch.bfloat16
    assert QuantizedLinear(64, 12, scheme, ((qshape, qdtype), (sshape, sdtype)), device="meta").bias is None


def test_a_quantized_embedding_follows_the_models_dtype():
    from torch import nn

    from vlmzoo.components.quantized import QuantizedEmbedding

    torch.manual_seed(0)
    table = nn.Embedding(10, 32)
    quantized = QuantizedEmbedding.from_float(table)
    assert quantized.qweight.device.type == "cpu" and quantized.dtype == torch.float32
    ids = torch.tensor([[1, 7], [3, 3]])
    rows = quantized(ids)
    assert rows.dtype == torch.float32
    torch.testing.assert_close(rows, table(ids).detach(), rtol=0, atol=table.weight.abs().max().item() / 127)
    quantized.to(torch.bfloat16)  # the int8 table stays; what it returns follows the cast
    assert quantized.qweight.dtype == torch.int8 and quantized.scales.dtype == torch.bfloat16
    assert quantized(ids).dtype == quantized.dequantized().dtype == quantized.dtype == torch.bfloat16
    torch.testing.assert_close(quantized(ids), rows.to(torch.bfloat16))
    empty = QuantizedEmbedding(10, 32, torch.float32, device="meta")
    assert empty.qweight.device.type == empty.scales.device.type == "meta" and empty.scales.dtype == torch.bfloat16


def test_int8_quantizes_large_weights_a_block_of_rows_at_a_time(monkeypatch):
    """Row blocks (a vocabulary of 257,152 rows is never held whole in float32) give the same integers and
    bfloat16 scales as one pass, whatever the shape."""
    from vlmzoo.components import quantized

    weight = torch.randn(40, 16, generator=torch.Generator().manual_seed(2))
    whole = quantize_int8(weight)
    monkeypatch.setattr(quantized, "CHUNK_ROWS", 8)
    blocks = quantize_int8(weight)
    for qweight, scales in (whole, blocks):
        assert qweight.dtype == torch.int8 and scales.dtype == torch.bfloat16 and scales.shape == (40,)
    assert torch.equal(whole[0], blocks[0]) and torch.equal(whole[1], blocks[1])
    assert int(blocks[0].abs().amax(dim=1).min()) >= 126  # every row, the last blocks too, spans the range


def test_quantized_embedding_looks_up_its_own_rows_and_keeps_its_dtype_through_moves_and_casts():
    from torch import nn

    from vlmzoo.components.quantized import QuantizedEmbedding

    torch.manual_seed(0)
    embedding = nn.Embedding(8, 32).to(torch.bfloat16)
    quantized = QuantizedEmbedding.from_float(embedding)
    qweight, scales = quantize_int8(embedding.weight.detach())
    assert torch.equal(quantized.qweight, qweight) and torch.equal(quantized.scales, scales)
    ids = torch.tensor([[3, 0, 7]])
    rows = quantized(ids)
    assert rows.dtype == torch.bfloat16 and rows.shape == (1, 3, 32)
    expected = dequantize_int8(qweight, scales, torch.float32)[ids[0]].to(torch.bfloat16)
    assert torch.equal(rows[0], expected)
    assert quantized.dequantized().dtype == torch.bfloat16
    assert torch.equal(quantized.dequantized(), dequantize_int8(qweight, scales, torch.bfloat16))
    # a move keeps the activation dtype; a cast changes it, as it would for a float weight
    assert quantized.to("cpu").dtype == torch.bfloat16
    assert quantized.float().dtype == torch.float32 and quantized(ids).dtype == torch.float32
    assert quantized.to("cpu").dtype == torch.float32
    assert quantized.dequantized().dtype == torch.float32
    assert quantized.qweight.dtype == torch.int8  # the stored integers are never cast


def test_dequantizing_kernels_add_the_bias_of_each_slice_of_rows(monkeypatch):
    import torch.nn.functional as F

    from vlmzoo.components import quantized as q

    torch.manual_seed(1)
    weight, bias, x = torch.randn(24, 128), torch.randn(24), torch.randn(2, 3, 128)
    packed, scales_and_zeros = quantize_int4(weight)
    qweight, scales = quantize_int8(weight)
    int4_weight = dequantize_int4(packed, scales_and_zeros, torch.float32)
    int8_weight = dequantize_int8(qweight, scales, torch.float32)
    for budget in (q.DEQUANTIZE_BYTES, 2048):  # one slice, then slices of a few rows (several tiles)
        monkeypatch.setattr(q, "DEQUANTIZE_BYTES", budget)
        got4 = q.int4_dequantized(x, packed, bias, scales_and_zeros)
        torch.testing.assert_close(got4, F.linear(x, int4_weight, bias), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(q.int4_dequantized(x, packed, None, scales_and_zeros), F.linear(x, int4_weight))
        got8 = q.int8_dequantized(x, qweight, bias, scales)
        torch.testing.assert_close(got8, F.linear(x, int8_weight, bias), atol=1e-5, rtol=1e-5)
        assert got4.shape == got8.shape == (2, 3, 24)


def test_int4_stores_bfloat16_scales_in_the_advertised_shapes_and_refuses_other_shapes():
    import pytest

    from vlmzoo.components.quantized import INT4

    packed, scales_and_zeros = quantize_int4(torch.randn(8, 256))
    (packed_shape, packed_dtype), (scales_shape, scales_dtype) = INT4.packed_shapes(8, 256)
    assert (tuple(packed.shape), packed.dtype) == (packed_shape, packed_dtype) == ((8, 128), torch.uint8)
    assert (tuple(scales_and_zeros.shape), scales_and_zeros.dtype) == (scales_shape, scales_dtype)
    assert scales_dtype == torch.bfloat16 and scales_shape == (8, 2, 2)  # groups of 128
    for shape in ((6, 128), (8, 100)):
        assert not INT4.accepts(*shape)
        with pytest.raises(
            ValueError, match=rf"int4 needs out_features divisible by 4.*got \[{shape[0]}, {shape[1]}\]"
        ):
            quantize_int4(torch.zeros(shape))


def test_int8_dequantizing_kernel_covers_every_row_when_rows_outnumber_inputs(monkeypatch):
    import torch.nn.functional as F

    from vlmzoo.components import quantized as q

    torch.manual_seed(2)
    weight, x = torch.randn(64, 32), torch.randn(5, 32)
    qweight, scales = quantize_int8(weight)
    expected = F.linear(x, dequantize_int8(qweight, scales, torch.float32))
    monkeypatch.setattr(q, "DEQUANTIZE_BYTES", 32 * 4 * 32)  # two slices of 32 rows
    got = q.int8_dequantized(x, qweight, None, scales)
    assert got.shape == (5, 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_int4_dequantizing_kernel_covers_both_slices_of_two(monkeypatch):
    import torch.nn.functional as F

    from vlmzoo.components import quantized as q

    torch.manual_seed(3)
    weight, x = torch.randn(64, 128), torch.randn(5, 128)
    packed, scales_and_zeros = quantize_int4(weight)
    expected = F.linear(x, dequantize_int4(packed, scales_and_zeros, torch.float32))
    monkeypatch.setattr(q, "DEQUANTIZE_BYTES", 64 * 2 * 4 * 32)  # two slices of 32 rows
    got = q.int4_dequantized(x, packed, None, scales_and_zeros)
    assert got.shape == (5, 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
