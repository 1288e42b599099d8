"""The generated docs pages cover the whole registry and the whole command line."""

from __future__ import annotations

import importlib.util

from docs_examples import REPO_ROOT

import vlmzoo
import vlmzoo.cli

spec = importlib.util.spec_from_file_location("docs_pages", REPO_ROOT / "scripts" / "docs_pages.py")
docs_pages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_pages)


def test_the_models_page_lists_every_built_in_variant_smallest_first_with_its_checkpoints():
    page = docs_pages.models_page()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    counts = []
    for name in vlmzoo.list_models():
        count = vlmzoo.build(name, device="meta").num_parameters()
        (row,) = [r for r in rows if r.startswith((f"| `{name}` |", f"| `{name}`<br>"))]
        assert f"| {count:,} | {count * 2 / 1e9:.2f} |" in row or count * 2 < 1e7
        counts.append((rows.index(row), count))
    assert [c for _, c in sorted(counts)] == sorted(c for _, c in counts)  # smallest first
    assert "`paligemma2-224`" in page  # aliases are listed
    assert "(https://huggingface.co/google/paligemma2-10b-mix-448)" in page


def test_the_models_page_leaves_out_plugin_variants(example_plugin_path):
    from vlmzoo_example_plugin import plugin

    with vlmzoo.plugins.plugin_registered(plugin):
        assert "example-paligemma2-tiny" in vlmzoo.list_models()
        assert "example-paligemma2-tiny" not in docs_pages.models_page()


def test_the_cli_page_documents_every_command_and_option():
    page = docs_pages.cli_page()
    top = vlmzoo.cli.parser()
    for name, sub in docs_pages._subcommands(top):
        assert f"## `vlmzoo {name}`" in page
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in page, f"{flag} of `vlmzoo {name}` is missing from the CLI reference"


def test_the_mask_pictures_are_what_the_script_draws_from_the_model_code(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("make_doc_images", REPO_ROOT / "scripts" / "make_doc_images.py")
    images = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(images)
    monkeypatch.setattr(images, "IMAGES", tmp_path)
    for path in images.masks():
        committed = REPO_ROOT / "docs" / "images" / path.name
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(committed))), (
            f"docs/images/{path.name} is stale: run python scripts/make_doc_images.py masks"
        )


def test_the_caption_picture_is_what_the_demo_model_answers(tmp_path, monkeypatch, single_thread):
    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("make_doc_images", REPO_ROOT / "scripts" / "make_doc_images.py")
    images = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(images)
    monkeypatch.setattr(images, "IMAGES", tmp_path)
    (path,) = images.captions()
    committed = REPO_ROOT / "docs" / "images" / path.name
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(committed))), (
        f"docs/images/{path.name} is stale: run python scripts/make_doc_images.py captions"
    )


def _api_directives() -> set[str]:
    """Every object rendered by a mkdocstrings ``::: name`` line in the API pages."""
    found = set()
    for page in (REPO_ROOT / "docs" / "api").rglob("*.md"):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("::: "):
                found.add(line.removeprefix("::: ").strip())
    return found


def test_every_public_name_has_an_api_entry():
    documented = _api_directives()
    missing = [name for name in vlmzoo.__all__ if f"vlmzoo.{name}" not in documented]
    assert not missing, f"add `::: vlmzoo.<name>` to a page under docs/api for: {missing}"


def test_every_public_subpackage_has_a_module_page():
    documented = _api_directives()
    packages = sorted(
        f"vlmzoo.{path.parent.name}"
        for path in (REPO_ROOT / "vlmzoo").glob("*/__init__.py")
        if path.parent.name not in {"builtin", "cli"}
    )
    missing = [name for name in packages if not any(d == name or d.startswith(f"{name}.") for d in documented)]
    assert not missing, f"add a page under docs/api/modules with `::: <package>` for: {missing}"


def test_every_public_function_has_a_parameter_table():
    """An ``Args:`` entry for every parameter: mkdocstrings renders the section as a table."""
    import inspect
    import re

    functions = [getattr(vlmzoo, name) for name in vlmzoo.__all__ if inspect.isfunction(getattr(vlmzoo, name))]
    functions += [vlmzoo.VisionLanguageModel.generate, vlmzoo.VisionLanguageModel.stream,
                  vlmzoo.VisionLanguageModel.run, vlmzoo.generation.generate]  # fmt: skip
    for function in functions:
        if not [name for name in inspect.signature(function).parameters if name != "self"]:
            continue
        doc = inspect.getdoc(function) or ""
        args = doc.partition("\nArgs:\n")[2]
        assert args, f"{function.__qualname__} has no Args: section"
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name == "self":
                continue
            stars = {inspect.Parameter.VAR_POSITIONAL: r"\*", inspect.Parameter.VAR_KEYWORD: r"\*\*"}
            pattern = rf"^\s+{stars.get(parameter.kind, '')}{parameter.name}:"
            assert re.search(pattern, args, re.MULTILINE), f"{function.__qualname__}: {parameter.name} undocumented"
