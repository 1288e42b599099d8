"""Typed registries: one per kind of swappable thing, each entry remembering which plugin added it."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vlmzoo.errors import VlmzooError

T = TypeVar("T")

KINDS = (
    "attention",
    "norm",
    "mlp",
    "decoder_block",
    "vision_encoder",
    "pooling",
    "model_family",
    "sampler",
    "postprocessor",
    "variant",
    "linear_kernel",
    "quantization",
)


class RegistryError(VlmzooError, LookupError):
    """Base class for registry problems."""


class UnknownKeyError(RegistryError, KeyError):
    """A key that no plugin registered; the message names the closest keys."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateKeyError(RegistryError):
    """Two plugins registered the same key in one registry."""


def close_matches(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """The candidates nearest to ``name``, for 'did you mean' messages."""
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.4)
    prefixed = [c for c in candidates if c.startswith(name) or name.startswith(c)]
    return list(dict.fromkeys(matches + prefixed))[:n]


@dataclass(frozen=True)
class Entry(Generic[T]):
    key: str
    value: T
    owner: str


@dataclass
class Registry(Generic[T]):
    """Maps keys to components of one kind; a duplicate key is an error naming both owners."""

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(self, key: str, value: T, *, owner: str = "user") -> T:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{self.kind} keys must be non-empty strings, got {key!r}")
        if key in self._entries:
            raise DuplicateKeyError(
                f"{self.kind} {key!r} is registered twice: by {self._entries[key].owner!r} and by {owner!r}; "
                f"rename one of them or disable one plugin with VLMZOO_DISABLE_PLUGINS"
            )
        self._entries[key] = Entry(key, value, owner)
        return value

    def unregister(self, key: str) -> None:
        self._entries.pop(key, None)

    def get(self, key: str) -> T:
        try:
            return self._entries[key].value
        except KeyError:
            hint = close_matches(key, list(self._entries))
            suggestion = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
            raise UnknownKeyError(
                f"unknown {self.kind} {key!r}{suggestion} Registered: {', '.join(sorted(self._entries)) or 'none'}"
            ) from None

    def owner(self, key: str) -> str:
        self.get(key)
        return self._entries[key].owner

    def keys(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[k] for k in self.keys()]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._entries)


class Registries:
    """The set of registries that plugins fill, one attribute per kind (``registries.attention`` ...)."""

    def __init__(self) -> None:
        self._by_kind: dict[str, Registry[Any]] = {kind: Registry(kind) for kind in KINDS}

    def __getattr__(self, kind: str) -> Registry[Any]:
        try:
            return self.__dict__["_by_kind"][kind]
        except KeyError:
            raise AttributeError(f"no registry {kind!r}; registries: {', '.join(KINDS)}") from None

    def __getitem__(self, kind: str) -> Registry[Any]:
        return getattr(self, kind)

    def kinds(self) -> tuple[str, ...]:
        return KINDS


class OwnedRegistries:
    """The view a plugin's hook receives: registrations are staged and credited to that plugin.

    Staging lets a plugin that fails half way leave nothing behind; `commit` then checks for
    duplicates against everything registered before.
    """

    def __init__(self, target: Registries, owner: str) -> None:
        self._target = target
        self._owner = owner
        self._staged: list[tuple[str, str, Any]] = []
        self._views = {kind: _StagingRegistry(self, kind) for kind in KINDS}

    def __getattr__(self, kind: str) -> _StagingRegistry:
        try:
            return self.__dict__["_views"][kind]
        except KeyError:
            raise AttributeError(f"no registry {kind!r}; registries: {', '.join(KINDS)}") from None

    def __getitem__(self, kind: str) -> _StagingRegistry:
        return getattr(self, kind)

    def commit(self) -> dict[str, list[str]]:
        added: dict[str, list[str]] = {}
        done: list[tuple[str, str]] = []
        try:
            for kind, key, value in self._staged:
                self._target[kind].register(key, value, owner=self._owner)
                done.append((kind, key))
                added.setdefault(kind, []).append(key)
        except Exception:  # a bad key (ValueError) must not leave earlier entries behind either
            for kind, key in done:
                self._target[kind].unregister(key)
            raise
        return added


class _StagingRegistry:
    def __init__(self, parent: OwnedRegistries, kind: str) -> None:
        self._parent = parent
        self.kind = kind

    def register(self, key: str, value: Any) -> Any:
        self._parent._staged.append((self.kind, key, value))
        return value

    def __call__(self, key: str) -> Callable[[Any], Any]:
        """Decorator form: ``@registry.attention("my_kernel")``."""

        def decorate(value: Any) -> Any:
            return self.register(key, value)

        return decorate

    def get(self, key: str) -> Any:
        """Look up an entry registered earlier (by any plugin), e.g. to wrap a built-in."""
        for kind, staged_key, value in self._parent._staged:
            if kind == self.kind and staged_key == key:
                return value
        return self._parent._target[self.kind].get(key)
