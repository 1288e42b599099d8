"""``vlmzoo train`` and ``vlmzoo eval``: fine-tune from a config file and/or options, evaluate a checkpoint.

Every `TrainingConfig` field is an option (``max_steps`` → ``--max-steps``); options given on the
command line override the config file's values. Under ``torchrun`` the same command trains on every
process.
"""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from typing import Any

from vlmzoo.cli.options import add_device_option, announce_device

_STRING_TYPES = (str, type(None))


def _takes_string(annotation: Any) -> bool:
    """Whether a field holds text as given (paths, names), rather than JSON-like values."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return all(arg in _STRING_TYPES for arg in typing.get_args(annotation))
    return False


def _value(text: str, as_string: bool) -> Any:
    if as_string:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _fields():
    from vlmzoo.training.config import TrainingConfig

    return TrainingConfig.model_fields


def _options(args: argparse.Namespace) -> dict[str, Any]:
    given = {}
    for name, field in _fields().items():
        if name in args:
            raw = getattr(args, name)
            given[name] = raw if isinstance(raw, bool) else _value(raw, _takes_string(field.annotation))
    return given


def _train(args: argparse.Namespace) -> int:
    from vlmzoo.devices import AUTO, resolve_device
    from vlmzoo.training.config import TrainingConfig
    from vlmzoo.training.trainer import run

    options = _options(args)
    if args.config:
        config = TrainingConfig.from_file(args.config, **options)
    else:
        config = TrainingConfig.checked(options, source="vlmzoo train options")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, each process takes its own GPU: say it once
        announce_device(resolve_device(config.device, default=AUTO), config.device)
    run(config)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vlmzoo.cli.common import load_model, load_processor, print_json
    from vlmzoo.training.evaluation import evaluate

    if args.coco:
        from vlmzoo.cli import coco_eval

        return coco_eval.run(args)
    if not args.data:
        raise ValueError("give --data (JSONL records) or --coco (a COCO instances file) to evaluate on")
    model = load_model(args)
    processor = load_processor(args)
    metrics = evaluate(model, processor, args.data, batch_size=args.batch_size, max_length=args.max_length)
    print_json(metrics)
    return 0


def register(commands) -> None:
    train = commands.add_parser(
        "train",
        help="fine-tune a model on JSONL image/prefix/suffix records (also under torchrun)",
        description="Fine-tune a model. Options override the --config file's values; JSON values are "
        'accepted for lists and tables (e.g. --model-overrides \'{"decoder": {"num_layers": 2}}\').',
    )
    train.add_argument("--config", help="training config file (.toml or .json); its relative paths are relative to it")
    for name, field in _fields().items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description or None
        if field.annotation is bool or field.annotation == (bool | None):
            train.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)  # fmt: skip
        else:
            train.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint on JSONL records (suffix loss) or a COCO file (mAP table)"
    )
    evaluate.add_argument("model", help="checkpoint directory or hub id")
    evaluate.add_argument("--data", help="JSONL file of image/prefix/suffix records")
    evaluate.add_argument("--processor", help="processor directory or hub id (default: the model's)")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--max-length", type=int, help="longest sequence allowed (default: the model's limit)")
    add_device_option(evaluate)
    from vlmzoo.cli.coco_eval import add_options

    add_options(evaluate)
    evaluate.set_defaults(run=_eval)
