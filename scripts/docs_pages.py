"""mkdocs hook: pages generated at build time from the code, so they cannot go stale.

- ``reference/models.md``: every variant in the registry (built-in and installed plugins), from
  `vlmzoo.catalog.describe_models`;
- ``reference/cli.md``: every ``vlmzoo`` command and option, from the argparse parser itself.
"""

from __future__ import annotations

import argparse
import os

GENERATED = {
    "reference/models.md": "models_page",
    "reference/cli.md": "cli_page",
}


def models_page() -> str:
    from vlmzoo.catalog import describe_models

    lines = [
        "# Model zoo",
        "",
        "Every variant registered in this installation, generated from the registry when the docs are built",
        "(`vlmzoo list` prints the same table). Parameter counts count the tied output head once; they are",
        "what `vlmzoo.build(name, device=\"meta\").num_parameters()` returns.",
        "",
        "| name | aliases | family | parameters | image tokens | resolution | description |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for m in describe_models():
        aliases = ", ".join(f"`{a}`" for a in m.aliases)
        lines.append(
            f"| `{m.name}` | {aliases} | {m.family} | {m.parameters:,} | {m.image_tokens} | {m.resolution} px "
            f"| {m.description} |"
        )
    return "\n".join(lines) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def cli_page() -> str:
    from vlmzoo.cli import parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal width: make the page stable
    top = parser()
    lines = [
        "# Command line",
        "",
        "Generated from the `vlmzoo` command's own parser when the docs are built. Every command takes",
        "`--help`; errors are one line on stderr with a non-zero exit, and `vlmzoo --debug COMMAND` shows the",
        "traceback instead. Exit codes: 0 done; 1 the work failed (non-finite logits, out of memory); 2 bad",
        "input (a missing or damaged file, a bad option, a device that is not there); 130 interrupted (Ctrl-C);",
        "141 the reader of the output went away (`vlmzoo list | head -1`).",
        "",
        "```text",
        top.format_help().rstrip(),
        "```",
    ]
    for name, sub in _subcommands(top):
        lines += ["", f"## `vlmzoo {name}`", "", "```text", sub.format_help().rstrip(), "```"]
        for action, nested in _subcommands(sub):  # e.g. vlmzoo data convert
            lines += ["", f"### `vlmzoo {name} {action}`", "", "```text", nested.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, function in GENERATED.items():
        files.append(File.generated(config, path, content=globals()[function]()))
    return files
