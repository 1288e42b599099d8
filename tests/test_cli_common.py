"""The helpers every command shares: option checks, JSON and image output that never leaves half a file."""

from __future__ import annotations

import json

import PIL.Image
import pytest

from vlmzoo.cli import main
from vlmzoo.cli.common import check_range, print_json, save_image, write_json


def test_check_range_names_the_option_and_the_bounds():
    assert check_range("--images", 3, 1, 100) == 3
    with pytest.raises(ValueError, match=r"--images must be between 1 and 100, got 0"):
        check_range("--images", 0, 1, 100)
    with pytest.raises(ValueError, match=r"--batch-size must be at least 1, got -2"):
        check_range("--batch-size", -2, 1)


def test_a_bad_option_is_one_line_and_exit_2(tmp_path, capsys):
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    command = ["generate", "paligemma2-tiny", "--image", str(tmp_path / "a.png"), "--prompt", "caption en"]
    assert main([*command, "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["vlmzoo: error: --batch-size must be at least 1, got 0"]


def test_write_json_makes_folders_and_replaces_the_file(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"a": 1})
    write_json(target, {"b": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": "é"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_as_it_was(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"old": True})
    with pytest.raises(TypeError):
        write_json(target, {"value": object()})

    class Broken:
        def save(self, path, format=None):
            path.write_bytes(b"half an image")
            raise OSError("disk full")

    picture = tmp_path / "picture.png"
    save_image(PIL.Image.new("RGB", (4, 4), "red"), picture)
    with pytest.raises(OSError, match="disk full"):
        save_image(Broken(), picture)
    assert json.loads(target.read_text()) == {"old": True}
    assert PIL.Image.open(picture).getpixel((0, 0)) == (255, 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "picture.png"]


def test_save_image_takes_the_format_from_the_suffix(tmp_path):
    save_image(PIL.Image.new("RGB", (4, 4), "blue"), tmp_path / "a" / "b.jpg")
    assert PIL.Image.open(tmp_path / "a" / "b.jpg").format == "JPEG"
    with pytest.raises(ValueError, match="cannot tell an image format from 'b.xyz'"):
        save_image(PIL.Image.new("RGB", (4, 4)), tmp_path / "b.xyz")


def test_print_json_writes_one_line(capsys):
    print_json({"label": "chat noir", "n": [1, 2]})
    assert capsys.readouterr().out == '{"label": "chat noir", "n": [1, 2]}\n'
