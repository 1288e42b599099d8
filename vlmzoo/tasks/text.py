"""Text tasks: captions, OCR and visual question answering, whose answer is the clean text."""

from __future__ import annotations

from typing import Any, ClassVar

from vlmzoo.tasks.base import Postprocessor, TaskError, check_language
from vlmzoo.tasks.locations import clean_text
from vlmzoo.tasks.results import TaskResult, check_image_size


class TextPostprocessor(Postprocessor):
    """The answer as text: special, ``<loc>`` and ``<seg>`` tokens stripped, whitespace normalised."""

    name: ClassVar[str] = "text"

    def parse(self, text: str, image_size: Any = None) -> TaskResult:
        if not isinstance(text, str):
            raise TypeError(f"{self.name}: parse takes the generated text (a str), got {type(text).__name__}")
        size = None if image_size is None else check_image_size(image_size)
        return TaskResult(task=self.name, text=clean_text(text), raw_text=text, image_size=size)


class Caption(TextPostprocessor):
    """``caption {lang}`` (short) or, with ``detail=True``, ``describe {lang}`` (longer)."""

    name: ClassVar[str] = "caption"

    def prompt(self, lang: str = "en", detail: bool = False) -> str:
        return f"{'describe' if detail else 'caption'} {check_language(lang)}"


class Ocr(TextPostprocessor):
    """``ocr``: the text written in the image."""

    name: ClassVar[str] = "ocr"
    max_new_tokens: ClassVar[int] = 128

    def prompt(self) -> str:
        return "ocr"


class Answer(TextPostprocessor):
    """``answer {lang} {question}``: visual question answering."""

    name: ClassVar[str] = "answer"

    def prompt(self, question: str, lang: str = "en") -> str:
        if not isinstance(question, str) or not question.strip():
            raise TaskError(f"answer needs a question (a non-empty string), got {question!r}")
        return f"answer {check_language(lang)} {' '.join(question.split())}"
