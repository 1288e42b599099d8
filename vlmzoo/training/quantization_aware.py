"""Quantization-aware training: every step runs on quantized weights and updates float ones.

A model quantized after training loses what rounding its weights costs, and a small model can lose a
lot (the demo model's int4 form dropped two-shape detection by 0.02 to 0.03 and segmentation by 0.04
mIoU). Here each training step's forward and backward passes see the weights that quantization will
store (quantized, then dequantized, by the same scheme and plan as `vlmzoo.model.quantize`), and the
optimizer applies those gradients to the float weights (the straight-through estimator), so training
settles where the quantized form works. The run's final model holds the quantized weights, dequantized:
loaded in floating point it computes what its quantized form computes, and quantizing it again changes
almost nothing. Checkpoints keep the float weights, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from vlmzoo.components.quantized import QuantizationScheme
from vlmzoo.model.quantize import get_scheme, quantization_plan


class QuantizedWeights:
    """The weights a quantization scheme would store in ``model``, swapped in while a step runs.

    The plan (which weight gets which scheme: the decoder's linear layers the chosen one, the output head
    int8) is `vlmzoo.model.quantize.quantization_plan`'s, so training rounds exactly what loading with
    ``quantize=scheme`` will round. With ``scheme=None`` there is nothing to round and both methods do
    nothing.
    """

    def __init__(self, model: nn.Module, scheme: str | None, registries=None) -> None:
        self.scheme = scheme
        plan = {} if scheme is None else quantization_plan(model, scheme, registries)
        self.targets: list[tuple[nn.Parameter, QuantizationScheme]] = [
            (model.get_submodule(path).weight, get_scheme(name, registries)) for path, name in plan.items()
        ]

    @staticmethod
    def _rounded(weight: torch.Tensor, scheme: QuantizationScheme) -> torch.Tensor:
        qweight, scales = scheme.quantize(weight.detach())
        return scheme.dequantize(qweight, scales, weight.dtype)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the weights are their quantized values; after it, the float ones again (with
        whatever gradients the block accumulated, for the optimizer to apply to the float weights)."""
        saved = []
        with torch.no_grad():
            for weight, scheme in self.targets:
                saved.append(weight.detach().clone())
                weight.copy_(self._rounded(weight, scheme))
        try:
            yield
        finally:
            with torch.no_grad():
                for (weight, _), original in zip(self.targets, saved, strict=True):
                    weight.copy_(original)

    @torch.no_grad()
    def snap(self) -> None:
        """Replace the float weights by their quantized values for good (the run's final model)."""
        for weight, scheme in self.targets:
            weight.copy_(self._rounded(weight, scheme))
