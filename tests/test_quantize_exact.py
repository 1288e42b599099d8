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
    restored = dequantize_int4(packed, scales_and_zeros, torch.float64).reshape(64, 2, 128)
    error = (restored - groups).pow(2).sum(dim=-1)
    assert float(error.sum() / min_max_error.sum()) < 0.96
    assert bool((error <= 1.01 * min_max_error).all())
