"""The errors vlmzoo raises on purpose, under one base class.

Every error a user can cause (a bad file, a bad argument, a missing checkpoint, a device that is not
there) is a `VlmzooError`, so ``except vlmzoo.VlmzooError`` catches them all and nothing else. Each
type also derives from the built-in exception it refines (``ValueError``, ``FileNotFoundError``, ...),
so code written against the built-ins keeps working. Anything else escaping vlmzoo is a bug.
"""

from __future__ import annotations

import os

__all__ = [
    "DeviceError",
    "GenerationError",
    "InvalidFileError",
    "UnsupportedArgumentError",
    "VlmzooError",
]


class VlmzooError(Exception):
    """Base of every error vlmzoo raises on purpose; the message says what was wrong and what to do."""


class InvalidFileError(VlmzooError, ValueError):
    """A file that exists but cannot be used: not parseable, or a field of the wrong type or value.

    The message names the file and, where one is to blame, the field: ``config.json: text_config.
    num_attention_heads: must be > 0, got 0``. ``path``, ``field`` and ``problem`` are kept as attributes.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, field: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.field = field
        self.problem = problem
        where = ": ".join(part for part in (self.path, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)

    def with_path(self, path: str | os.PathLike) -> InvalidFileError:
        """The same error, naming ``path`` (for readers that parse data before they know its file)."""
        error = type(self).__new__(type(self))
        InvalidFileError.__init__(error, path, self.problem, self.field)
        return error


class DeviceError(VlmzooError, ValueError):
    """A device that does not exist on this machine or in this build of PyTorch."""


class GenerationError(VlmzooError, RuntimeError):
    """Generation cannot go on: the model produced logits that are not finite numbers."""


class UnsupportedArgumentError(VlmzooError, ValueError):
    """An argument other libraries accept that vlmzoo does not; the message says what to use instead."""
