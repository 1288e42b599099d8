"""Find the examples in the docs and the README, so that tests can run them and check what they show.

Every fenced ``python`` block of a page runs, in order, in one namespace per page, in a scratch
directory. What an example shows is checked, not only that it runs:

- an expression statement whose comment is a Python literal must evaluate to it
  (``model.config.decoder.num_layers   # 26``); floats match to the digits shown. In a runnable example
  a comment starting ``e.g.`` is refused: the example is deterministic, so it shows the real value;
- a fenced block after an example, marked ``<!-- docs-test: output -->``, must equal what the example
  printed (stdout), line by line, trailing spaces ignored.

An HTML comment on the line before a block changes how it runs:

- ``<!-- docs-test: demo -->``: the block needs a real hub checkpoint; it runs with every
  ``google/paligemma...`` repo id replaced by the shipped ``shapes-demo`` model. Its comments describe a
  real model's answers, so they are not checked (and must not be bare literals).
- ``<!-- docs-test: raises ErrorName -->``: the block shows an error; it must raise ``ErrorName``
  (the class name of the exception or of one of its bases).
- ``<!-- docs-test: skip (reason) -->``: the block cannot run here (a GPU, a cluster) or is a fragment
  of a larger file; the reason is required.
- ``<!-- docs-test: file PATH -->``: the block (any language) is a file the reader saves as PATH; it is
  written to the scratch directory, byte for byte, before the page's examples run.
- ``<!-- docs-test: run -->`` before a ``bash`` block: each command runs, in order with the page's
  Python examples. ``vlmzoo ...`` runs the command line in this process; ``pip install DIR`` installs
  a directory of the page into a scratch folder that is put on the import path, as a reader's
  environment would have it. An output block after it must equal the commands' stdout.
"""

from __future__ import annotations

import ast
import io
import re
import shlex
import tokenize
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*REPO_ROOT.glob("docs/**/*.md"), REPO_ROOT / "README.md", *REPO_ROOT.glob("plugins/*/README.md")])

_FENCE = re.compile(
    r"(?:<!--\s*docs-test:\s*(?P<directive>[a-z]+)(?P<reason>[^>]*?)-->\s*\n)?"
    r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```",
    re.MULTILINE | re.DOTALL,
)
HUB_ID = re.compile(r"google/paligemma[\w.-]*")
DEMO_MODEL = "shapes-demo"
SHELLS = ("bash", "sh", "console", "shell")


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    code: str
    directive: str | None
    reason: str
    language: str = "python"
    output: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


@dataclass(frozen=True)
class PageFile:
    """A file a page shows in full, to be saved under ``path``."""

    path: str
    text: str
    where: str


def _fences(page: Path) -> list[Example]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        indent = match.group("indent")
        code = "\n".join(line.removeprefix(indent) for line in match.group("code").splitlines())
        line = text.count("\n", 0, match.start("code")) + 1
        reason = (match.group("reason") or "").strip()
        found.append(Example(page, line, code, match.group("directive"), reason, match.group("language") or "text"))
    return found


def examples(page: Path) -> list[Example]:
    """The page's runnable blocks in order: Python blocks (not files) and ``run`` shell blocks, each with
    the output block that follows it, if any."""
    found: list[Example] = []
    for fence in _fences(page):
        if fence.directive == "output":
            if not found or found[-1].output is not None:
                raise ValueError(f"{fence.where}: a docs-test output block must follow an example")
            found[-1] = Example(**{**found[-1].__dict__, "output": fence.code})
        elif fence.directive == "file":
            continue
        elif fence.language == "python" or (fence.language in SHELLS and fence.directive == "run"):
            found.append(fence)
    return found


def page_files(page: Path) -> list[PageFile]:
    return [PageFile(f.reason, f.code + "\n", f.where) for f in _fences(page) if f.directive == "file"]


def runnable_code(example: Example) -> str | None:
    """The code to run for an example, or None when it is marked to be skipped."""
    if example.directive in (None, "run"):
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


# --- what a Python example shows -------------------------------------------------------------------

CHECK = "__docs_check__"


def _comments(code: str) -> dict[int, str]:
    """Line number → the text of the comment that ends that line."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.removeprefix("#").strip()
    return found


def _literal(comment: str):
    """The Python literal a comment shows, or raises ValueError/SyntaxError when it is prose."""
    return ast.literal_eval(comment)


def checked_tree(example: Example, code: str) -> ast.Module:
    """The example's code with every top-level expression whose comment is a literal wrapped in a check.

    Raises ValueError for comments that promise an output without showing it (``# e.g. ...``) in a
    runnable example, and for bare literals in a ``demo`` example (a real model would answer otherwise).
    """
    tree = ast.parse(code, filename=example.where)
    comments = _comments(code)
    for index, statement in enumerate(tree.body):
        if not isinstance(statement, ast.Expr):
            continue
        comment = comments.get(statement.end_lineno)
        if comment is None:
            continue
        where = f"{example.page.relative_to(REPO_ROOT)}:{example.line + statement.end_lineno - 1}"
        if example.directive == "demo":
            try:
                _literal(comment)
            except (ValueError, SyntaxError):
                continue
            raise ValueError(
                f"{where}: a demo example runs on {DEMO_MODEL}, not the real model, so its comment "
                f"{comment!r} cannot be checked; describe the answer in words instead"
            )
        if comment.lower().startswith("e.g."):
            raise ValueError(f"{where}: the example is deterministic; show its real value instead of {comment!r}")
        try:
            _literal(comment)
        except (ValueError, SyntaxError):
            continue
        call = ast.Call(
            ast.Name(CHECK, ast.Load()),
            [statement.value, ast.Constant(comment), ast.Constant(where)],
            [],
        )
        tree.body[index] = ast.copy_location(ast.Expr(call), statement)
    return ast.fix_missing_locations(tree)


def _same(value, expected) -> bool:
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return value == expected and type(value) is type(expected)
    if isinstance(expected, float):
        decimals = len(repr(expected).partition(".")[2]) if "e" not in repr(expected) else 12
        try:
            return abs(float(value) - expected) <= 0.5 * 10.0**-decimals + 1e-12
        except (TypeError, ValueError):
            return False
    if isinstance(expected, int):
        return not isinstance(value, bool) and value == expected
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(value, (list, tuple))
            and type(value) is type(expected)
            and len(value) == len(expected)
            and all(_same(v, e) for v, e in zip(value, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(value, dict)
            and list(value) == list(expected)
            and all(_same(value[k], e) for k, e in expected.items())
        )
    return value == expected


def check_shown_value(value, comment: str, where: str) -> None:
    """What an example's comment shows must be what its expression gives."""
    expected = _literal(comment)
    if not _same(value, expected):
        raise AssertionError(f"{where}: the page shows {comment}, but the code gives {value!r}")


def matching_output(printed: str, shown: str) -> bool:
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]

    return lines(printed) == lines(shown)


# --- shell examples ---------------------------------------------------------------------------------


def shell_commands(example: Example) -> list[tuple[dict[str, str], list[str]]]:
    """Each command of a ``run`` block as (environment assignments, argv); lines joined at ``\\``."""
    commands = []
    for line in example.code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        env = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if not words or words[0] not in ("vlmzoo", "pip"):
            raise ValueError(f"{example.where}: a docs-test run block may run vlmzoo and pip install only: {line!r}")
        commands.append((env, words))
    return commands
