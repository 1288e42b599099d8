"""vlmzoo: PaliGemma and PaliGemma 2 in every public size, built from typed configs and plugins.

Examples:
    >>> import vlmzoo
    >>> model = vlmzoo.build("paligemma2-224", device="meta")
"""

from typing import Any

from vlmzoo.checkpoints import CheckpointMismatchError, CheckpointNotFoundError, from_pretrained
from vlmzoo.config import DecoderConfig, PaliGemmaConfig, ProjectorConfig, VisionConfig
from vlmzoo.errors import (
    DeviceError,
    GenerationError,
    InvalidFileError,
    UnsupportedArgumentError,
    VlmzooError,
)
from vlmzoo.hookspecs import hookimpl
from vlmzoo.model import PaliGemma, PaliGemmaOutput
from vlmzoo.pipeline import VisionLanguageModel, load
from vlmzoo.plugins import get_registries, list_plugins
from vlmzoo.processing import PaliGemmaProcessor, load_processor
from vlmzoo.tasks import DetectedObject, TaskResult, get_postprocessor
from vlmzoo.zoo import UnknownModelError, Variant, build, get_config, list_models

__version__ = "0.1.0"


def train(model: Any, processor: Any = None, train_data: Any = None, eval_data: Any = None, **options: Any) -> Any:
    """Fine-tune a model on (image, prefix, suffix) records; see `vlmzoo.training.train` for the options.

    Args:
        model: a loaded model, a checkpoint directory or hub id, or a zoo variant name.
        processor: a processor, or its directory or hub id (default: the model's).
        train_data: a JSONL path, a list of records or a generator spec.
        eval_data: the same, evaluated every ``eval_every`` steps and at the end.
        **options: the other `TrainingConfig` fields (``output_dir``, ``max_steps``...).

    Examples:
        >>> vlmzoo.train("google/paligemma2-3b-pt-224", train_data="train.jsonl",
        ...              output_dir="runs/a", max_steps=100, batch_size=8,
        ...              learning_rate=1e-5)
    """
    # Imported here so that ``import vlmzoo`` does not load the training stack.
    from vlmzoo.training import train as _train

    return _train(model, processor, train_data, eval_data, **options)


__all__ = [
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "DetectedObject",
    "DecoderConfig",
    "DeviceError",
    "GenerationError",
    "InvalidFileError",
    "PaliGemma",
    "PaliGemmaConfig",
    "PaliGemmaOutput",
    "ProjectorConfig",
    "TaskResult",
    "PaliGemmaProcessor",
    "UnknownModelError",
    "UnsupportedArgumentError",
    "Variant",
    "VisionLanguageModel",
    "VisionConfig",
    "VlmzooError",
    "build",
    "from_pretrained",
    "get_config",
    "get_postprocessor",
    "get_registries",
    "hookimpl",
    "list_models",
    "list_plugins",
    "load",
    "load_processor",
    "train",
]
