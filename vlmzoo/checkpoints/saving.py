"""Save vlmzoo models in the Hugging Face layout, sharded above a size limit.

Saving is staged (`vlmzoo.checkpoints.atomic.staged_directory`): the new files are written beside the
directory and moved in only when complete, so saving over a checkpoint (even the one just loaded) never
leaves the directory without loadable weights. Old weight files are removed afterwards, and only those
the previous checkpoint owned: its index, the shards that index lists, and ``model.safetensors``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from vlmzoo.checkpoints.atomic import staged_directory
from vlmzoo.checkpoints.safetensors_io import INDEX_FILE, SINGLE_FILE
from vlmzoo.paligemma.checkpoint_keys import to_hub_key
from vlmzoo.paligemma.config_json import config_to_json

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}


def parse_size(size: int | str) -> int:
    """``"5GB"`` → 5_000_000_000; integers are bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", size.upper())
    if not match:
        raise ValueError(f"cannot read size {size!r}; write it like '5GB', '500MB' or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2) or "B"])


def owned_weight_files(directory: str | os.PathLike) -> list[str]:
    """The weight files a checkpoint directory's own index (or single-file name) accounts for.

    These are what a new save may replace; anything else in the directory (``model_ema.safetensors``,
    an optimizer state, notes) is not the checkpoint's and is left alone. A damaged index owns only
    itself.
    """
    directory = Path(directory)
    owned = [SINGLE_FILE, INDEX_FILE]
    try:
        weight_map = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError, AttributeError):
        return owned
    if isinstance(weight_map, dict):
        shards = {name for name in weight_map.values() if isinstance(name, str) and name.endswith(".safetensors")}
        owned += sorted(shards)
    return owned


def save_pretrained(
    model, directory: str | os.PathLike, max_shard_size: int | str = "5GB", *, dequantize: bool = False
) -> Path:
    """Write ``config.json`` and safetensors weights that vlmzoo and transformers both load.

    A model transformers cannot build exactly (plugin components, a projector without bias) is saved with
    ``model_type: "vlmzoo"``: vlmzoo loads it whole, transformers refuses it rather than building another
    model (see `vlmzoo.paligemma.config_json`).

    The files are written to a staging directory and moved in only once complete; a failure leaves
    ``directory`` as it was. Afterwards only the weight files the previous checkpoint owned (see
    `owned_weight_files`) are removed, if the new checkpoint does not reuse their names.

    The Hugging Face layout has no place for vlmzoo's quantized weights, so a quantized model is saved
    only with ``dequantize=True`` (weights dequantized to the model's dtype).
    """
    quantization = getattr(model, "quantization", None)
    if quantization is not None and not dequantize:
        raise ValueError(
            f"the model is quantized ({quantization}) and the Hugging Face layout stores float weights; save the "
            "float model before quantizing, or pass dequantize=True to write the dequantized weights"
        )
    parse_size(max_shard_size)  # a bad size fails before any work
    tensors: dict[str, torch.Tensor] = {}
    if quantization is not None:
        from vlmzoo.model.quantize import float_state_dict

        state = float_state_dict(model)
    else:
        state = model.state_dict()
    for name, tensor in state.items():
        if tensor.device.type == "meta":
            raise ValueError(f"cannot save {name}: the model is on the meta device and holds no weights")
        tensors[to_hub_key(name)] = tensor.detach().to("cpu").contiguous()
    dtype = str(model.dtype).removeprefix("torch.")
    return write_checkpoint(tensors, config_to_json(model.config, dtype=dtype), directory, max_shard_size)


def write_checkpoint(
    tensors: dict[str, torch.Tensor], config: dict, directory: str | os.PathLike, max_shard_size: int | str = "5GB"
) -> Path:
    """Write ``config.json`` and the named CPU tensors as safetensors, sharded above ``max_shard_size``.

    The staged write of `save_pretrained`, for any model family: the files appear together, and only the
    weight files the previous checkpoint owned are replaced.
    """
    directory = Path(directory)
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    config_text = json.dumps(config, indent=2)
    metadata = {"format": "pt"}
    with staged_directory(directory, replaces=owned_weight_files(directory)) as stage:
        if len(shards) == 1:
            save_file(shards[0], stage / SINGLE_FILE, metadata=metadata)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, stage / name, metadata=metadata)
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (stage / INDEX_FILE).write_text(json.dumps(index, indent=2))
        (stage / "config.json").write_text(config_text)
    return directory
