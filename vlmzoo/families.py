"""Model families: what the zoo needs to build, load, save and run one kind of model.

PaliGemma is the zoo's native family: its config, loader and pipeline are the core modules. Every other
family (SigLIP ships built in; a plugin may add more) registers a `ModelFamily` in the ``model_family``
registry, and `vlmzoo.build`, `vlmzoo.from_pretrained`, `vlmzoo.load` and ``vlmzoo list`` find it by
the type of a config or by what a ``config.json`` says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlmzoo.registry import Registries

__all__ = ["ModelFamily", "family_of_config", "family_of_json"]


@dataclass(frozen=True)
class ModelFamily:
    """One family of models, as the zoo sees it.

    Attributes:
        name: the family's name (``"siglip"``).
        config_type: the pydantic config class of its models (a `vlmzoo.config.FrozenConfig`); its
            instances need ``name``, ``family``, ``vision`` (a `VisionConfig`) and ``num_image_tokens``.
        model: ``model(config, registries)`` builds the module; the zoo calls it on the meta device.
        reads: ``reads(config_json)`` is True when a checkpoint's ``config.json`` dict is one of this family's.
        config_from_json: ``config_from_json(config_json, name)`` → a config (raise
            `vlmzoo.checkpoints.ConfigConversionError` naming the field on bad input).
        checkpoint_key: a checkpoint's tensor name → the module's parameter name, or None for tensors to
            skip (buffers some writers save).
        load_processor: ``load_processor(path_or_repo_id, **where)`` → the family's processor; ``where`` holds
            ``revision``, ``token``, ``local_files_only``, ``cache_dir``.
        pipeline: ``pipeline(model, processor)`` → what `vlmzoo.load` returns for this family.
        train: ``train(training_config, model=, processor=, train_records=, eval_records=)`` → the trained
            model; `vlmzoo.train` and ``vlmzoo train`` hand the family's models to it (None: not trainable).
    """

    name: str
    config_type: type
    model: Callable[[Any, Registries], Any]
    reads: Callable[[dict], bool]
    config_from_json: Callable[[dict, str | None], Any]
    checkpoint_key: Callable[[str], str | None]
    load_processor: Callable[..., Any]
    pipeline: Callable[[Any, Any], Any]
    train: Callable[..., Any] | None = None


def family_of_config(config: Any, registries: Registries) -> ModelFamily | None:
    """The registered family whose config type ``config`` is, or None (a PaliGemma config, or unknown)."""
    for entry in registries.model_family.entries():
        if isinstance(config, entry.value.config_type):
            return entry.value
    return None


def family_of_json(data: dict, registries: Registries) -> ModelFamily | None:
    """The registered family that reads this ``config.json`` dict, or None (PaliGemma's, or unknown)."""
    for entry in registries.model_family.entries():
        if entry.value.reads(data):
            return entry.value
    return None
