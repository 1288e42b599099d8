"""The built site stays readable: no code line clipped by its code box, no raw doctest marker."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys

import pytest
from docs_examples import REPO_ROOT

spec = importlib.util.spec_from_file_location("docs_pages", REPO_ROOT / "scripts" / "docs_pages.py")
docs_pages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_pages)

_PRE = re.compile(r"<pre[^>]*>(.*?)</pre>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def code_lines(page_html: str) -> list[str]:
    """The lines of every code block of a built page, as the reader sees them."""
    return [line for block in _PRE.findall(page_html) for line in html.unescape(_TAG.sub("", block)).splitlines()]


def clipped(page_html: str, width: int = docs_pages.CODE_WIDTH) -> list[str]:
    return [line for line in code_lines(page_html) if len(line) > width]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return directory


def test_no_code_line_is_wider_than_the_code_box(site):
    """85 characters: what the theme, widened by docs/stylesheets/extra.css, shows without scrolling in a
    1024- to 1280-pixel-wide window (measured in Chromium); wider windows show more."""
    found = {
        str(page.relative_to(site)): lines for page in sorted(site.rglob("*.html"))
        if (lines := clipped(page.read_text(encoding="utf-8")))
    }  # fmt: skip
    report = "\n".join(
        f"{page}:\n" + "\n".join(f"  {len(line)}: {line}" for line in lines) for page, lines in found.items()
    )
    assert not found, f"code lines over {docs_pages.CODE_WIDTH} characters are clipped; wrap or shorten:\n{report}"


def test_no_raw_doctest_marker_is_shown(site):
    pages = sorted(site.rglob("*.html"))
    shown = [str(page.relative_to(site)) for page in pages if "doctest" in page.read_text(encoding="utf-8")]
    assert not shown, f"'# doctest' markers render as text on: {shown}"


def test_the_check_sees_a_clipped_line():
    long = "x" * (docs_pages.CODE_WIDTH + 1)
    page = f'<pre><code><span class="n">{long[:10]}</span>{long[10:]}\nshort &amp; fine</code></pre>'
    assert clipped(page) == [long]
    assert code_lines(page)[1] == "short & fine"


def test_every_written_page_links_to_its_source_shipped_with_the_site(site):
    for source in (REPO_ROOT / "docs").rglob("*.md"):
        relative = source.relative_to(REPO_ROOT / "docs")
        page = site / relative.with_suffix("") / "index.html" if relative.name != "index.md" else (
            site / relative.parent / "index.html"
        )  # fmt: skip
        link = re.search(r'href="([^"]*_source/[^"]*)"', page.read_text(encoding="utf-8"))
        assert link, f"{page} has no link to its source"
        shipped = (page.parent / link.group(1)).resolve()
        assert shipped.read_text(encoding="utf-8") == source.read_text(encoding="utf-8"), relative
