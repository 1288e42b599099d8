"""One plugin manager: built-in plugins, entry-point plugins, and the registries they fill.

The registries are built once, lazily, on first use. Each entry point is loaded on its own, so a
broken third-party plugin costs a warning that names it, not the whole library; with
``VLMZOO_STRICT_PLUGINS=1`` (or ``strict=True``) it raises instead. ``VLMZOO_DISABLE_PLUGINS`` takes a
comma-separated list of plugin or distribution names to skip.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from vlmzoo import hookspecs
from vlmzoo.errors import VlmzooError
from vlmzoo.registry import OwnedRegistries, Registries
from vlmzoo.variants import check_variants

ENTRY_POINT_GROUP = "vlmzoo"
HOOKS = ("register_components", "register_variants", "register_samplers", "register_postprocessors")
BUILTIN_PLUGINS = (
    "vlmzoo.builtin.components",
    "vlmzoo.builtin.variants",
    "vlmzoo.builtin.samplers",
    "vlmzoo.builtin.postprocessors",
    "vlmzoo.siglip.plugin",
)


class PluginError(VlmzooError, RuntimeError):
    """A plugin failed to load or to register, and strict mode is on."""


class PluginWarning(UserWarning):
    """A plugin failed to load or to register and was skipped."""


@dataclass
class PluginInfo:
    """What `list_plugins` reports for one plugin."""

    name: str
    distribution: str
    version: str | None
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class _Source:
    name: str
    distribution: str
    version: str | None
    plugin: Any = None
    error: str | None = None


_lock = threading.RLock()
_extra: dict[str, _Source] = {}
_state: tuple[Registries, list[PluginInfo]] | None = None
_building = threading.local()
_on_reset: list[Callable[[], None]] = []


def _strict_from_env() -> bool:
    return os.environ.get("VLMZOO_STRICT_PLUGINS", "").lower() in {"1", "true", "yes", "on"}


def _disabled_from_env() -> set[str]:
    return {name.strip() for name in os.environ.get("VLMZOO_DISABLE_PLUGINS", "").split(",") if name.strip()}


def _version_of(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _sources(strict: bool) -> list[_Source]:
    version = _version_of("vlmzoo")
    sources = [_Source(name, "vlmzoo", version, plugin=importlib.import_module(name)) for name in BUILTIN_PLUGINS]
    disabled = _disabled_from_env()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        if ep.name in disabled or dist in disabled:
            continue
        source = _Source(ep.name, dist, _version_of(dist))
        try:
            source.plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code is reported, not raised
            source.error = f"could not be imported: {type(exc).__name__}: {exc}"
            _report(source, strict, exc)
        sources.append(source)
    sources.extend(s for s in _extra.values() if s.name not in disabled)
    return sources


def _report(source: _Source, strict: bool, exc: BaseException) -> None:
    message = (
        f"vlmzoo plugin {source.name!r} (from {source.distribution!r}) {source.error}; it was skipped. "
        f"Fix or uninstall it, or set VLMZOO_DISABLE_PLUGINS={source.name} to silence this."
    )
    if strict:
        raise PluginError(message) from exc
    warnings.warn(message, PluginWarning, stacklevel=4)


def _call_hooks(plugin: Any, name: str, view: OwnedRegistries) -> None:
    """Run one plugin's hooks through pluggy (wrappers, argument checks and all), in a manager of its own
    so that what it registers is credited to it alone."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name=name)
    for hook_name in HOOKS:
        getattr(manager.hook, hook_name)(registry=view)


def _build(strict: bool) -> tuple[Registries, list[PluginInfo]]:
    registries = Registries()
    infos: list[PluginInfo] = []
    for source in _sources(strict):
        info = PluginInfo(source.name, source.distribution, source.version, error=source.error)
        infos.append(info)
        if source.plugin is None:
            continue
        try:
            view = OwnedRegistries(registries, owner=source.distribution)
            _call_hooks(source.plugin, source.name, view)
            added = view.commit()
            try:
                check_variants(registries)  # a clash fails this plugin (rolled back), not every later lookup
            except Exception:
                for kind, keys in added.items():
                    for key in keys:
                        registries[kind].unregister(key)
                raise
            info.registered = added
        except Exception as exc:  # noqa: BLE001
            if source.name in BUILTIN_PLUGINS:
                raise
            info.error = source.error = f"failed while registering: {type(exc).__name__}: {exc}"
            _report(source, strict, exc)
    return registries, infos


def _ensure(strict: bool | None = None) -> tuple[Registries, list[PluginInfo]]:
    global _state
    with _lock:
        if getattr(_building, "active", False):
            raise PluginError(
                "a plugin hook used the registries while they are being built (e.g. called vlmzoo.build or "
                "get_config); inside a hook, look entries up on the registry it receives: registry.<kind>.get(key)"
            )
        if _state is None or strict:
            _building.active = True
            try:
                _state = _build(_strict_from_env() if strict is None else strict)
            finally:
                _building.active = False
        return _state


def get_registries() -> Registries:
    """The registries filled by every enabled plugin (built once, then cached)."""
    return _ensure()[0]


def resolve_registries(registries: Registries | None = None) -> Registries:
    """``registries`` when given, else those of the installed plugins: what every builder and loader reads
    when the caller passes none."""
    return get_registries() if registries is None else registries


def load(strict: bool | None = None) -> Registries:
    """Rebuild the registries now; ``strict=True`` raises `PluginError` on the first broken plugin."""
    reset()
    return _ensure(strict)[0]


def reset() -> None:
    """Forget the built registries, e.g. after installing a plugin in a running process."""
    global _state
    with _lock:
        _state = None
        for forget in _on_reset:
            forget()


def on_reset(forget: Callable[[], None]) -> None:
    """Have ``forget()`` called whenever the registries are forgotten: what a module derived from them (the
    linear kernels chosen so far, say) must be dropped with them. Lets the modules that read the registries
    keep such caches without the plugin manager importing them."""
    with _lock:
        if forget not in _on_reset:
            _on_reset.append(forget)


def list_plugins() -> list[PluginInfo]:
    """Every plugin seen, its distribution and version, what it registered, and any error."""
    return list(_ensure()[1])


def register_plugin(plugin: Any, name: str | None = None, distribution: str = "user") -> str:
    """Add a plugin object or module by hand (no packaging needed) and rebuild the registries."""
    name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin)}"
    with _lock:
        if name in _extra:
            raise ValueError(f"a plugin named {name!r} is already registered; unregister it first")
        _extra[name] = _Source(name, distribution, None, plugin=plugin)
        reset()
    return name


def unregister_plugin(name: str) -> None:
    """Remove a plugin added with `register_plugin` and rebuild the registries."""
    with _lock:
        if _extra.pop(name, None) is None:
            raise KeyError(f"no plugin named {name!r} was added with register_plugin")
        reset()


@contextlib.contextmanager
def plugin_registered(plugin: Any, name: str | None = None) -> Iterator[str]:
    """Context manager that adds a plugin for the duration of a block (handy in tests)."""
    added = register_plugin(plugin, name)
    try:
        yield added
    finally:
        unregister_plugin(added)
