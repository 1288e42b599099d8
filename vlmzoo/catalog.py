"""A summary of every variant in the zoo: the rows of ``vlmzoo list`` and of the docs' model table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vlmzoo.zoo import build, get_variant, list_models


@dataclass(frozen=True)
class ModelSummary:
    """One variant at a glance: what ``vlmzoo list`` prints."""

    name: str
    aliases: tuple[str, ...]
    family: str
    parameters: int
    image_tokens: int
    resolution: int
    description: str

    def to_dict(self) -> dict:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        return data


def describe_models(pattern: str | None = None) -> list[ModelSummary]:
    """Summaries of the variants whose names match ``pattern`` (a shell wildcard), sorted by name.

    Parameter counts come from building each model on the meta device, so they are exact and cost no
    memory.
    """
    rows = []
    for name in list_models(pattern):
        variant = get_variant(name)
        config = variant.config
        rows.append(
            ModelSummary(
                name=name,
                aliases=tuple(variant.aliases),
                family=config.family,
                parameters=build(config, device="meta").num_parameters(),
                image_tokens=config.num_image_tokens,
                resolution=config.vision.image_size,
                description=variant.description,
            )
        )
    return rows
