"""What a run trains: every parameter, or a named part of the model with the rest frozen."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

#: Which parameter names each choice trains (LoRA is handled by `vlmzoo.training.lora`).
_SELECTORS: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "decoder": lambda name: name.startswith("language_model."),
    "attention": lambda name: name.startswith("language_model.") and ".self_attn." in name,
    "projector+decoder": lambda name: name.startswith(("language_model.", "multi_modal_projector.")),
}
PART_CHOICES = tuple(_SELECTORS)


def freeze_all_but(model: nn.Module, part: str) -> list[str]:
    """Set ``requires_grad`` so that only ``part`` trains; returns the trainable parameter names.

    ``"decoder"`` includes the token embeddings (the output head shares them); ``"attention"`` trains
    the decoder's query/key/value/output projections; ``"projector+decoder"`` freezes the vision tower.
    """
    if part not in _SELECTORS:
        raise ValueError(f"unknown part to train {part!r}; choose one of {', '.join(PART_CHOICES)} or 'lora'")
    selected = _SELECTORS[part]
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(selected(name))
        if param.requires_grad:
            names.append(name)
    if not names:
        raise ValueError(f"train={part!r} selects no parameters of this model; choose another part")
    return names
