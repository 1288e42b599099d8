"""The C++ small-row kernels: every instruction-set path this CPU has against float64, and the fallbacks."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from vlmzoo.components import cpu_kernels
from vlmzoo.components.quantized import int8_weight_only, quantize_int8

#: Shapes (rows, out, in): odd sizes, inputs not a multiple of the 32/64-wide blocks, 1..8 rows and 32.
SHAPES = [
    (1, 37, 67),
    (32, 20, 75),
    (2, 16, 32),
    (3, 100, 129),
    (4, 9, 1),
    (5, 17, 31),
    (6, 64, 200),
    (7, 33, 97),
    (8, 45, 300),
]


@pytest.fixture
def fresh_extension(monkeypatch):
    """Let a test change the switch; the loader's cached answer is dropped before and after."""
    cpu_kernels.load_extension.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    cpu_kernels.load_extension.cache_clear()


def _data(rows: int, out_features: int, in_features: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, in_features, generator=g), torch.randn(out_features, in_features, generator=g) / 8


def _block_quantized(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the VNNI paths see it: int8 per block of 32 inputs with scale max|x| / 127, in float64."""
    rows, k = x.shape
    padded = F.pad(x.double(), (0, -k % 32)).reshape(rows, -1, 32)
    scale = padded.abs().amax(dim=-1, keepdim=True) / 127
    q = torch.where(scale > 0, torch.round(padded / torch.where(scale > 0, scale, 1)), 0)
    return (q * scale).reshape(rows, -1)[:, :k]


def _paths(fmt: str) -> list[str]:
    return [p for p in cpu_kernels.PATHS[fmt] if p in cpu_kernels.instruction_sets()]


def test_this_machine_has_the_kernels():
    # Every machine of this project has a compiler and AVX2; a failed build would only show as slowness.
    assert "avx2" in cpu_kernels.instruction_sets()


@pytest.mark.parametrize("fmt", ["float32", "bfloat16"])
def test_float_paths_match_float64(fmt):
    dtype = torch.float32 if fmt == "float32" else torch.bfloat16
    for path in _paths(fmt):
        for seed, (rows, n, k) in enumerate(SHAPES):
            x, w = _data(rows, n, k, seed)
            x, w = x.to(dtype), w.to(dtype)
            expected = F.linear(x.double(), w.double())
            got = cpu_kernels.small_m_matmul(x, w, None, path)
            assert got.dtype == torch.float32 and got.shape == (rows, n)
            message = f"{path} {rows, n, k}"
            torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * k**0.5, msg=message)


def test_int8_paths_match_float64():
    for path in _paths("int8"):
        for seed, (rows, n, k) in enumerate(SHAPES):
            x, w = _data(rows, n, k, seed)
            qweight, scales = quantize_int8(w)
            weight64 = qweight.double() * scales.double()[:, None]
            got = cpu_kernels.small_m_matmul(x, qweight, scales, path).double()
            # The VNNI paths quantize the activations per block of 32; given that, they are exact in float32.
            x64 = _block_quantized(x) if "vnni" in path else x.double()
            torch.testing.assert_close(got, F.linear(x64, weight64), rtol=1e-5, atol=1e-5, msg=f"{path} {rows, n, k}")
            exact = F.linear(x.double(), weight64)
            assert (got - exact).abs().max() <= 2e-2 * exact.abs().max(), path


def test_kernels_follow_the_linear_contract():
    x, w = _data(3, 40, 70, 0)
    bias = torch.randn(40)
    for dtype in (torch.float32, torch.bfloat16):
        xd, wd, bd = x.to(dtype), w.to(dtype), bias.to(dtype)
        got = cpu_kernels.small_m_float(xd[None], wd, bd)
        assert got.dtype == dtype and got.shape == (1, 3, 40)
        expected = F.linear(xd.double(), wd.double(), bd.double())
        torch.testing.assert_close(got[0].double(), expected, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-2)
    qweight, scales = quantize_int8(w)
    got = cpu_kernels.small_m_int8(x, qweight, bias, scales)
    expected = F.linear(x.double(), qweight.double() * scales.double()[:, None], bias.double())
    assert got.dtype == torch.float32 and (got - expected).abs().max() <= 2e-2 * expected.abs().max()


def test_switched_off_falls_back_with_one_log_line(fresh_extension, caplog):
    fresh_extension.setenv("VLMZOO_CPU_KERNELS", "0")
    x, w = _data(2, 48, 64, 1)  # a shape PyTorch's int8 kernel takes
    qweight, scales = quantize_int8(w)
    with caplog.at_level(logging.INFO, logger="vlmzoo.components.cpu_kernels"):
        assert cpu_kernels.instruction_sets() == ()
        assert torch.equal(cpu_kernels.small_m_float(x, w), F.linear(x, w))
        got = cpu_kernels.small_m_int8(x, qweight, None, scales)
        assert torch.equal(got, int8_weight_only(x, qweight, None, scales))
    assert len([r for r in caplog.records if "switched off" in r.getMessage()]) == 1


def test_avx2_setting_keeps_to_avx2_paths(fresh_extension):
    fresh_extension.setenv("VLMZOO_CPU_KERNELS", "avx2")
    assert set(cpu_kernels.instruction_sets()) <= {"avx2", "avxvnni"}
    assert cpu_kernels.best_path("float32") == "avx2" and cpu_kernels.best_path("bfloat16") == "avx2"
    x, w = _data(1, 30, 45, 2)
    torch.testing.assert_close(cpu_kernels.small_m_float(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_failed_build_falls_back_with_a_warning(fresh_extension, tmp_path, caplog):
    fresh_extension.setenv("VLMZOO_CACHE_DIR", str(tmp_path))
    fresh_extension.setattr(cpu_kernels, "SOURCE", tmp_path / "missing.cpp")
    x, w = _data(1, 8, 16, 3)
    with caplog.at_level(logging.WARNING, logger="vlmzoo.components.cpu_kernels"):
        assert cpu_kernels.best_path("float32") is None
        assert torch.equal(cpu_kernels.small_m_float(x, w), F.linear(x, w))
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
