"""Registries on their own: keys, owners, duplicates, suggestions, and the staged view plugins get."""

from __future__ import annotations

import importlib.metadata

import pytest

import vlmzoo
from vlmzoo.registry import (
    KINDS,
    DuplicateKeyError,
    OwnedRegistries,
    Registries,
    Registry,
    RegistryError,
    UnknownKeyError,
    close_matches,
)


class A:
    pass


class B:
    pass


def test_register_get_owner_and_sorted_keys():
    registry = Registry("attention")
    assert registry.register("sdpa", A, owner="alice") is A
    registry.register("eager", B, owner="bob")
    assert registry.get("sdpa") is A and registry.get("eager") is B
    assert registry.owner("sdpa") == "alice" and registry.owner("eager") == "bob"
    assert registry.keys() == ["eager", "sdpa"] and list(registry) == ["eager", "sdpa"]
    assert [(e.key, e.value, e.owner) for e in registry.entries()] == [("eager", B, "bob"), ("sdpa", A, "alice")]
    assert "sdpa" in registry and "flash" not in registry and len(registry) == 2
    assert Registry("norm").register("x", A).__name__ == "A"
    assert Registry("norm")._entries == {}  # registries do not share entries
    registry.unregister("sdpa")
    assert "sdpa" not in registry and len(registry) == 1


def test_duplicate_key_names_both_owners():
    registry = Registry("norm")
    registry.register("rms_norm", A, owner="vlmzoo")
    with pytest.raises(DuplicateKeyError) as info:
        registry.register("rms_norm", B, owner="my-plugin")
    message = str(info.value)
    assert "'rms_norm'" in message and "norm" in message
    assert "'vlmzoo'" in message and "'my-plugin'" in message
    assert isinstance(info.value, RegistryError)
    assert registry.get("rms_norm") is A and registry.owner("rms_norm") == "vlmzoo"  # the first one is kept


@pytest.mark.parametrize("key", ["", None, 3])
def test_keys_must_be_non_empty_strings(key):
    with pytest.raises(ValueError, match="non-empty strings"):
        Registry("mlp").register(key, A)


def test_unknown_key_suggests_close_ones():
    registry = Registry("attention")
    for key in ("sdpa", "eager", "flash_attention"):
        registry.register(key, A)
    with pytest.raises(UnknownKeyError) as info:
        registry.get("sdpx")
    message = str(info.value)
    assert message.startswith("unknown attention 'sdpx'")  # not wrapped in quotes like a plain KeyError
    assert "did you mean 'sdpa'" in message
    assert "eager, flash_attention, sdpa" in message  # and everything that is registered
    assert isinstance(info.value, KeyError) and isinstance(info.value, LookupError)
    with pytest.raises(UnknownKeyError, match="did you mean 'flash_attention'"):
        registry.get("flash")
    with pytest.raises(UnknownKeyError) as info:
        registry.get("zzzzzzzz")
    assert "did you mean" not in str(info.value)
    with pytest.raises(UnknownKeyError, match="unknown attention 'x'"):
        registry.owner("x")


def test_close_matches():
    names = ["paligemma2-3b-224", "paligemma2-3b-448", "paligemma-3b-224", "paligemma2-10b-224"]
    assert close_matches("paligemma2-3b-225", names)[0] == "paligemma2-3b-224"
    assert "paligemma2-3b-224" in close_matches("paligemma2-3b", names)
    assert close_matches("xyz", names) == []
    assert len(close_matches("paligemma", names * 3, n=2)) <= 2


def test_registries_have_one_registry_per_kind():
    registries = Registries()
    expected = ("attention", "norm", "mlp", "decoder_block", "vision_encoder", "sampler", "postprocessor", "variant")
    assert set(expected) <= set(KINDS) and registries.kinds() == KINDS
    for kind in expected:
        assert registries[kind] is getattr(registries, kind)
        assert registries[kind].kind == kind and len(registries[kind]) == 0
    registries.norm.register("x", A)
    assert "x" not in registries.mlp
    with pytest.raises(AttributeError, match="no registry 'norms'.*attention, norm"):
        registries.norms  # noqa: B018


def test_owned_registries_stage_until_commit_and_credit_the_owner():
    target = Registries()
    view = OwnedRegistries(target, owner="my-dist")
    view.attention.register("k1", A)

    @view.norm("n1")
    class N:
        pass

    assert N.__name__ == "N"  # the decorator form returns the class
    assert "k1" not in target.attention and "n1" not in target.norm  # nothing is visible before commit
    assert view.attention.get("k1") is A  # but the plugin itself can look its entries up
    assert view.commit() == {"attention": ["k1"], "norm": ["n1"]}
    assert target.attention.owner("k1") == "my-dist" and target.norm.get("n1") is N


def test_owned_registries_see_earlier_entries():
    target = Registries()
    target.attention.register("sdpa", A, owner="vlmzoo")
    view = OwnedRegistries(target, owner="plugin")
    assert view.attention.get("sdpa") is A
    with pytest.raises(UnknownKeyError, match="did you mean 'sdpa'"):
        view.attention.get("sdpb")
    with pytest.raises(AttributeError, match="no registry 'atention'"):
        view.atention  # noqa: B018


def test_commit_with_a_duplicate_rolls_back_everything_it_added():
    target = Registries()
    target.norm.register("rms_norm", A, owner="vlmzoo")
    view = OwnedRegistries(target, owner="bad-plugin")
    view.attention.register("mine", B)
    view.variant.register("my-variant", B)
    view.norm.register("rms_norm", B)
    with pytest.raises(DuplicateKeyError, match="'vlmzoo' and by 'bad-plugin'"):
        view.commit()
    assert "mine" not in target.attention and "my-variant" not in target.variant
    assert target.norm.get("rms_norm") is A and target.norm.owner("rms_norm") == "vlmzoo"


def test_commit_with_a_duplicate_inside_one_plugin_rolls_back():
    target = Registries()
    view = OwnedRegistries(target, owner="p")
    view.mlp.register("m", A)
    view.mlp.register("m", B)
    with pytest.raises(DuplicateKeyError, match="'p' and by 'p'"):
        view.commit()
    assert len(target.mlp) == 0


def test_commit_with_an_invalid_key_rolls_back():
    target = Registries()
    view = OwnedRegistries(target, owner="p")
    view.sampler.register("fine", A)
    view.sampler.register("", B)
    with pytest.raises(ValueError, match="non-empty"):
        view.commit()
    assert "fine" not in target.sampler


def test_live_registries_are_filled_by_the_builtins():
    registries = vlmzoo.get_registries()
    assert {"sdpa", "eager"} <= set(registries.attention.keys())
    assert {"layer_norm", "rms_norm"} <= set(registries.norm.keys())
    assert {"gelu", "gated_gelu"} <= set(registries.mlp.keys())
    assert {"gemma", "gemma2"} <= set(registries.decoder_block.keys())
    assert "siglip" in registries.vision_encoder
    installed = {ep.dist.name for ep in importlib.metadata.entry_points(group="vlmzoo") if ep.dist is not None}
    for kind in ("attention", "norm", "mlp", "decoder_block", "vision_encoder", "variant"):
        owners = {e.owner for e in registries[kind].entries()}
        assert "vlmzoo" in owners and owners - {"vlmzoo"} <= installed, kind


def test_a_misspelled_component_key_in_a_config_suggests_the_right_one():
    config = vlmzoo.get_config("paligemma-tiny")
    with pytest.raises(UnknownKeyError, match="unknown attention 'sdpx'; did you mean 'sdpa'"):
        vlmzoo.build(config, device="meta", decoder__attention="sdpx")
    with pytest.raises(UnknownKeyError, match="unknown norm 'rms_nrom'; did you mean 'rms_norm'"):
        vlmzoo.build(config, device="meta", decoder__norm="rms_nrom")
    with pytest.raises(UnknownKeyError, match="unknown decoder_block 'gemma3'; did you mean"):
        vlmzoo.build(config, device="meta", decoder__block="gemma3")
