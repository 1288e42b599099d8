"""``vlmzoo eval CKPT --coco instances.json --images DIR --out results.json``: COCO mAP of a checkpoint.

The options are added to ``vlmzoo eval`` (see `vlmzoo.cli.train`); this module runs them: it answers a
prompt per image (and per group of classes), writes the COCO results JSON and prints the table.
"""

from __future__ import annotations

import argparse


def add_options(evaluate: argparse.ArgumentParser) -> None:
    """The COCO options of ``vlmzoo eval``."""
    coco = evaluate.add_argument_group("COCO evaluation (instead of --data)")
    coco.add_argument("--coco", help="COCO instances JSON: evaluate bbox (and segm) mAP on its images")
    coco.add_argument("--images", help="folder of the COCO file_name entries (default: the JSON file's folder)")
    coco.add_argument("--out", help="write the COCO results JSON here")
    coco.add_argument("--task", choices=("detect", "segment"), default="detect", help="default: detect")
    coco.add_argument("--vae", help="segment: the VQ-VAE file (default: the model's own, else big_vision's)")
    coco.add_argument("--classes-per-prompt", type=int, help="ask for at most N classes per prompt (default: all)")
    coco.add_argument("--constrained", action="store_true", help="constrained decoding: only valid objects")
    coco.add_argument("--no-match", help="the text the model writes when nothing matches (shapes-demo: none)")
    coco.add_argument("--max-images", type=int, help="evaluate only the first N images")
    coco.add_argument("--metrics-out", help="also write the figures as JSON here")


def run(args: argparse.Namespace) -> int:
    from vlmzoo.cli.common import load_model, load_processor, write_json
    from vlmzoo.tasks import get_postprocessor
    from vlmzoo.training.coco_evaluation import evaluate_coco, write_results

    processor = load_processor(args)
    vae = args.vae or (processor.mask_vae if args.task == "segment" else None)  # a model's own VQ-VAE
    post = get_postprocessor(args.task, **({"vae": vae} if vae else {}))
    model = load_model(args)
    evaluation = evaluate_coco(
        model,
        processor,
        args.coco,
        args.images,
        postprocessor=post,
        classes_per_prompt=args.classes_per_prompt,
        constrained=args.constrained,
        no_match=args.no_match,
        batch_size=args.batch_size,
        max_images=args.max_images,
    )
    if args.out:
        write_results(evaluation.results, args.out)
    if args.metrics_out:
        write_json(args.metrics_out, evaluation.to_dict())
    print(evaluation.table())
    return 0
