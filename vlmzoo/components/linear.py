"""A drop-in ``nn.Linear`` whose product runs on the fastest registered kernel for the machine.

Same parameters and state-dict names as ``nn.Linear``, same math; only the kernel call differs. The
kernels are `LinearKernel` entries in the ``linear_kernel`` registry (a plugin adds its own through
`register_components`). Which one runs is decided per (device type, weight format, row bucket): the
first time a combination is seen, every kernel that supports it is timed on a synthetic weight set
larger than the CPU caches (a one-off calibration, cached per process), and the fastest wins; the
default kernel keeps the job unless another is clearly faster. With calibration switched off
(``VLMZOO_LINEAR_CALIBRATION=0``), the kernel with the highest ``priority`` runs instead.

Why a choice at all: BLAS libraries differ a lot on the matrix-vector shapes of a decode step (a
one-row product may read memory at half the speed another library reaches), and half-precision
products are native on some CPUs and emulated on others. No CPU names are involved, only timings.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.plugins import get_registries, on_reset

#: Weight formats of plain floating-point weights, by dtype; quantized formats are scheme names.
FLOAT_FORMATS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}

#: Row buckets: a decode step of one row, a small batch of decode rows, and prefill-sized products.
ROW_BUCKETS = (("one", 0, 1, 1), ("few", 2, 32, 8), ("many", 33, None, 128))

#: Bytes of synthetic weights timed per candidate in one calibration round: larger than the last-level
#: cache, so decode-sized products are measured reading memory, as they do in a real model.
CALIBRATION_BYTES = 512 * 2**20
CALIBRATION_ROUNDS = 5
#: A kernel must beat the default by this factor to replace it (timings on a busy machine are noisy).
CALIBRATION_MARGIN = 0.95

KernelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class LinearKernel:
    """One way to compute ``x @ weight.T + bias``.

    ``fn(x, weight, bias, scales)`` takes ``x`` [..., in] and returns [..., out] in ``x``'s dtype;
    ``scales`` is None for float weights and the scheme's scales for quantized ones. ``formats`` are
    the weight formats it handles (``"float32"``, ``"bfloat16"``, ``"float16"``, or a quantization
    scheme's name), ``devices`` the device types (``"*"`` for any), ``min_rows``/``max_rows`` the
    row counts. ``priority`` ranks kernels when calibration is off (higher wins; the highest is also
    the default that calibration must clearly beat). A kernel that is not ``differentiable`` (it leaves
    PyTorch, say) is replaced by ``F.linear`` while gradients are needed.
    """

    fn: KernelFn
    formats: tuple[str, ...]
    devices: tuple[str, ...] = ("*",)
    min_rows: int = 0
    max_rows: int | None = None
    priority: int = 0
    differentiable: bool = True
    description: str = ""

    def supports(self, device_type: str, fmt: str, rows: int) -> bool:
        return (
            fmt in self.formats
            and ("*" in self.devices or device_type in self.devices)
            and rows >= self.min_rows
            and (self.max_rows is None or rows <= self.max_rows)
        )


# ---- built-in float kernels ------------------------------------------------------------------------


def torch_linear(x, weight, bias=None, scales=None):
    """``F.linear``: the library's own choice (MKL / oneDNN on CPUs, cuBLAS on GPUs)."""
    return F.linear(x, weight, bias)


def weight_major(x, weight, bias=None, scales=None):
    """``weight @ x.T``: BLAS handles the tall-skinny product better than ``x @ weight.T`` on many CPUs.

    The bias goes into the same call (``addmm``), so a half-precision result is rounded once, as
    ``F.linear`` rounds it; adding it afterwards would round twice (up to two units in the last place).
    """
    rows = x.numel() // x.shape[-1]
    flat_t = x.reshape(rows, x.shape[-1]).T
    out = (weight @ flat_t if bias is None else torch.addmm(bias[:, None], weight, flat_t)).T
    return out.reshape(*x.shape[:-1], weight.shape[0])


UPCAST_CHUNK_ROWS = 16384


def upcast_float32(x, weight, bias=None, scales=None):
    """A half-precision product run on float32 copies, rounded back: what the half kernel computes
    internally (float32 accumulation), and several times faster where half-precision matrix units are
    missing. Large weights (the output head) are upcast a slice at a time."""
    x32 = x.float()
    bias32 = None if bias is None else bias.float()
    pieces = [
        F.linear(
            x32,
            weight[i : i + UPCAST_CHUNK_ROWS].float(),
            None if bias32 is None else bias32[i : i + UPCAST_CHUNK_ROWS],
        )
        for i in range(0, weight.shape[0], UPCAST_CHUNK_ROWS)
    ]
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
    return out.to(x.dtype)


_FLOATS = tuple(FLOAT_FORMATS.values())

BUILTIN_KERNELS: dict[str, LinearKernel] = {
    "torch_linear": LinearKernel(torch_linear, _FLOATS, description="F.linear"),
    "weight_major": LinearKernel(
        weight_major, _FLOATS, devices=("cpu",), min_rows=2, max_rows=32, priority=1, description="weight @ x.T"
    ),
    "upcast_float32": LinearKernel(
        upcast_float32,
        ("bfloat16", "float16"),
        devices=("cpu",),
        min_rows=ROW_BUCKETS[2][1],
        priority=-1,
        description="half precision computed on float32 copies",
    ),
}


# ---- choosing a kernel -----------------------------------------------------------------------------

_lock = threading.RLock()
_chosen: dict[tuple[str, str, str], tuple[str, LinearKernel]] = {}
_forced: list[str] = []
_registries = None  # where kernels and schemes are looked up; None = the plugin registries


def _bucket(rows: int) -> tuple[str, int]:
    for name, low, high, sample in ROW_BUCKETS:
        if rows >= low and (high is None or rows <= high):
            return name, sample
    raise AssertionError(rows)


def _calibration_on() -> bool:
    return os.environ.get("VLMZOO_LINEAR_CALIBRATION", "1").lower() not in {"0", "false", "no", "off"}


def _get_registries():
    return get_registries() if _registries is None else _registries


def forget_kernel_choices(registries=None) -> None:
    """Drop every cached choice (called when the plugins change); optionally look kernels up in ``registries``."""
    global _registries
    with _lock:
        _chosen.clear()
        _registries = registries


on_reset(forget_kernel_choices)  # new plugins may bring new kernels: choose again


def kernel_choices() -> dict[tuple[str, str, str], str]:
    """The kernels chosen so far in this process: ``(device type, format, row bucket) → kernel name``."""
    return {key: name for key, (name, _) in _chosen.items()}


@contextlib.contextmanager
def use_linear_kernel(name: str) -> Iterator[None]:
    """Run every product the named kernel supports on it inside the block (tests, benchmarks)."""
    _get_registries().linear_kernel.get(name)  # unknown names fail here, with suggestions
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def choose_kernel(device_type: str, fmt: str, rows: int) -> tuple[str, LinearKernel]:
    """The kernel for a product of ``rows`` rows on a ``fmt`` weight, deciding (and caching) it if new."""
    bucket, sample_rows = _bucket(rows)
    key = (device_type, fmt, bucket)
    found = _chosen.get(key)
    if found is not None:
        return found
    with _lock:
        if key in _chosen:
            return _chosen[key]
        registries = _get_registries()
        candidates = [
            (entry.key, entry.value)
            for entry in registries.linear_kernel.entries()
            if entry.value.supports(device_type, fmt, sample_rows)
        ]
        if not candidates:
            raise LookupError(
                f"no linear kernel handles {fmt} weights on {device_type} for {rows} rows; registered: "
                f"{', '.join(registries.linear_kernel.keys())}. Use another dtype or quantization, or add a kernel."
            )
        candidates.sort(key=lambda item: -item[1].priority)  # stable: registry (name) order breaks ties
        choice = candidates[0]
        if len(candidates) > 1 and _calibration_on() and device_type in ("cpu", "cuda"):
            choice = _calibrate(candidates, device_type, fmt, sample_rows, bucket, registries)
        _chosen[key] = choice
        return choice


CALIBRATION_SHAPE = (4096, 2304)  # (out, in): a mid-size decoder projection


def _sample_weights(fmt: str, device: torch.device, registries) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = torch.randn(*CALIBRATION_SHAPE, generator=torch.Generator().manual_seed(0)) * 0.02
    if fmt in _FLOATS:
        return weight.to(device=device, dtype=_dtype_of(fmt)), None
    qweight, scales = registries.quantization.get(fmt).quantize(weight)
    return qweight.to(device), scales.to(device)


def _dtype_of(fmt: str) -> torch.dtype:
    return {name: dtype for dtype, name in FLOAT_FORMATS.items()}[fmt]


def _bytes_of(weight: torch.Tensor, scales: object) -> int:
    extra = 0 if scales is None else scales.numel() * scales.element_size()
    return weight.numel() * weight.element_size() + extra


@torch.inference_mode()
def _calibrate(candidates, device_type, fmt, rows, bucket, registries) -> tuple[str, LinearKernel]:
    """Time each candidate on the same synthetic weights, interleaved, and keep the fastest."""
    device = torch.device(device_type)
    sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
    first = _sample_weights(fmt, device, registries)
    count = 1 if bucket == "many" else max(1, min(64, CALIBRATION_BYTES // _bytes_of(*first)))
    weights = [first] + [(w.clone(), None if s is None else s.clone()) for w, s in [first] * (count - 1)]
    x_dtype = _dtype_of(fmt) if fmt in _FLOATS else torch.bfloat16
    x = torch.randn(rows, CALIBRATION_SHAPE[1], device=device).to(x_dtype)
    times: dict[str, list[float]] = {name: [] for name, _ in candidates}
    usable = dict(candidates)
    for round_ in range(CALIBRATION_ROUNDS + 1):
        for name, kernel in list(usable.items()):
            try:
                sync()
                start = time.perf_counter()
                for weight, scales in weights:
                    kernel.fn(x, weight, None, scales)
                sync()
            except Exception:  # noqa: BLE001 - a kernel that fails here is simply not chosen
                del usable[name]
                continue
            if round_:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    default = candidates[0][0]
    medians = {name: statistics.median(times[name]) for name in usable}
    if not medians:
        return candidates[0]
    best = min(medians, key=medians.get)
    if default in medians and medians[best] > CALIBRATION_MARGIN * medians[default]:
        best = default
    return best, usable[best]


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    scales: torch.Tensor | None = None,
    *,
    format: str | None = None,
) -> torch.Tensor:
    """``x @ weight.T + bias`` on the kernel chosen for the device, weight format and row count.

    ``format`` names a quantization scheme when ``weight`` holds quantized data (with its ``scales``);
    for float weights it follows the dtype. While gradients are needed, a kernel that is not
    differentiable gives way to ``F.linear``.
    """
    fmt = FLOAT_FORMATS.get(weight.dtype) if format is None else format
    if fmt is None:
        return F.linear(x, weight, bias)
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    kernel = None
    if _forced:
        kernel = _get_registries().linear_kernel.get(_forced[-1])
        if not kernel.supports(x.device.type, fmt, rows):
            kernel = None
    if kernel is None:
        kernel = choose_kernel(x.device.type, fmt, rows)[1]
    if not kernel.differentiable and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return F.linear(x, weight, bias)
    return kernel.fn(x, weight, bias, scales)


class Linear(nn.Linear):
    """``nn.Linear`` whose forward goes through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
