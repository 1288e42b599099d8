"""One switch silences every progress bar; an explicit choice by the caller wins."""

from __future__ import annotations

import os

from vlmzoo.progress import progress_bar, quiet, set_quiet


def test_quiet_switches_bars_off_and_hub_downloads_too(monkeypatch):
    monkeypatch.delenv("VLMZOO_QUIET", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert not quiet()
    assert progress_bar(total=1, enabled=True).disable is False
    set_quiet()
    try:
        assert quiet() and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        assert progress_bar(total=1).disable is True
        assert progress_bar(total=1, enabled=True).disable is False
    finally:
        set_quiet(False)
    assert not quiet() and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def test_cli_quiet_flag_sets_the_switch(monkeypatch, capsys):
    from vlmzoo.cli import main

    monkeypatch.delenv("VLMZOO_QUIET", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert main(["--quiet", "list", "paligemma-tiny"]) == 0
    assert quiet()
    set_quiet(False)
