"""Feed-forward layers: SigLIP's GELU MLP (tanh-approximate or exact GELU) and Gemma's gated GELU (GeGLU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlmzoo.components import cpu_kernels
from vlmzoo.components.linear import Linear


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class GeluMLP(nn.Module):
    """``fc2(gelu(fc1(x)))`` with biases, as in SigLIP."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = Linear(hidden_size, intermediate_size, bias=bias)
        self.fc2 = Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class ExactGeluMLP(GeluMLP):
    """``fc2(gelu(fc1(x)))`` with the exact (erf) GELU: SigLIP configs whose ``hidden_act`` is ``"gelu"``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class GatedGeluMLP(nn.Module):
    """``down(gelu(gate(x)) * up(x))`` without biases, as in Gemma and Gemma 2."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        hidden = cpu_kernels.gelu_mul(gate, up)  # one pass on CPUs without autograd
        return self.down_proj(gelu_tanh(gate) * up if hidden is None else hidden)
