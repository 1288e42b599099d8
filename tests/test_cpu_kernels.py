"""The C++ small-row kernels: every instruction-set path this CPU has against float64, and the fallbacks."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from vlmzoo.components import cpu_kernels
from vlmzoo.components.linear import forget_kernel_choices, kernel_choices, linear
from vlmzoo.components.quantized import (
    dequantize_int4,
    int4_dequantized,
    int8_dequantized,
    int8_weight_only,
    quantize_int4,
    quantize_int8,
)

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
#: int4 shapes: rows of four-row tiles (out a multiple of 4, not of 8 or 16), inputs in 64s, groups of
#: 128 and (where in is not a multiple of 128) of 64.
INT4_SHAPES = [
    (1, 36, 64),
    (2, 4, 192),
    (3, 100, 320),
    (4, 12, 128),
    (5, 20, 448),
    (6, 44, 256),
    (7, 28, 576),
    (8, 52, 64),
]


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
            # All but AVX-512 without VNNI quantize the activations per block of 32; given that, they are
            # exact in float32.
            x64 = x.double() if path == "avx512" else _block_quantized(x)
            torch.testing.assert_close(got, F.linear(x64, weight64), rtol=1e-5, atol=1e-5, msg=f"{path} {rows, n, k}")
            exact = F.linear(x.double(), weight64)
            assert (got - exact).abs().max() <= 2e-2 * exact.abs().max(), path


def test_int8_paths_take_the_whole_int8_range():
    # -128 has no positive counterpart in a byte: a kernel that negates weights (AVX2's sign trick) must
    # still multiply it exactly. The activations are integers with 127 or -127 in every block of 32, so
    # the paths that quantize them per block keep them as they are.
    g = torch.Generator().manual_seed(5)
    qweight = torch.randint(-128, 128, (13, 100), generator=g, dtype=torch.int8)
    qweight[:, :3] = torch.tensor([-128, 127, -128], dtype=torch.int8)
    x = torch.randint(-127, 128, (3, 100), generator=g).float()
    x[:, ::32] = torch.tensor([-127.0, 127.0, -127.0])[:, None]
    x[:, 1:3] = -127.0
    scales = torch.rand(13, generator=g) + 0.5
    expected = F.linear(x.double(), qweight.double() * scales.double()[:, None])
    for path in _paths("int8"):
        got = cpu_kernels.small_m_matmul(x, qweight, scales, path).double()
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-3, msg=path)


def test_int4_paths_match_float64():
    for path in _paths("int4"):
        for seed, (rows, n, k) in enumerate(INT4_SHAPES):
            x, w = _data(rows, n, k, seed)
            packed, scales = quantize_int4(w)
            weight64 = dequantize_int4(packed, scales, torch.float64)
            got = cpu_kernels.small_m_matmul(x, packed, scales, path).double()
            assert got.shape == (rows, n)
            message = f"{path} {rows, n, k}"
            torch.testing.assert_close(got, F.linear(_block_quantized(x), weight64), rtol=1e-5, atol=1e-5, msg=message)
            exact = F.linear(x.double(), weight64)
            assert (got - exact).abs().max() <= 2e-2 * exact.abs().max(), message


def test_int4_paths_cover_every_instruction_set():
    # This machine (AVX-512 VNNI and AVX-VNNI) runs all three; elsewhere the ones it has.
    assert _paths("int4")[-1] == "avx2"


def test_int4_tiles_hold_the_quantized_rows():
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(5))
    packed, scales = quantize_int4(w)
    assert packed.dtype == torch.uint8 and packed.shape == (8, 64) and scales.shape == (8, 1, 2)
    # tile 0, first chunk: row 1's 32 bytes follow row 0's; byte 3 holds inputs 3 (low) and 35 (high)
    low, high = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    q = ((w - low) / ((high - low) / 15)).round()
    assert packed[0, 32 + 3].item() == int(q[1, 3]) | int(q[1, 35]) << 4
    torch.testing.assert_close(
        dequantize_int4(packed[4:], scales[4:], torch.float32), dequantize_int4(packed, scales, torch.float32)[4:]
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extension_dequantizes_the_requested_rows(dtype):
    module = cpu_kernels.load_extension()
    tolerance = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2**-8, "atol": 1e-6}
    w = torch.randn(36, 192, generator=torch.Generator().manual_seed(6))
    packed, scales = quantize_int4(w)
    out = torch.full((12, 192), float("nan"), dtype=dtype)
    module.dequantize_int4(packed, scales, 20, 32, out)
    torch.testing.assert_close(out.double(), dequantize_int4(packed, scales, torch.float64)[20:32], **tolerance)
    qweight, row_scales = quantize_int8(w)
    out = torch.full((5, 192), float("nan"), dtype=dtype)
    module.dequantize_int8(qweight, row_scales.float(), 30, 35, out)
    expected = qweight[30:35].double() * row_scales[30:35].double()[:, None]
    torch.testing.assert_close(out.double(), expected, **tolerance)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_tiled_kernels_compute_the_dequantized_product(monkeypatch, fmt):
    # A tiny tile budget makes several tiles, the last one short; the bias is sliced with them.
    monkeypatch.setattr(cpu_kernels, "TILE_BYTES", 8 * 192 * 4)
    x, w = _data(40, 36, 192, 7)
    bias = torch.randn(36)
    quantize, dequantize = (quantize_int8, None) if fmt == "int8" else (quantize_int4, dequantize_int4)
    qweight, scales = quantize(w)
    weight = qweight.float() * scales.float()[:, None] if fmt == "int8" else dequantize(qweight, scales, torch.float32)
    tiled = cpu_kernels.tiled_int8 if fmt == "int8" else cpu_kernels.tiled_int4
    got = tiled(x[None], qweight, bias, scales)
    assert got.shape == (1, 40, 36) and got.dtype == torch.float32
    torch.testing.assert_close(got[0], F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    got = tiled(x.bfloat16(), qweight, bias.bfloat16(), scales)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), F.linear(x, weight, bias), rtol=2e-2, atol=5e-2)


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
        packed, packed_scales = quantize_int4(w[:, :64])
        got = cpu_kernels.small_m_int4(x[:, :64], packed, None, packed_scales)
        assert torch.equal(got, int4_dequantized(x[:, :64], packed, None, packed_scales))
        assert torch.equal(cpu_kernels.tiled_int8(x, qweight, None, scales), int8_dequantized(x, qweight, None, scales))
    assert len([r for r in caplog.records if "switched off" in r.getMessage()]) == 1


def test_switched_off_kernels_are_never_chosen(fresh_extension):
    fresh_extension.setenv("VLMZOO_CPU_KERNELS", "0")
    fresh_extension.setenv("VLMZOO_LINEAR_CALIBRATION", "0")  # by priority, where the kernels rank first
    forget_kernel_choices()
    try:
        x, w = _data(1, 48, 64, 4)
        linear(x, w)
        qweight, scales = quantize_int8(w)
        linear(x, qweight, None, scales, format="int8")
        packed, packed_scales = quantize_int4(w)
        linear(x, packed, None, packed_scales, format="int4")
        linear(x.expand(40, 64), packed, None, packed_scales, format="int4")
        chosen = kernel_choices()
        assert len(chosen) == 4 and not any(name.startswith(("small_m", "tiled")) for name in chosen.values()), chosen
    finally:
        forget_kernel_choices()


def test_int8pack_kernel_is_never_given_shapes_it_crashes_on():
    # PyTorch's _weight_int8pack_mm ends the process on a 40x70 weight (inputs not a multiple of 16).
    x, w = _data(3, 40, 70, 8)
    qweight, scales = quantize_int8(w)
    got = int8_weight_only(x, qweight, None, scales)
    torch.testing.assert_close(got, int8_dequantized(x, qweight, None, scales), rtol=0, atol=0)


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


class _FakeExtension:
    @staticmethod
    def paths():
        return ["avx2"]


def test_a_lock_left_by_a_killed_build_is_cleared(fresh_extension, tmp_path, caplog):
    """PyTorch's builder would wait on a stale ``lock`` forever; it is removed and the build goes on."""
    fresh_extension.setenv("VLMZOO_CACHE_DIR", str(tmp_path))
    lock = cpu_kernels.build_directory() / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    old = time.time() - cpu_kernels.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    built = []

    def fake_load(name, sources, **kwargs):
        assert not lock.exists() and kwargs["build_directory"] == str(lock.parent)
        built.append(name)
        return _FakeExtension()

    fresh_extension.setattr("torch.utils.cpp_extension.load", fake_load)
    with caplog.at_level(logging.WARNING, logger="vlmzoo.components.cpu_kernels"):
        assert isinstance(cpu_kernels.load_extension(), _FakeExtension)
    assert built and [r for r in caplog.records if "removing" in r.getMessage() and str(lock) in r.getMessage()]


def test_a_build_in_another_process_is_waited_for_then_given_up(fresh_extension, tmp_path, caplog):
    """A fresh lock is another process's build: wait a while, then run on PyTorch's kernels, lock kept."""
    fresh_extension.setenv("VLMZOO_CACHE_DIR", str(tmp_path))
    fresh_extension.setattr(cpu_kernels, "BUILD_WAIT_SECONDS", 0.3)
    lock = cpu_kernels.build_directory() / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    fresh_extension.setattr("torch.utils.cpp_extension.load", lambda *a, **k: pytest.fail("built despite the lock"))
    x, w = _data(1, 8, 16, 3)
    with caplog.at_level(logging.WARNING, logger="vlmzoo.components.cpu_kernels"):
        assert cpu_kernels.best_path("float32") is None
        assert torch.equal(cpu_kernels.small_m_float(x, w), F.linear(x, w))
    assert lock.exists()
    messages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(messages) == 1 and str(lock) in messages[0], messages


def test_the_build_goes_on_when_the_other_build_ends(fresh_extension, tmp_path):
    fresh_extension.setenv("VLMZOO_CACHE_DIR", str(tmp_path))
    lock = cpu_kernels.build_directory() / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    threading.Timer(0.5, lock.unlink).start()
    fresh_extension.setattr("torch.utils.cpp_extension.load", lambda *a, **k: _FakeExtension())
    assert isinstance(cpu_kernels.load_extension(), _FakeExtension)
