"""Which parts of a PaliGemma are quantized, and swapping them for their quantized modules.

Quantized: every `Linear` of the decoder blocks (the bulk of the weights a decode step reads) with the
chosen scheme, and the output head in int8 (with a tied head, the token embedding becomes one int8
table that serves both the lookup and the head). The head decides every token, and its per-row int8
keeps the logit error small where int4 would not; it is also the largest single matrix of a small
model. Kept in floating point: the vision tower and the projector (they run once per image, in the
prefill, where the products are compute-bound, and they are a small share of the weights), norms and
biases.
"""

from __future__ import annotations

from torch import nn

from vlmzoo.components.linear import Linear
from vlmzoo.components.quantized import QuantizationScheme, QuantizedEmbedding, QuantizedLinear
from vlmzoo.plugins import resolve_registries

HEAD_SCHEME = "int8"


def get_scheme(name: str, registries=None) -> QuantizationScheme:
    """The registered scheme called ``name`` (``"int8"``, ``"int4"`` or a plugin's)."""
    registries = resolve_registries(registries)
    if not isinstance(name, str):
        raise TypeError(f"quantize takes a scheme name such as 'int8' or 'int4', got {type(name).__name__}")
    return registries.quantization.get(name)


def check_device(name: str, scheme: QuantizationScheme, device_type: str) -> None:
    if "*" not in scheme.devices and device_type not in scheme.devices:
        where = ", ".join(scheme.devices) or "no device with this PyTorch build"
        raise ValueError(
            f"quantize={name!r} has a kernel on {where}, not on {device_type}; use quantize='int8', or run on {where}"
        )


def quantization_plan(model, name: str, registries=None) -> dict[str, str]:
    """``module path → scheme`` for every module `quantize_model` replaces in ``model``."""
    scheme = get_scheme(name, registries)
    decoder = model.language_model
    plan: dict[str, str] = {}
    for path, module in decoder.layers.named_modules(prefix="language_model.layers"):
        if isinstance(module, Linear):
            if scheme.accepts(module.out_features, module.in_features):
                plan[path] = name
            elif get_scheme(HEAD_SCHEME, registries).accepts(module.out_features, module.in_features):
                plan[path] = HEAD_SCHEME
    if decoder.lm_head is not None:
        plan["language_model.lm_head"] = HEAD_SCHEME
    else:
        plan["language_model.embed_tokens"] = HEAD_SCHEME
    return plan


def _swap(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path), child, module)


def quantize_model(model, name: str = "int8", registries=None):
    """Quantize ``model`` in place with the scheme ``name``, module by module (peak memory: one float
    weight more than the result). Returns the model."""
    if getattr(model, "quantization", None) is not None:
        raise ValueError(f"the model is already quantized ({model.quantization}); load the float checkpoint again")
    check_device(name, get_scheme(name, registries), model.device.type)
    for path, scheme_name in quantization_plan(model, name, registries).items():
        module = model.get_submodule(path)
        if isinstance(module, nn.Embedding):
            _swap(model, path, QuantizedEmbedding.from_float(module))
        else:
            _swap(model, path, QuantizedLinear.from_float(module, scheme_name, get_scheme(scheme_name, registries)))
        del module
    model.quantization = name
    return model


def prepare_for_loading(model, name: str, registries=None) -> dict[str, tuple[str, QuantizationScheme]]:
    """Swap the planned modules of a meta-device model for empty quantized ones.

    Returns ``float weight name → (module path, scheme)``, so a loader can quantize each weight as it
    is read and assign ``<path>.qweight`` and ``<path>.scales`` instead.
    """
    targets = {}
    for path, scheme_name in quantization_plan(model, name, registries).items():
        module = model.get_submodule(path)
        scheme = get_scheme(scheme_name, registries)
        if isinstance(module, nn.Embedding):
            new = QuantizedEmbedding(module.num_embeddings, module.embedding_dim, module.weight.dtype, device="meta")
        else:
            shapes = scheme.packed_shapes(module.out_features, module.in_features)
            new = QuantizedLinear(
                module.in_features,
                module.out_features,
                scheme_name,
                shapes,
                bias=module.bias is not None,
                device="meta",
                dtype=module.weight.dtype,
            )
        _swap(model, path, new)
        targets[f"{path}.weight"] = (path, scheme)
    model.quantization = name
    return targets


def float_state_dict(model) -> dict:
    """The state dict with every quantized weight dequantized to the model's dtype, under float names."""
    state = {}
    quantized = {
        path: module
        for path, module in model.named_modules()
        if isinstance(module, (QuantizedLinear, QuantizedEmbedding))
    }
    for name, tensor in model.state_dict().items():
        path, _, leaf = name.rpartition(".")
        module = quantized.get(path)
        if module is None:
            state[name] = tensor
        elif leaf == "qweight":
            if isinstance(module, QuantizedEmbedding):
                state[f"{path}.weight"] = module.dequantized()
            else:
                scheme = get_scheme(module.scheme)
                state[f"{path}.weight"] = scheme.dequantize(module.qweight, module.scales, model.dtype)
        elif leaf == "bias":
            state[name] = tensor
    return state
