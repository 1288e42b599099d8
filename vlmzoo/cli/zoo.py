"""``vlmzoo list``, ``vlmzoo info`` and ``vlmzoo plugins``: what the zoo holds."""

from __future__ import annotations

import argparse
import json


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


def register(commands) -> None:
    listing = commands.add_parser("list", help="list the model variants")
    listing.add_argument("pattern", nargs="?", help="shell wildcard, e.g. 'paligemma2-*'")
    listing.set_defaults(run=_list)

    info = commands.add_parser("info", help="show a variant's config and parameter count")
    info.add_argument("model", help="variant name or alias, e.g. paligemma2-224")
    info.set_defaults(run=_info)

    plugins = commands.add_parser("plugins", help="list plugins and what they registered")
    plugins.set_defaults(run=_plugins)
