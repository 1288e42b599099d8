"""What a saved checkpoint's ``config.json`` holds, so that saving never loses part of the model.

A model transformers can build exactly (SigLIP, the linear projector with its bias, a Gemma or Gemma 2
decoder of vlmzoo's own components) is written as a Hugging Face PaliGemma config. A model assembled
from anything else (a plugin's attention, norm, MLP or vision encoder, a projector without bias) has no
faithful Hugging Face form: it is written with ``model_type: "vlmzoo"``, which transformers refuses to
load, instead of a PaliGemma config that would load as a different model.

Either way vlmzoo's own config is kept whole under the ``"vlmzoo"`` key, so that component choices the
Hugging Face fields cannot say (the attention kernel, ``eager`` or ``sdpa``) survive the round trip.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vlmzoo.checkpoints.hf_fields import ConfigConversionError
from vlmzoo.config import PaliGemmaConfig
from vlmzoo.paligemma.hf_config import config_from_hf, config_to_hf, hf_differences

__all__ = ["VLMZOO_KEY", "VLMZOO_MODEL_TYPE", "config_from_json", "config_to_json"]

VLMZOO_KEY = "vlmzoo"
VLMZOO_MODEL_TYPE = "vlmzoo"


def config_to_json(config: PaliGemmaConfig, dtype: str = "float32") -> dict[str, Any]:
    """The ``config.json`` dict for ``config``: Hugging Face fields where they describe the model exactly,
    ``model_type: "vlmzoo"`` where they cannot; vlmzoo's whole config under ``"vlmzoo"`` in both cases."""
    own = config.model_dump(mode="json", exclude={"name"})
    if hf_differences(config):
        # transformers' PaliGemma class loads any model_type with a warning, building its default model;
        # sub-configs of an unknown type make every transformers entry point raise instead.
        unknown = {"model_type": VLMZOO_MODEL_TYPE}
        return {
            "model_type": VLMZOO_MODEL_TYPE,
            "text_config": unknown,
            "vision_config": unknown,
            "dtype": dtype,
            VLMZOO_KEY: own,
        }
    return {**config_to_hf(config, dtype=dtype), VLMZOO_KEY: own}


def config_from_json(data: dict[str, Any], name: str | None = None) -> PaliGemmaConfig:
    """The config a ``config.json`` dict describes: a Hugging Face PaliGemma config, or one vlmzoo wrote.

    When both the Hugging Face fields and a ``"vlmzoo"`` section are present they must describe the same
    model; if the file was edited (or re-saved by another library) since, the error says so rather than
    picking one of them.
    """
    own = data.get(VLMZOO_KEY)
    if data.get("model_type") == VLMZOO_MODEL_TYPE:
        if own is None:
            raise ConfigConversionError(
                f'has model_type "{VLMZOO_MODEL_TYPE}" but no "{VLMZOO_KEY}" section; save the model again with '
                "save_pretrained",
                field=VLMZOO_KEY,
            )
        return _own_config(own, name)
    hf = config_from_hf(data, name=name)
    if own is None:
        return hf
    saved = _own_config(own, name)
    if hf_differences(saved) or config_from_hf(config_to_hf(saved), name=name) != hf:
        raise ConfigConversionError(
            f'the "{VLMZOO_KEY}" section and the Hugging Face fields (text_config, vision_config, token ids) '
            "describe different models, so the file was changed after vlmzoo saved it. Delete the "
            f'"{VLMZOO_KEY}" section to load the Hugging Face fields, or save the model again.',
            field=VLMZOO_KEY,
        )
    return saved


def _own_config(own: Any, name: str | None) -> PaliGemmaConfig:
    if not isinstance(own, dict):
        raise ConfigConversionError(f"must be an object, got {type(own).__name__}", field=VLMZOO_KEY)
    try:
        return PaliGemmaConfig.model_validate({**own, "name": name})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in (VLMZOO_KEY, *first["loc"]))
        raise ConfigConversionError(first["msg"], field=where) from None
