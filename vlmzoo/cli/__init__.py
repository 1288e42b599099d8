"""The ``vlmzoo`` command line: one subcommand per job, each in its own module.

A command module exposes ``register(commands)``, which adds its subparser(s) to the ``argparse``
sub-parsers object and sets ``run`` (a function of the parsed arguments returning an exit code). Every
error a user can cause is printed as one line on stderr with a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from vlmzoo.errors import GenerationError, VlmzooError
from vlmzoo.plugins import PluginError
from vlmzoo.progress import set_quiet

#: Modules that add subcommands, in the order ``vlmzoo --help`` lists them.
COMMAND_MODULES = (
    "vlmzoo.cli.zoo",
    "vlmzoo.cli.generate",
    "vlmzoo.cli.demo",
    "vlmzoo.cli.tasks",
    "vlmzoo.cli.train",
    "vlmzoo.cli.data",
    "vlmzoo.cli.bench",
    "vlmzoo.siglip.cli",
)

#: Exit code when the work itself failed (non-finite logits, out of memory).
EXIT_FAILURE = 1
#: Exit code for errors caused by the input (argparse uses 2 for usage errors too).
EXIT_USAGE = 2
#: Exit code after Ctrl-C, as shells report a process ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Exit code when the reader of the output went away (``vlmzoo list | head -1``), as for SIGPIPE.
EXIT_BROKEN_PIPE = 141

#: Errors a user can cause with their input: one line, exit 2.
INPUT_ERRORS = (ValueError, LookupError, OSError, TypeError)


def parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to generate the CLI reference)."""
    top = argparse.ArgumentParser(prog="vlmzoo", description="PaliGemma and PaliGemma 2 model zoo.")
    top.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    top.add_argument("--quiet", action="store_true",
                     help="no progress bars (also off when not a terminal) and no device line")  # fmt: skip
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success).

    Expected errors (every `vlmzoo.VlmzooError`, bad values, missing files) print one line on stderr;
    Ctrl-C prints one line and exits 130; a closed output pipe exits quietly. ``--debug`` re-raises
    instead, with the traceback.
    """
    debug = argv is not None and "--debug" in argv or argv is None and "--debug" in sys.argv[1:]
    try:
        args = parser().parse_args(argv)
        debug = args.debug
        if args.quiet:
            set_quiet()
        return args.run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        _flush_stdout()
        print("vlmzoo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if debug:
            raise
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (VlmzooError, MemoryError, *INPUT_ERRORS) as exc:
        if debug:
            raise
        _flush_stdout()
        out_of_memory = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
        label = "out of memory" if out_of_memory else "error"
        print(f"vlmzoo: {label}: {one_line(exc)}", file=sys.stderr)
        failed_at_work = out_of_memory or isinstance(exc, (GenerationError, PluginError))
        return EXIT_FAILURE if failed_at_work else EXIT_USAGE


def _flush_stdout() -> None:
    """Write out streamed text before the error line, so the two do not interleave."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush cannot fail."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def one_line(exc: BaseException) -> str:
    """An exception's message folded onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
