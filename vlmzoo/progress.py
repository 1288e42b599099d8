"""Progress bars for long work (loading, downloads, training, benchmarks), one switch for all of them.

Bars show on a terminal and stay silent otherwise (logs, pipes, CI). ``VLMZOO_QUIET=1`` (what
``vlmzoo --quiet`` sets) silences them everywhere, Hugging Face hub downloads included; an explicit
``enabled=True/False`` from the caller wins over both.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm

QUIET_ENV = "VLMZOO_QUIET"


def quiet() -> bool:
    """Whether progress output is switched off for this process."""
    return os.environ.get(QUIET_ENV, "").lower() in {"1", "true", "yes", "on"}


def set_quiet(value: bool = True) -> None:
    """Switch progress bars off (or back on) for vlmzoo and for huggingface_hub downloads."""
    if value:
        os.environ[QUIET_ENV] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)


def progress_bar(iterable: Any = None, *, enabled: bool | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar: ``enabled=None`` means on a terminal and not quiet."""
    disable = (True if quiet() else None) if enabled is None else not enabled
    return tqdm(iterable, disable=disable, **kwargs)
