"""Plugins: built-ins through the hooks, plugins added at run time, broken plugins, entry points."""

from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings

import pytest
import torch
from conftest import make_plugin, tiny_config, tiny_inputs

import vlmzoo
import vlmzoo.plugins
from vlmzoo.components import EagerAttention, GemmaRMSNorm, SdpaAttention
from vlmzoo.plugins import PluginError, PluginWarning
from vlmzoo.registry import UnknownKeyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest depends on tomli before 3.11
    import tomli as tomllib

pytestmark = pytest.mark.usefixtures("single_thread")


def _plugin_info(name):
    matches = [p for p in vlmzoo.list_plugins() if p.name == name]
    assert len(matches) == 1, [p.name for p in vlmzoo.list_plugins()]
    return matches[0]


def _variant_plugin(name="my-test-variant", config=None, aliases=()):
    config = config or tiny_config()

    def register_variants(registry):
        registry.variant.register(name, vlmzoo.Variant(name, config.replace(name=name), aliases=aliases))

    return make_plugin(register_variants=register_variants)


# ------------------------------------------------------------------------------------------------ built-ins


def test_builtin_plugins_are_listed_with_their_distribution_and_registrations():
    infos = {p.name: p for p in vlmzoo.list_plugins()}
    assert {"vlmzoo.builtin.components", "vlmzoo.builtin.variants"} <= set(vlmzoo.plugins.BUILTIN_PLUGINS)
    for name in vlmzoo.plugins.BUILTIN_PLUGINS:
        assert infos[name].distribution == "vlmzoo"
        assert infos[name].version == importlib.metadata.version("vlmzoo")
        assert infos[name].error is None
    components = infos["vlmzoo.builtin.components"].registered
    assert set(components["attention"]) == {"sdpa", "eager"}
    assert set(components["norm"]) == {"layer_norm", "rms_norm"}
    assert set(components["mlp"]) == {"gelu", "gelu_exact", "gated_gelu"}
    assert set(components["decoder_block"]) == {"gemma", "gemma2"}
    assert components["vision_encoder"] == ["siglip"]
    registries = vlmzoo.get_registries()
    builtin_models = [name for name in vlmzoo.list_models() if registries.variant.owner(name) == "vlmzoo"]
    registered = (
        infos["vlmzoo.builtin.variants"].registered["variant"] + infos["vlmzoo.siglip.plugin"].registered["variant"]
    )
    assert sorted(registered) == builtin_models
    assert registries.attention.get("sdpa") is SdpaAttention and registries.attention.get("eager") is EagerAttention
    assert registries.norm.get("rms_norm") is GemmaRMSNorm
    assert registries.attention.owner("sdpa") == "vlmzoo"


def test_registries_are_built_once_and_cached():
    first = vlmzoo.get_registries()
    assert vlmzoo.get_registries() is first
    vlmzoo.plugins.reset()
    rebuilt = vlmzoo.get_registries()
    assert rebuilt is not first and rebuilt.attention.keys() == first.attention.keys()
    assert vlmzoo.plugins.load() is not rebuilt


def test_builtin_plugins_are_called_only_through_the_hooks():
    """The hook functions exist in the built-in modules and fill a fresh view like any plugin's."""
    from vlmzoo.builtin import components, variants
    from vlmzoo.registry import OwnedRegistries, Registries
    from vlmzoo.siglip import plugin as siglip

    target = Registries()
    view = OwnedRegistries(target, owner="copy")
    components.register_components(view)
    siglip.register_components(view)
    variants.register_variants(view)
    siglip.register_variants(view)
    view.commit()
    live = vlmzoo.get_registries()  # installed third-party plugins (the example plugin) may add more
    for kind in ("attention", "variant"):
        assert target[kind].keys() == [e.key for e in live[kind].entries() if e.owner == "vlmzoo"], kind


def test_hooks_are_called_through_pluggy():
    """A hook wrapper runs around the plugin's other implementations, as pluggy calls them (calling the
    functions directly would only create the wrapper's generator and register nothing)."""
    seen = []

    class Plugin:
        @vlmzoo.hookimpl(wrapper=True)
        def register_components(self, registry):
            registry.norm.register("wrapped_rms_norm", GemmaRMSNorm)
            result = yield
            seen.append("after")
            return result

        @vlmzoo.hookimpl
        def register_samplers(self):  # pluggy lets an implementation take fewer arguments than the spec
            seen.append("samplers")

    with vlmzoo.plugins.plugin_registered(Plugin(), "wrapper-plugin"):
        assert vlmzoo.get_registries().norm.get("wrapped_rms_norm") is GemmaRMSNorm
        assert seen == ["after", "samplers"]
        assert _plugin_info("wrapper-plugin").registered == {"norm": ["wrapped_rms_norm"]}


# ------------------------------------------------------------------------------------------- run-time plugins


def test_plugin_registered_adds_a_variant_for_the_block_only():
    plugin = _variant_plugin(aliases=("my-alias",))
    assert "my-test-variant" not in vlmzoo.list_models()
    with vlmzoo.plugins.plugin_registered(plugin, "test-variants") as name:
        assert name == "test-variants"
        assert "my-test-variant" in vlmzoo.list_models()
        assert vlmzoo.list_models() == sorted(vlmzoo.list_models())
        assert vlmzoo.get_config("my-alias").name == "my-test-variant"
        assert vlmzoo.get_registries().variant.owner("my-test-variant") == "user"
        info = _plugin_info("test-variants")
        assert (info.distribution, info.registered, info.error) == ("user", {"variant": ["my-test-variant"]}, None)
        model = vlmzoo.build("my-test-variant", seed=0)
        assert model.config.decoder.num_layers == 2
    assert "my-test-variant" not in vlmzoo.list_models()
    assert "test-variants" not in [p.name for p in vlmzoo.list_plugins()]
    with pytest.raises(vlmzoo.UnknownModelError):
        vlmzoo.get_config("my-alias")


class CountingAttention(EagerAttention):
    calls = 0

    def attend(self, q, k, v, mask):
        type(self).calls += 1
        return super().attend(q, k, v, mask)


def test_a_plugin_attention_kernel_is_used_by_build():
    def register_components(registry):
        registry.attention.register("my_kernel", CountingAttention)

    config = tiny_config(num_layers=3, attention="my_kernel")
    ids, pixels = tiny_inputs(config)
    with vlmzoo.plugins.plugin_registered(make_plugin(register_components=register_components), "kernels"):
        model = vlmzoo.build(config, seed=0)
        assert all(isinstance(layer.self_attn, CountingAttention) for layer in model.language_model.layers)
        CountingAttention.calls = 0
        with torch.no_grad():
            logits = model(ids, pixel_values=pixels).logits
        assert CountingAttention.calls == 3  # once per decoder layer (the vision tower keeps "sdpa")
        # ... and via the override form too
        assert vlmzoo.build(tiny_config(), seed=0, decoder__attention="my_kernel").language_model.layers[0].self_attn
    reference = vlmzoo.build(config.with_overrides({"decoder__attention": "eager"}), seed=0)
    with torch.no_grad():
        torch.testing.assert_close(reference(ids, pixel_values=pixels).logits, logits)
    with pytest.raises(UnknownKeyError, match="unknown attention 'my_kernel'"):
        vlmzoo.build(config)


def test_register_and_unregister_plugin_with_a_distribution():
    class Plugin:  # an object with hook methods works as well as a module
        @vlmzoo.hookimpl
        def register_components(self, registry):
            registry.norm.register("my_norm", GemmaRMSNorm)

        @vlmzoo.hookimpl
        def register_samplers(self, registry):
            registry.sampler.register("my_sampler", object)

        @vlmzoo.hookimpl
        def register_postprocessors(self, registry):
            registry.postprocessor.register("my_task", object)

    name = vlmzoo.plugins.register_plugin(Plugin(), name="obj-plugin", distribution="my-dist")
    assert name == "obj-plugin"
    registries = vlmzoo.get_registries()
    assert registries.norm.owner("my_norm") == "my-dist"
    assert registries.sampler.owner("my_sampler") == "my-dist"
    assert registries.postprocessor.owner("my_task") == "my-dist"
    info = _plugin_info("obj-plugin")
    assert info.distribution == "my-dist"
    assert info.registered == {"norm": ["my_norm"], "sampler": ["my_sampler"], "postprocessor": ["my_task"]}
    with pytest.raises(ValueError, match="already registered"):
        vlmzoo.plugins.register_plugin(Plugin(), name="obj-plugin")
    vlmzoo.plugins.unregister_plugin("obj-plugin")
    assert "my_norm" not in vlmzoo.get_registries().norm
    with pytest.raises(KeyError, match="obj-plugin"):
        vlmzoo.plugins.unregister_plugin("obj-plugin")


def test_a_module_plugin_is_named_after_the_module():
    module = types.ModuleType("my_plugin_module")
    module.register_variants = vlmzoo.hookimpl(lambda registry: registry.variant.register("mod-variant", tiny_config()))
    with vlmzoo.plugins.plugin_registered(module) as name:
        assert name == "my_plugin_module"
        assert "mod-variant" in vlmzoo.list_models()  # a bare config works as a variant too
        assert vlmzoo.get_config("mod-variant") == tiny_config()


# ----------------------------------------------------------------------------------------- broken plugins


def test_a_hook_that_raises_is_skipped_with_a_warning_and_leaves_nothing_behind():
    def register_components(registry):
        registry.attention.register("half_done", CountingAttention)
        registry.variant.register("half-done-variant", tiny_config())
        raise RuntimeError("boom")

    with vlmzoo.plugins.plugin_registered(make_plugin(register_components=register_components), "broken"):
        with pytest.warns(
            PluginWarning, match=r"'broken' \(from 'user'\) failed while registering: RuntimeError: boom"
        ):
            registries = vlmzoo.get_registries()
        assert "half_done" not in registries.attention
        assert "half-done-variant" not in vlmzoo.list_models()
        info = _plugin_info("broken")
        assert info.registered == {} and "RuntimeError: boom" in info.error
        # everything else still works
        assert "paligemma2-3b-224" in vlmzoo.list_models()
        model = vlmzoo.build("paligemma-tiny", seed=0, decoder__num_layers=1)
        assert model.config.decoder.num_layers == 1


def test_a_duplicate_of_a_builtin_key_is_skipped_with_a_warning_naming_both_owners():
    def register_components(registry):
        registry.attention.register("fine_kernel", CountingAttention)
        registry.attention.register("sdpa", CountingAttention)

    plugin = make_plugin(register_components=register_components)
    vlmzoo.plugins.register_plugin(plugin, name="dup-plugin", distribution="dup-dist")
    with pytest.warns(PluginWarning) as record:
        registries = vlmzoo.get_registries()
    message = str(record[0].message)
    assert "'dup-plugin'" in message and "DuplicateKeyError" in message
    assert "'vlmzoo'" in message and "'dup-dist'" in message and "'sdpa'" in message
    assert registries.attention.get("sdpa") is SdpaAttention and registries.attention.owner("sdpa") == "vlmzoo"
    assert "fine_kernel" not in registries.attention
    assert _plugin_info("dup-plugin").registered == {}


def test_two_plugins_with_the_same_key_the_second_is_skipped():
    vlmzoo.plugins.register_plugin(_variant_plugin("shared-name"), name="first", distribution="dist-a")
    vlmzoo.plugins.register_plugin(_variant_plugin("shared-name"), name="second", distribution="dist-b")
    with pytest.warns(PluginWarning, match=r"'second' \(from 'dist-b'\).*by 'dist-a' and by 'dist-b'"):
        registries = vlmzoo.get_registries()
    assert registries.variant.owner("shared-name") == "dist-a"
    assert _plugin_info("first").error is None and _plugin_info("second").error


def test_an_alias_that_shadows_a_builtin_name_is_skipped():
    plugin = _variant_plugin("my-224", aliases=("paligemma2-224",))
    with vlmzoo.plugins.plugin_registered(plugin, "alias-thief"):
        with pytest.warns(PluginWarning, match=r"'alias-thief'.*'paligemma2-224'"):
            models = vlmzoo.list_models()
        assert "my-224" not in models
        assert vlmzoo.get_config("paligemma2-224").name == "paligemma2-3b-224"


def test_a_variant_that_is_not_a_config_is_skipped():
    plugin = make_plugin(register_variants=lambda registry: registry.variant.register("not-a-config", {"x": 1}))
    with vlmzoo.plugins.plugin_registered(plugin, "dict-variant"):
        with pytest.warns(PluginWarning, match=r"'dict-variant'.*'not-a-config' must be a vlmzoo.Variant"):
            assert "not-a-config" not in vlmzoo.list_models()
        assert vlmzoo.get_config("paligemma-tiny").name == "paligemma-tiny"


def test_a_hook_with_a_wrong_signature_is_skipped():
    plugin = make_plugin(register_components=lambda registries: None)  # the spec's argument is "registry"
    with vlmzoo.plugins.plugin_registered(plugin, "bad-signature"):
        with pytest.warns(PluginWarning, match="'bad-signature'"):
            vlmzoo.get_registries()
        assert _plugin_info("bad-signature").error


def test_a_hook_that_uses_the_public_api_while_registries_are_built_is_skipped():
    def register_variants(registry):
        vlmzoo.list_models()  # re-enters the registries that are being built

    with vlmzoo.plugins.plugin_registered(make_plugin(register_variants=register_variants), "reentrant"):
        with pytest.warns(PluginWarning, match=r"'reentrant'.*being built"):
            assert "paligemma2-3b-224" in vlmzoo.list_models()
        assert _plugin_info("reentrant").registered == {}


def test_strict_mode_raises_plugin_error():
    def register_components(registry):
        raise RuntimeError("kaput")

    with vlmzoo.plugins.plugin_registered(make_plugin(register_components=register_components), "strict-broken"):
        with pytest.raises(PluginError, match=r"'strict-broken'.*RuntimeError: kaput") as info:
            vlmzoo.plugins.load(strict=True)
        assert isinstance(info.value.__cause__, RuntimeError)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # strict mode raises instead of warning
            with pytest.raises(PluginError):
                vlmzoo.plugins.load(strict=True)
        with pytest.warns(PluginWarning, match="strict-broken"):
            vlmzoo.plugins.load(strict=False)


def test_strict_mode_from_the_environment(monkeypatch):
    plugin = make_plugin(register_components=lambda registry: registry.attention.register("eager", object))
    with vlmzoo.plugins.plugin_registered(plugin, "env-strict"):
        monkeypatch.setenv("VLMZOO_STRICT_PLUGINS", "1")
        with pytest.raises(PluginError, match="'env-strict'.*registered twice"):
            vlmzoo.get_registries()
        monkeypatch.setenv("VLMZOO_STRICT_PLUGINS", "0")
        with pytest.warns(PluginWarning, match="env-strict"):
            vlmzoo.get_registries()


def test_disabled_plugins_are_skipped(monkeypatch):
    def broken(registry):
        raise RuntimeError("should not run")

    vlmzoo.plugins.register_plugin(_variant_plugin("skipped-variant"), name="skipme")
    vlmzoo.plugins.register_plugin(make_plugin(register_components=broken), name="broken-too")
    vlmzoo.plugins.register_plugin(_variant_plugin("kept-variant"), name="keepme")
    monkeypatch.setenv("VLMZOO_DISABLE_PLUGINS", " skipme , broken-too")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        models = vlmzoo.list_models()
    assert "skipped-variant" not in models and "kept-variant" in models
    names = [p.name for p in vlmzoo.list_plugins()]
    assert "skipme" not in names and "broken-too" not in names and "keepme" in names
    monkeypatch.delenv("VLMZOO_DISABLE_PLUGINS")
    vlmzoo.plugins.reset()
    with pytest.warns(PluginWarning, match="broken-too"):
        assert "skipped-variant" in vlmzoo.list_models()


# ------------------------------------------------------------------------------------------- entry points


class FakeEntryPoint:
    """What vlmzoo.plugins reads from an entry point: name, dist.name and load()."""

    def __init__(self, name, distribution, load):
        self.name = name
        self.group = vlmzoo.plugins.ENTRY_POINT_GROUP
        self.dist = None if distribution is None else types.SimpleNamespace(name=distribution)
        self._load = load

    def load(self):
        return self._load()


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Install entry points in the ``vlmzoo`` group: call with a list of entry-point objects."""
    original = importlib.metadata.entry_points

    def install(points):
        def entry_points(**params):
            if params.get("group") == vlmzoo.plugins.ENTRY_POINT_GROUP:
                return list(points)
            return original(**params)

        monkeypatch.setattr(vlmzoo.plugins.metadata, "entry_points", entry_points)
        vlmzoo.plugins.reset()

    return install


def _missing_dependency():
    raise ImportError("No module named 'missing_dependency'")


def test_an_entry_point_that_fails_to_import_warns_and_the_rest_works(fake_entry_points):
    fake_entry_points([FakeEntryPoint("broken-ep", "broken-dist", _missing_dependency)])
    with pytest.warns(PluginWarning) as record:
        models = vlmzoo.list_models()
    assert len(record) == 1
    message = str(record[0].message)
    assert "'broken-ep'" in message and "'broken-dist'" in message
    assert "could not be imported: ImportError: No module named 'missing_dependency'" in message
    assert "VLMZOO_DISABLE_PLUGINS=broken-ep" in message
    assert "paligemma2-3b-224" in models
    info = _plugin_info("broken-ep")
    assert info.distribution == "broken-dist" and "ImportError" in info.error and info.registered == {}
    assert vlmzoo.build("paligemma-tiny", seed=0).config.name == "paligemma-tiny"


def test_an_entry_point_that_fails_to_import_raises_in_strict_mode(fake_entry_points):
    fake_entry_points([FakeEntryPoint("broken-ep", "broken-dist", _missing_dependency)])
    with pytest.raises(PluginError, match="'broken-ep'.*ImportError") as info:
        vlmzoo.plugins.load(strict=True)
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.parametrize("disable", ["broken-ep", "broken-dist"])
def test_an_entry_point_can_be_disabled_by_name_or_distribution(fake_entry_points, monkeypatch, disable):
    fake_entry_points([FakeEntryPoint("broken-ep", "broken-dist", _missing_dependency)])
    monkeypatch.setenv("VLMZOO_DISABLE_PLUGINS", disable)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        vlmzoo.plugins.load(strict=True)
    assert "broken-ep" not in [p.name for p in vlmzoo.list_plugins()]


def test_an_entry_point_without_a_distribution_is_credited_to_unknown(fake_entry_points):
    fake_entry_points([FakeEntryPoint("anon", None, lambda: _variant_plugin("anon-variant"))])
    assert vlmzoo.get_registries().variant.owner("anon-variant") == "unknown"


def _example_entry_points(plugin_dir):
    """The real entry points declared in the example plugin's pyproject.toml, as installed ones would be."""
    project = tomllib.loads((plugin_dir / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][vlmzoo.plugins.ENTRY_POINT_GROUP]
    points = []
    for name, value in declared.items():
        real = importlib.metadata.EntryPoint(name=name, value=value, group=vlmzoo.plugins.ENTRY_POINT_GROUP)
        points.append(FakeEntryPoint(name, project["name"], real.load))
    return project["name"], points


def test_the_example_plugin_loads_from_its_entry_point(fake_entry_points, example_plugin_path, installed_plugins):
    distribution, points = _example_entry_points(example_plugin_path)
    assert distribution == "vlmzoo-example-plugin" and [p.name for p in points] == ["example"]
    fake_entry_points(points)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        registries = vlmzoo.plugins.load(strict=True)
    import vlmzoo_example_plugin as example

    assert registries.attention.get("example_fp32_eager") is example.Float32EagerAttention
    assert registries.norm.get("example_scale_norm") is example.ScaleNorm
    for kind, key in (("attention", "example_fp32_eager"), ("norm", "example_scale_norm"),
                      ("variant", "example-paligemma2-tiny")):  # fmt: skip
        assert registries[kind].owner(key) == "vlmzoo-example-plugin"
    info = _plugin_info("example")
    assert info.distribution == "vlmzoo-example-plugin" and info.error is None
    assert info.registered == {
        "attention": ["example_fp32_eager"],
        "norm": ["example_scale_norm"],
        "variant": ["example-paligemma2-tiny"],
    }
    assert "example-paligemma2-tiny" in vlmzoo.list_models()
    assert vlmzoo.get_config("example-tiny") == example.tiny_config()

    # the variant builds with the plugin's components, initialised, and runs
    model = vlmzoo.build("example-tiny", seed=0)
    norms = [m for m in model.modules() if isinstance(m, example.ScaleNorm)]
    assert len(norms) == 2 * 4 + 1  # four sandwich norms per Gemma 2 block, plus the final norm
    assert all(n.g.item() == pytest.approx(32**0.5) for n in norms)
    assert isinstance(model.language_model.layers[0].self_attn, example.Float32EagerAttention)
    ids, pixels = tiny_inputs(model.config)
    with torch.no_grad():
        logits = model(ids, pixel_values=pixels).logits
    assert logits.shape == (2, ids.shape[1], 256) and torch.isfinite(logits).all()
    bf16 = vlmzoo.build("example-tiny", seed=0, dtype=torch.bfloat16)
    with torch.no_grad():
        assert bf16(ids, pixel_values=pixels).logits.dtype == torch.bfloat16

    # its attention kernel computes the same thing as the built-in eager one
    config = tiny_config(block="gemma2", attn_logit_softcap=20.0, sliding_window=3)
    ids, pixels = tiny_inputs(config, seed=1)
    with torch.no_grad():
        ours = vlmzoo.build(config, seed=1, decoder__attention="example_fp32_eager")(ids, pixel_values=pixels).logits
        theirs = vlmzoo.build(config, seed=1, decoder__attention="eager")(ids, pixel_values=pixels).logits
    torch.testing.assert_close(ours, theirs)


def test_the_example_plugin_can_be_disabled_by_distribution(fake_entry_points, example_plugin_path, monkeypatch):
    fake_entry_points(_example_entry_points(example_plugin_path)[1])
    monkeypatch.setenv("VLMZOO_DISABLE_PLUGINS", "vlmzoo-example-plugin")
    assert "example_scale_norm" not in vlmzoo.get_registries().norm
    assert "example-paligemma2-tiny" not in vlmzoo.list_models()


def test_installed_plugins_load_without_errors(installed_plugins):
    """Every plugin package installed beside vlmzoo (CI installs those under plugins/) loads cleanly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        loaded = {p.name: p for p in vlmzoo.list_plugins()}
    for name in installed_plugins:
        assert name in loaded and loaded[name].error is None, name
