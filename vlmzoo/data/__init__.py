"""Datasets: synthetic shapes for the bundled ``shapes-demo`` model, and importers of existing datasets.

A training config can name a generator instead of a JSONL file, so that a run needs no data on disk
and repeats exactly from its seed::

    train_data = { generator = "shapes", seed = 0, images = 12000, size = 64 }

or a dataset in another format, read at the start of the run (see `vlmzoo.data.coco`,
`vlmzoo.data.roboflow`; paths are relative to the config file)::

    train_data = { coco = "instances.json", images = "dir/", task = "detect" }
    train_data = { roboflow = "_annotations.train.jsonl" }
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from vlmzoo.data import shapes
from vlmzoo.data.coco import coco_records
from vlmzoo.data.roboflow import roboflow_records

__all__ = ["GENERATORS", "IMPORTERS", "generate_records", "records_from_spec"]

#: Record generators by name: each takes keyword options and returns image/prefix/suffix dicts.
GENERATORS: dict[str, Callable[..., list[dict[str, Any]]]] = {"shapes": shapes.training_records}


def generate_records(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Records from a generator spec: ``{"generator": name, **options}`` (images are in memory)."""
    options = dict(spec)
    name = options.pop("generator", None)
    if name not in GENERATORS:
        raise ValueError(
            f"unknown data generator {name!r}; use one of {', '.join(map(repr, sorted(GENERATORS)))} "
            "(e.g. {'generator': 'shapes', 'seed': 0, 'images': 1000})"
        )
    function = GENERATORS[name]
    accepted = inspect.signature(function).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"data generator {name!r} has no option(s) {unknown}; its options are {sorted(accepted)}")
    return function(**options)


#: Dataset importers a spec can name, by the key that holds the file: ``{"coco": path, **options}``.
IMPORTERS: dict[str, Callable[..., list[dict[str, Any]]]] = {"coco": coco_records, "roboflow": roboflow_records}


def records_from_spec(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Records from a spec: a generator (``{"generator": "shapes", ...}``) or an importer
    (``{"coco": "instances.json", "images": "dir/", "task": "detect"}``, ``{"roboflow": "file.jsonl"}``)."""
    if "generator" in spec:
        return generate_records(spec)
    keys = [key for key in IMPORTERS if key in spec]
    if len(keys) != 1:
        raise ValueError(
            f"a data table names one generator or one dataset file, got keys {sorted(spec)}; e.g. "
            "{'coco': 'instances.json', 'images': 'images/', 'task': 'detect'} or {'generator': 'shapes', ...}"
        )
    options = dict(spec)
    source = options.pop(keys[0])
    function = IMPORTERS[keys[0]]
    accepted = [name for name in inspect.signature(function).parameters if name not in ("annotations", "path")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{keys[0]} data has no option(s) {unknown}; its options are {accepted}")
    return function(source, **options)
