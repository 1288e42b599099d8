"""The zoo: named variants from the registry, and one builder that turns a config into a model."""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from vlmzoo.components.norm import GemmaRMSNorm
from vlmzoo.config import PaliGemmaConfig
from vlmzoo.devices import resolve_device
from vlmzoo.dtypes import default_dtype, resolve_dtype
from vlmzoo.families import family_of_config
from vlmzoo.model.quantize import quantize_model
from vlmzoo.paligemma.model import PaliGemma
from vlmzoo.plugins import resolve_registries
from vlmzoo.registry import Registries, UnknownKeyError, close_matches
from vlmzoo.variants import Variant, aliases_of, variants_of


class UnknownModelError(UnknownKeyError):
    """A model name that no variant or alias matches."""


def list_models(pattern: str | None = None, *, registries: Registries | None = None) -> list[str]:
    """Canonical variant names, sorted.

    Args:
        pattern: keep only the names that match this shell wildcard (``"paligemma2-*"``).
        registries: the registries to read (default: those of the installed plugins).

    Returns:
        The names, aliases left out (`get_config` resolves those).
    """
    names = sorted(variants_of(resolve_registries(registries)))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_variant(name: str, *, registries: Registries | None = None) -> Variant:
    """The variant called ``name`` or one of its aliases."""
    variants = variants_of(resolve_registries(registries))
    canonical = aliases_of(variants).get(name, name)
    if canonical not in variants:
        known = sorted(variants) + sorted(aliases_of(variants))
        hint = close_matches(name, known)
        suggestion = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{suggestion} See vlmzoo.list_models() for every name, or load a "
            "checkpoint with vlmzoo.from_pretrained()."
        )
    return variants[canonical]


def get_config(name: str, *, registries: Registries | None = None) -> Any:
    """The frozen config of a named variant: a `PaliGemmaConfig`, or the config of the variant's model
    family (e.g. a `vlmzoo.siglip.SiglipConfig`).

    Args:
        name: a variant name or one of its aliases (``"paligemma2-224"``).
        registries: the registries to read (default: those of the installed plugins).

    Raises:
        UnknownModelError: no such variant; the message names the closest ones.
    """
    return get_variant(name, registries=registries).config


def build(
    model: str | Any,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    seed: int | None = None,
    quantize: str | None = None,
    init_std: float = 0.02,
    registries: Registries | None = None,
    **overrides: Any,
) -> Any:
    """Build a randomly initialised model from a variant name or a config (of any registered family).

    ``quantize="int8"`` or ``"int4"`` quantizes the weights after the random init (see
    `PaliGemma.quantize`); it needs a real device, not ``"meta"``.

    ``device="meta"`` allocates nothing, so any size builds instantly (for inspection, or to load
    weights into with ``load_state_dict(assign=True)``). ``overrides`` change the config first:
    ``build("paligemma2-224", decoder={"num_layers": 2})`` or ``decoder__num_layers=2``.
    ``init_std`` is the standard deviation of the normal weights (see `init_weights`): 0.02 suits
    large models; small models trained from scratch learn much faster from a larger one.

    Args:
        model: a variant name (or alias), a `PaliGemmaConfig`, or the config of another registered family.
        device: where the weights live: ``"cpu"`` (the default: a random model is for inspection and
            tests), ``"meta"`` (nothing allocated), ``"cuda"``, ``"auto"``...
        dtype: the weights' dtype (default float32), a `torch.dtype` or its name.
        seed: seeds the random initialisation, for the same weights every time.
        quantize: ``"int8"`` or ``"int4"`` quantizes the decoder's weights after the init.
        init_std: standard deviation of the normal initial weights.
        registries: the registries to build from (default: those of the installed plugins).
        **overrides: config changes, nested (``decoder={"num_layers": 2}``) or flat
            (``decoder__num_layers=2``).

    Returns:
        A `PaliGemma` model (or the family's model, e.g. `vlmzoo.siglip.SiglipModel`) in eval mode.
    """
    registries = resolve_registries(registries)
    family = None if isinstance(model, (str, PaliGemmaConfig)) else family_of_config(model, registries)
    if not isinstance(model, (str, PaliGemmaConfig)) and family is None:
        raise TypeError(
            f"build() takes a model name, a PaliGemmaConfig or the config of a registered model family, "
            f"got {type(model).__name__}"
        )
    if not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std}")
    device = resolve_device(device)
    config = get_config(model, registries=registries) if isinstance(model, str) else model
    if overrides:
        config = config.with_overrides(overrides)
    if not isinstance(config, PaliGemmaConfig):
        family = family_of_config(config, registries)
        if quantize is not None:
            raise ValueError(f"quantize= applies to PaliGemma decoders; the {family.name} family has none")
    with torch.device("meta"), default_dtype(resolve_dtype(dtype)):
        module = PaliGemma(config, registries) if family is None else family.model(config, registries)
    if device.type == "meta":
        if quantize is not None:
            raise ValueError("build(quantize=...) needs weights to quantize; give a device such as 'cpu', not 'meta'")
        return module
    module.to_empty(device=device)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    init_weights(module, std=init_std, generator=generator)
    if quantize is not None:
        quantize_model(module, quantize, registries)
    return module.eval()


@torch.no_grad()
def init_weights(module: nn.Module, std: float = 0.02, generator: torch.Generator | None = None) -> None:
    """Random init in the style of the reference: normal weights, zero biases, identity norms.

    Modules of other types (a plugin's components) are initialised by their ``reset_parameters()``.
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d, nn.Embedding)):
            sub.weight.normal_(0.0, std, generator=generator)
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()
        elif isinstance(sub, nn.LayerNorm):
            sub.weight.fill_(1.0)
            sub.bias.zero_()
        elif isinstance(sub, GemmaRMSNorm):
            sub.weight.zero_()
        elif callable(getattr(sub, "reset_parameters", None)):
            # A plugin's own component: after to_empty() its parameters hold garbage until reset.
            sub.reset_parameters()
