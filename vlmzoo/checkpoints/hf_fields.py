"""Type checks on a Hugging Face ``config.json`` before it is converted, naming the field at fault.

A hand-edited or damaged config holds ``"three"`` where a count belongs, ``0`` heads, or a list where an
object belongs. Without these checks such values surface as a ``ZeroDivisionError`` in the conversion
or a raw pydantic dump of vlmzoo's own field names; with them the error names the Hugging Face field
(``text_config.num_attention_heads``) and what it must be.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from vlmzoo.errors import InvalidFileError
from vlmzoo.values import is_finite_number, is_integer

__all__ = ["ConfigConversionError", "check_hf_config", "conversion_error_from_validation"]


class ConfigConversionError(InvalidFileError):
    """A config.json that does not describe a model vlmzoo can build; names the field at fault."""

    def __init__(self, problem: str, field: str | None = None, path: str | os.PathLike | None = None) -> None:
        super().__init__(path, problem, field)


def _count(value: Any) -> str | None:
    return None if is_integer(value) and value > 0 else "must be a positive integer"


def _layers(value: Any) -> str | None:
    return None if is_integer(value) and value >= 0 else "must be a non-negative integer"


def _positive(value: Any) -> str | None:
    return None if is_finite_number(value) and value > 0 else "must be a positive number"


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def optional(value: Any) -> str | None:
        problem = None if value is None else check(value)
        return problem and f"{problem} (or null)"

    return optional


def _size(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and value and all(_count(v) is None for v in value):
        return None
    return _count(value) and "must be a positive integer (or a list of equal positive integers)"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _token_id(value: Any) -> str | None:
    values = value if isinstance(value, list) else [value]
    ok = all(v is None or (is_integer(v) and v >= 0) for v in values)
    return None if ok else "must be a non-negative integer token id (or a list of them)"


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


def _string_list(value: Any) -> str | None:
    return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else "must be a list of strings"


_TOP = {
    "model_type": _string, "vision_config": _optional(_object), "text_config": _optional(_object),
    "image_token_index": _token_id, "image_token_id": _token_id, "pad_token_id": _token_id,
    "bos_token_id": _token_id, "eos_token_id": _token_id, "tie_word_embeddings": _boolean,
}  # fmt: skip
_VISION = {
    "hidden_size": _count, "intermediate_size": _count, "num_hidden_layers": _layers,
    "num_attention_heads": _count, "num_channels": _count, "image_size": _size, "patch_size": _size,
    "layer_norm_eps": _positive, "hidden_act": _optional(_string),
}  # fmt: skip
_TEXT = {
    "model_type": _string, "vocab_size": _count, "hidden_size": _count, "intermediate_size": _count,
    "num_hidden_layers": _layers, "num_attention_heads": _count, "num_key_value_heads": _optional(_count),
    "head_dim": _optional(_count), "max_position_embeddings": _count, "rms_norm_eps": _positive,
    "rope_theta": _positive, "query_pre_attn_scalar": _optional(_positive),
    "attn_logit_softcapping": _optional(_positive), "final_logit_softcapping": _optional(_positive),
    "sliding_window": _optional(_count), "layer_types": _optional(_string_list),
    "rope_parameters": _optional(_object), "rope_scaling": _optional(_object), "tie_word_embeddings": _boolean,
    "attention_bias": _boolean, "hidden_activation": _optional(_string), "hidden_act": _optional(_string),
    "pad_token_id": _token_id, "bos_token_id": _token_id, "eos_token_id": _token_id,
}  # fmt: skip


def _check_section(section: dict[str, Any], table: dict[str, Callable[[Any], str | None]], prefix: str) -> None:
    for key, check in table.items():
        if key in section:
            problem = check(section[key])
            if problem:
                raise ConfigConversionError(f"{problem}, got {section[key]!r}", field=f"{prefix}{key}")


def check_hf_config(data: Any) -> None:
    """Raise `ConfigConversionError` naming the first field of the wrong type or value; None if all fit."""
    if not isinstance(data, dict):
        raise ConfigConversionError(f"must hold a JSON object, not a {type(data).__name__}")
    _check_section(data, _TOP, "")
    if isinstance(data.get("vision_config"), dict):
        _check_section(data["vision_config"], _VISION, "vision_config.")
    if isinstance(data.get("text_config"), dict):
        _check_section(data["text_config"], _TEXT, "text_config.")


#: vlmzoo config fields and the Hugging Face config.json fields they come from.
HF_NAMES = {
    "vision.image_size": "vision_config.image_size", "vision.patch_size": "vision_config.patch_size",
    "vision.num_channels": "vision_config.num_channels", "vision.hidden_size": "vision_config.hidden_size",
    "vision.intermediate_size": "vision_config.intermediate_size",
    "vision.num_layers": "vision_config.num_hidden_layers", "vision.num_heads": "vision_config.num_attention_heads",
    "vision.layer_norm_eps": "vision_config.layer_norm_eps",
    "decoder.vocab_size": "text_config.vocab_size", "decoder.hidden_size": "text_config.hidden_size",
    "decoder.intermediate_size": "text_config.intermediate_size",
    "decoder.num_layers": "text_config.num_hidden_layers", "decoder.num_heads": "text_config.num_attention_heads",
    "decoder.num_kv_heads": "text_config.num_key_value_heads", "decoder.head_dim": "text_config.head_dim",
    "decoder.query_pre_attn_scalar": "text_config.query_pre_attn_scalar",
    "decoder.attn_logit_softcap": "text_config.attn_logit_softcapping",
    "decoder.final_logit_softcap": "text_config.final_logit_softcapping",
    "decoder.sliding_window": "text_config.sliding_window", "decoder.layer_types": "text_config.layer_types",
    "decoder.rope_theta": "text_config.rope_theta", "decoder.rms_norm_eps": "text_config.rms_norm_eps",
    "decoder.max_position_embeddings": "text_config.max_position_embeddings",
    "image_token_id": "image_token_index",
}  # fmt: skip
_NAME = re.compile(r"\b(?:vision|decoder)\.\w+|\bimage_token_id\b")


def _hf_names(text: str) -> str:
    return _NAME.sub(lambda m: HF_NAMES.get(m.group(0), m.group(0)), text)


def conversion_error_from_validation(error: Any) -> ConfigConversionError:
    """A pydantic ``ValidationError`` from building the config, as one line per problem in HF names."""
    lines = []
    for item in error.errors(include_url=False):
        where = _hf_names(".".join(str(part) for part in item.get("loc", ())))
        message = _hf_names(str(item.get("msg", "")).removeprefix("Value error, "))
        lines.append(f"{where}: {message}" if where else message)
    return ConfigConversionError("; ".join(lines) + "; fix config.json (or re-save the checkpoint)")
