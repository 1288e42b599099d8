"""Typed, frozen, validated configs for every part of a PaliGemma model, and the base every family's configs share.

Configs hold only plain data, so they round-trip through JSON, and name their components by
registry key so that a plugin can swap an attention kernel or a norm without touching model code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LayerType = Literal["full_attention", "sliding_attention"]


class FrozenConfig(BaseModel):
    """The base of every config: frozen, validated, no unknown fields, JSON round-trip.

    A plugin's model family builds its configs on it, so ``vlmzoo.build(name, **overrides)`` works the
    same for every family.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    def replace(self, **changes: Any) -> FrozenConfig:
        """A validated copy with ``changes`` applied (nested dicts merge into nested configs)."""
        return type(self).model_validate(_deep_merge(self.model_dump(), changes))

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str) -> FrozenConfig:
        return cls.model_validate_json(text)

    def with_overrides(self, overrides: dict[str, Any]) -> FrozenConfig:
        """Apply ``build(**overrides)``: nested dicts, or ``section__field`` keys such as ``decoder__num_layers``."""
        nested: dict[str, Any] = {}
        for key, value in overrides.items():
            *parents, leaf = key.split("__")
            change: dict[str, Any] = {leaf: value}
            for parent in reversed(parents):
                change = {parent: change}
            nested = _deep_merge(nested, change)  # merges, never mutates the caller's dicts
        _check_override_names(type(self), nested, "")
        return self.replace(**nested)


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_divides(field: str, value: int, by_field: str, by: int) -> None:
    if value % by:
        raise ValueError(f"{field}={value} must be divisible by {by_field}={by}")


class VisionConfig(FrozenConfig):
    """The SigLIP image encoder: a ViT without a class token or a pooling head."""

    kind: str = Field("siglip", description="registry key in the `vision_encoder` registry")
    attention: str = Field("sdpa", description="registry key in the `attention` registry")
    norm: str = Field("layer_norm", description="registry key in the `norm` registry")
    mlp: str = Field("gelu", description="registry key in the `mlp` registry")
    image_size: int = Field(224, gt=0)
    patch_size: int = Field(14, gt=0)
    num_channels: int = Field(3, gt=0)
    hidden_size: int = Field(1152, gt=0)
    intermediate_size: int = Field(4304, gt=0)
    num_layers: int = Field(27, ge=0)
    num_heads: int = Field(16, gt=0)
    layer_norm_eps: float = Field(1e-6, gt=0)

    @model_validator(mode="after")
    def _check_shapes(self) -> VisionConfig:
        # A remainder is dropped by the patch convolution, as in the checkpoints: So400m/14 at 384 px sees
        # 27 x 27 patches.
        if self.image_size < self.patch_size:
            raise ValueError(
                f"vision.image_size={self.image_size} must be at least vision.patch_size={self.patch_size}"
            )
        _check_divides("vision.hidden_size", self.hidden_size, "vision.num_heads", self.num_heads)
        return self

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class ProjectorConfig(FrozenConfig):
    """The linear map from vision features to the decoder's embedding space."""

    input_size: int = Field(1152, gt=0)
    output_size: int = Field(2048, gt=0)
    bias: bool = True


class DecoderConfig(FrozenConfig):
    """A Gemma-style decoder; the block kind decides Gemma 1 or Gemma 2 behaviour."""

    block: str = Field("gemma", description="registry key in the `decoder_block` registry")
    attention: str = Field("sdpa", description="registry key in the `attention` registry")
    norm: str = Field("rms_norm", description="registry key in the `norm` registry")
    mlp: str = Field("gated_gelu", description="registry key in the `mlp` registry")
    vocab_size: int = Field(257216, gt=0)
    hidden_size: int = Field(2048, gt=0)
    intermediate_size: int = Field(16384, gt=0)
    num_layers: int = Field(18, ge=0)
    num_heads: int = Field(8, gt=0)
    num_kv_heads: int = Field(1, gt=0)
    head_dim: int = Field(256, gt=0)
    query_pre_attn_scalar: float | None = Field(
        None, gt=0, description="attention scores are scaled by this^-0.5; None means head_dim"
    )
    attn_logit_softcap: float | None = Field(None, gt=0)
    final_logit_softcap: float | None = Field(None, gt=0)
    sliding_window: int | None = Field(None, description="keys a sliding layer's query sees, itself included")
    layer_types: tuple[LayerType, ...] | None = Field(
        None, description="per layer; None means every even layer slides when sliding_window is set"
    )
    rope_theta: float = Field(10000.0, gt=0)
    rms_norm_eps: float = Field(1e-6, gt=0)
    max_position_embeddings: int = Field(8192, gt=0)
    tie_word_embeddings: bool = True

    @model_validator(mode="after")
    def _check_shapes(self) -> DecoderConfig:
        _check_divides("decoder.num_heads", self.num_heads, "decoder.num_kv_heads", self.num_kv_heads)
        if self.head_dim % 2:
            raise ValueError(f"decoder.head_dim={self.head_dim} must be even for rotary embeddings")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"decoder.sliding_window={self.sliding_window} must be positive or None")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers:
                raise ValueError(
                    f"decoder.layer_types has {len(self.layer_types)} entries but decoder.num_layers="
                    f"{self.num_layers}; give one entry per layer"
                )
            if "sliding_attention" in self.layer_types and self.sliding_window is None:
                raise ValueError("decoder.layer_types names sliding layers but decoder.sliding_window is None")
        return self

    @property
    def scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def window_of(self, layer: int) -> int | None:
        """The sliding window of ``layer``, or None where it attends to every earlier key."""
        if self.sliding_window is None:
            return None
        if self.layer_types is None:
            return self.sliding_window if layer % 2 == 0 else None
        return self.sliding_window if self.layer_types[layer] == "sliding_attention" else None


class PaliGemmaConfig(FrozenConfig):
    """A whole model: vision encoder, projector and decoder, plus the token ids the assembly needs."""

    name: str | None = None
    vision: VisionConfig = VisionConfig()
    projector: ProjectorConfig = ProjectorConfig()
    decoder: DecoderConfig = DecoderConfig()
    image_token_id: int = Field(257152, ge=0)
    pad_token_id: int = Field(0, ge=0)
    bos_token_id: int = Field(2, ge=0)
    eos_token_id: int | tuple[int, ...] = Field(
        1, description="the token that ends a generated row, or several (e.g. (1, 107): <eos> and <end_of_turn>)"
    )

    @model_validator(mode="after")
    def _check_links(self) -> PaliGemmaConfig:
        if self.projector.input_size != self.vision.hidden_size:
            raise ValueError(
                f"projector.input_size={self.projector.input_size} must equal "
                f"vision.hidden_size={self.vision.hidden_size}"
            )
        if self.projector.output_size != self.decoder.hidden_size:
            raise ValueError(
                f"projector.output_size={self.projector.output_size} must equal "
                f"decoder.hidden_size={self.decoder.hidden_size}"
            )
        ids = {field: (getattr(self, field),) for field in ("image_token_id", "pad_token_id", "bos_token_id")}
        ids["eos_token_id"] = self.eos_token_ids
        if not self.eos_token_ids:
            raise ValueError("eos_token_id must name at least one token")
        for field, values in ids.items():
            for value in values:
                if not 0 <= value < self.decoder.vocab_size:
                    raise ValueError(
                        f"{field}={getattr(self, field)} is outside the vocabulary "
                        f"(decoder.vocab_size={self.decoder.vocab_size})"
                    )
        return self

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Every token that ends a generated row (``eos_token_id`` as a tuple)."""
        eos = self.eos_token_id
        return (eos,) if isinstance(eos, int) else tuple(eos)

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    @property
    def family(self) -> str:
        return "paligemma2" if self.decoder.block == "gemma2" else "paligemma"

    @classmethod
    def from_json(cls, text: str) -> PaliGemmaConfig:
        return cls.model_validate_json(text)

    def with_overrides(self, overrides: dict[str, Any]) -> PaliGemmaConfig:
        """Apply ``build(**overrides)``: nested dicts, or ``section__field`` keys such as ``decoder__num_layers``."""
        return super().with_overrides(overrides)  # type: ignore[return-value]


def _check_override_names(model: type[BaseModel], changes: dict[str, Any], section: str) -> None:
    """Raise TypeError, as for an unexpected keyword, on a name that is no field (at any depth)."""
    fields = model.model_fields
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        where = f" of {section.rstrip('_')}" if section else ""
        raise TypeError(
            f"unknown override(s) {[section + name for name in unknown]}; use one of {sorted(fields)}{where}, "
            "e.g. decoder={'num_layers': 2} or decoder__num_layers=2"
        )
    for name, value in changes.items():
        annotation = fields[name].annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _check_override_names(annotation, value, f"{section}{name}__")
