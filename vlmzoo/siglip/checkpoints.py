"""SigLIP checkpoints in the Hugging Face ``SiglipModel`` layout: config.json conversion, key names, saving.

Hub config.json files are sparse (``google/siglip-base-patch16-224`` names almost nothing): a missing key
takes the default of transformers' ``SiglipTextConfig`` / ``SiglipVisionConfig``, written out here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlmzoo.checkpoints.hf_fields import ConfigConversionError
from vlmzoo.checkpoints.saving import parse_size, write_checkpoint
from vlmzoo.config import VisionConfig
from vlmzoo.siglip.config import SiglipConfig, SiglipTextConfig
from vlmzoo.values import is_finite_number, is_integer

__all__ = ["config_from_hf", "config_to_hf", "reads_config", "save_pretrained", "to_checkpoint_key", "to_model_key"]

MODEL_TYPE = "siglip"
VLMZOO_KEY = "vlmzoo"
_TEXT_DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 64, "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh", "projection_size": None,
}  # fmt: skip
_VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh",
}  # fmt: skip
#: transformers' ``hidden_act`` → vlmzoo's MLP key ("gelu" is the exact erf GELU there).
_MLPS = {"gelu_pytorch_tanh": "gelu", "gelu_new": "gelu", "gelu_fast": "gelu", "gelu": "gelu_exact"}
_ACTS = {"gelu": "gelu_pytorch_tanh", "gelu_exact": "gelu"}
_INTEGERS = ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings",
             "num_channels", "image_size", "patch_size")  # fmt: skip


def reads_config(data: dict) -> bool:
    """A ``SiglipModel`` config.json (``model_type: "siglip"``), or one vlmzoo wrote for a SigLIP model that
    transformers cannot build (``model_type: "vlmzoo"``, ``family: "siglip"``)."""
    return data.get("model_type") == MODEL_TYPE or (
        data.get("model_type") == "vlmzoo" and data.get("family") == MODEL_TYPE
    )


def _section(data: dict, key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    section = data.get(key, {})
    if not isinstance(section, dict):
        raise ConfigConversionError(f"must be an object, got {type(section).__name__}", field=key)
    merged = {**defaults, **{k: v for k, v in section.items() if k in defaults}}
    for field, value in merged.items():
        where = f"{key}.{field}"
        if field in _INTEGERS and not is_integer(value, 1):
            raise ConfigConversionError(f"must be a positive integer, got {value!r}", field=where)
        if field == "num_hidden_layers" and not is_integer(value, 0):
            raise ConfigConversionError(f"must be a non-negative integer, got {value!r}", field=where)
        if field == "layer_norm_eps" and not (is_finite_number(value) and value > 0):
            raise ConfigConversionError(f"must be a positive number, got {value!r}", field=where)
        if field == "projection_size" and value is not None and not is_integer(value, 1):
            raise ConfigConversionError(f"must be a positive integer or null, got {value!r}", field=where)
        if field == "hidden_act" and value not in _MLPS:
            raise ConfigConversionError(
                f"activation {value!r} is not supported; SigLIP uses gelu_pytorch_tanh or gelu (exact)", field=where
            )
    return merged


def config_from_hf(data: dict, name: str | None = None) -> SiglipConfig:
    """The `SiglipConfig` a Hugging Face ``SiglipModel`` config.json describes (sparse files allowed)."""
    if data.get("model_type") == "vlmzoo":
        return _own_config(data.get(VLMZOO_KEY), name)
    if data.get("vision_config", {}).get("vision_use_head") is False:
        raise ConfigConversionError(
            "is false: this checkpoint has no attention-pooling head, so it has no image embedding to compare "
            "with text; vlmzoo's SigLIP models need the head",
            field="vision_config.vision_use_head",
        )
    text = _section(data, "text_config", _TEXT_DEFAULTS)
    vision = _section(data, "vision_config", _VISION_DEFAULTS)
    try:
        config = SiglipConfig(
            name=name,
            vision=VisionConfig(
                mlp=_MLPS[vision["hidden_act"]], image_size=vision["image_size"], patch_size=vision["patch_size"],
                num_channels=vision["num_channels"], hidden_size=vision["hidden_size"],
                intermediate_size=vision["intermediate_size"], num_layers=vision["num_hidden_layers"],
                num_heads=vision["num_attention_heads"], layer_norm_eps=vision["layer_norm_eps"],
            ),
            text=SiglipTextConfig(
                mlp=_MLPS[text["hidden_act"]], vocab_size=text["vocab_size"], hidden_size=text["hidden_size"],
                intermediate_size=text["intermediate_size"], num_layers=text["num_hidden_layers"],
                num_heads=text["num_attention_heads"], max_length=text["max_position_embeddings"],
                layer_norm_eps=text["layer_norm_eps"], projection_size=text["projection_size"],
            ),
        )  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigConversionError(f"{where}: {first['msg']}; fix config.json or save the model again") from None
    own = data.get(VLMZOO_KEY)
    if own is None:
        return config
    saved = _own_config(own, name)
    if _architecture(saved) != _architecture(config):
        raise ConfigConversionError(
            f'the "{VLMZOO_KEY}" section and the Hugging Face fields describe different models, so the file was '
            f'changed after vlmzoo saved it. Delete the "{VLMZOO_KEY}" section to load the Hugging Face fields, or '
            "save the model again.",
            field=VLMZOO_KEY,
        )
    return saved


def _own_config(own: Any, name: str | None) -> SiglipConfig:
    if not isinstance(own, dict):
        raise ConfigConversionError(f"must be an object, got {type(own).__name__}", field=VLMZOO_KEY)
    try:
        return SiglipConfig.model_validate({**own, "name": name})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigConversionError(first["msg"], field=".".join(map(str, (VLMZOO_KEY, *first["loc"])))) from None


def _architecture(config: SiglipConfig) -> dict:
    """What the Hugging Face fields can say: everything but the component choices and the initial values."""
    return config_to_hf(config)


def config_to_hf(config: SiglipConfig, dtype: str = "float32") -> dict[str, Any]:
    """The Hugging Face ``SiglipModel`` config.json for ``config`` (every field written out)."""
    vision, text = config.vision, config.text
    return {
        "architectures": ["SiglipModel"],
        "model_type": MODEL_TYPE,
        "dtype": dtype,
        "text_config": {
            "model_type": "siglip_text_model", "vocab_size": text.vocab_size, "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_layers,
            "num_attention_heads": text.num_heads, "max_position_embeddings": text.max_length,
            "layer_norm_eps": text.layer_norm_eps, "hidden_act": _ACTS.get(text.mlp, text.mlp),
            "projection_size": text.embedding_size,
        },
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size, "num_hidden_layers": vision.num_layers,
            "num_attention_heads": vision.num_heads, "num_channels": vision.num_channels,
            "image_size": vision.image_size, "patch_size": vision.patch_size, "layer_norm_eps": vision.layer_norm_eps,
            "hidden_act": _ACTS.get(vision.mlp, vision.mlp), "vision_use_head": True,
        },
    }  # fmt: skip


def hf_differences(config: SiglipConfig) -> list[str]:
    """The component choices transformers' ``SiglipModel`` cannot build (a plugin's norm, pooling, ...)."""
    found = []
    for section, parts in (("vision", config.vision), ("text", config.text)):
        if parts.norm != "layer_norm":
            found.append(f"{section}.norm={parts.norm!r}")
        if parts.mlp not in _ACTS:
            found.append(f"{section}.mlp={parts.mlp!r}")
        if parts.attention not in ("sdpa", "eager"):
            found.append(f"{section}.attention={parts.attention!r}")
    if config.vision.kind != "siglip":
        found.append(f"vision.kind={config.vision.kind!r}")
    if config.pooling != "attention_probe":
        found.append(f"pooling={config.pooling!r}")
    return found


# Checkpoint key → vlmzoo parameter name, applied in order.
_TO_MODEL = [
    (re.compile(r"^(vision|text)_model\.encoder\.layers\."), r"\1_model.layers."),
    (re.compile(r"^((?:vision|text)_model\.layers\.\d+\.self_attn)\.out_proj\."), r"\1.o_proj."),
    (re.compile(r"^vision_model\.head\."), "vision_head."),
]
_TO_CHECKPOINT = [
    (re.compile(r"^((?:vision|text)_model\.layers\.\d+\.self_attn)\.o_proj\."), r"\1.out_proj."),
    (re.compile(r"^(vision|text)_model\.layers\."), r"\1_model.encoder.layers."),
    (re.compile(r"^vision_head\."), "vision_model.head."),
]
#: Buffers older transformers versions saved; they hold nothing a model needs.
_SKIPPED = re.compile(r"^(vision|text)_model\.embeddings\.position_ids$")


def to_model_key(key: str) -> str | None:
    """The vlmzoo parameter name of a ``SiglipModel`` checkpoint key (None for saved buffers to skip)."""
    if _SKIPPED.match(key):
        return None
    for pattern, replacement in _TO_MODEL:
        key = pattern.sub(replacement, key)
    return key


def to_checkpoint_key(name: str) -> str:
    """The ``SiglipModel`` checkpoint key of a vlmzoo parameter."""
    for pattern, replacement in _TO_CHECKPOINT:
        name = pattern.sub(replacement, name)
    return name


def save_pretrained(model, directory: str | os.PathLike, max_shard_size: int | str = "5GB") -> Path:
    """Write config.json and safetensors in the ``SiglipModel`` layout; transformers loads the directory.

    A model built from components transformers lacks is written with ``model_type: "vlmzoo"`` so that
    transformers refuses it instead of building a different model; vlmzoo's own config is kept whole under
    ``"vlmzoo"`` either way (staged like `vlmzoo.checkpoints.save_pretrained`).
    """
    parse_size(max_shard_size)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if tensor.device.type == "meta":
            raise ValueError(f"cannot save {name}: the model is on the meta device and holds no weights")
        tensors[to_checkpoint_key(name)] = tensor.detach().to("cpu").contiguous()
    dtype = str(model.dtype).removeprefix("torch.")
    own = model.config.model_dump(mode="json", exclude={"name"})
    if hf_differences(model.config):
        config = {"model_type": "vlmzoo", "family": MODEL_TYPE, "dtype": dtype, VLMZOO_KEY: own}
    else:
        config = {**config_to_hf(model.config, dtype=dtype), VLMZOO_KEY: own}
    return write_checkpoint(tensors, config, directory, max_shard_size)
