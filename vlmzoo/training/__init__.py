"""Fine-tuning: JSONL (image, prefix, suffix) data, loss on the suffix, one process or many under torchrun.

Examples:
    >>> import vlmzoo
    >>> vlmzoo.train("google/paligemma2-3b-pt-224", train_data="data/train.jsonl",
    ...              output_dir="runs/cats", max_steps=500, batch_size=16,
    ...              learning_rate=1e-5)
"""

from vlmzoo.training.config import TrainingConfig
from vlmzoo.training.data import (
    Collator,
    DataError,
    EpochIndex,
    ObjectAnnotation,
    Record,
    RecordDataset,
    load_records,
    validate,
)
from vlmzoo.training.loss import SuffixLoss
from vlmzoo.training.parts import freeze_all_but
from vlmzoo.training.sampling import StepBatches
from vlmzoo.training.trainer import Trainer, run, train, warmup_cosine

__all__ = [
    "Collator",
    "DataError",
    "EpochIndex",
    "ObjectAnnotation",
    "Record",
    "RecordDataset",
    "StepBatches",
    "SuffixLoss",
    "Trainer",
    "TrainingConfig",
    "freeze_all_but",
    "load_records",
    "run",
    "train",
    "validate",
    "warmup_cosine",
]
