"""Saving keeps the whole model: what transformers can build is written for it, anything else is written so
that only vlmzoo loads it (never as a different model), and vlmzoo's own config survives both ways."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from hf_checkpoints import load_hf_model, make_hf_model, make_inputs, max_abs_diff, perturb_, save_hf_checkpoint

import vlmzoo
from vlmzoo.checkpoints import ConfigConversionError, config_from_json, config_to_hf, config_to_json, hf_differences
from vlmzoo.components import GemmaRMSNorm

#: The PaliGemma variants (the SigLIP family has its own config conversion, tested in test_siglip).
PALIGEMMA_MODELS = [
    name for name in vlmzoo.list_models() if isinstance(vlmzoo.get_config(name), vlmzoo.PaliGemmaConfig)
]


class ShiftedRMSNorm(torch.nn.Module):
    """Gemma's RMSNorm plus a learned shift: a plugin norm with a parameter transformers has no place for."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = GemmaRMSNorm(dim, eps)
        self.shift = torch.nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.shift.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.shift.to(x.dtype)


class ScaledRMSNorm(GemmaRMSNorm):
    """Same parameters as Gemma's RMSNorm, other math: would load into transformers and compute another model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 1.5


@pytest.fixture
def plugin_norms():
    class Plugin:
        @vlmzoo.hookimpl
        def register_components(self, registry):
            registry.norm.register("test_shifted_rms", ShiftedRMSNorm)
            registry.norm.register("test_scaled_rms", ScaledRMSNorm)

    with vlmzoo.plugins.plugin_registered(Plugin(), "test-lossless-norms"):
        yield


def save_and_reload(model, directory):
    model.save_pretrained(directory)
    data = json.loads((directory / "config.json").read_text())
    again = vlmzoo.from_pretrained(directory, progress=False)
    assert again.config == model.config.model_copy(update={"name": str(directory)})
    expected = model.state_dict()
    assert again.state_dict().keys() == expected.keys()
    for key, tensor in again.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    inputs = make_inputs(model.config, 2, seed=3)
    with torch.no_grad():
        assert max_abs_diff(again(**inputs).logits, model(**inputs).logits, inputs["attention_mask"]) == 0
    return data


def assert_transformers_refuses(directory):
    """Even the PaliGemma class itself, which loads other model types with a mere warning."""
    for loader in (transformers.PaliGemmaForConditionalGeneration, transformers.AutoModelForImageTextToText):
        with pytest.raises(ValueError, match="vlmzoo"):
            loader.from_pretrained(str(directory))


@pytest.mark.parametrize(
    "overrides",
    [
        {"decoder": {"norm": "test_shifted_rms"}},
        {"decoder": {"norm": "test_scaled_rms"}},
        {"vision": {"attention": "eager", "norm": "test_scaled_rms"}},
        {"projector": {"bias": False}},
    ],
    ids=["new-parameter", "same-parameters-other-math", "vision-norm", "projector-without-bias"],
)
def test_models_transformers_cannot_build_round_trip_as_vlmzoo_only(plugin_norms, tmp_path, overrides):
    model = perturb_(vlmzoo.build("paligemma2-tiny", seed=0, **overrides), seed=1)
    assert hf_differences(model.config)
    data = save_and_reload(model, tmp_path)
    assert data["model_type"] == data["text_config"]["model_type"] == "vlmzoo"
    assert_transformers_refuses(tmp_path)
    with pytest.raises(ConfigConversionError, match="no faithful Hugging Face"):
        config_to_hf(model.config)


def test_plugin_components_must_be_installed_to_load(plugin_norms, tmp_path):
    vlmzoo.build("paligemma-tiny", seed=0, decoder__norm="test_shifted_rms").save_pretrained(tmp_path)
    vlmzoo.plugins.unregister_plugin("test-lossless-norms")
    try:
        with pytest.raises(vlmzoo.registry.UnknownKeyError, match="test_shifted_rms"):
            vlmzoo.from_pretrained(tmp_path, progress=False)
    finally:
        vlmzoo.plugins.register_plugin(object(), "test-lossless-norms")  # for the fixture to remove


def test_a_faithful_model_keeps_its_kernel_choice(tmp_path):
    """Either attention kernel is the same math, so transformers loads it; the choice comes back in vlmzoo."""
    model = perturb_(vlmzoo.build("paligemma-tiny", seed=0, decoder__attention="eager"), seed=2)
    assert hf_differences(model.config) == []
    data = save_and_reload(model, tmp_path)
    assert data["model_type"] == "paligemma" and data["vlmzoo"]["decoder"]["attention"] == "eager"
    inputs = make_inputs(model.config, 2, seed=4)
    with torch.no_grad():
        diff = max_abs_diff(load_hf_model(tmp_path)(**inputs).logits, model(**inputs).logits, inputs["attention_mask"])
    assert diff < 1e-4


def test_hugging_face_fields_edited_after_saving_are_an_error(tmp_path):
    data = config_to_json(vlmzoo.get_config("paligemma2-tiny"))
    assert config_from_json(data) == vlmzoo.get_config("paligemma2-tiny").model_copy(update={"name": None})
    data["text_config"]["intermediate_size"] = 96
    with pytest.raises(ConfigConversionError, match="describe different models") as caught:
        config_from_json(data)
    assert caught.value.field == "vlmzoo"
    del data["vlmzoo"]
    assert config_from_json(data).decoder.intermediate_size == 96
    with pytest.raises(ConfigConversionError, match="vlmzoo.decoder.num_heads"):
        config_from_json({"model_type": "vlmzoo", "vlmzoo": {"decoder": {"num_heads": "four"}}})
    with pytest.raises(ConfigConversionError, match='no "vlmzoo" section'):
        config_from_json({"model_type": "vlmzoo"})


@pytest.mark.parametrize("name", PALIGEMMA_MODELS)
def test_every_variant_round_trips_through_config_json(name):
    config = vlmzoo.get_config(name)
    assert config_from_json(config_to_json(config), name=config.name) == config


def test_siglip_exact_gelu_matches_transformers(tmp_path):
    """SigLIP's ``hidden_act: "gelu"`` is the exact GELU in transformers, not the tanh approximation."""
    # Weights large enough that the two GELUs differ by 2e-3 in the logits; at std 0.5 the decoder's
    # activations reach hundreds and float32 rounding alone moved logits by 5e-4 on some CPUs.
    hf = make_hf_model("gemma", vision_act="gelu", seed=13, std=0.2)
    path = save_hf_checkpoint(hf, tmp_path / "ckpt")
    model = vlmzoo.from_pretrained(path, progress=False)
    assert model.config.vision.mlp == "gelu_exact" and hf_differences(model.config) == []
    inputs = make_inputs(model.config, 3, seed=1)
    with torch.no_grad():
        ours = model(**inputs).logits
        assert max_abs_diff(ours, load_hf_model(path)(**inputs).logits, inputs["attention_mask"]) < 1e-4
        tanh = vlmzoo.build(model.config.with_overrides({"vision": {"mlp": "gelu"}}), device="meta")
        tanh.load_state_dict(model.state_dict(), assign=True)
        assert max_abs_diff(tanh.eval()(**inputs).logits, ours, inputs["attention_mask"]) > 1e-4  # it matters
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["vision_config"]["hidden_act"] == "gelu"
