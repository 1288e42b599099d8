"""At the command line every expected error is one line and a non-zero exit; Ctrl-C and broken pipes too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_tokenizer import make_tiny_checkpoint

import vlmzoo
from vlmzoo.cli import EXIT_INTERRUPTED, main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("cli-errors") / "ckpt")


@pytest.fixture
def copy(checkpoint, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for path in checkpoint.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-image") / "photo.png"
    Image.new("RGB", (30, 20), "green").save(path)
    return path


def generate(checkpoint, image, *extra: str) -> int:
    return main(["--quiet", "generate", str(checkpoint), "--image", str(image), "--prompt", "caption en",
                 "--max-new-tokens", "3", *extra])  # fmt: skip


def one_error_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("vlmzoo: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _int_weight(directory: Path) -> None:
    tensors = load_file(directory / "model.safetensors")
    key = next(k for k in tensors if k.endswith("multi_modal_projector.linear.weight"))
    tensors[key] = tensors[key].to(torch.int32)
    save_file(tensors, directory / "model.safetensors")


CORRUPTIONS = {
    "empty tokenizer.json": (lambda d: (d / "tokenizer.json").write_text(""), ["tokenizer.json", "cannot be read"]),
    "truncated tokenizer.json": (
        lambda d: (d / "tokenizer.json").write_bytes((d / "tokenizer.json").read_bytes()[:500]),
        ["tokenizer.json", "cannot be read"],
    ),
    "config value 'three'": (
        lambda d: _edit_json(d / "config.json", lambda c: c["text_config"].update(num_hidden_layers="three")),
        ["config.json", "text_config.num_hidden_layers", "'three'"],
    ),
    "config is a list": (lambda d: (d / "config.json").write_text("[1]"), ["config.json", "not a list"]),
    "zero heads": (
        lambda d: _edit_json(d / "config.json", lambda c: c["text_config"].update(num_attention_heads=0)),
        ["text_config.num_attention_heads", "positive integer"],
    ),
    "integer weight": (_int_weight, ["model.safetensors", "stored as I32"]),
    "corrupt index": (
        lambda d: (d / "model.safetensors.index.json").write_text("{oops"),
        ["model.safetensors.index.json", "not valid JSON"],
    ),
    "truncated weights": (
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
        ["model.safetensors"],
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_damaged_checkpoint_files_are_one_line(copy, image, capsys, case):
    corrupt, fragments = CORRUPTIONS[case]
    corrupt(copy)
    assert generate(copy, image) == 2
    one_error_line(capsys, *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "mps", "gpu"])
def test_unavailable_devices_are_one_line(checkpoint, image, capsys, device):
    assert generate(checkpoint, image, "--device", device) == 2
    one_error_line(capsys, "Available: cpu")


def test_too_many_new_tokens_is_one_line(checkpoint, image, capsys):
    assert generate(checkpoint, image, "--max-new-tokens", "100000") == 2
    one_error_line(capsys, "max_new_tokens=100000 does not fit")


def test_nan_weights_fail_with_exit_1(copy, image, capsys):
    tensors = load_file(copy / "model.safetensors")
    key = next(k for k in tensors if k.endswith("embed_tokens.weight"))
    tensors[key][:] = float("nan")
    save_file(tensors, copy / "model.safetensors")
    assert generate(copy, image) == 1
    one_error_line(capsys, "non-finite logits", "NaN")


@pytest.mark.parametrize("name,fragment", [("paligemma2-tiny", "is a model variant"),
                                           ("nowhere/ckpt", "there is no local directory")])  # fmt: skip
def test_names_that_are_not_checkpoints(image, capsys, monkeypatch, tmp_path, name, fragment):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert generate(name, image) == 2
    one_error_line(capsys, fragment)


def test_sixteen_bit_image_runs(checkpoint, tmp_path, capsys):
    path = tmp_path / "gray16.png"
    Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16)).save(path)
    assert generate(checkpoint, path) == 0
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_one_line_and_exit_130(checkpoint, image, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vlmzoo.generation.engine.check_finite", interrupted)
    assert generate(checkpoint, image) == EXIT_INTERRUPTED
    assert one_error_line(capsys) == "vlmzoo: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "--quiet", "generate", str(checkpoint), "--image", str(image), "--prompt", "x"])


def test_debug_shows_the_exception(copy, image):
    (copy / "config.json").write_text("[]")
    with pytest.raises(vlmzoo.InvalidFileError):
        main(["--debug", "--quiet", "generate", str(copy), "--image", str(image), "--prompt", "x"])


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vlmzoo", *args], env=env, **kwargs)


def test_broken_pipe_exits_quietly():
    process = _cli("list", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is written, as with `| head -0`
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141
    assert err == b""
