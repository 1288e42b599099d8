"""The ``vlmzoo`` command: list and inspect the zoo, list plugins, generate text from an image."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _list(args: argparse.Namespace) -> int:
    import vlmzoo

    for name in vlmzoo.list_models(args.pattern):
        print(name)
    return 0


def _info(args: argparse.Namespace) -> int:
    import vlmzoo

    config = vlmzoo.get_config(args.model)
    model = vlmzoo.build(config, device="meta")
    print(json.dumps({"parameters": model.num_parameters(), "config": config.model_dump(mode="json")}, indent=2))
    return 0


def _plugins(args: argparse.Namespace) -> int:
    import vlmzoo

    for plugin in vlmzoo.list_plugins():
        version = f" {plugin.version}" if plugin.version else ""
        print(f"{plugin.name} ({plugin.distribution}{version})")
        for kind, keys in plugin.registered.items():
            print(f"  {kind}: {', '.join(keys)}")
        if plugin.error:
            print(f"  error: {plugin.error}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import vlmzoo

    vlm = vlmzoo.load(args.model, dtype=args.dtype, device=args.device, revision=args.revision)
    options = {
        name: value
        for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
        if (value := getattr(args, name)) is not None
    }
    common = dict(max_new_tokens=args.max_new_tokens, sampler=args.sampler, seed=args.seed, **options)
    if args.stream:
        for piece in vlm.stream(args.image, args.prompt, **common):
            print(piece, end="", flush=True)
        print()
    else:
        print(vlm.generate(args.image, args.prompt, **common))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="vlmzoo", description="PaliGemma and PaliGemma 2 model zoo.")
    commands = top.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list the model variants")
    listing.add_argument("pattern", nargs="?", help="shell wildcard, e.g. 'paligemma2-*'")
    listing.set_defaults(run=_list)

    info = commands.add_parser("info", help="show a variant's config and parameter count")
    info.add_argument("model", help="variant name or alias, e.g. paligemma2-224")
    info.set_defaults(run=_info)

    plugins = commands.add_parser("plugins", help="list plugins and what they registered")
    plugins.set_defaults(run=_plugins)

    gen = commands.add_parser("generate", help="generate text for an image and a prompt")
    gen.add_argument("model", help="checkpoint directory or hub repo id, e.g. google/paligemma2-3b-mix-224")
    gen.add_argument("--image", required=True, help="image file")
    gen.add_argument("--prompt", required=True, help="task prompt, e.g. 'caption en' or 'detect cat'")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--sampler", default="greedy", help="sampler name(s), e.g. greedy or temperature+top_p")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--min-p", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoint's)")
    gen.add_argument("--device", help="e.g. cpu or cuda (default: cpu)")
    gen.add_argument("--revision", help="hub revision (branch, tag or commit)")
    gen.add_argument("--stream", action="store_true", help="print text as it is made")
    gen.set_defaults(run=_generate)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, LookupError, OSError, TypeError) as exc:
        print(f"vlmzoo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
