"""Tasks: prompts the checkpoints were trained with, and model text turned into boxes, masks and text.

Examples:
    >>> import vlmzoo
    >>> detect = vlmzoo.get_postprocessor("detect")
    >>> text = "<loc0000><loc0000><loc0511><loc1023> cat"
    >>> result = detect.parse(text, image_size=(640, 480))
    >>> result.objects[0].label, result.objects[0].box
    ('cat', (0.0, 0.0, 640.0, 239.76539589442814))
"""

from __future__ import annotations

import inspect
from typing import Any

from vlmzoo.tasks.base import Postprocessor, TaskError, check_language, check_names
from vlmzoo.tasks.detection import Detect
from vlmzoo.tasks.drawing import draw_objects, label_color
from vlmzoo.tasks.locations import DEFAULT_BINS, LocatedText, clean_text, format_objects, parse_located_text
from vlmzoo.tasks.mask_decoding import MaskDecoder, VaeFileError, load_mask_decoder, place_mask
from vlmzoo.tasks.mask_encoding import MaskEncoder, load_mask_encoder
from vlmzoo.tasks.matching import IOU_THRESHOLD, box_iou, match_objects
from vlmzoo.tasks.results import DetectedObject, ImageSizeError, TaskResult, check_image_size
from vlmzoo.tasks.rle import mask_to_rle, rle_to_mask
from vlmzoo.tasks.segmentation import Segment
from vlmzoo.tasks.segmentation_metrics import SegmentationTally
from vlmzoo.tasks.targets import located_suffix
from vlmzoo.tasks.text import Answer, Caption, Ocr, TextPostprocessor
from vlmzoo.tasks.vae_files import convert_vae_to_safetensors, default_vae_file

__all__ = [
    "IOU_THRESHOLD",
    "box_iou",
    "match_objects",
    "DEFAULT_BINS",
    "Answer",
    "Caption",
    "Detect",
    "DetectedObject",
    "ImageSizeError",
    "LocatedText",
    "MaskDecoder",
    "MaskEncoder",
    "Ocr",
    "Postprocessor",
    "Segment",
    "SegmentationTally",
    "TaskError",
    "TaskResult",
    "TextPostprocessor",
    "VaeFileError",
    "check_image_size",
    "check_language",
    "check_names",
    "clean_text",
    "convert_vae_to_safetensors",
    "default_vae_file",
    "draw_objects",
    "format_objects",
    "get_postprocessor",
    "label_color",
    "list_tasks",
    "load_mask_decoder",
    "load_mask_encoder",
    "located_suffix",
    "mask_to_rle",
    "parse_located_text",
    "place_mask",
    "prepare_task",
    "rle_to_mask",
]


def list_tasks() -> list[str]:
    """Names of every registered post-processor (built-in and from plugins), sorted."""
    from vlmzoo.plugins import get_registries

    return get_registries().postprocessor.keys()


def get_postprocessor(name: str, **options: Any) -> Postprocessor:
    """The post-processor registered as ``name``, built with ``options`` (e.g. ``bins=1024``, ``vae=...``).

    An unknown name raises `vlmzoo.registry.UnknownKeyError` naming the closest registered ones; an
    option the post-processor does not take raises TypeError listing those it does.

    Args:
        name: the task's registered name (``"detect"``, ``"segment"``, ``"caption"``, a plugin's).
        **options: the post-processor's options, e.g. ``bins=1024`` or ``vae="vae-oid.npz"``.
    """
    from vlmzoo.plugins import get_registries

    if not isinstance(name, str):
        raise TypeError(f"a task name is a string such as 'detect', got {type(name).__name__}")
    factory = get_registries().postprocessor.get(name)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call speak
        signature = None
    if signature is not None:
        try:
            signature.bind(**options)
        except TypeError:
            accepted = [
                p.name
                for p in signature.parameters.values()
                if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
            ]
            raise TypeError(
                f"post-processor {name!r} does not take the option(s) {sorted(options)}; "
                f"it takes: {', '.join(accepted) or 'no options'}"
            ) from None
    return factory(**options)


def _prompt_parameters(postprocessor: Any) -> set[str]:
    """Names of the keyword parameters of ``postprocessor.prompt`` (a class or an instance)."""
    function = getattr(postprocessor, "prompt", None)
    if function is None:
        return set()
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_POSITIONAL}


def prepare_task(task: str | Postprocessor, *prompt_args: Any, **options: Any) -> tuple[Postprocessor, str]:
    """The post-processor and the prompt for one task request.

    ``task`` is a registered name or a post-processor object. ``prompt_args`` and the ``options`` named
    in the task's ``prompt`` signature (``objects``, ``question``, ``lang``...) build the prompt; the
    other ``options`` build the post-processor (``bins``, ``vae``...), which a ready object cannot take.

    Examples:
        >>> post, prompt = prepare_task("detect", ["cat", "dog"], bins=1024)
        >>> prompt
        'detect cat ; dog'
    """
    if isinstance(task, Postprocessor):
        post = task
        prompt_names = _prompt_parameters(post)
        unused = sorted(set(options) - prompt_names)
        if unused:
            raise TypeError(f"options {unused} cannot change a post-processor object; build it with them")
        return post, post.prompt(*prompt_args, **options)
    if not isinstance(task, str):
        raise TypeError(f"a task is a name such as 'detect' or a post-processor object, got {type(task).__name__}")
    from vlmzoo.plugins import get_registries

    prompt_names = _prompt_parameters(get_registries().postprocessor.get(task))
    post = get_postprocessor(task, **{k: v for k, v in options.items() if k not in prompt_names})
    return post, post.prompt(*prompt_args, **{k: v for k, v in options.items() if k in prompt_names})
