"""Resumable training checkpoints: safetensors and JSON only (no pickle), each written whole or not at all.

A checkpoint is a directory ``output_dir/checkpoints/step-00000100`` holding

- the model: ``config.json`` + ``model.safetensors`` as ``save_pretrained`` writes them (loadable by
  vlmzoo and transformers), or for LoRA runs only ``adapters.safetensors`` (the base is not trained);
- ``optimizer.safetensors`` (AdamW moments and step counts, keyed by parameter name) and
  ``optimizer.json`` (its parameter groups);
- ``rng.safetensors`` (torch generator states) and ``trainer_state.json`` (step, learning-rate
  schedule, Python and NumPy generator states).

It is written with `vlmzoo.checkpoints.atomic.staged_directory`: into a hidden sibling directory, flushed
to disk, then moved into place with ``trainer_state.json`` last. A checkpoint counts as complete only
once that file is there, so a crash while saving leaves the earlier checkpoints as they were and never
a half-written one that a resume would pick up.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlmzoo.checkpoints.atomic import staged_directory
from vlmzoo.errors import VlmzooError

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_GROUPS = "optimizer.json"
RNG_FILE = "rng.safetensors"
ADAPTERS_FILE = "adapters.safetensors"
_STEP_DIR = re.compile(r"step-(\d+)")


class CheckpointError(VlmzooError, ValueError):
    """A training checkpoint that is missing, incomplete or does not fit the run resuming from it."""


def step_directory(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step-{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in root.iterdir()
        if (match := _STEP_DIR.fullmatch(path.name)) and (path / STATE_FILE).is_file()
    ]
    return [path for _, path in sorted(found)]


def find_checkpoint(resume_from: str, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``resume_from`` names: a directory, or ``"latest"`` (None when there is none yet)."""
    if resume_from == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(
            f"{path} is not a training checkpoint (no {STATE_FILE}); give a directory under "
            f"{Path(output_dir) / CHECKPOINTS_DIR} or resume_from='latest'"
        )
    return path


# ---------------------------------------------------------------------- tensors <-> files


def _optimizer_to_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for name, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{name}/{key}"] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        name, _, key = flat.rpartition("/")
        state.setdefault(name, {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    python_and_numpy = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, python_and_numpy


def _set_rng_state(tensors: dict[str, torch.Tensor], states: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------- saving and loading


def save_checkpoint(
    output_dir: Path,
    step: int,
    *,
    save_model,
    adapters: dict[str, torch.Tensor] | None,
    optimizer_state: dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    run: dict[str, Any],
    keep: int | None,
) -> Path:
    """Write the checkpoint of ``step`` (rank 0 only); ``save_model(dir)`` writes the weights unless
    ``adapters`` are given. Keeps the newest ``keep`` checkpoints."""
    final = step_directory(output_dir, step)
    # Saving a step again (after a resume): mark the old copy incomplete while the files are replaced.
    (final / STATE_FILE).unlink(missing_ok=True)
    with staged_directory(final) as stage:
        if adapters is None:
            save_model(stage)
        else:
            save_file(adapters, stage / ADAPTERS_FILE, metadata={"format": "pt"})
        tensors, meta = _optimizer_to_files(optimizer_state)
        save_file(tensors, stage / OPTIMIZER_TENSORS, metadata={"format": "pt"})
        (stage / OPTIMIZER_GROUPS).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        rng_tensors, rng_states = _rng_state()
        save_file(rng_tensors, stage / RNG_FILE)
        state = {"step": step, "scheduler": scheduler.state_dict(), "rng": rng_states, "run": run}
        (stage / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    if keep is not None:
        for stale in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def read_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {checkpoint / STATE_FILE}: {err}") from err


def load_optimizer_state(checkpoint: Path) -> dict[str, Any]:
    meta = json.loads((checkpoint / OPTIMIZER_GROUPS).read_text(encoding="utf-8"))
    return _optimizer_from_files(load_file(checkpoint / OPTIMIZER_TENSORS), meta)


def load_adapters(model: nn.Module, checkpoint: Path) -> None:
    """Copy a checkpoint's LoRA tensors into ``model``'s adapters (the names must match exactly)."""
    tensors = load_file(checkpoint / ADAPTERS_FILE)
    params = dict(model.named_parameters())
    missing = sorted(set(n for n in params if n.endswith((".lora_a", ".lora_b"))) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint / ADAPTERS_FILE} does not fit this run's LoRA layers (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); resume with the same lora settings"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def restore_rng(checkpoint: Path, state: dict[str, Any]) -> None:
    _set_rng_state(load_file(checkpoint / RNG_FILE), state["rng"])
