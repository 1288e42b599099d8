"""The Python examples in the docs and the README run, page by page (see ``docs_examples``)."""

from __future__ import annotations

import random

import pytest
from docs_examples import PAGES, REPO_ROOT, examples, runnable_code
from PIL import Image

from vlmzoo.data.shapes import generate_scene

PAGES_WITH_CODE = [page for page in PAGES if examples(page)]


def _sample_images(directory) -> None:
    """The image files the examples name, drawn as shapes scenes the demo model knows."""
    for index, name in enumerate(["cat.jpg", "dog.jpg", "street.png", "image.png", "photo.jpg"]):
        generate_scene(random.Random(1000 + index), size=160 + 40 * index).image.save(directory / name)


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_page_examples_run(page, tmp_path, monkeypatch, single_thread, installed_plugins):
    """Runs with the installed plugins, as a reader's environment has them (CI installs those in plugins/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLMZOO_QUIET", "1")
    _sample_images(tmp_path)
    namespace = {"__name__": "__docs__", "Image": Image, "image_a": Image.open("cat.jpg"),
                 "image_b": Image.open("dog.jpg")}
    for example in examples(page):
        code = runnable_code(example)
        if code is None:
            continue
        compiled = compile(code, example.where, "exec")
        if example.directive == "raises":
            with pytest.raises(Exception) as caught:
                exec(compiled, namespace)
            names = {cls.__name__ for cls in type(caught.value).__mro__}
            assert example.reason in names, f"{example.where}: raised {caught.value!r}, not {example.reason}"
        else:
            exec(compiled, namespace)


def test_every_skip_gives_a_reason():
    for page in PAGES:
        for example in examples(page):
            runnable_code(example)  # raises on a skip without a reason or an unknown directive

