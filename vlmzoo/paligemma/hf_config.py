"""Convert between Hugging Face ``config.json`` (PaliGemma / PaliGemma 2) and `PaliGemmaConfig`.

Hub files are sparse: a missing key means the default of the transformers config class it belongs
to, so those defaults are written out here, per model type.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vlmzoo.checkpoints.hf_fields import ConfigConversionError, check_hf_config, conversion_error_from_validation
from vlmzoo.config import DecoderConfig, PaliGemmaConfig, ProjectorConfig, VisionConfig

__all__ = ["ConfigConversionError", "config_from_hf", "config_to_hf", "hf_differences"]

# Used when the whole sub-config is absent (PaliGemmaConfig's own defaults).
_PALIGEMMA_VISION = {
    "hidden_size": 1152,
    "intermediate_size": 4096,
    "patch_size": 14,
    "image_size": 224,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
}
_PALIGEMMA_TEXT = {
    "model_type": "gemma",
    "hidden_size": 2048,
    "num_hidden_layers": 18,
    "intermediate_size": 16384,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "vocab_size": 257152,
}
# Used for keys missing inside a sub-config (the defaults of its model type's config class).
_SIGLIP_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}
_TEXT_DEFAULTS = {
    "gemma": {"vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256, "max_position_embeddings": 8192,
              "rms_norm_eps": 1e-6, "query_pre_attn_scalar": None, "sliding_window": None,
              "attn_logit_softcapping": None, "final_logit_softcapping": None},
    "gemma2": {"vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
               "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192,
               "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
}  # fmt: skip
_BLOCKS = {"gemma": "gemma", "gemma2": "gemma2"}
_TANH_GELUS = {"gelu_pytorch_tanh", "gelu_new", "gelu_fast"}  # the same tanh approximation, three names
#: SigLIP's ``hidden_act`` → vlmzoo's vision MLP key: transformers' "gelu" is the exact (erf) GELU.
_VISION_MLPS = {**dict.fromkeys(_TANH_GELUS, "gelu"), "gelu": "gelu_exact"}


def _vision_mlp(value: Any) -> str:
    if value is None:
        return "gelu"
    if value not in _VISION_MLPS:
        raise ConfigConversionError(
            f"activation {value!r} is not supported; SigLIP uses gelu_pytorch_tanh (tanh approximation) or gelu "
            "(exact)",
            field="vision_config.hidden_act",
        )
    return _VISION_MLPS[value]


def _check_text_activation(text: dict[str, Any]) -> None:
    """transformers' Gemma decoders use ``hidden_activation`` (default: the tanh GELU) and ignore the legacy
    ``hidden_act``, so only an explicit ``hidden_activation`` other than a tanh GELU is refused."""
    value = text.get("hidden_activation")
    if value is not None and value not in _TANH_GELUS:
        raise ConfigConversionError(
            f"activation {value!r} is not supported; PaliGemma's decoder uses the tanh GELU (gelu_pytorch_tanh)",
            field="text_config.hidden_activation",
        )


def _rope_theta(text: dict[str, Any]) -> float:
    params = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if params and "rope_type" not in params and all(isinstance(v, dict) for v in params.values()):
        thetas = {v.get("rope_theta") for v in params.values()}
        if len(thetas) != 1:
            raise ConfigConversionError(f"per-layer rope_parameters with different thetas are not supported: {params}")
        params = next(iter(params.values()))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ConfigConversionError(f"rope_type {rope_type!r} is not supported; PaliGemma uses the default RoPE")
    return float(params.get("rope_theta", text.get("rope_theta", 10000.0)))


def config_from_hf(data: dict[str, Any], name: str | None = None) -> PaliGemmaConfig:
    """Build a `PaliGemmaConfig` from the dict of a Hugging Face PaliGemma ``config.json``.

    Raises `ConfigConversionError` naming the Hugging Face field at fault for values of the wrong type,
    impossible shapes and features vlmzoo does not support.
    """
    check_hf_config(data)
    try:
        return _config_from_hf(data, name)
    except ValidationError as exc:
        raise conversion_error_from_validation(exc) from None
    except ConfigConversionError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a shape the field checks do not cover
        raise ConfigConversionError(f"cannot be read ({type(exc).__name__}: {exc})") from None


def _config_from_hf(data: dict[str, Any], name: str | None) -> PaliGemmaConfig:
    model_type = data.get("model_type", "paligemma")
    if model_type != "paligemma":
        raise ConfigConversionError(
            f"config.json has model_type {model_type!r}; vlmzoo loads PaliGemma checkpoints (model_type 'paligemma')"
        )
    vision_in = data.get("vision_config")
    vision_raw = {**_SIGLIP_DEFAULTS, **(_PALIGEMMA_VISION if vision_in is None else vision_in)}
    text_in = data.get("text_config")
    text_raw = dict(_PALIGEMMA_TEXT if text_in is None else text_in)
    text_type = text_raw.get("model_type", "gemma")
    if text_type not in _TEXT_DEFAULTS:
        raise ConfigConversionError(
            f"text_config.model_type {text_type!r} is not supported; expected one of {sorted(_TEXT_DEFAULTS)}"
        )
    text = {**_TEXT_DEFAULTS[text_type], **text_raw}
    vision_mlp = _vision_mlp(vision_raw["hidden_act"])
    _check_text_activation(text)
    if text.get("attention_bias"):
        raise ConfigConversionError("text_config.attention_bias=true is not supported by Gemma decoders")
    image_size, patch_size = vision_raw["image_size"], vision_raw["patch_size"]
    if isinstance(image_size, (list, tuple)):
        image_size = _square("image_size", image_size)
    if isinstance(patch_size, (list, tuple)):
        patch_size = _square("patch_size", patch_size)
    vision = VisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=vision_raw["num_channels"],
        hidden_size=vision_raw["hidden_size"],
        intermediate_size=vision_raw["intermediate_size"],
        num_layers=vision_raw["num_hidden_layers"],
        num_heads=vision_raw["num_attention_heads"],
        layer_norm_eps=vision_raw["layer_norm_eps"],
        mlp=vision_mlp,
    )
    layer_types = _layer_types(text)
    decoder = DecoderConfig(
        block=_BLOCKS[text_type],
        vocab_size=text["vocab_size"],
        hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"],
        num_layers=text["num_hidden_layers"],
        num_heads=text["num_attention_heads"],
        num_kv_heads=text.get("num_key_value_heads") or text["num_attention_heads"],
        head_dim=text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"],
        query_pre_attn_scalar=text["query_pre_attn_scalar"],
        attn_logit_softcap=text["attn_logit_softcapping"],
        final_logit_softcap=text["final_logit_softcapping"],
        sliding_window=text["sliding_window"],
        layer_types=layer_types,
        rope_theta=_rope_theta(text),
        rms_norm_eps=text["rms_norm_eps"],
        max_position_embeddings=text["max_position_embeddings"],
        tie_word_embeddings=text.get("tie_word_embeddings", data.get("tie_word_embeddings", True)),
    )
    image_token = data.get("image_token_index", data.get("image_token_id", 256000))
    return PaliGemmaConfig(
        name=name,
        vision=vision,
        projector=ProjectorConfig(input_size=vision.hidden_size, output_size=decoder.hidden_size),
        decoder=decoder,
        image_token_id=image_token,
        pad_token_id=_first(data, text, "pad_token_id", 0),
        bos_token_id=_first(data, text, "bos_token_id", 2),
        eos_token_id=_eos_ids(data, text),
    )


def _layer_types(text: dict[str, Any]) -> tuple[str, ...] | None:
    """Per-layer attention kinds; None for the default alternation (even layers slide), as vlmzoo's variants say it.

    transformers writes ``layer_types`` out in full even when it is the default; keeping that as None makes
    ``config_from_hf(config_to_hf(c)) == c`` and a loaded config equal to the built-in variant's.
    """
    layer_types = text.get("layer_types")
    if not layer_types or text["sliding_window"] is None:
        return None
    layer_types = tuple(layer_types)
    default = tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(text["num_hidden_layers"]))
    return None if layer_types == default else layer_types


def _square(field: str, value: list[int] | tuple[int, ...]) -> int:
    if len(set(value)) != 1:
        raise ConfigConversionError(f"vision_config.{field}={list(value)} must be square")
    return int(value[0])


def _first(top: dict[str, Any], text: dict[str, Any], key: str, default: int) -> int:
    for source in (text, top):
        value = source.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return default


def _eos_ids(top: dict[str, Any], text: dict[str, Any]) -> int | tuple[int, ...]:
    """Every end token, as an int or (for a list such as ``[1, 107]``) a tuple; never just the first."""
    for source in (text, top):
        value = source.get("eos_token_id")
        if isinstance(value, (list, tuple)) and value:
            return int(value[0]) if len(value) == 1 else tuple(int(v) for v in value)
        if value is not None and not isinstance(value, (list, tuple)):
            return int(value)
    return 1


#: Component keys whose modules compute exactly what transformers' PaliGemma does (for attention: either
#: kernel, the same math).
_HF_COMPONENTS = {
    "vision.kind": {"siglip"}, "vision.attention": {"sdpa", "eager"}, "vision.norm": {"layer_norm"},
    "vision.mlp": {"gelu", "gelu_exact"}, "decoder.block": {"gemma", "gemma2"},
    "decoder.attention": {"sdpa", "eager"}, "decoder.norm": {"rms_norm"}, "decoder.mlp": {"gated_gelu"},
}  # fmt: skip


def hf_differences(config: PaliGemmaConfig) -> list[str]:
    """Why transformers' PaliGemma could not build this exact model (empty when it can)."""
    reasons = []
    for field, keys in _HF_COMPONENTS.items():
        section, key = field.split(".")
        value = getattr(getattr(config, section), key)
        if value not in keys:
            reasons.append(f"{field}={value!r} (Hugging Face PaliGemma has only {sorted(keys)})")
    if not config.projector.bias:
        reasons.append("projector.bias=False (the Hugging Face projector always has a bias)")
    decoder = config.decoder
    if decoder.block == "gemma":
        if decoder.sliding_window or decoder.attn_logit_softcap or decoder.final_logit_softcap:
            reasons.append("a Gemma 1 decoder (block='gemma') with a sliding window or soft-caps")
        if decoder.query_pre_attn_scalar not in (None, decoder.head_dim):
            reasons.append("a Gemma 1 decoder (block='gemma') with query_pre_attn_scalar other than head_dim")
    return reasons


def config_to_hf(config: PaliGemmaConfig, dtype: str = "float32") -> dict[str, Any]:
    """The ``config.json`` dict transformers' PaliGemmaForConditionalGeneration loads.

    Raises `ConfigConversionError` for a model transformers cannot build exactly (see `hf_differences`);
    `save_pretrained` writes such models with ``model_type: "vlmzoo"`` instead.
    """
    differences = hf_differences(config)
    if differences:
        raise ConfigConversionError(
            "this model has no faithful Hugging Face PaliGemma form: "
            + "; ".join(differences)
            + ". save_pretrained keeps it whole in vlmzoo's own config.json format (model_type 'vlmzoo')."
        )
    vision, decoder = config.vision, config.decoder
    text: dict[str, Any] = {
        "model_type": decoder.block,
        "vocab_size": decoder.vocab_size,
        "hidden_size": decoder.hidden_size,
        "intermediate_size": decoder.intermediate_size,
        "num_hidden_layers": decoder.num_layers,
        "num_attention_heads": decoder.num_heads,
        "num_key_value_heads": decoder.num_kv_heads,
        "head_dim": decoder.head_dim,
        "max_position_embeddings": decoder.max_position_embeddings,
        "rms_norm_eps": decoder.rms_norm_eps,
        "rope_theta": decoder.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": decoder.rope_theta},
        "attention_bias": False,
        "tie_word_embeddings": decoder.tie_word_embeddings,
        "num_image_tokens": config.num_image_tokens,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": _eos_json(config),
        "dtype": dtype,
    }
    if decoder.block == "gemma2":
        text.update(
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=_int_if_whole(decoder.query_pre_attn_scalar or decoder.head_dim),
            attn_logit_softcapping=decoder.attn_logit_softcap,
            final_logit_softcapping=decoder.final_logit_softcap,
            sliding_window=decoder.sliding_window,
            layer_types=[
                "full_attention" if decoder.window_of(i) is None else "sliding_attention"
                for i in range(decoder.num_layers)
            ],
        )
    else:
        text["hidden_act"] = "gelu_pytorch_tanh"
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"],
        "model_type": "paligemma",
        "dtype": dtype,
        "image_token_index": config.image_token_id,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": _eos_json(config),
        "hidden_size": decoder.hidden_size,
        "projection_dim": decoder.hidden_size,
        "tie_word_embeddings": decoder.tie_word_embeddings,
        "text_config": text,
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_layers,
            "num_attention_heads": vision.num_heads,
            "num_channels": vision.num_channels,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "layer_norm_eps": vision.layer_norm_eps,
            "hidden_act": "gelu" if vision.mlp == "gelu_exact" else "gelu_pytorch_tanh",
            "projection_dim": decoder.hidden_size,
            "num_image_tokens": config.num_image_tokens,
            "vision_use_head": False,
        },
    }


def _eos_json(config: PaliGemmaConfig) -> int | list[int]:
    ids = config.eos_token_ids
    return ids[0] if len(ids) == 1 else list(ids)


def _int_if_whole(value: float) -> int | float:
    """transformers' strict config fields want ints where the value is whole (e.g. 256, not 256.0)."""
    return int(value) if float(value).is_integer() else value
