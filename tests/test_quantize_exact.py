"""int8 / int4 weights at their edges: zero rows, the extremes of a row or group, constant groups.

test_quantize.py bounds the error of random weights; these pin the values a quantizer must hit
exactly, so a scale off by one step or a clamp in the wrong place fails here.
"""

from __future__ import annotations

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


def test_int4_hits_each_groups_extremes_and_constant_groups():
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
        # the smallest and largest weight of a group are the ends of its 16 levels (bfloat16 scale and zero)
        assert abs(float(got[0] - group[0])) < 0.02 and abs(float(got[-1] - group[-1])) < 0.02
        step = float(group[-1] - group[0]) / 15
        assert bool(((got - group).abs() <= step / 2 + 0.02).all())


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
