"""`TrainingConfig`: every option of a fine-tuning run, validated, and loadable from JSON or TOML.

One typed object serves `vlmzoo.train(...)`, ``vlmzoo train --config run.toml`` and the copy written
next to the checkpoints, so a run can always be repeated from what it saved.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: What a run trains; everything else is frozen.
TrainableParts = Literal["all", "decoder", "attention", "projector+decoder", "lora"]

#: Fields that hold paths; in a config file they are relative to the file's directory.
_PATH_FIELDS = ("train_data", "eval_data", "output_dir", "resume_from")
#: Keys of a data table (``train_data = { coco = "instances.json", images = "dir/" }``) that hold paths.
_DATA_PATH_KEYS = ("coco", "images", "roboflow")
#: Fields that may be a path or a name (hub id, zoo variant); resolved against the file only if that path exists.
_PATH_OR_NAME_FIELDS = ("model", "processor")


class LoraConfig(BaseModel):
    """Low-rank adapters on the linears whose names match ``targets``: ``W x + (alpha / rank) B A x``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(8, gt=0, description="inner dimension of the adapters")
    alpha: float = Field(16.0, gt=0, description="scale numerator; the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input while training")
    targets: tuple[str, ...] = Field(
        ("language_model.*.q_proj", "language_model.*.k_proj", "language_model.*.v_proj", "language_model.*.o_proj"),
        description="shell-style patterns over module names (e.g. 'language_model.*.mlp.*')",
    )


class TrainingConfig(BaseModel):
    """The options of one fine-tuning run.

    The docs' Reference > Training options page tables every field with its type, default and meaning;
    the fine-tuning guide shows each in context.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What to start from
    model: str = Field(description="checkpoint directory or hub id; with init='random', a zoo variant name")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="'pretrained' loads `model`; 'random' builds the zoo variant with random weights"
    )
    model_overrides: dict[str, Any] = Field(
        default_factory=dict, description="config changes for init='random', as for vlmzoo.build()"
    )
    init_std: float | None = Field(
        None, gt=0, description="std of the normal weights for init='random' (default: vlmzoo.build's 0.02)"
    )
    processor: str | None = Field(None, description="processor directory or hub id (default: the model's)")

    # Data
    train_data: str | dict[str, Any] | None = Field(
        None,
        description="JSONL file of {image, prefix, suffix|objects} records, a generator table or a dataset table "
        "such as { coco = 'instances.json', images = 'dir/', task = 'detect' } (vlmzoo.data)",
    )
    eval_data: str | dict[str, Any] | None = Field(
        None, description="JSONL file (or generator table) evaluated every eval_every steps"
    )
    max_length: int | None = Field(None, gt=0, description="longest sequence allowed (default: the model's limit)")
    padding_side: Literal["left", "right"] = Field("right", description="where batches are padded (same loss)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes that decode images")
    shuffle_objects: bool = Field(
        True, description="shuffle the objects of detect/segment records given as 'objects' anew each epoch"
    )

    # Optimisation
    output_dir: str = Field(description="where checkpoints, the final model and metrics.jsonl go")
    max_steps: int = Field(gt=0, description="optimizer steps")
    batch_size: int = Field(gt=0, description="examples per optimizer step, over all processes together")
    grad_accumulation: int = Field(1, gt=0, description="micro-batches per optimizer step (per process)")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW peak learning rate, after warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW moment decay rates")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW denominator epsilon")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 to learning_rate")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine decay ends at learning_rate * min_lr_ratio")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm (None: no clipping)")
    train: TrainableParts = Field("all", description="what to train; the rest is frozen")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="adapter settings for train='lora'")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="'auto': bfloat16 autocast where the device supports it fast (CUDA), else float32"
    )
    seed: int = Field(0, description="fixes the initialisation, the data order and dropout")
    quantization_aware: str | None = Field(
        None,
        description="train for a weight-only quantization scheme ('int8', 'int4'): each step runs on the weights "
        "it stores, and the final model holds them (dequantized)",
    )

    # Runtime
    device: str | None = Field(
        "auto", description="'auto': CUDA when present (one GPU per process under torchrun), else MPS, XPU, CPU"
    )
    distributed: Literal["auto", "ddp", "fsdp", "none"] = Field(
        "auto", description="under torchrun: 'auto' and 'ddp' use DistributedDataParallel, 'fsdp' fully_shard"
    )
    eval_every: int | None = Field(None, gt=0, description="evaluate every N steps (and after the last one)")
    eval_detection: bool = Field(
        True,
        description="also score detect records (precision/recall at IoU 0.5) and segment records (mIoU, boxacc@0.5, "
        "invalid) by generating answers",
    )
    log_every: int = Field(1, gt=0, description="write a metrics.jsonl line every N steps")
    save_every: int | None = Field(None, gt=0, description="write a resumable checkpoint every N steps")
    keep_checkpoints: int | None = Field(2, gt=0, description="keep the newest N checkpoints (None: all)")
    resume_from: str | None = Field(
        None, description="checkpoint directory to resume, or 'latest' for the newest one in output_dir"
    )
    overwrite: bool = Field(False, description="start over in an output_dir that already holds a run")
    progress: bool | None = Field(None, description="progress bar (default: on a terminal)")

    @field_validator("quantization_aware")
    @classmethod
    def _known_scheme(cls, name: str | None) -> str | None:
        """A registered quantization scheme, checked here so that the error names the field (and file)."""
        if name is not None:
            from vlmzoo.model.quantize import get_scheme
            from vlmzoo.registry import UnknownKeyError

            try:
                get_scheme(name)
            except UnknownKeyError as err:
                raise ValueError(str(err)) from None
        return name

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.init == "random" and self.processor is None:
            raise ValueError(
                "init='random' builds a zoo variant that has no tokenizer: set processor to a processor "
                "directory or hub id"
            )
        if self.model_overrides and self.init != "random":
            raise ValueError("model_overrides only apply with init='random' (a checkpoint fixes its own shapes)")
        if self.init_std is not None and self.init != "random":
            raise ValueError("init_std only applies with init='random' (a checkpoint brings its own weights)")
        if self.quantization_aware is not None and self.train == "lora":
            raise ValueError(
                "quantization_aware trains the model's own weights, and train='lora' freezes them; train the "
                "adapters first, merge them, then run a quantization_aware stage with train='all'"
            )
        if self.quantization_aware is not None and self.distributed == "fsdp":
            raise ValueError(
                "quantization_aware needs each process to hold whole weights; use distributed='ddp' (or 'auto')"
            )
        if self.batch_size % self.grad_accumulation:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by grad_accumulation={self.grad_accumulation}; "
                "each micro-batch must hold the same number of examples"
            )
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> TrainingConfig:
        """Read a ``.json`` or ``.toml`` file; relative paths in it are relative to the file's directory.

        ``overrides`` (e.g. from the command line) replace the file's values and are taken as given.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".toml":
                values = tomllib.loads(text)
            elif path.suffix.lower() == ".json":
                values = json.loads(text)
            else:
                raise ValueError(f"training config {path} must be a .toml or .json file")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"training config {path} is not valid {path.suffix[1:].upper()}: {err}") from err
        if not isinstance(values, dict):
            raise ValueError(f"training config {path} must hold a table/object of options")
        values = _resolve_paths(values, path.parent)
        values.update(overrides)
        return cls.checked(values, source=str(path))

    @classmethod
    def checked(cls, values: dict[str, Any], source: str = "training options") -> TrainingConfig:
        """Validate ``values``; errors name the source and each wrong field in one message."""
        values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                + ("" if e["type"] != "extra_forbidden" else f" (known options: {', '.join(cls.model_fields)})")
                for e in err.errors()
            )
            raise ValueError(f"{source}: {problems}") from None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    values = dict(values)
    for name in _PATH_FIELDS:
        value = values.get(name)
        if isinstance(value, str) and value != "latest" and not Path(value).is_absolute():
            values[name] = str(base / value)
        elif isinstance(value, dict):  # a dataset table: its file and folder are relative to the config too
            values[name] = {
                key: str(base / item)
                if key in _DATA_PATH_KEYS and isinstance(item, str) and not Path(item).is_absolute()
                else item
                for key, item in value.items()
            }
    for name in _PATH_OR_NAME_FIELDS:
        value = values.get(name)
        if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
            values[name] = str(base / value)
    return values
