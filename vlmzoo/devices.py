"""Check a device before any work is done on it, and say which devices this machine has instead.

``torch.device("cuda")`` is accepted on a machine without CUDA; the failure comes later, deep inside
loading, as a traceback about the CUDA driver. Resolving the device first turns that into one line
that lists what is available.

The rule for every entry point that loads or runs a model (`vlmzoo.load`, `vlmzoo.from_pretrained`,
`vlmzoo.train`, and the ``generate``, ``eval``, ``train``, ``demo`` and ``bench`` commands): the device
defaults to ``"auto"``, the first CUDA GPU when there is one, else Apple's MPS, else the first Intel
XPU, else the CPU. `vlmzoo.build` alone defaults to the CPU: a random model is for inspection and
tests.
"""

from __future__ import annotations

import torch

from vlmzoo.errors import DeviceError

__all__ = ["AUTO", "AUTO_RULE", "available_devices", "resolve_device"]

#: The default device of loading, generation, training and the command line.
AUTO = "auto"
#: What ``"auto"`` means, in the words the command line prints.
AUTO_RULE = "CUDA when present, else MPS, XPU or the CPU"

#: Names people type that are not PyTorch device types, and what they most likely mean.
_MISNAMED = {"gpu": "cuda", "nvidia": "cuda", "apple": "mps", "metal": "mps", "tpu": "xla"}


def available_devices() -> list[str]:
    """The devices models can run on here: ``cpu``, each CUDA device, ``mps``, each XPU device."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def _best() -> torch.device:
    """What ``"auto"`` means: the first CUDA device, else MPS, else the first XPU, else the CPU."""
    available = available_devices()
    for choice in ("cuda:0", "mps", "xpu:0"):
        if choice in available:
            return torch.device(choice)
    return torch.device("cpu")


def resolve_device(device: torch.device | str | int | None, *, default: str = "cpu") -> torch.device:
    """The `torch.device` for ``device``, checked to exist here; ``"auto"`` picks the best one.

    ``None`` means ``default``; an integer means that CUDA device. ``meta`` is always available (a model
    without storage). Raises `DeviceError` naming the available devices otherwise.
    """
    if device is None:
        device = default
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise DeviceError(f"device must be a name such as 'cpu' or 'cuda:0', got {device!r}")
    if isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            return _best()
        if name.split(":")[0] in _MISNAMED:
            raise DeviceError(
                f"{device!r} is not a PyTorch device name; did you mean {_MISNAMED[name.split(':')[0]]!r}? "
                f"Available: {', '.join(available_devices())}"
            )
        device = name
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(
            f"{device!r} is not a device name; use one of: {', '.join(available_devices())} (or 'auto')"
        ) from None
    if resolved.type in ("cpu", "meta"):
        return resolved
    available = available_devices()
    kind_present = any(name.split(":")[0] == resolved.type for name in available)
    index_present = (
        resolved.index is None
        or f"{resolved.type}:{resolved.index}" in available
        or (resolved.type == "mps" and resolved.index == 0)
    )
    if not (kind_present and index_present):
        why = "" if kind_present else _why_missing(resolved.type)
        raise DeviceError(
            f"device {str(resolved)!r} is not available on this machine{why}. Available: {', '.join(available)}"
        )
    return resolved


def _why_missing(kind: str) -> str:
    if kind == "cuda":
        if torch.version.cuda is None:
            return f" (this PyTorch {torch.__version__} is a build without CUDA; install a CUDA build to use a GPU)"
        return " (PyTorch was built with CUDA, but finds no usable GPU or driver)"
    if kind == "mps":
        return " (MPS needs an Apple-silicon Mac with a PyTorch build that supports it)"
    return ""
