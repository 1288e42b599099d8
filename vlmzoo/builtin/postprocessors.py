"""Built-in tasks, registered by key: detect, caption, ocr, answer (and segment)."""

from vlmzoo.hookspecs import hookimpl
from vlmzoo.tasks.detection import Detect
from vlmzoo.tasks.text import Answer, Caption, Ocr


@hookimpl
def register_postprocessors(registry):
    for task in (Detect, Caption, Ocr, Answer):
        registry.postprocessor.register(task.name, task)
