"""Saving never loses a checkpoint: staged writes, and only the previous checkpoint's own files replaced."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from conftest import tiny_config

import vlmzoo
from vlmzoo.checkpoints.atomic import staged_directory
from vlmzoo.checkpoints.saving import owned_weight_files
from vlmzoo.processing import PaliGemmaProcessor


def _model(seed: int):
    return vlmzoo.build(tiny_config(), seed=seed)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _fail_after(monkeypatch, calls: int) -> None:
    """Make the ``calls + 1``-th safetensors write die half way, as a full disk would."""
    real = safetensors.torch.save_file
    count = {"n": 0}

    def failing(tensors, filename, metadata=None):
        count["n"] += 1
        if count["n"] > calls:
            with open(filename, "wb") as handle:
                handle.write(b"\x00" * 100)
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr("vlmzoo.checkpoints.saving.save_file", failing)


@pytest.mark.parametrize("old_shards,new_shards", [("5GB", "5GB"), ("20KB", "20KB"), ("5GB", "20KB"), ("20KB", "5GB")])
def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch, old_shards, new_shards):
    old = _model(0)
    old.save_pretrained(tmp_path / "ckpt", max_shard_size=old_shards)
    before = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    _fail_after(monkeypatch, calls=0 if new_shards == "5GB" else 1)
    with pytest.raises(OSError, match="No space"):
        _model(1).save_pretrained(tmp_path / "ckpt", max_shard_size=new_shards)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == before
    assert (len(before) > 2) == (old_shards == "20KB")  # sharded when asked to be
    assert _same_weights(vlmzoo.from_pretrained(tmp_path / "ckpt"), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging directory left behind


@pytest.mark.parametrize("old_shards,new_shards", [("20KB", "5GB"), ("5GB", "20KB"), ("20KB", "30KB")])
def test_save_over_checkpoint_replaces_only_its_own_files(tmp_path, old_shards, new_shards):
    target = tmp_path / "ckpt"
    _model(0).save_pretrained(target, max_shard_size=old_shards)
    safetensors.torch.save_file({"w": torch.zeros(2)}, target / "model_ema.safetensors")
    (target / "notes.txt").write_text("mine")
    new = _model(1)
    new.save_pretrained(target, max_shard_size=new_shards)
    names = {p.name for p in target.iterdir()}
    assert {"model_ema.safetensors", "notes.txt", "config.json"} <= names
    expected_weights = set(owned_weight_files(target)) & names
    assert {n for n in names if n.startswith("model") and n != "model_ema.safetensors"} == expected_weights
    assert _same_weights(vlmzoo.from_pretrained(target), new)


def test_save_over_the_checkpoint_just_loaded(tmp_path):
    _model(0).save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    loaded = vlmzoo.from_pretrained(tmp_path / "ckpt")
    loaded.save_pretrained(tmp_path / "ckpt")
    assert _same_weights(vlmzoo.from_pretrained(tmp_path / "ckpt"), loaded)
    assert not (tmp_path / "ckpt" / "model.safetensors.index.json").exists()


def test_owned_files_never_reach_outside_the_directory(tmp_path):
    (tmp_path / "outside.safetensors").write_bytes(b"keep")
    target = tmp_path / "ckpt"
    target.mkdir()
    index = {"weight_map": {"a": "../outside.safetensors", "b": "/etc/passwd.safetensors"}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    _model(0).save_pretrained(target)
    assert (tmp_path / "outside.safetensors").read_bytes() == b"keep"
    assert not (target / "model.safetensors.index.json").exists()


def test_damaged_index_owns_only_itself(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    assert owned_weight_files(tmp_path) == ["model.safetensors", "model.safetensors.index.json"]


def test_staged_directory_merges_folders_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "run"
    with staged_directory(target) as stage:
        (stage / "sub").mkdir()
        (stage / "sub" / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), staged_directory(target, replaces=["sub"]) as stage:
        (stage / "sub").mkdir()
        (stage / "sub" / "a.txt").write_text("2")
        raise RuntimeError("interrupted")
    assert (target / "sub" / "a.txt").read_text() == "1"
    with staged_directory(target) as stage:
        (stage / "sub").mkdir()
        (stage / "sub" / "b.txt").write_text("3")
    assert sorted(p.name for p in (target / "sub").iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_processor_save_keeps_old_files(tmp_path, monkeypatch):
    from tiny_tokenizer import make_tiny_tokenizer

    processor = PaliGemmaProcessor(make_tiny_tokenizer(), image_size=28, num_image_tokens=4)
    processor.save_pretrained(tmp_path / "proc")
    before = {p.name: p.read_bytes() for p in (tmp_path / "proc").iterdir()}

    def broken_dump(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("vlmzoo.paligemma.processor.json.dump", broken_dump)
    with pytest.raises(OSError):
        processor.save_pretrained(tmp_path / "proc")
    assert {p.name: p.read_bytes() for p in (tmp_path / "proc").iterdir()} == before
    monkeypatch.undo()
    assert vlmzoo.load_processor(tmp_path / "proc").num_image_tokens == 4
