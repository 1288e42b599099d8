"""``vlmzoo generate``: run a task (or a raw prompt) on images, print the text and the parsed results.

One image streams its text as it is made; several images (or a folder) run in batches. ``--json``
prints one JSON object per image; ``--draw`` saves the annotated images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vlmzoo.cli.common import check_range, load_pipeline, print_json, save_image
from vlmzoo.cli.options import add_device_option

#: File suffixes taken from a folder given as ``--image``.
IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
#: The first word of a raw prompt → the post-processor that parses its answer.
PROMPT_TASKS = {"detect": "detect", "segment": "segment", "caption": "caption", "describe": "caption",
                "ocr": "ocr", "answer": "answer"}  # fmt: skip
#: The keys of every `TaskResult.to_dict`; text output also prints any other key a task's result adds.
BASE_FIELDS = frozenset({"task", "text", "raw_text", "image_size", "objects"})
#: Sampler options passed through to generation when given.
SAMPLER_OPTIONS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def image_paths(specs: list[str]) -> list[Path]:
    """Image files from ``--image`` values: files as given, folders expanded to their images (sorted)."""
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(
                    f"folder {spec!r} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"image {spec!r} does not exist; give an image file or a folder of images")
    return paths


def task_request(args: argparse.Namespace) -> tuple[Any, str]:
    """(post-processor or None, prompt) from ``--task`` and its options, or from a raw ``--prompt``."""
    from vlmzoo.tasks import get_postprocessor, prepare_task

    post_options = {k: v for k, v in (("vae", args.vae), ("bins", args.bins)) if v is not None}
    if args.task is not None:
        if args.prompt is not None:
            raise ValueError("give either --task (the prompt is built for you) or --prompt (raw text), not both")
        prompt_args: list[Any] = []
        if args.labels is not None:
            prompt_args.append([label.strip() for label in args.labels.split(";") if label.strip()])
        if args.question is not None:
            prompt_args.append(args.question)
        options = dict(post_options, **({"lang": args.lang} if args.lang is not None else {}))
        return prepare_task(args.task, *prompt_args, **options)
    if args.prompt is None:
        raise ValueError("give --task (e.g. --task detect --labels 'cat;dog') or a raw --prompt")
    for name, value in (("--labels", args.labels), ("--question", args.question), ("--lang", args.lang)):
        if value is not None:
            raise ValueError(f"{name} builds a task's prompt; use it with --task, or write it into --prompt")
    words = args.prompt.split()
    task = PROMPT_TASKS.get(words[0]) if words else None
    if task == "segment" and "vae" not in post_options:
        task = None  # masks need the decoder weights; without --vae the text is printed as it is
    return (get_postprocessor(task, **post_options) if task else None), args.prompt


def draw_targets(paths: list[Path], draw: str | None) -> list[Path | None]:
    """Where each annotated image goes: ``--draw`` is a file for one image, else a folder."""
    if draw is None:
        return [None] * len(paths)
    target = Path(draw)
    if len(paths) == 1 and target.suffix.lower() in IMAGE_SUFFIXES:
        return [target]
    return [target / f"{path.stem}.png" for path in paths]


def _print_result(path: Path, text: str, result: Any, streamed: bool, several: bool) -> None:
    if several:
        print(f"{path}: {text}")
    elif not streamed:
        print(text)
    if result is None:
        return
    if result.objects:
        for obj in result.objects:
            box = ", ".join(f"{v:.1f}" for v in obj.box)
            mask = "" if obj.mask is None else f"  mask: {int(obj.mask.sum())} pixels"
            print(f"  {obj.label}: box ({box}){mask}")
    elif result.text != text.strip():
        print(f"  {result.text}")
    for name, value in result.to_dict().items():  # what a plugin's result adds (e.g. count's "counts")
        if name not in BASE_FIELDS:
            print(f"  {name}: {json.dumps(value, ensure_ascii=False)}")


def _generate(args: argparse.Namespace) -> int:
    import vlmzoo
    from vlmzoo.processing import load_image
    from vlmzoo.tasks import TextPostprocessor

    segmenting = args.task == "segment" or (args.prompt or "").split()[:1] == ["segment"]
    if segmenting and args.vae is None:  # the model's own mask VQ-VAE, when its processor names one
        args.vae = vlmzoo.load_processor(args.model, revision=args.revision).mask_vae
    post, prompt = task_request(args)
    paths = image_paths(args.image)
    targets = draw_targets(paths, args.draw)
    if args.draw is not None and (post is None or isinstance(post, TextPostprocessor)):
        raise ValueError(f"--draw needs a task whose answer has boxes (--task detect or segment), not {prompt!r}")
    check_range("--batch-size", args.batch_size, 1)
    vlm = load_pipeline(args, dtype=args.dtype, revision=args.revision, quantize=args.quantize, compile=args.compile)
    sampler_options = {name: value for name in SAMPLER_OPTIONS if (value := getattr(args, name)) is not None}
    max_new_tokens = args.max_new_tokens or (post.max_new_tokens if post is not None else 64)
    common = dict(max_new_tokens=max_new_tokens, sampler=args.sampler, seed=args.seed, **sampler_options)
    streaming = args.stream and not args.json and len(paths) == 1

    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        images = [load_image(path) for path in chunk]
        if streaming:
            pieces = []
            for piece in vlm.stream(images[0], prompt, **common):
                print(piece, end="", flush=True)
                pieces.append(piece)
            print()
            texts = ["".join(pieces)]
        else:
            texts = vlm.generate(images, [prompt] * len(images), **common)
        for path, image, text, target in zip(chunk, images, texts, targets[start:], strict=False):
            result = None if post is None else post.parse(text, image_size=image.size)
            if args.json:
                record = {"image": str(path), "prompt": prompt, "text": text}
                if result is not None:
                    record.update(result.to_dict(), text=text)
                    record["answer"] = result.text
                print_json(record)
            else:
                _print_result(path, text, result, streaming, several=len(paths) > 1)
            if target is not None:
                save_image(result.draw(image), target)
                print(f"saved {target}", file=sys.stderr)
    return 0


def register(commands) -> None:
    gen = commands.add_parser(
        "generate",
        help="run a task or a prompt on images and print the results",
        description="Run a task (--task detect --labels 'cat;dog', segment, caption, ocr, answer --question ...) "
        "or a raw --prompt on one or more images or folders of images. One image streams its text; the "
        "parsed results (boxes, masks) follow. --json prints one JSON object per image; --draw saves the "
        "annotated images.",
    )
    gen.add_argument("model", help="checkpoint directory, hub repo id (google/paligemma2-3b-mix-224) or shapes-demo")
    gen.add_argument("--image", action="append", required=True, metavar="PATH",
                     help="an image file or a folder of images; repeat for a batch")  # fmt: skip
    what = gen.add_argument_group("what to ask")
    what.add_argument("--task", help="a task name: detect, segment, caption, ocr, answer, or one from a plugin")
    what.add_argument("--labels", help="objects for detect / segment, separated by ';', e.g. 'cat;dog'")
    what.add_argument("--question", help="the question for answer")
    what.add_argument("--lang", help="language code for caption / answer (default: en)")
    what.add_argument("--prompt", help="a raw prompt instead of --task, e.g. 'caption en' or 'detect cat'")
    what.add_argument(
        "--vae",
        help="segment's mask VQ-VAE: vae-oid.npz or its safetensors conversion (default: the "
        "model's own, else big_vision's, downloaded once)",
    )
    what.add_argument("--bins", type=int, choices=(1023, 1024), help="box decoding convention (default 1023)")
    out = gen.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per image instead of text")
    out.add_argument("--draw", metavar="PATH", help="save the annotated image (a file for one image, else a folder)")
    out.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                     help="print one image's text as it is made (default: on)")  # fmt: skip
    run = gen.add_argument_group("generation")
    run.add_argument("--max-new-tokens", type=int, help="default: the task's budget (64 for a raw prompt)")
    run.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    run.add_argument("--sampler", default="greedy", help="sampler name(s), e.g. greedy or temperature+top_p")
    run.add_argument("--temperature", type=float)
    run.add_argument("--top-k", type=int)
    run.add_argument("--top-p", type=float)
    run.add_argument("--min-p", type=float)
    run.add_argument("--repetition-penalty", type=float)
    run.add_argument("--seed", type=int)
    model = gen.add_argument_group("model")
    model.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoint's)")
    add_device_option(model)
    model.add_argument("--revision", help="hub revision (branch, tag or commit)")
    model.add_argument("--quantize", help="weight-only quantization of the decoder: int8 or int4")
    model.add_argument("--compile", action="store_true", help="compile the decode step (pays off on long outputs)")
    gen.set_defaults(run=_generate)
