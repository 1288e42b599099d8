"""``vlmzoo classify``: zero-shot labels for images with an image-text model (SigLIP)."""

from __future__ import annotations

import argparse


def _classify(args: argparse.Namespace) -> int:
    from vlmzoo.cli.common import load_pipeline, print_json
    from vlmzoo.cli.generate import image_paths
    from vlmzoo.siglip.pipeline import ImageTextModel

    labels = [label.strip() for label in args.labels.split(";") if label.strip()]
    if not labels:
        raise ValueError("--labels must name at least one label, e.g. --labels 'a cat;a dog'")
    paths = image_paths(args.image)
    model = load_pipeline(args, dtype=args.dtype)
    if not isinstance(model, ImageTextModel):
        raise ValueError(f"{args.model} is not an image-text model (such as SigLIP); classify needs one")
    results = model.classify([str(path) for path in paths], labels, template=args.template)
    for path, result in zip(paths, results, strict=True):
        if args.json:
            print_json({"image": str(path), **result.to_dict()})
            continue
        print(f"{path}: {result.best}")
        for label, probability in result.ranked()[: args.top]:
            print(f"  {probability:.4f}  {label}")
    return 0


def register(commands) -> None:
    classify = commands.add_parser(
        "classify",
        help="zero-shot classification with an image-text model (SigLIP)",
        description="Score each image against each label with per-label sigmoid probabilities (they do not sum "
        "to 1: several labels may fit, or none). Labels are put into the model's prompt template first.",
    )
    classify.add_argument("model", help="checkpoint directory, hub id or bundled name (e.g. shapes-siglip)")
    classify.add_argument("--image", action="append", required=True, help="an image file or a folder (repeatable)")
    classify.add_argument("--labels", required=True, help="labels separated by ';', e.g. 'a cat;a dog'")
    classify.add_argument("--template", help="how a label becomes text, with {} for the label (default: the model's)")
    classify.add_argument("--top", type=int, default=5, help="labels shown per image (default 5)")
    classify.add_argument("--json", action="store_true", help="one JSON object per image")
    classify.add_argument("--device", help="e.g. cpu or cuda (default: CPU)")
    classify.add_argument("--dtype", help="float32 (default: the checkpoint's), bfloat16, float16")
    classify.set_defaults(run=_classify)
