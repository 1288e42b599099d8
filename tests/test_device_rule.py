"""One device rule for every entry point that loads or runs a model: ``auto`` by default, said once by the CLI."""

from __future__ import annotations

import argparse
import inspect

import vlmzoo
import vlmzoo.cli
from vlmzoo.devices import AUTO, AUTO_RULE
from vlmzoo.training.config import TrainingConfig


def _device_default(command: str):
    for action in vlmzoo.cli.parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            (device,) = [a for a in action.choices[command]._actions if "--device" in a.option_strings]
            return device.default
    raise AssertionError("no subcommands")


def test_every_entry_point_defaults_to_auto():
    for function in (vlmzoo.load, vlmzoo.from_pretrained):
        assert inspect.signature(function).parameters["device"].default == AUTO, function
    assert TrainingConfig.model_fields["device"].default == AUTO
    for command in ("generate", "eval", "demo", "bench"):
        assert _device_default(command) == AUTO, command


def test_auto_is_cuda_when_present(monkeypatch, real_auto_device):
    import vlmzoo.devices

    monkeypatch.setattr(vlmzoo.devices, "available_devices", lambda: ["cpu", "mps", "cuda:0", "cuda:1"])
    assert str(vlmzoo.devices.resolve_device(None, default=AUTO)) == "cuda:0"
    monkeypatch.setattr(vlmzoo.devices, "available_devices", lambda: ["cpu"])
    assert str(vlmzoo.devices.resolve_device(AUTO)) == "cpu"


def test_the_command_line_says_once_where_it_runs(tmp_path, capsys, monkeypatch, single_thread):
    monkeypatch.delenv("VLMZOO_QUIET", raising=False)
    assert vlmzoo.cli.main(["demo", "--images", "1", "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    expected = f"vlmzoo: running on {vlmzoo.devices.resolve_device(AUTO)} (--device auto: {AUTO_RULE})"
    assert [line for line in err.splitlines() if line.startswith("vlmzoo:")] == [expected]
    assert vlmzoo.cli.main(["--quiet", "demo", "--images", "1", "--output", str(tmp_path), "--device", "cpu"]) == 0
    assert "running on" not in capsys.readouterr().err
