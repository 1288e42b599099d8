"""Load Hugging Face PaliGemma checkpoints (safetensors only) into vlmzoo models.

The model is built on the meta device, each tensor is read, cast to the target dtype and device,
and assigned in place of its meta parameter: the weights are never held twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlmzoo.checkpoints.hub import CheckpointNotFoundError, resolve
from vlmzoo.checkpoints.safetensors_io import (
    DTYPES,
    INDEX_FILE,
    SINGLE_FILE,
    SafetensorsError,
    iter_row_blocks,
    iter_tensors,
    read_header,
)
from vlmzoo.dtypes import resolve_dtype
from vlmzoo.errors import InvalidFileError, VlmzooError
from vlmzoo.json_files import read_json_object
from vlmzoo.paligemma.checkpoint_keys import to_vlmzoo_key
from vlmzoo.paligemma.config_json import config_from_json
from vlmzoo.paligemma.hf_config import ConfigConversionError
from vlmzoo.progress import progress_bar

if TYPE_CHECKING:
    from vlmzoo.registry import Registries

PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
TIED_HEAD = "language_model.lm_head.weight"


class CheckpointMismatchError(VlmzooError, ValueError):
    """The checkpoint's tensors do not fit the model its config describes."""

    def __init__(self, missing: list[str], unexpected: list[str], mis_shaped: list[str]) -> None:
        self.missing, self.unexpected, self.mis_shaped = missing, unexpected, mis_shaped
        lines = ["the checkpoint does not fit the model its config.json describes:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
                lines.append(f"  {len(keys)} {title} key(s): {shown}")
        lines.append("Check that config.json belongs to these weights, or re-save them with save_pretrained.")
        super().__init__("\n".join(lines))


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory, checking that an index's shards are all there."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InvalidFileError(index, "missing or empty; the index file is damaged", "weight_map")
        for key, name in weight_map.items():
            if not isinstance(name, str) or not name.endswith(".safetensors") or Path(name).name != name:
                raise InvalidFileError(
                    index,
                    f"{name!r} is not the file name of a .safetensors shard in the same directory",
                    f"weight_map[{key!r}]",
                )
        shards = sorted(set(weight_map.values()))
        missing = [name for name in shards if not (directory / name).is_file()]
        if missing:
            raise CheckpointNotFoundError(
                f"{directory} is missing {len(missing)} of the {len(shards)} shards that {INDEX_FILE} lists: "
                f"{', '.join(missing)}. Download the checkpoint again (an interrupted download leaves gaps)."
            )
        return [directory / name for name in shards]
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    found = sorted(directory.glob("*.safetensors"))
    if found:
        return found
    pickles = [name for name in PICKLE_FILES if (directory / name).exists()]
    if pickles:
        raise CheckpointNotFoundError(
            f"{directory} holds only pickled weights ({', '.join(pickles)}); vlmzoo never loads pickles, which can "
            "run arbitrary code. Convert them to safetensors, or use the hub's safetensors revision."
        )
    raise CheckpointNotFoundError(
        f"{directory} holds no weights: expected {SINGLE_FILE}, or {INDEX_FILE} with its shards"
    )


def read_config(directory: Path, name: str | None = None, registries=None):
    """``(config, config.json dict, family)``: family is the registered `ModelFamily` that reads the file, or
    None for a PaliGemma checkpoint."""
    from vlmzoo.families import family_of_json

    path = directory / "config.json"
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in directory.iterdir())[:10]) or "nothing"
        raise CheckpointNotFoundError(
            f"{directory} is not a PaliGemma checkpoint: it has no config.json (it holds {present}). Point to the "
            "directory that holds config.json and model.safetensors."
        )
    data = read_json_object(path)
    family = None if registries is None else family_of_json(data, registries)
    try:
        config = config_from_json(data, name=name) if family is None else family.config_from_json(data, name)
        return config, data, family
    except ConfigConversionError as exc:
        raise exc.with_path(path) from None


def _checkpoint_dtype(config_data: dict, config_path: Path, files: list[Path]) -> torch.dtype:
    for field in ("dtype", "torch_dtype"):
        named = config_data.get(field)
        if isinstance(named, str) and named != "auto":
            try:
                return resolve_dtype(named)
            except ValueError as exc:
                raise InvalidFileError(config_path, str(exc), field) from None
    for entry in read_header(files[0])[0].values():
        dtype = DTYPES.get(entry["dtype"])
        if dtype is not None and dtype.is_floating_point:
            return dtype
    return torch.float32


def _plan(
    files: Iterable[Path], expected: dict[str, torch.Tensor], tied: bool, to_key=to_vlmzoo_key
) -> dict[Path, dict[str, str]]:
    """Map each file's keys to parameter names (``to_key``; None skips a key), raising one error that lists
    every mismatch."""
    plan: dict[Path, dict[str, str]] = {}
    found: dict[str, str] = {}  # parameter name -> the checkpoint key that holds it
    unexpected, mis_shaped = [], []
    for path in files:
        plan[path] = {}
        for key, entry in read_header(path)[0].items():
            name = to_key(key)
            if name is None or (name == TIED_HEAD and tied):
                continue
            if name not in expected:
                unexpected.append(key)
            elif name in found:
                unexpected.append(f"{key} (a second copy of {name}, already in {found[name]})")
            elif tuple(entry["shape"]) != tuple(expected[name].shape):
                mis_shaped.append(f"{key} (checkpoint {list(entry['shape'])}, model {list(expected[name].shape)})")
                found[name] = key
            elif expected[name].is_floating_point() and not DTYPES[entry["dtype"]].is_floating_point:
                raise SafetensorsError(
                    path,
                    f"stored as {entry['dtype']}, but {name} holds floating-point weights; this is not a weight "
                    "file vlmzoo (or transformers) can load as is (quantized or damaged?)",
                    f"tensor {key!r}",
                )
            else:
                plan[path][key] = name
                found[name] = key
    missing = sorted(set(expected) - set(found))
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatchError(missing, sorted(unexpected), sorted(mis_shaped))
    return plan


def from_pretrained(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = "auto",
    token: str | bool | None = None,
    progress: bool | None = None,
    quantize: str | None = None,
    registries: Registries | None = None,
    torch_dtype: torch.dtype | str | None = None,
    device_map: str | torch.device | dict | None = None,
    attn_implementation: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    **hf_options: Any,
) -> Any:
    """Load a PaliGemma or PaliGemma 2 checkpoint, or one of another registered model family (SigLIP), from a
    local directory or a hub repo id.

    ``dtype`` defaults to the checkpoint's own (also ``"auto"``); ``device`` to ``"auto"``: the first CUDA
    GPU when present, else MPS, XPU or the CPU (`vlmzoo.devices`). Weights are cast
    as they are assigned. ``quantize="int8"`` or ``"int4"`` stores the decoder's weights quantized (see
    `PaliGemma.quantize`), each weight quantized as soon as it is read, so the peak memory stays close
    to the quantized model's size. Raises `CheckpointMismatchError` (naming the keys) when weights and
    config disagree.

    The arguments transformers users type work with transformers' meaning: ``torch_dtype`` (an alias
    of ``dtype``), ``device_map`` for one device (``"cpu"``, ``"cuda"``, ``"auto"``),
    ``attn_implementation`` (``"sdpa"`` or ``"eager"``, or any `attention` registry key),
    ``local_files_only`` and ``cache_dir``; ``low_cpu_mem_usage``, ``use_safetensors=True`` and
    ``trust_remote_code`` change nothing. ``load_in_8bit`` / ``load_in_4bit`` raise
    `UnsupportedArgumentError` naming vlmzoo's own quantization option.

    Args:
        path_or_repo_id: a local checkpoint directory, a hub repo id or ``"shapes-demo"``.
        revision: hub branch, tag or commit.
        dtype: the weights' dtype; default (or ``"auto"``) the checkpoint's own.
        device: ``"auto"`` (the default: CUDA when present, else MPS, XPU, CPU), ``"cpu"``,
            ``"cuda:1"``...
        token: Hugging Face token for gated repos (default: ``HF_TOKEN`` or the saved login).
        progress: show a progress bar (default: on a terminal).
        quantize: ``"int8"`` or ``"int4"``: the decoder's weights quantized while they are read.
        registries: the registries to build from (default: those of the installed plugins).
        torch_dtype: transformers' name for ``dtype``.
        device_map: transformers' option, for one device only (``"auto"``, ``"cuda"``, ``"cpu"``).
        attn_implementation: ``"sdpa"``, ``"eager"`` or an `attention` registry key.
        local_files_only: use only the local cache, never the network.
        cache_dir: the Hugging Face cache directory to use.
        **hf_options: other transformers options; harmless ones are accepted, others raise.

    Returns:
        A `PaliGemma` model (or the family's model, e.g. `vlmzoo.siglip.SiglipModel`) in eval mode.

    Raises:
        CheckpointNotFoundError: no such directory or repo, or no access to it.
        CheckpointMismatchError: weights and config disagree (the keys are named).
        DeviceError: the device is not available here.
    """
    from vlmzoo.checkpoints.hf_arguments import attention_key, check_extra_options, load_device, load_dtype
    from vlmzoo.model.quantize import check_device, get_scheme, prepare_for_loading
    from vlmzoo.plugins import resolve_registries
    from vlmzoo.zoo import build

    check_extra_options(hf_options)
    dtype = load_dtype(dtype, torch_dtype)
    requested_dtype = resolve_dtype(dtype)
    target_device = load_device(device, device_map)  # before any work: a missing GPU fails here, at once
    registries = resolve_registries(registries)
    attention = attention_key(attn_implementation, registries)
    directory = resolve(
        path_or_repo_id, revision=revision, token=token, local_files_only=local_files_only, cache_dir=cache_dir
    )
    config, config_data, family = read_config(directory, name=os.fspath(path_or_repo_id), registries=registries)
    if attention is not None:
        sections = [section for section in ("vision", "decoder", "text") if section in type(config).model_fields]
        config = config.replace(**{section: {"attention": attention} for section in sections})
    if quantize is not None and family is not None:
        raise ValueError(f"quantize= applies to PaliGemma decoders; {path_or_repo_id} is a {family.name} model")
    files = weight_files(directory)
    target_dtype = requested_dtype or _checkpoint_dtype(config_data, directory / "config.json", files)
    if quantize is not None:
        check_device(quantize, get_scheme(quantize, registries), target_device.type)
    model = build(config, device="meta", dtype=target_dtype, registries=registries)
    expected = model.state_dict()
    if family is None:
        plan = _plan(files, expected, tied=config.decoder.tie_word_embeddings)
    else:
        plan = _plan(files, expected, tied=False, to_key=family.checkpoint_key)
    quantized = {} if quantize is None else prepare_for_loading(model, quantize, registries)
    state: dict[str, torch.Tensor] = {}
    total = sum(len(keys) for keys in plan.values())
    with progress_bar(total=total, desc="Loading weights", unit="tensor", enabled=progress) as bar:
        for path, keys in plan.items():
            # Weights whose scheme quantizes rows independently are read a block of rows at a time, so the
            # peak stays near the quantized size (a 10b model's embedding is 1.8 GB in bfloat16).
            blockwise = {key for key, name in keys.items() if name in quantized and quantized[name][1].rows_independent}
            for key, tensor in iter_tensors(path, set(keys) - blockwise, dtype=target_dtype):
                name = keys[key]
                if name in quantized:
                    module_path, scheme = quantized.pop(name)
                    qweight, scales = scheme.quantize(tensor.to(target_device))
                    state[f"{module_path}.qweight"], state[f"{module_path}.scales"] = qweight, scales
                else:
                    state[name] = tensor.to(device=target_device, dtype=_dtype_for(tensor, target_dtype))
                del tensor
                bar.update()
            for key in sorted(blockwise):
                module_path, scheme = quantized.pop(keys[key])
                module = model.get_submodule(module_path)
                qweight, scales = _quantize_blockwise(path, key, scheme, module, target_dtype, target_device)
                state[f"{module_path}.qweight"], state[f"{module_path}.scales"] = qweight, scales
                bar.update()
    model.load_state_dict(state, strict=True, assign=True)
    model.name_or_path = os.fspath(path_or_repo_id)
    return model.eval()


def _quantize_blockwise(path, key, scheme, module, dtype, device):
    """Quantize one weight a block of rows at a time into ``(qweight, scales)`` shaped like `module`'s."""
    qweight = torch.empty_like(module.qweight, device=device)
    scales = torch.empty_like(module.scales, device=device)
    for first, rows in iter_row_blocks(path, key, dtype=dtype):
        block_q, block_s = scheme.quantize(rows.to(device))
        qweight[first : first + len(rows)] = block_q
        scales[first : first + len(rows)] = block_s
    return qweight, scales


def _dtype_for(tensor: torch.Tensor, target: torch.dtype) -> torch.dtype:
    return target if tensor.is_floating_point() else tensor.dtype
