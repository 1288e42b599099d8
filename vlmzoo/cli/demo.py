"""``vlmzoo demo``: the whole job on the bundled ``shapes-demo`` model, offline, in seconds.

It draws a few new scenes of shapes, asks the model to caption them, to detect one of their shapes and to
segment that shape's kind, prints what it found beside the truth, and saves the images with the detections
and the masks drawn on them.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from vlmzoo.cli.common import check_range, load_pipeline, save_image
from vlmzoo.cli.options import add_device_option

DEMO_MODEL = "shapes-demo"


def _box(box) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


def _found(objects) -> str:
    """Each object's label and box, and the size of its mask when it has one."""
    described = [f"{o.label} {_box(o.box)}" + ("" if o.mask is None else f" mask {o.mask.sum()} px") for o in objects]
    return "; ".join(described) or "nothing"


def _demo(args: argparse.Namespace) -> int:
    from vlmzoo.data.shapes import caption_text, generate_scene

    check_range("--images", args.images, 1, 100)
    vlm = load_pipeline(args, DEMO_MODEL)
    rng = random.Random(args.seed)
    scenes = [generate_scene(rng, size=args.size) for _ in range(args.images)]
    queries = [rng.choice(scene.shapes).label for scene in scenes]
    captions = vlm.caption([scene.image for scene in scenes])
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for index, (scene, query, caption) in enumerate(zip(scenes, queries, captions, strict=True), start=1):
        detection = vlm.detect(scene.image, query)
        save_image(scene.image, output / f"scene-{index}.png")
        drawn = output / f"scene-{index}-detect.png"
        save_image(detection.draw(scene.image), drawn)
        kind = query.split()[-1]
        segmentation = vlm.segment(scene.image, kind)
        masked = output / f"scene-{index}-segment.png"
        save_image(segmentation.draw(scene.image), masked)
        truth = "; ".join(_box(shape.box) for shape in scene.shapes if shape.label == query)
        print(f"scene {index} ({scene.size[0]}x{scene.size[1]} pixels, {len(scene.shapes)} shape(s)):")
        print(f"  caption en\n    model: {caption.text!r}\n    truth: {caption_text(scene.shapes)!r}")
        print(f"  detect {query}\n    model: {_found(detection.objects)}\n    truth: {truth}")
        shown = zip(scene.shapes, scene.masks(), strict=True)
        masks = "; ".join(f"{kind} {_box(s.box)} mask {m.sum()} px" for s, m in shown if s.kind == kind)
        print(f"  segment {kind}\n    model: {_found(segmentation.objects)}\n    truth: {masks}")
        print(f"  saved {drawn}, {masked}")
    print(f"Your own images: vlmzoo generate {DEMO_MODEL} --image IMAGE --task detect \\\n"
          "    --labels 'red circle' --draw out.png")  # fmt: skip
    return 0


def register(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="detect, segment and caption shapes with the bundled shapes-demo model (offline)",
        description="Draw a few new scenes of shapes, caption them, detect one shape in each and segment its "
        "kind with the shapes-demo model that ships inside vlmzoo (no download), print the answers beside the "
        "truth and save the drawn detections and masks.",
    )
    demo.add_argument("--images", type=int, default=3, help="how many scenes to draw (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="scenes are drawn from this seed (default 0)")
    demo.add_argument("--size", type=int, default=224, help="scene side in pixels (default 224; any size works)")
    demo.add_argument("--output", default="vlmzoo-demo", help="folder for the images (default ./vlmzoo-demo)")
    add_device_option(demo)
    demo.set_defaults(run=_demo)
