"""Find the Python examples in the docs and the README, so that tests can run them.

Every fenced ``python`` block of a page runs, in order, in one namespace per page, in a scratch
directory. An HTML comment on the line before a block changes how it runs:

- ``<!-- docs-test: demo -->``: the block needs a real hub checkpoint; it runs with every
  ``google/paligemma...`` repo id replaced by the shipped ``shapes-demo`` model.
- ``<!-- docs-test: raises ErrorName -->``: the block shows an error; it must raise ``ErrorName``
  (the class name of the exception or of one of its bases).
- ``<!-- docs-test: skip (reason) -->``: the block cannot run here (a GPU, a cluster) or is a fragment
  of a larger file; the reason is required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [*REPO_ROOT.glob("docs/**/*.md"), REPO_ROOT / "README.md", *REPO_ROOT.glob("plugins/*/README.md")]
)

_BLOCK = re.compile(
    r"(?:<!--\s*docs-test:\s*(?P<directive>[a-z]+)(?P<reason>[^>]*?)-->\s*\n)?"
    r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```",
    re.MULTILINE | re.DOTALL,
)
HUB_ID = re.compile(r"google/paligemma[\w.-]*")
DEMO_MODEL = "shapes-demo"


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    code: str
    directive: str | None
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def examples(page: Path) -> list[Example]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        indent = match.group("indent")
        code = "\n".join(line.removeprefix(indent) for line in match.group("code").splitlines())
        line = text.count("\n", 0, match.start("code")) + 1
        found.append(Example(page, line, code, match.group("directive"), (match.group("reason") or "").strip()))
    return found


def runnable_code(example: Example) -> str | None:
    """The code to run for an example, or None when it is marked to be skipped."""
    if example.directive is None:
        return example.code
    if example.directive == "demo":
        return HUB_ID.sub(DEMO_MODEL, example.code)
    if example.directive == "raises":
        if not example.reason.isidentifier():
            raise ValueError(f"{example.where}: docs-test raises needs an exception class name")
        return example.code
    if example.directive == "skip":
        if not example.reason:
            raise ValueError(f"{example.where}: a docs-test skip needs a reason")
        return None
    raise ValueError(f"{example.where}: unknown docs-test directive {example.directive!r}")
