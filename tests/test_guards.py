"""Checks made before work starts (lengths, devices, missing files) and while it runs (non-finite logits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_inputs

import vlmzoo
from vlmzoo.devices import available_devices, resolve_device
from vlmzoo.generation.checks import check_max_new_tokens


@pytest.fixture(scope="module")
def model():
    return vlmzoo.build(tiny_config(), seed=0)


@pytest.mark.parametrize("value,error,match", [
    (1.5, TypeError, "whole number"), (True, TypeError, "whole number"), ("8", TypeError, "whole number"),
    (0, ValueError, ">= 1"), (-3, ValueError, ">= 1"),
])  # fmt: skip
def test_max_new_tokens_type_and_bounds(model, value, error, match):
    ids, pixels = tiny_inputs(model.config, batch=1)
    with pytest.raises(error, match=match):
        model.generate(ids, pixels, max_new_tokens=value)


def test_max_new_tokens_beyond_the_positions_fails_before_any_work(model, monkeypatch):
    ids, pixels = tiny_inputs(model.config, batch=1)

    def no_work(*args, **kwargs):
        raise AssertionError("the model ran before the length was checked")

    monkeypatch.setattr(model, "prepare", no_work)
    limit = model.config.decoder.max_position_embeddings
    with pytest.raises(ValueError, match=rf"at most {limit - ids.shape[1]} new tokens"):
        model.generate(ids, pixels, max_new_tokens=100_000)
    with pytest.raises(ValueError, match="does not fit"):
        list(model.stream(ids, pixels, max_new_tokens=limit))


def test_max_new_tokens_exactly_filling_the_positions_is_allowed():
    check_max_new_tokens(8192 - 300, 300, 8192)
    check_max_new_tokens(np.int64(5), 10, 8192)


def test_nan_weights_stop_generation_with_the_cause(tmp_path):
    broken = vlmzoo.build(tiny_config(), seed=0)
    with torch.no_grad():
        broken.language_model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    ids, pixels = tiny_inputs(broken.config, batch=2)
    with pytest.raises(vlmzoo.GenerationError, match=r"non-finite logits .* at the prompt.*\[0, 1\].*weights hold NaN"):
        broken.generate(ids, pixels, max_new_tokens=4)


def test_float16_overflow_is_named_as_the_likely_cause():
    model = vlmzoo.build(tiny_config(), seed=0, dtype=torch.float16)
    with torch.no_grad():
        model.language_model.norm.weight.fill_(6e4)  # activations beyond float16's range
    ids, pixels = tiny_inputs(model.config, batch=1)
    with pytest.raises(vlmzoo.GenerationError, match="float16 overflows.*bfloat16"):
        model.generate(ids, pixels.half(), max_new_tokens=2)


def test_finite_logits_generate_as_before(model):
    ids, pixels = tiny_inputs(model.config, batch=2)
    assert model.generate(ids, pixels, max_new_tokens=3).shape == (2, 3)


# ------------------------------------------------------------------------------------------------ devices

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


@needs_no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_cuda_lists_what_is_available(name):
    with pytest.raises(vlmzoo.DeviceError, match=r"'cuda(:0)?' is not available on this machine.*Available: cpu"):
        resolve_device(name)


@pytest.mark.parametrize("name,hint", [("gpu", "'cuda'"), ("GPU", "'cuda'"), ("metal", "'mps'")])
def test_misnamed_devices_get_a_suggestion(name, hint):
    with pytest.raises(vlmzoo.DeviceError, match=f"did you mean {hint}"):
        resolve_device(name)


def test_nonsense_device_names():
    for name in ("banana", "", "cpu:x", 3.5, True):
        with pytest.raises(vlmzoo.DeviceError):
            resolve_device(name)


def test_devices_that_exist():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("meta") == torch.device("meta")
    assert resolve_device("auto") == torch.device("cpu" if available_devices() == ["cpu"] else resolve_device("auto"))
    assert "cpu" in available_devices()


@pytest.mark.skipif(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available(), reason="has MPS")
def test_mps_without_mps():
    with pytest.raises(vlmzoo.DeviceError, match="'mps' is not available"):
        resolve_device("mps")


@needs_no_cuda
def test_from_pretrained_checks_the_device_before_reading_anything(tmp_path, monkeypatch):
    vlmzoo.build(tiny_config(), seed=0).save_pretrained(tmp_path / "ckpt")

    def no_read(*args, **kwargs):
        raise AssertionError("weights were read before the device was checked")

    monkeypatch.setattr("vlmzoo.checkpoints.loading.read_config", no_read)
    with pytest.raises(vlmzoo.DeviceError, match="Available: cpu"):
        vlmzoo.from_pretrained(tmp_path / "ckpt", device="cuda")
    with pytest.raises(vlmzoo.DeviceError):
        vlmzoo.build(tiny_config(), device="cuda")


# ------------------------------------------------------------------------------- misleading checkpoint names


def test_missing_local_path_with_a_slash_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "runs").mkdir()
    expected = r"there is no directory 'runs/ckpt' \(though 'runs' exists\)"
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match=expected):
        vlmzoo.from_pretrained("runs/ckpt")
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match="there is no local directory 'elsewhere/ckpt'"):
        vlmzoo.from_pretrained("elsewhere/ckpt")


@pytest.mark.parametrize("name", ["paligemma2-tiny", "paligemma-224"])
def test_variant_name_given_as_a_checkpoint(name):
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match=rf"'{name}' is a model variant.*without weights.*build"):
        vlmzoo.from_pretrained(name)
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match="is a model variant"):
        vlmzoo.load(name)


def test_load_finds_the_missing_tokenizer_before_reading_weights(tmp_path, monkeypatch):
    vlmzoo.build(tiny_config(), seed=0).save_pretrained(tmp_path / "ckpt")

    def no_read(*args, **kwargs):
        raise AssertionError("weights were read before the tokenizer was found missing")

    monkeypatch.setattr("vlmzoo.checkpoints.loading.iter_tensors", no_read)
    with pytest.raises(FileNotFoundError, match="missing tokenizer.json"):
        vlmzoo.load(tmp_path / "ckpt")


def test_finite_check_has_no_false_alarm_when_a_row_sum_overflows():
    from vlmzoo.generation.checks import check_finite

    large = torch.full((2, 4096), 3e4, dtype=torch.float16)  # every logit finite, the row sum is not in float16
    check_finite(large, 1, torch.float16)
    huge = torch.full((1, 8), 3e38)  # a float32 row sum that overflows
    check_finite(huge, 1, torch.float32)
    large[1, 7] = float("nan")
    with pytest.raises(vlmzoo.GenerationError, match=r"row\(s\) \[1\]"):
        check_finite(large, 1, torch.float16)
