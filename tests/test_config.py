"""Configs: frozen, JSON round-trip, validation that names the field and the reason, overrides."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config
from pydantic import ValidationError

import vlmzoo
from vlmzoo import DecoderConfig, PaliGemmaConfig, ProjectorConfig, VisionConfig

# ---------------------------------------------------------------------------------------------- frozen


def test_configs_are_frozen():
    config = vlmzoo.get_config("paligemma2-3b-224")
    with pytest.raises(ValidationError, match="frozen"):
        config.image_token_id = 5
    with pytest.raises(ValidationError, match="frozen"):
        config.decoder.num_layers = 2
    with pytest.raises(ValidationError, match="frozen"):
        config.vision.image_size = 448
    with pytest.raises(ValidationError, match="frozen"):
        config.projector.bias = False
    assert config.decoder.num_layers == 26 and config.vision.image_size == 224


def test_registry_configs_are_not_shared_mutable_state():
    """Overriding a variant gives a new config; the registered one is untouched."""
    before = vlmzoo.get_config("paligemma-3b-224")
    changed = before.with_overrides({"decoder__num_layers": 1})
    assert changed.decoder.num_layers == 1
    assert vlmzoo.get_config("paligemma-3b-224").decoder.num_layers == 18
    assert vlmzoo.get_config("paligemma-3b-224") == before


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError, match="num_layerz"):
        DecoderConfig(num_layerz=3)
    with pytest.raises(ValidationError, match="colour"):
        VisionConfig(colour="red")


def test_configs_compare_and_hash_by_value():
    a = tiny_config(num_layers=2, sliding_window=4, layer_types=("sliding_attention", "full_attention"))
    b = tiny_config(num_layers=2, sliding_window=4, layer_types=("sliding_attention", "full_attention"))
    assert a == b and hash(a) == hash(b)
    assert a != tiny_config(num_layers=2, sliding_window=5, layer_types=("sliding_attention", "full_attention"))


# ----------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("name", vlmzoo.list_models())
def test_json_round_trip_of_every_variant(name):
    config = vlmzoo.get_config(name)
    text = config.to_json()
    assert json.loads(text)["name"] == name
    again = type(config).from_json(text)
    assert again == config
    assert again.to_json() == text
    assert type(config).from_json(config.to_json(indent=None)) == config


def test_json_round_trip_keeps_optional_and_tuple_fields():
    config = tiny_config(
        block="gemma2",
        num_layers=3,
        sliding_window=3,
        layer_types=("full_attention", "sliding_attention", "sliding_attention"),
        attn_logit_softcap=50.0,
        final_logit_softcap=30.0,
        query_pre_attn_scalar=12.5,
        tie_word_embeddings=False,
    )
    again = PaliGemmaConfig.from_json(config.to_json())
    assert again == config
    assert again.decoder.layer_types == ("full_attention", "sliding_attention", "sliding_attention")
    assert [again.decoder.window_of(i) for i in range(3)] == [None, 3, 3]
    assert again.decoder.scale == pytest.approx(12.5**-0.5)


def test_from_json_validates():
    data = json.loads(tiny_config().to_json())
    data["decoder"]["num_kv_heads"] = 3
    with pytest.raises(ValidationError, match=r"decoder\.num_heads=4 must be divisible by decoder\.num_kv_heads=3"):
        PaliGemmaConfig.from_json(json.dumps(data))


# ---------------------------------------------------------------------------------------------- validation


def test_vision_heads_must_divide_hidden_size():
    with pytest.raises(ValidationError, match=r"vision\.hidden_size=30 must be divisible by vision\.num_heads=4"):
        VisionConfig(hidden_size=30, num_heads=4)


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValidationError, match=r"decoder\.num_heads=8 must be divisible by decoder\.num_kv_heads=3"):
        DecoderConfig(num_heads=8, num_kv_heads=3)
    # a kv-heads count larger than the heads count does not divide it either
    with pytest.raises(ValidationError, match=r"decoder\.num_heads=2 must be divisible by decoder\.num_kv_heads=4"):
        DecoderConfig(num_heads=2, num_kv_heads=4)
    for kv in (1, 2, 4, 8):  # MQA, GQA, MHA
        assert DecoderConfig(num_heads=8, num_kv_heads=kv).num_kv_heads == kv


@pytest.mark.parametrize("window", [0, -1, -4096])
def test_sliding_window_must_be_positive(window):
    with pytest.raises(ValidationError, match=rf"decoder\.sliding_window={window} must be positive"):
        DecoderConfig(sliding_window=window)


def test_image_size_must_hold_a_patch_and_a_remainder_is_dropped():
    with pytest.raises(ValidationError, match=r"vision\.image_size=10 must be at least vision\.patch_size=14"):
        VisionConfig(image_size=10)
    assert VisionConfig(image_size=28, patch_size=14).num_patches == 4
    assert VisionConfig(image_size=384, patch_size=14).num_patches == 27 * 27  # SigLIP So400m/14 at 384


def test_projector_must_match_vision_and_decoder():
    with pytest.raises(ValidationError, match=r"projector\.input_size=1000 must equal vision\.hidden_size=1152"):
        PaliGemmaConfig(projector=ProjectorConfig(input_size=1000))
    with pytest.raises(ValidationError, match=r"projector\.output_size=2304 must equal decoder\.hidden_size=2048"):
        PaliGemmaConfig(projector=ProjectorConfig(output_size=2304))


@pytest.mark.parametrize("field", ["image_token_id", "pad_token_id", "bos_token_id", "eos_token_id"])
def test_token_ids_must_be_inside_the_vocabulary(field):
    base = tiny_config()
    vocab = base.decoder.vocab_size
    with pytest.raises(ValidationError, match=rf"{field}={vocab} is outside the vocabulary.*vocab_size={vocab}"):
        base.replace(**{field: vocab})
    assert getattr(base.replace(**{field: vocab - 1}), field) == vocab - 1
    with pytest.raises(ValidationError, match=field):
        base.replace(**{field: -1})


def test_shrinking_the_vocabulary_below_a_token_id_is_rejected():
    with pytest.raises(ValidationError, match=r"image_token_id=257152 is outside the vocabulary"):
        vlmzoo.get_config("paligemma-3b-224").with_overrides({"decoder__vocab_size": 1000})


def test_layer_types_must_have_one_entry_per_layer():
    with pytest.raises(ValidationError, match=r"decoder\.layer_types has 1 entries but decoder\.num_layers=2"):
        DecoderConfig(num_layers=2, layer_types=("full_attention",))
    with pytest.raises(ValidationError, match=r"decoder\.layer_types has 3 entries but decoder\.num_layers=2"):
        DecoderConfig(num_layers=2, layer_types=("full_attention",) * 3)
    with pytest.raises(ValidationError, match="layer_types"):
        DecoderConfig(num_layers=1, layer_types=("global",))


def test_sliding_layers_need_a_window():
    with pytest.raises(ValidationError, match="sliding layers but decoder.sliding_window is None"):
        DecoderConfig(num_layers=1, layer_types=("sliding_attention",))


def test_head_dim_must_be_even_for_rope():
    with pytest.raises(ValidationError, match=r"decoder\.head_dim=7 must be even"):
        DecoderConfig(head_dim=7)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("vision", "hidden_size", 0), ("vision", "patch_size", -14), ("decoder", "vocab_size", 0),
     ("decoder", "rms_norm_eps", 0.0), ("decoder", "attn_logit_softcap", -1.0)],
)  # fmt: skip
def test_positive_fields(section, field, value):
    with pytest.raises(ValidationError, match=field):
        vlmzoo.get_config("paligemma-tiny").with_overrides({f"{section}__{field}": value})


# ------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize(("size", "tokens"), [(224, 256), (448, 1024), (896, 4096)])
def test_image_tokens_per_resolution(size, tokens):
    assert vlmzoo.get_config(f"paligemma2-3b-{size}").num_image_tokens == tokens
    assert vlmzoo.get_config(f"paligemma-3b-{size}").num_image_tokens == tokens


def test_window_of_and_family():
    g2 = vlmzoo.get_config("paligemma2-3b-224")
    assert g2.family == "paligemma2"
    assert [g2.decoder.window_of(i) for i in range(4)] == [4096, None, 4096, None]
    assert g2.decoder.scale == pytest.approx(256**-0.5)
    assert vlmzoo.get_config("paligemma2-28b-224").decoder.scale == pytest.approx(144**-0.5)
    g1 = vlmzoo.get_config("paligemma-3b-224")
    assert g1.family == "paligemma"
    assert {g1.decoder.window_of(i) for i in range(18)} == {None}


# -------------------------------------------------------------------------------------------- overrides


def test_with_overrides_nested_dicts():
    base = vlmzoo.get_config("paligemma2-3b-224")
    changed = base.with_overrides({"decoder": {"num_layers": 2, "sliding_window": 16}, "vision": {"image_size": 448}})
    assert changed.decoder.num_layers == 2 and changed.decoder.sliding_window == 16
    assert changed.decoder.hidden_size == 2304  # untouched fields keep their values
    assert changed.vision.image_size == 448 and changed.num_image_tokens == 1024
    assert changed.vision.hidden_size == 1152
    assert base.decoder.num_layers == 26 and base.vision.image_size == 224


def test_with_overrides_double_underscore_keys():
    base = vlmzoo.get_config("paligemma2-3b-224")
    changed = base.with_overrides({"decoder__num_layers": 2, "vision__num_layers": 1, "eos_token_id": 7})
    assert (changed.decoder.num_layers, changed.vision.num_layers, changed.eos_token_id) == (2, 1, 7)
    assert changed == base.replace(decoder={"num_layers": 2}, vision={"num_layers": 1}, eos_token_id=7)


def test_with_overrides_mixes_both_forms_in_any_order_without_mutating_arguments():
    base = vlmzoo.get_config("paligemma-tiny")
    section = {"num_heads": 2}
    for overrides in ({"decoder": section, "decoder__num_layers": 1}, {"decoder__num_layers": 1, "decoder": section}):
        changed = base.with_overrides(overrides)
        assert (changed.decoder.num_heads, changed.decoder.num_layers) == (2, 1)
    assert section == {"num_heads": 2}


def test_with_overrides_accepts_a_config_object():
    base = vlmzoo.get_config("paligemma-tiny")
    decoder = base.decoder.replace(num_layers=1)
    changed = base.with_overrides({"decoder": decoder, "decoder__num_heads": 2})
    assert changed.decoder == decoder.replace(num_heads=2)


def test_with_overrides_validates_the_result():
    base = vlmzoo.get_config("paligemma-tiny")
    with pytest.raises(ValidationError, match=r"decoder\.num_heads=4 must be divisible by decoder\.num_kv_heads=3"):
        base.with_overrides({"decoder__num_kv_heads": 3})


def test_unknown_override_names_raise_type_error_naming_valid_ones():
    base = vlmzoo.get_config("paligemma-tiny")
    with pytest.raises(TypeError, match=r"unknown override\(s\) \['decoderr'\]") as info:
        base.with_overrides({"decoderr": {"num_layers": 2}})
    for valid in ("decoder", "vision", "projector", "image_token_id"):
        assert repr(valid) in str(info.value)
    with pytest.raises(TypeError, match=r"decoder__num_layer\b") as info:
        base.with_overrides({"decoder__num_layer": 2})
    assert "'num_layers'" in str(info.value) and "'num_kv_heads'" in str(info.value)
    with pytest.raises(TypeError, match="layerz") as info:
        base.with_overrides({"vision": {"layerz": 2}})
    assert "'num_layers'" in str(info.value) and "'patch_size'" in str(info.value)
