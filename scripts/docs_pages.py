"""mkdocs hook: pages generated at build time from the code, so they cannot go stale.

- ``reference/models.md``: every built-in variant, smallest first, with its size and its Hugging Face
  checkpoints, from `vlmzoo.catalog.describe_models`;
- ``reference/cli.md``: every ``vlmzoo`` command and option, from the argparse parser itself;
- ``reference/training-options.md``: every `TrainingConfig` field, from its pydantic fields;
- ``changelog.md``: the repository's CHANGELOG.md.

Every written page also links to its own Markdown source, shipped with the site under ``_source/``, so
the link works wherever the site is served. With ``VLMZOO_REPO_URL`` set (the repository's web address),
the build also gets the theme's repository link and an edit button on every page.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: The longest code line the site shows whole (docs/stylesheets/extra.css; tests/test_docs_site.py checks it).
CODE_WIDTH = 85

GENERATED = {
    "reference/models.md": "models_page",
    "reference/cli.md": "cli_page",
    "reference/training-options.md": "training_options_page",
    "changelog.md": "changelog_page",
}


#: The Hugging Face checkpoints of each built-in variant, by kind: ``pt`` (pretrained, to fine-tune),
#: ``mix`` (fine-tuned on a task mixture, to use as is), ``ft`` (fine-tuned on one data set).
HUB = "https://huggingface.co/"
PALIGEMMA_FT = "https://huggingface.co/models?search=google/paligemma-3b-ft"
CHECKPOINTS = {
    "paligemma-3b-224": ["google/paligemma-3b-pt-224", "google/paligemma-3b-mix-224", PALIGEMMA_FT],
    "paligemma-3b-448": ["google/paligemma-3b-pt-448", "google/paligemma-3b-mix-448", PALIGEMMA_FT],
    "paligemma-3b-896": ["google/paligemma-3b-pt-896", PALIGEMMA_FT],
    "paligemma2-3b-224": ["google/paligemma2-3b-pt-224", "google/paligemma2-3b-mix-224"],
    "paligemma2-3b-448": ["google/paligemma2-3b-pt-448", "google/paligemma2-3b-mix-448",
                          "google/paligemma2-3b-ft-docci-448"],
    "paligemma2-3b-896": ["google/paligemma2-3b-pt-896"],
    "paligemma2-10b-224": ["google/paligemma2-10b-pt-224", "google/paligemma2-10b-mix-224"],
    "paligemma2-10b-448": ["google/paligemma2-10b-pt-448", "google/paligemma2-10b-mix-448",
                           "google/paligemma2-10b-ft-docci-448"],
    "paligemma2-10b-896": ["google/paligemma2-10b-pt-896"],
    "paligemma2-28b-224": ["google/paligemma2-28b-pt-224", "google/paligemma2-28b-mix-224"],
    "paligemma2-28b-448": ["google/paligemma2-28b-pt-448", "google/paligemma2-28b-mix-448"],
    "paligemma2-28b-896": ["google/paligemma2-28b-pt-896"],
}  # fmt: skip


#: What stands in the checkpoints column of the variants without hub checkpoints.
NO_CHECKPOINT = {
    "paligemma-tiny": "none: random weights, for tests",
    "paligemma2-tiny": "none: random weights, for tests",
    "shapes-demo": "inside the package ([the demo model](../guides/demo-model.md))",
}


def _checkpoint_links(name: str, description: str) -> str:
    links = []
    for repo in CHECKPOINTS.get(name, []):
        if repo.startswith(HUB):
            links.append(f"[ft (many)]({repo})")
        else:
            kind = repo.split("-")[2] if repo.count("-") >= 3 else repo
            kind = "ft-docci" if "ft-docci" in repo else kind
            links.append(f"[{kind}]({HUB}{repo})")
    return " · ".join(links) or description


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f}" if nbytes >= 1e7 else "< 0.01"


def models_page() -> str:
    import vlmzoo
    from vlmzoo.catalog import describe_models

    registry = vlmzoo.get_registries().variant
    built_in = [m for m in describe_models() if registry.owner(m.name) == "vlmzoo"]
    lines = [
        "# Model zoo",
        "",
        "The variants vlmzoo itself provides, smallest first, generated from its registry when the docs",
        "are built. `vlmzoo list` prints the same rows, plus any variant an installed plugin adds.",
        "Parameter counts count the tied output head once: they are what",
        '`vlmzoo.build(name, device="meta").num_parameters()` returns. GB is the size of the weights',
        "(10^9 bytes) in bfloat16, twice that in float32; int8 and int4 store the decoder in about a half",
        "and a quarter of bfloat16. The checkpoint links lead to the Hugging Face hub (gated: accept the licence",
        "there first): `pt` pretrained, to fine-tune; `mix` fine-tuned on a mixture of tasks, to use as is;",
        "`ft` fine-tuned on one data set.",
        "",
        "| variant | parameters | GB | px | image tokens | checkpoints |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for m in sorted(built_in, key=lambda m: (m.parameters, m.name)):
        name = "<br>".join(f"`{n}`" for n in (m.name, *m.aliases))
        lines.append(
            f"| {name} | {m.parameters:,} | {_gb(m.parameters * 2)} | {m.resolution} | {m.image_tokens} "
            f"| {_checkpoint_links(m.name, NO_CHECKPOINT.get(m.name, m.description))} |"
        )
    return "\n".join(lines) + "\n"


def _type_name(annotation) -> str:
    """A field's type as a reader writes it: ``int | None``, ``'left' | 'right'``."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(f"`{value!r}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is not None:
        args = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _fields_rows(model, prefix: str = "") -> list[str]:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _fields_rows(annotation, prefix=f"{prefix}{name}.")
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "**required**"
        else:
            value = field.default_factory() if field.default_factory is not None else field.default
            default = f"`{value!r}`"
        flag = "" if prefix else f" (`--{name.replace('_', '-')}`)"
        what = (field.description or "").replace("*", "\\*")  # glob patterns, not emphasis
        cells = [f"`{prefix}{name}`{flag}", _type_name(annotation), default, what]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return rows


def training_options_page() -> str:
    from vlmzoo.training.config import TrainingConfig

    lines = [
        "# Training options",
        "",
        "Every field of `vlmzoo.training.TrainingConfig`, generated from the class when the docs are built.",
        "Each is a keyword argument of `vlmzoo.train`, a key of a `vlmzoo train --config` file (TOML or",
        "JSON) and an option of `vlmzoo train` (`max_steps` is `--max-steps`; tables and lists as JSON,",
        "`--lora '{\"rank\": 16}'`). The [fine-tuning guide](../guides/fine-tuning.md) shows them in use.",
        "",
        "| option | type | default | what it does |",
        "|---|---|---|---|",
        *_fields_rows(TrainingConfig),
    ]
    return "\n".join(lines) + "\n"


def changelog_page() -> str:
    return (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text(encoding="utf-8")


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def cli_page() -> str:
    from vlmzoo.cli import parser

    os.environ["COLUMNS"] = str(CODE_WIDTH)  # argparse wraps help to this width: stable, and never clipped
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


SOURCES = "_source/"
REPO_URL_ENV = "VLMZOO_REPO_URL"


def on_config(config):
    repo_url = os.environ.get(REPO_URL_ENV)
    if repo_url:
        config["repo_url"] = repo_url
        config["edit_uri"] = "edit/main/docs/"
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for page in [f for f in files if f.is_documentation_page()]:
        text = page.content_string
        files.append(File.generated(config, f"{SOURCES}{page.src_uri}.txt", content=text))
    for path, function in GENERATED.items():
        files.append(File.generated(config, path, content=globals()[function]()))
    return files


def on_page_markdown(markdown, page, config, files):
    """A link to the page's own source at its foot (generated pages say what generates them)."""
    if page.file.src_uri in GENERATED:
        origin = "`CHANGELOG.md`" if page.file.src_uri == "changelog.md" else "the code"
        return markdown + f"\n\n---\n\n*Generated by `scripts/docs_pages.py` from {origin}.*\n"
    up = "../" * page.file.src_uri.count("/")
    return markdown + f"\n\n---\n\n[Page source]({up}{SOURCES}{page.file.src_uri}.txt)\n"
