"""Small-row CPU kernels (the decode step) from a C++ extension, with the instruction set picked at run time.

A decode step multiplies one row (or a few) by every weight, so its speed is the speed at which the
weights are read. PyTorch's CPU kernels reach about half of it on such products (its int8 kernel, which
widens every weight to float32, a fifth), and no maintained library fills the gap on x86 for this PyTorch:
torchao's x86 wheel carries CUDA kernels only and routes its CPU layouts to the ATen operators already
used here, and intel-extension-for-pytorch follows older PyTorch releases. Hence ``csrc/small_m_linear.cpp``,
compiled by `torch.utils.cpp_extension` the first time a kernel runs (about a minute, once per machine and
PyTorch version, into ``$VLMZOO_CACHE_DIR`` or ``~/.cache/vlmzoo``).

One source file holds every instruction set (each function compiled for its own target); ``cpuid`` says
which ones this CPU runs, and each format takes the best of them:

* float32: AVX-512, else AVX2+FMA (float32 accumulation);
* bfloat16: AVX-512 BF16 (``VDPBF16PS``), else bfloat16 weights widened in registers;
* int8: VNNI (``VPDPBUSD``, AVX-512 or AVX-VNNI) or AVX2's ``VPMADDUBSW`` on activations quantized once
  per product to int8 per block of 32 inputs, as llama.cpp does; AVX-512 without VNNI widens the int8
  weights in registers against float activations instead;
* int4 (tiles of four rows, see `vlmzoo.components.quantized.quantize_int4`): the same activation
  quantization, then VNNI (AVX-512 or AVX-VNNI), else AVX2's ``VPMADDUBSW``.

The same extension does a decode step's work around its products in one call each where no autograd
graph is recorded: `decode_attention`, `rms_norm`, `gelu_mul`, `softcap` and `argmax` (each returns None where it does
not apply, and the caller runs PyTorch's operators).

Prefill-sized products (more than `MAX_ROWS` rows) are compute-bound: `tiled_int8` and `tiled_int4`
dequantize tens of megabytes of rows at a time with the extension into one buffer and hand each tile to
PyTorch's GEMM (oneDNN, AMX where the CPU has it).

Where the extension cannot be built (no compiler, no AVX2) or ``VLMZOO_CPU_KERNELS=0`` is set, the
kernels say they support nothing (so the calibration never picks them and `kernel_choices` never names
them) after one log line; called directly they hand the product to the kernel they replace (``F.linear``,
PyTorch's int8 kernel, int4 dequantized in slices). ``VLMZOO_CPU_KERNELS=avx2`` keeps to the AVX2 paths
(as on a CPU without AVX-512).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vlmzoo.components.linear import ROW_BUCKETS, LinearKernel, torch_linear
from vlmzoo.components.quantized import int4_dequantized, int8_dequantized, int8_weight_only

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "small_m_linear.cpp"
#: Largest row count the kernels take: the end of the "few rows" bucket, whose choice is timed at 8 rows.
#: They stream each weight row once and reuse it from the L1 cache for every activation row.
MAX_ROWS = ROW_BUCKETS[1][2]
#: Instruction-set paths per weight format, best first.
PATHS = {
    "float32": ("avx512", "avx2"),
    "bfloat16": ("avx512bf16", "avx512", "avx2"),
    "int8": ("avx512vnni", "avxvnni", "avx512", "avx2"),
    "int4": ("avx512vnni", "avxvnni", "avx2"),
}
_AVX2_FAMILY = {"avx2", "avxvnni"}


#: A build takes a minute or two; a lock file older than this was left by a build that was killed.
STALE_LOCK_SECONDS = 15 * 60
#: How long a process waits for another process's build before it runs on PyTorch's kernels instead.
BUILD_WAIT_SECONDS = 5 * 60


def _setting() -> str:
    return os.environ.get("VLMZOO_CPU_KERNELS", "1").strip().lower()


def build_directory() -> Path:
    """Where the compiled extension is cached: one folder per PyTorch version and source (two vlmzoo
    versions side by side never rebuild each other's copy)."""
    root = Path(os.environ.get("VLMZOO_CACHE_DIR") or Path.home() / ".cache" / "vlmzoo")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12] if SOURCE.exists() else "missing"
    return root / "cpu_kernels" / f"torch-{torch.__version__.replace('+', '-')}" / digest


@functools.cache
def load_extension():
    """The compiled extension module, or None (logged once) where it is switched off or cannot be built."""
    if _setting() in {"0", "off", "false", "no"}:
        logger.info("vlmzoo CPU kernels switched off (VLMZOO_CPU_KERNELS=0); using PyTorch's kernels")
        return None
    try:
        from torch.utils.cpp_extension import load

        directory = build_directory()
        directory.mkdir(parents=True, exist_ok=True)
        wait_for_other_build(directory / "lock")
        module = load(
            "vlmzoo_small_m_linear",
            [str(SOURCE)],
            extra_cflags=["-O3", "-fopenmp"],  # at::parallel_for runs on PyTorch's OpenMP pool only with it
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
        )
        if "avx2" not in module.paths():
            raise RuntimeError("this CPU lacks AVX2+FMA")
        return module
    except Exception as exc:  # noqa: BLE001 - any failure means: use PyTorch's kernels
        logger.warning("vlmzoo CPU kernels unavailable (%s); using PyTorch's kernels", str(exc).splitlines()[0])
        return None


def wait_for_other_build(lock: Path) -> None:
    """Wait for the build another process is running in ``lock``'s folder, and clear a stale lock.

    PyTorch's builder waits on its ``lock`` file forever, without a word; a build killed part-way leaves
    that file behind, so every later process would hang. A lock older than `STALE_LOCK_SECONDS` is
    removed (with a log line); a fresh one is waited on for `BUILD_WAIT_SECONDS`, then this process
    raises, and `load_extension` falls back to PyTorch's kernels.
    """
    deadline = time.monotonic() + BUILD_WAIT_SECONDS
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > STALE_LOCK_SECONDS:
            logger.warning("removing %s, left by a build that stopped %.0f minutes ago", lock, age / 60)
            lock.unlink(missing_ok=True)
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"another process has been building them for {age:.0f} s (lock file {lock}; "
                "delete it if no build is running)"
            )
        time.sleep(min(1.0, BUILD_WAIT_SECONDS))


@functools.cache
def _paths_of(module) -> tuple[str, ...]:  # asked once per module: every product needs the answer
    return tuple(module.paths())


def instruction_sets() -> tuple[str, ...]:
    """The kernel paths this machine runs (empty when the extension is off or unavailable)."""
    module = load_extension()
    if module is None:
        return ()
    found = _paths_of(module)
    return tuple(p for p in found if p in _AVX2_FAMILY) if _setting() == "avx2" else found


@torch.compiler.assume_constant_result  # a compiled decode step takes the answer as a constant
def best_path(fmt: str) -> str | None:
    """The path a ``fmt`` product runs on here, or None for the fallback."""
    available = instruction_sets()
    return next((p for p in PATHS[fmt] if p in available), None)


def small_m_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None, path: str) -> torch.Tensor:
    """``x [M, K] @ weight [N, K].T`` (times ``scales [N]`` for int8) in float32 on the named path; an
    int4 weight (uint8 tiles [N, K / 2], scales [N, K / group, 2]) is recognised by its dtype."""
    return load_extension().linear(x, weight, scales, None, path, True)


# A PyTorch operator, so that torch.compile keeps a decode step in one graph around the extension call;
# eager calls go to the extension directly (the operator's dispatch costs more than a small product).
@torch.library.custom_op("vlmzoo::small_m_linear", mutates_args=())
def _small_m_op(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None, bias: torch.Tensor | None, path: str
) -> torch.Tensor:
    return load_extension().linear(x, weight, scales, bias, path, False)


@_small_m_op.register_fake
def _(x, weight, scales, bias, path):
    return x.new_empty((x.shape[0], weight.shape[0]))


def _run(x, weight, bias, scales, fmt: str, fallback):
    path = best_path(fmt)
    if path is None:
        return fallback(x, weight, bias, scales)
    flat = x.reshape(-1, x.shape[-1])
    if torch.compiler.is_compiling():
        out = _small_m_op(flat, weight, scales, bias, path)
    else:
        out = load_extension().linear(flat, weight, scales, bias, path, False)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def small_m_float(x, weight, bias=None, scales=None):
    """Float32 or bfloat16 weights on this CPU's best path (``F.linear`` where the extension is off)."""
    return _run(x, weight, bias, None, "float32" if weight.dtype == torch.float32 else "bfloat16", torch_linear)


def small_m_int8(x, qweight, bias=None, scales=None):
    """int8 weights with per-row scales on this CPU's best path (PyTorch's int8 kernel where it is off)."""
    return _run(x, qweight, bias, scales, "int8", int8_weight_only)


def small_m_int4(x, packed, bias=None, scales=None):
    """int4 tiles on this CPU's best path (dequantized slices and ``F.linear`` where it is off)."""
    return _run(x, packed, bias, scales, "int4", int4_dequantized)


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    softcap: float | None,
) -> torch.Tensor | None:
    """Attention of one query per row (a decode step) in one extension call, or None where it does not apply.

    ``q`` [B, H, 1, D], ``k`` / ``v`` [B, KV, S, D] float32 or bfloat16 (a cache), ``mask`` bool
    [B, 1, 1, S]; the result is ``softmax(cap(q k^T * scale), masked) v`` in q's dtype, computed in
    float32 without rounding in between. None (the caller spells attention out) off CPUs, where the
    extension is off, under ``torch.compile`` (which fuses the explicit form itself), and where autograd
    needs a graph (the kernel has no backward).
    """
    if (
        q.shape[2] != 1
        or k.dtype not in (torch.float32, torch.bfloat16)
        or v.dtype != k.dtype
        or k.stride(-1) != 1
        or k.stride(-2) != k.shape[-1]
        or v.stride() != k.stride()
        or (mask is not None and (mask.dtype != torch.bool or mask.numel() != k.shape[0] * k.shape[2]))
    ):
        return None
    module = _extension_for(q, k, v)
    return None if module is None else module.decode_attention(q, k, v, mask, scale, softcap)


def _extension_for(*tensors: torch.Tensor):
    """The extension, where it may take these tensors: on the CPU, with no autograd graph to record (its
    functions have no backward), and outside ``torch.compile`` (which fuses the PyTorch form itself)."""
    if (
        any(t.device.type != "cpu" for t in tensors)
        or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        or torch.compiler.is_compiling()
    ):
        return None
    return load_extension()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """Gemma's RMSNorm (``x * rsqrt(mean(x^2) + eps) * (1 + weight)`` in float32, in x's dtype) in one
    extension call, or None where it does not apply (see `_extension_for`; float32 and bfloat16 only)."""
    if x.dtype not in (torch.float32, torch.bfloat16) or x.numel() == 0:
        return None
    module = _extension_for(x, weight)
    return None if module is None else module.rms_norm(x, weight, eps)


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor | None:
    """``cap * tanh(x / cap)`` computed in float32 (a vectorized tanh: PyTorch's ran at 3 ns per value
    here, 0.6 ms over a 257216-token vocabulary), in x's dtype; or None where it does not apply."""
    if not x.is_floating_point() or x.numel() == 0:
        return None
    module = _extension_for(x)
    return None if module is None else module.softcap(x, cap)


def gelu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor | None:
    """Gemma's gated GELU, ``gelu_tanh(gate) * up``, in float32 in one pass (in gate's dtype), or None where
    it does not apply. PyTorch's tanh-approximate GELU took 48 µs on one 9216-wide bfloat16 row here."""
    if not gate.is_floating_point() or gate.shape != up.shape or gate.numel() == 0:
        return None
    module = _extension_for(gate, up)
    return None if module is None else module.gelu_mul(gate, up)


def argmax(logits: torch.Tensor) -> torch.Tensor | None:
    """The first index of each row's largest value (``logits.argmax(-1)`` of float32 [B, V]) in one pass,
    or None where it does not apply or a row holds NaN (PyTorch's argmax, which picks the NaN, decides
    then). PyTorch's took 0.7 ms on one 257216-wide row here, 2.6 ms on eight."""
    if logits.dim() != 2 or logits.dtype != torch.float32 or logits.shape[1] == 0:
        return None
    module = _extension_for(logits)
    if module is None:
        return None
    out = module.argmax_rows(logits)
    return None if bool((out < 0).any()) else out


#: Bytes of floating-point weight `tiled_int8` / `tiled_int4` make at a time: most decoder weights fit in
#: one or two tiles, so PyTorch's GEMM sees large products and few outputs need copying.
TILE_BYTES = 32 * 2**20
_buffers = threading.local()


def _tile_buffer(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """One buffer per thread and dtype, grown as needed and reused (a fresh tens-of-megabytes buffer costs
    a page fault per 4 KiB, which would take longer than the dequantizing)."""
    key = f"buffer_{dtype}"
    buffer = getattr(_buffers, key, None)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(numel, dtype=dtype)
        setattr(_buffers, key, buffer)
    return buffer[:numel]


def _tiled(x, weight, bias, scales, fallback):
    """Dequantize `TILE_BYTES` of rows at a time with the extension into one reused buffer, and run
    PyTorch's product on each tile: the large-row (prefill) case, where the arithmetic dominates."""
    module = load_extension()
    if module is None or x.dtype not in (torch.float32, torch.bfloat16):
        return fallback(x, weight, bias, scales)
    in_features = x.shape[-1]
    out_features = weight.shape[0]
    step = min(out_features, max(4, TILE_BYTES // (in_features * x.element_size()) // 4 * 4))
    buffer = _tile_buffer(step * in_features, x.dtype).view(step, in_features)
    if weight.dtype == torch.int8:
        dequantize, scales = module.dequantize_int8, scales.float().contiguous()
    else:
        dequantize, scales = module.dequantize_int4, scales.to(torch.bfloat16).contiguous()
    flat = x.reshape(-1, in_features)
    if step == out_features:
        dequantize(weight, scales, 0, out_features, buffer)
        return F.linear(x, buffer, bias)
    out = torch.empty(flat.shape[0], out_features, dtype=x.dtype)
    for n0 in range(0, out_features, step):
        n1 = min(out_features, n0 + step)
        tile = buffer[: n1 - n0]
        dequantize(weight, scales, n0, n1, tile)
        out[:, n0:n1] = F.linear(flat, tile, None if bias is None else bias[n0:n1])
    return out.reshape(*x.shape[:-1], out_features)


def tiled_int8(x, qweight, bias=None, scales=None):
    """int8 weights for many rows: tiles dequantized by the extension, then PyTorch's GEMM."""
    return _tiled(x, qweight, bias, scales, int8_dequantized)


def tiled_int4(x, packed, bias=None, scales=None):
    """int4 weights for many rows: tiles dequantized by the extension, then PyTorch's GEMM."""
    return _tiled(x, packed, bias, scales, int4_dequantized)


@dataclass(frozen=True)
class ExtensionKernel(LinearKernel):
    """A kernel of the extension: it supports nothing where the extension is off or unavailable, so the
    choice (and `kernel_choices`) falls to PyTorch's kernels."""

    def supports(self, device_type: str, fmt: str, rows: int) -> bool:
        return super().supports(device_type, fmt, rows) and best_path(fmt) is not None


KERNELS = {
    "small_m_float": ExtensionKernel(
        small_m_float,
        ("float32", "bfloat16"),
        devices=("cpu",),
        max_rows=MAX_ROWS,
        priority=2,
        differentiable=False,
        description="vlmzoo C++ matrix-vector kernel (AVX2 / AVX-512 / AVX-512 BF16)",
    ),
    "small_m_int8": ExtensionKernel(
        small_m_int8,
        ("int8",),
        devices=("cpu",),
        max_rows=MAX_ROWS,
        priority=2,
        differentiable=False,
        description="vlmzoo C++ int8 kernel (VNNI or AVX2 on activations quantized per block of 32)",
    ),
    "small_m_int4": ExtensionKernel(
        small_m_int4,
        ("int4",),
        devices=("cpu",),
        max_rows=MAX_ROWS,
        priority=2,
        differentiable=False,
        description="vlmzoo C++ int4 kernel (VNNI or AVX2 on activations quantized per block of 32)",
    ),
    "tiled_int8": ExtensionKernel(
        tiled_int8,
        ("int8",),
        devices=("cpu",),
        min_rows=MAX_ROWS + 1,
        priority=2,
        differentiable=False,
        description="int8 tiles dequantized by the vlmzoo C++ extension, then PyTorch's GEMM",
    ),
    "tiled_int4": ExtensionKernel(
        tiled_int4,
        ("int4",),
        devices=("cpu",),
        min_rows=MAX_ROWS + 1,
        priority=2,
        differentiable=False,
        description="int4 tiles dequantized by the vlmzoo C++ extension, then PyTorch's GEMM",
    ),
}
