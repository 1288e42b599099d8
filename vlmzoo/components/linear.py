"""A drop-in ``nn.Linear`` that picks the fastest way to run the same product on the CPU.

Same parameters and state-dict names as ``nn.Linear``, same math; only the kernel call differs:

* few rows (decode steps): ``weight @ x.T`` — BLAS handles the tall-skinny product much better than
  the short-wide ``x @ weight.T`` on many CPUs;
* many rows (a prefill) in bfloat16/float16 on a CPU without native half-precision matrix units: the
  product runs on float32 copies and is rounded back — what the half-precision kernel computes
  internally (float32 accumulation), several times faster where that kernel is emulated. Decode
  steps keep the half-precision kernel, which reads half the bytes.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

SMALL_BATCH_ROWS = 32
UPCAST_CHUNK_ROWS = 16384


@functools.cache
def _cpu_has_fast_half() -> bool:
    """Whether oneDNN has native bfloat16 matrix instructions here (AVX512-BF16, AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, computed the fastest way for the device, dtype and row count."""
    if x.device.type != "cpu":
        return F.linear(x, weight, bias)
    rows = x.numel() // x.shape[-1] if x.numel() else 0
    if weight.dtype in (torch.bfloat16, torch.float16) and rows > SMALL_BATCH_ROWS and not _cpu_has_fast_half():
        x32 = x.float()
        bias32 = None if bias is None else bias.float()
        if weight.shape[0] <= UPCAST_CHUNK_ROWS:
            return linear(x32, weight.float(), bias32).to(x.dtype)
        # Large weights (the output head) are upcast a slice at a time: no float32 copy of the whole matrix.
        pieces = [
            linear(
                x32,
                weight[i : i + UPCAST_CHUNK_ROWS].float(),
                None if bias32 is None else bias32[i : i + UPCAST_CHUNK_ROWS],
            )
            for i in range(0, weight.shape[0], UPCAST_CHUNK_ROWS)
        ]
        return torch.cat(pieces, dim=-1).to(x.dtype)
    if 1 < rows <= SMALL_BATCH_ROWS and weight.dtype == torch.float32:
        flat = x.reshape(rows, x.shape[-1])
        out = (weight @ flat.T).T
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` whose forward goes through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
