"""A task: the prompt a checkpoint was trained with, and the parsing of what it writes back.

A post-processor registered in ``registry.postprocessor`` is a factory (usually the class) called with
keyword options; the object it returns has ``parse(text, image_size)`` and, when the model can be
prompted for the task, ``prompt(...)``. `VisionLanguageModel.run` needs nothing else, so a plugin's
task works with ``vlm.run("its-name", image, ...)`` exactly like a built-in one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from vlmzoo.errors import VlmzooError
from vlmzoo.tasks.results import TaskResult

_LANG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")


class TaskError(VlmzooError, ValueError):
    """Inputs a task cannot turn into a prompt (an empty object list, a bad language code, ...)."""


class Postprocessor:
    """Base class for tasks: subclasses set `name`, implement `parse` and, if promptable, `prompt`.

    Attributes:
        name: the registry key, also written into each result's ``task``.
        max_new_tokens: a generation budget that fits a typical answer of this task.
    """

    name: ClassVar[str] = ""
    max_new_tokens: ClassVar[int] = 64
    #: Same-label boxes overlapping more than this are repeats, dropped by `drop_repeats` (None: kept).
    repeat_iou: float | None = None

    def prompt(self, *args: Any, **options: Any) -> str:
        """The prompt text the checkpoints were trained with for this task."""
        raise TaskError(f"task {self.name!r} has no prompt; use it on text you generated yourself with .parse(text)")

    def parse(self, text: str, image_size: Any = None) -> TaskResult:
        """Turn generated text into a `TaskResult`; ``image_size`` is ``(width, height)`` of the original image."""
        raise NotImplementedError

    def drop_repeats(self, objects: list) -> list:
        """``objects`` without repeated boxes (see `vlmzoo.tasks.repeats`), by this task's ``repeat_iou``."""
        from vlmzoo.tasks.repeats import drop_repeated

        return drop_repeated(objects, self.repeat_iou)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"


def check_language(lang: Any) -> str:
    """A language code as PaliGemma prompts use them (``en``, ``de``, ``pt-BR``, ``zh-Hant``...)."""
    if not isinstance(lang, str) or not _LANG.fullmatch(lang):
        raise TaskError(f"lang must be a language code such as 'en', 'de' or 'zh-Hant', got {lang!r}")
    return lang


def check_names(objects: Any, what: str = "objects") -> list[str]:
    """Object names for ``detect`` / ``segment`` prompts: one string or a list of non-empty strings without ';'."""
    names = [objects] if isinstance(objects, str) else objects
    if not isinstance(names, Sequence) or not names:
        raise TaskError(f"{what} must be a name or a non-empty list of names, e.g. ['cat', 'dog'], got {objects!r}")
    out = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise TaskError(f"each of {what} must be a non-empty string, got {name!r} in {objects!r}")
        if ";" in name or "\n" in name:
            raise TaskError(f"name {name!r} contains ';' or a newline, which separate names in the prompt; remove it")
        out.append(" ".join(name.split()))
    return out
