"""``vlmzoo list``, ``vlmzoo info`` and ``vlmzoo plugins``: what the zoo holds."""

from __future__ import annotations

import argparse

from vlmzoo.cli.common import print_json


def human_count(count: int) -> str:
    """``3032242416`` → ``3.03B``: parameter counts as people say them."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def format_table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Columns padded to their widest cell; columns in ``right`` aligned right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def _list(args: argparse.Namespace) -> int:
    from vlmzoo.catalog import describe_models

    models = describe_models(args.pattern)
    if args.json:
        print_json([m.to_dict() for m in models], indent=2)
        return 0
    if not models:
        raise LookupError(f"no variant matches {args.pattern!r}; run `vlmzoo list` to see every name")
    header = ["name", "aliases", "family", "parameters", "image tokens", "resolution"]
    rows = [
        [m.name, ", ".join(m.aliases), m.family, human_count(m.parameters), str(m.image_tokens), str(m.resolution)]
        for m in models
    ]
    print(format_table(header, rows, right={3, 4, 5}))
    return 0


def _info(args: argparse.Namespace) -> int:
    import vlmzoo

    config = vlmzoo.get_config(args.model)
    model = vlmzoo.build(config, device="meta")
    print_json({"parameters": model.num_parameters(), "config": config.model_dump(mode="json")}, indent=2)
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


def register(commands) -> None:
    listing = commands.add_parser(
        "list", help="list the model variants", description="A table of every variant in the zoo."
    )
    listing.add_argument("pattern", nargs="?", help="shell wildcard, e.g. 'paligemma2-*'")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    listing.set_defaults(run=_list)

    info = commands.add_parser("info", help="show a variant's config and parameter count")
    info.add_argument("model", help="variant name or alias, e.g. paligemma2-224")
    info.set_defaults(run=_info)

    plugins = commands.add_parser("plugins", help="list plugins and what they registered")
    plugins.set_defaults(run=_plugins)
