"""Save vlmzoo models in the Hugging Face layout, sharded above a size limit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from vlmzoo.checkpoints.hf_config import config_to_hf
from vlmzoo.checkpoints.keys import to_hub_key
from vlmzoo.checkpoints.loading import INDEX_FILE, SINGLE_FILE

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}


def parse_size(size: int | str) -> int:
    """``"5GB"`` → 5_000_000_000; integers are bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", size.upper())
    if not match:
        raise ValueError(f"cannot read size {size!r}; write it like '5GB', '500MB' or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2) or "B"])


def save_pretrained(
    model, directory: str | os.PathLike, max_shard_size: int | str = "5GB", *, dequantize: bool = False
) -> Path:
    """Write ``config.json`` and safetensors weights that vlmzoo and transformers both load.

    The Hugging Face layout has no place for vlmzoo's quantized weights, so a quantized model is saved
    only with ``dequantize=True`` (weights dequantized to the model's dtype).
    """
    quantization = getattr(model, "quantization", None)
    if quantization is not None and not dequantize:
        raise ValueError(
            f"the model is quantized ({quantization}) and the Hugging Face layout stores float weights; save the "
            "float model before quantizing, or pass dequantize=True to write the dequantized weights"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
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
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    for stale in [*directory.glob("model*.safetensors"), directory / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], directory / SINGLE_FILE, metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, directory / name, metadata=metadata)
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
    dtype = str(model.dtype).removeprefix("torch.")
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.config, dtype=dtype), indent=2))
    return directory
