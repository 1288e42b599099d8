"""The projector: one linear map from vision features into the decoder's embedding space."""

from __future__ import annotations

from torch import nn

from vlmzoo.components.linear import Linear
from vlmzoo.config import ProjectorConfig


class Projector(nn.Module):
    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.linear = Linear(config.input_size, config.output_size, bias=config.bias)

    def forward(self, features):
        return self.linear(features)
