"""Built-in tasks, registered by key: detect, segment, caption, ocr, answer."""

from vlmzoo.hookspecs import hookimpl
from vlmzoo.tasks.detection import Detect
from vlmzoo.tasks.segmentation import Segment
from vlmzoo.tasks.text import Answer, Caption, Ocr


@hookimpl
def register_postprocessors(registry):
    for task in (Detect, Segment, Caption, Ocr, Answer):
        registry.postprocessor.register(task.name, task)
