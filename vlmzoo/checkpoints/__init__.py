"""Hugging Face checkpoints: config conversion, key layouts, safetensors loading and saving."""

from vlmzoo.checkpoints.hf_config import ConfigConversionError, config_from_hf, config_to_hf
from vlmzoo.checkpoints.hub import CheckpointNotFoundError
from vlmzoo.checkpoints.loading import CheckpointMismatchError, from_pretrained
from vlmzoo.checkpoints.saving import save_pretrained

__all__ = [
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "ConfigConversionError",
    "config_from_hf",
    "config_to_hf",
    "from_pretrained",
    "save_pretrained",
]
