"""The examples in the docs and the README run, page by page, and show what they say (see ``docs_examples``)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from docs_examples import (
    CHECK,
    PAGES,
    REPO_ROOT,
    check_shown_value,
    checked_tree,
    examples,
    matching_output,
    page_files,
    runnable_code,
    shell_commands,
)
from PIL import Image

import vlmzoo.cli
import vlmzoo.plugins
from vlmzoo.data.shapes import generate_scene

PAGES_WITH_CODE = [page for page in PAGES if examples(page)]


def _sample_images(directory) -> None:
    """The image files the examples name, drawn as shapes scenes the demo model knows."""
    for index, name in enumerate(["cat.jpg", "dog.jpg", "street.png", "image.png", "photo.jpg"]):
        generate_scene(random.Random(1000 + index), size=160 + 40 * index).image.save(directory / name)


class _Reader:
    """Runs a page's examples as a reader would, in one directory and one Python namespace."""

    def __init__(self, directory, monkeypatch) -> None:
        self.directory = directory
        self.monkeypatch = monkeypatch
        self.site = directory / ".installed"
        self.namespace = {"__name__": "__docs__", "Image": Image, "image_a": Image.open("cat.jpg"),
                          "image_b": Image.open("dog.jpg"), CHECK: check_shown_value}  # fmt: skip

    def python(self, example, code: str) -> str:
        compiled = compile(checked_tree(example, code), example.where, "exec")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            if example.directive == "raises":
                with pytest.raises(Exception) as caught:
                    exec(compiled, self.namespace)
                names = {cls.__name__ for cls in type(caught.value).__mro__}
                assert example.reason in names, f"{example.where}: raised {caught.value!r}, not {example.reason}"
            else:
                exec(compiled, self.namespace)
        return printed.getvalue()

    def shell(self, example) -> str:
        printed = io.StringIO()
        for env, argv in shell_commands(example):
            with self.monkeypatch.context() as patch:
                for name, value in env.items():
                    patch.setenv(name, value)
                if argv[0] == "pip":
                    self.pip(example, argv)
                    continue
                with contextlib.redirect_stdout(printed):
                    code = vlmzoo.cli.main(argv[1:])
                assert code == 0, f"{example.where}: `{' '.join(argv)}` exited {code}"
        return printed.getvalue()

    def close(self) -> None:
        """Forget the modules imported from the page's installed packages (monkeypatch restores the rest)."""
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if file and Path(file).resolve().is_relative_to(self.site.resolve()):
                del sys.modules[name]
        importlib.invalidate_caches()
        vlmzoo.plugins.reset()

    def pip(self, example, argv: list[str]) -> None:
        """``pip install DIR``: into a scratch folder on the import path (the test's environment stays as it is)."""
        assert argv[1:2] == ["install"] and len(argv) == 3, f"{example.where}: only `pip install DIR` runs here"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
             str(self.site), argv[2]],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{example.where}: `{' '.join(argv)}` failed:\n{done.stderr}"
        installed = {path.name.split(".")[0] for path in self.site.iterdir() if path.suffix != ".dist-info"}
        # The page's plugin shadows a copy of the same distribution in this environment, and is enabled.
        plugins = {ep.name for info in self.site.glob("*.dist-info")
                   for ep in importlib.metadata.Distribution.at(info).entry_points if ep.group == "vlmzoo"}  # fmt: skip
        disabled = set(filter(None, os.environ.get("VLMZOO_DISABLE_PLUGINS", "").split(","))) - plugins
        self.monkeypatch.setenv("VLMZOO_DISABLE_PLUGINS", ",".join(sorted(disabled)))
        for name in [m for m in sys.modules if m.split(".")[0] in installed]:
            self.monkeypatch.delitem(sys.modules, name)
        self.monkeypatch.syspath_prepend(str(self.site))
        importlib.invalidate_caches()
        vlmzoo.plugins.reset()


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_page_examples_run_and_show_what_they_say(page, tmp_path, monkeypatch, single_thread):
    """Runs with vlmzoo's own plugins only, as a reader who installed vlmzoo has them; a plugin's README
    with that plugin installed too (CI installs those in plugins/)."""
    if page.is_relative_to(REPO_ROOT / "plugins"):
        monkeypatch.delenv("VLMZOO_DISABLE_PLUGINS", raising=False)
        vlmzoo.plugins.reset()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLMZOO_QUIET", "1")
    _sample_images(tmp_path)
    for file in page_files(page):
        target = tmp_path / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.text, encoding="utf-8")
    reader = _Reader(tmp_path, monkeypatch)
    try:
        for example in examples(page):
            code = runnable_code(example)
            if code is None:
                continue
            printed = reader.shell(example) if example.directive == "run" else reader.python(example, code)
            if example.output is not None:
                assert matching_output(printed, example.output), (
                    f"{example.where}: the page shows\n{example.output}\nbut the example printed\n{printed}"
                )
    finally:
        reader.close()


def test_every_directive_is_known_and_every_skip_gives_a_reason():
    for page in PAGES:
        for example in examples(page):
            code = runnable_code(example)  # raises on a skip without a reason or an unknown directive
            if code is not None and example.language == "python":
                checked_tree(example, code)  # raises on an unchecked "e.g." and on literals in demo blocks
            elif code is not None:
                shell_commands(example)


def test_a_wrong_shown_value_or_output_fails(tmp_path):
    from docs_examples import Example

    page = REPO_ROOT / "docs" / "index.md"
    example = Example(page, 1, "1 + 1   # 3\n", None, "")
    namespace = {CHECK: check_shown_value}
    with pytest.raises(AssertionError, match="shows 3"):
        exec(compile(checked_tree(example, example.code), "x", "exec"), namespace)
    exec(compile(checked_tree(example, "(0.1234, 'a')   # (0.12, 'a')\n"), "x", "exec"), namespace)
    with pytest.raises(AssertionError):
        exec(compile(checked_tree(example, "(0.1294, 'a')   # (0.12, 'a')\n"), "x", "exec"), namespace)
    with pytest.raises(ValueError, match="real value"):
        checked_tree(example, "1 + 1   # e.g. 2\n")
    with pytest.raises(ValueError, match="describe the answer"):
        checked_tree(Example(page, 1, "", "demo", ""), "vlm.caption(x).text   # 'a cat'\n")
    assert matching_output("a \nb\n", "a\nb") and not matching_output("a\nc\n", "a\nb")
