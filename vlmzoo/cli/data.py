"""``vlmzoo data convert``: a dataset in another format as vlmzoo's JSONL training records.

    vlmzoo data convert instances.json --task detect --out train.jsonl
    vlmzoo data convert _annotations.train.jsonl --out train.jsonl

A ``.json`` source is a COCO instances file, a ``.jsonl`` source a Roboflow PaliGemma export
(``--format`` overrides the guess). Image paths in the output are relative to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("coco", "roboflow")


def _format(source: Path, given: str | None) -> str:
    if given:
        return given
    if source.suffix.lower() == ".json":
        return "coco"
    if source.suffix.lower() == ".jsonl":
        return "roboflow"
    raise ValueError(f"cannot tell the format of {source} from its name; pass --format coco or --format roboflow")


def _convert(args: argparse.Namespace) -> int:
    from vlmzoo.data.annotations import write_records
    from vlmzoo.data.coco import coco_records
    from vlmzoo.data.roboflow import roboflow_records

    source = Path(args.source)
    kind = _format(source, args.format)
    if kind == "coco":
        records = coco_records(source, args.images, task=args.task, max_classes=args.max_classes, seed=args.seed)
    else:
        for name in ("images", "max_classes"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} applies to COCO files only")
        if args.task != "detect":
            raise ValueError("a Roboflow export carries its own prompts; drop --task")
        records = roboflow_records(source)
    out = write_records(records, args.out)
    objects = sum(len(r.get("objects", [])) for r in records)
    negatives = sum(1 for r in records if "objects" in r and not r["objects"])
    print(f"wrote {len(records)} records ({objects} objects, {negatives} images without any) to {out}")
    return 0


def register(commands) -> None:
    data = commands.add_parser("data", help="convert datasets to vlmzoo's JSONL training records")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    convert = actions.add_parser(
        "convert",
        help="COCO instances JSON or a Roboflow PaliGemma JSONL export → JSONL records with objects",
        description="Convert a COCO instances file (.json) or a Roboflow PaliGemma export (.jsonl) to JSONL "
        "records that carry objects; the training loader writes their suffix every epoch.",
    )
    convert.add_argument("source", help="COCO instances .json or Roboflow _annotations.*.jsonl")
    convert.add_argument("--out", required=True, help="the JSONL file to write (replaced only when complete)")
    convert.add_argument("--task", choices=("detect", "segment"), default="detect", help="default: detect")
    convert.add_argument("--format", choices=FORMATS, help="default: coco for .json, roboflow for .jsonl")
    convert.add_argument("--images", help="COCO: folder of the file_name entries (default: the JSON file's folder)")
    convert.add_argument("--max-classes", type=int, help="COCO: name at most N classes per prompt (seeded sample)")
    convert.add_argument("--seed", type=int, default=0, help="seed of the class samples (default: 0)")
    convert.set_defaults(run=_convert)
