"""Hugging Face checkpoints: config conversion, key layouts, safetensors loading and saving."""

from vlmzoo.checkpoints.atomic import staged_directory
from vlmzoo.checkpoints.hub import CheckpointNotFoundError
from vlmzoo.checkpoints.loading import CheckpointMismatchError, from_pretrained
from vlmzoo.checkpoints.safetensors_io import SafetensorsError
from vlmzoo.checkpoints.saving import owned_weight_files, save_pretrained
from vlmzoo.paligemma.config_json import config_from_json, config_to_json
from vlmzoo.paligemma.hf_config import ConfigConversionError, config_from_hf, config_to_hf, hf_differences

__all__ = [
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "ConfigConversionError",
    "SafetensorsError",
    "config_from_hf",
    "config_from_json",
    "config_to_hf",
    "config_to_json",
    "from_pretrained",
    "hf_differences",
    "owned_weight_files",
    "save_pretrained",
    "staged_directory",
]
