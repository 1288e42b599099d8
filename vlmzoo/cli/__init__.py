"""The ``vlmzoo`` command line: one subcommand per job, each in its own module.

A command module exposes ``register(commands)``, which adds its subparser(s) to the ``argparse``
sub-parsers object and sets ``run`` (a function of the parsed arguments returning an exit code). Every
error a user can cause is printed as one line on stderr with a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from vlmzoo.progress import set_quiet

#: Modules that add subcommands, in the order ``vlmzoo --help`` lists them.
COMMAND_MODULES = (
    "vlmzoo.cli.zoo",
    "vlmzoo.cli.generate",
    "vlmzoo.cli.tasks",
    "vlmzoo.cli.train",
    "vlmzoo.cli.bench",
)

#: Exit code for errors caused by the input (argparse uses 2 for usage errors too).
EXIT_USAGE = 2
#: Exit code after Ctrl-C, as shells report a process ended by SIGINT.
EXIT_INTERRUPTED = 130


def parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to generate the CLI reference)."""
    top = argparse.ArgumentParser(prog="vlmzoo", description="PaliGemma and PaliGemma 2 model zoo.")
    top.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    top.add_argument("--quiet", action="store_true", help="no progress bars (they are also off when not a terminal)")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success)."""
    args = parser().parse_args(argv)
    if args.quiet:
        set_quiet()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("vlmzoo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, LookupError, OSError, TypeError) as exc:
        if args.debug:
            raise
        print(f"vlmzoo: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def one_line(exc: BaseException) -> str:
    """An exception's message folded onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
