"""Options and messages shared by the commands that run a model: one device rule for all of them."""

from __future__ import annotations

import sys

from vlmzoo.devices import AUTO, AUTO_RULE
from vlmzoo.progress import quiet

#: The ``--device`` help of every command that runs a model: one rule for all of them.
DEVICE_HELP = f"where to run: auto (the default: {AUTO_RULE}), cpu, cuda, cuda:1, mps"


def add_device_option(group) -> None:
    """``--device``, default ``auto``, as every command that runs a model takes it."""
    group.add_argument("--device", default=AUTO, help=DEVICE_HELP)


def announce_device(device, requested: str | None) -> None:
    """The one line on stderr that says where the work runs (not with ``--quiet``)."""
    if quiet():
        return
    why = f" (--device auto: {AUTO_RULE})" if requested in (None, AUTO) else ""
    print(f"vlmzoo: running on {device}{why}", file=sys.stderr, flush=True)
