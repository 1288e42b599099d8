"""Imports flow one way, and no module imports itself back through others.

The graph is read from the source by grimp (the engine behind import-linter), so imports inside functions
and under ``if TYPE_CHECKING:`` count as much as those at the top of a module. The plugins listed in
`vlmzoo.plugins.BUILTIN_PLUGINS` are loaded by name, as third-party plugins are, so they sit in the top
layers and may use anything below.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import grimp
import pytest

#: From the bottom up. A module belongs to the layer of the longest entry that names it or a package above
#: it; an import may go to the same layer or a lower one, never a higher one. A family folder
#: (``vlmzoo.paligemma``, ``vlmzoo.siglip``) holds that family's piece of several layers.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        ("vlmzoo.errors", "vlmzoo.values", "vlmzoo.json_files", "vlmzoo.dtypes", "vlmzoo.devices", "vlmzoo.progress"),
    ),
    ("configs", ("vlmzoo.config", "vlmzoo.siglip.config")),
    ("registry", ("vlmzoo.registry", "vlmzoo.hookspecs", "vlmzoo.variants", "vlmzoo.families", "vlmzoo.plugins")),
    ("components", ("vlmzoo.components",)),
    ("model", ("vlmzoo.model.decoder", "vlmzoo.model.masks", "vlmzoo.model.quantize")),
    (
        "checkpoint files",
        (
            "vlmzoo.checkpoints.atomic",
            "vlmzoo.checkpoints.safetensors_io",
            "vlmzoo.checkpoints.hf_fields",
            "vlmzoo.checkpoints.hf_arguments",
            "vlmzoo.checkpoints.hub",
            "vlmzoo.checkpoints.saving",
            "vlmzoo.paligemma.hf_config",
            "vlmzoo.paligemma.config_json",
            "vlmzoo.paligemma.checkpoint_keys",
            "vlmzoo.siglip.checkpoints",
        ),
    ),
    (
        "generation / processing",
        (
            "vlmzoo.generation",
            "vlmzoo.processing.images",
            "vlmzoo.processing.batch",
            "vlmzoo.processing.files",
            "vlmzoo.processing.tokenizer",
            "vlmzoo.processing.image_settings",
            "vlmzoo.paligemma.prompts",
            "vlmzoo.paligemma.decoding",
            "vlmzoo.paligemma.processor",
            "vlmzoo.siglip.processor",
        ),
    ),
    ("family models", ("vlmzoo.paligemma.model", "vlmzoo.siglip.model", "vlmzoo.siglip.loss")),
    ("family facades", ("vlmzoo.model", "vlmzoo.processing", "vlmzoo.paligemma")),
    ("zoo", ("vlmzoo.zoo", "vlmzoo.catalog", "vlmzoo.siglip.variants", "vlmzoo.paligemma.variants")),
    ("loading", ("vlmzoo.checkpoints", "vlmzoo.checkpoints.loading")),
    ("tasks", ("vlmzoo.tasks", "vlmzoo.siglip.tasks")),
    ("data", ("vlmzoo.data", "vlmzoo.siglip.data")),
    ("training", ("vlmzoo.training", "vlmzoo.siglip.training")),
    ("pipeline", ("vlmzoo.pipeline", "vlmzoo.siglip.pipeline", "vlmzoo.bench")),
    ("plugins", ("vlmzoo.builtin", "vlmzoo.siglip.plugin")),
    ("package", ("vlmzoo", "vlmzoo.siglip")),
    ("command line", ("vlmzoo.cli", "vlmzoo.siglip.cli", "vlmzoo.__main__")),
)

#: Package ``__init__`` modules placed on their own: an entry here names the package module only, not the
#: modules inside it (those need entries of their own).
PACKAGE_ONLY = {
    "vlmzoo",
    "vlmzoo.siglip",
    "vlmzoo.model",
    "vlmzoo.processing",
    "vlmzoo.paligemma",
    "vlmzoo.checkpoints",
}


@functools.cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("vlmzoo")


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of the longest entry naming ``module`` or a package above it (None: unplaced)."""
    best: tuple[int, int] | None = None  # (length of the entry, layer index)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            named = module == entry or (entry not in PACKAGE_ONLY and module.startswith(entry + "."))
            if named and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def _where(importer: str, imported: str) -> str:
    details = graph().get_import_details(importer=importer, imported=imported)
    return ", ".join(f"line {d['line_number']}: {d['line_contents']}" for d in details) or "?"


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in graph().modules if layer_of(m) is None)
    assert not unplaced, f"modules in no layer of LAYERS (add each where it belongs): {unplaced}"


def test_no_layer_imports_a_higher_one():
    problems = []
    for importer in sorted(graph().modules):
        low = layer_of(importer)
        for imported in sorted(graph().find_modules_directly_imported_by(importer)):
            high = layer_of(imported)
            if low is not None and high is not None and high > low:
                where = _where(importer, imported)
                problems.append(f"{importer} ({LAYERS[low][0]}) imports {imported} ({LAYERS[high][0]}): {where}")
    assert not problems, "lower layers import higher ones:\n" + "\n".join(problems)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other, in any number of steps."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_strongly_connected_finds_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert strongly_connected(edges) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    edges = {m: set(graph().find_modules_directly_imported_by(m)) for m in graph().modules}
    cycles = strongly_connected(edges)
    assert not cycles, "modules that import each other (break each circle):\n" + "\n".join(
        " <-> ".join(group) for group in cycles
    )


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("vlmzoo.components.linear", "components"),
        ("vlmzoo.checkpoints", "loading"),
        ("vlmzoo.checkpoints.saving", "checkpoint files"),
        ("vlmzoo", "package"),
        ("vlmzoo.siglip.model", "family models"),
        ("vlmzoo.cli.generate", "command line"),
    ],
)
def test_layer_of_takes_the_longest_entry(module, layer):
    assert LAYERS[layer_of(module)][0] == layer


def test_the_layers_page_draws_every_layer_in_order():
    """docs/concepts/layers.md draws `LAYERS` from the top down, one box per layer, named as here."""
    page = (Path(__file__).parent.parent / "docs" / "concepts" / "layers.md").read_text(encoding="utf-8")
    diagram = page.split("```mermaid", 1)[1].split("```", 1)[0]
    drawn = re.findall(r'^\s+\w+\["([^:"]+):', diagram, re.MULTILINE)
    assert drawn == [name for name, _ in reversed(LAYERS)]
