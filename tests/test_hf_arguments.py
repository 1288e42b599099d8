"""The arguments transformers users type work with transformers' meaning, or say what to use instead."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tiny_config, tiny_inputs
from tiny_tokenizer import make_tiny_tokenizer

import vlmzoo
from vlmzoo.generation.samplers import Chain, Temperature, TopK, TopP


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf-args") / "ckpt"
    vlmzoo.build(tiny_config(), seed=0, dtype=torch.bfloat16).save_pretrained(path)
    return path


def test_torch_dtype_is_an_alias_of_dtype(checkpoint):
    assert vlmzoo.from_pretrained(checkpoint, torch_dtype=torch.float32).dtype == torch.float32
    assert vlmzoo.from_pretrained(checkpoint, torch_dtype="float16").dtype == torch.float16
    with pytest.raises(TypeError, match="pass one"):
        vlmzoo.from_pretrained(checkpoint, dtype="float32", torch_dtype="float16")


@pytest.mark.parametrize("argument", ["dtype", "torch_dtype"])
def test_dtype_auto_keeps_the_checkpoints_own(checkpoint, argument):
    assert vlmzoo.from_pretrained(checkpoint, **{argument: "auto"}).dtype == torch.bfloat16


@pytest.mark.parametrize("device_map", ["cpu", "auto", torch.device("cpu"), {"": "cpu"}, {"a": "cpu", "b": "cpu"}])
def test_device_map_for_one_device(checkpoint, device_map):
    model = vlmzoo.from_pretrained(checkpoint, device_map=device_map)
    expected = "cpu" if device_map != "auto" else vlmzoo.devices.resolve_device("auto").type
    assert model.device.type == expected


@pytest.mark.parametrize("device_map,match", [
    ({"vision_tower": "cpu", "language_model": "cuda:0"}, "splits the model"),
    ("balanced", "several devices"),
])  # fmt: skip
def test_device_map_that_splits_the_model(checkpoint, device_map, match):
    with pytest.raises(vlmzoo.UnsupportedArgumentError, match=match):
        vlmzoo.from_pretrained(checkpoint, device_map=device_map)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_device_map_cuda_without_cuda(checkpoint):
    with pytest.raises(vlmzoo.DeviceError, match="Available: cpu"):
        vlmzoo.from_pretrained(checkpoint, device_map="cuda")


def test_attn_implementation_picks_the_attention_kernel(checkpoint):
    eager = vlmzoo.from_pretrained(checkpoint, attn_implementation="eager", dtype="float32")
    sdpa = vlmzoo.from_pretrained(checkpoint, attn_implementation="sdpa", dtype="float32")
    assert eager.config.decoder.attention == eager.config.vision.attention == "eager"
    assert sdpa.config.decoder.attention == "sdpa"
    ids, pixels = tiny_inputs(eager.config)
    torch.testing.assert_close(eager(ids, pixels).logits, sdpa(ids, pixels).logits, atol=1e-5, rtol=1e-5)


def test_unavailable_attn_implementation(checkpoint):
    with pytest.raises(vlmzoo.UnsupportedArgumentError, match="flash kernels.*'eager'.*'sdpa'"):
        vlmzoo.from_pretrained(checkpoint, attn_implementation="flash_attention_2")


@pytest.mark.parametrize("name,instead", [("load_in_8bit", "quantize='int8'"), ("load_in_4bit", "quantize='int4'"),
                                          ("quantization_config", "quantize=")])  # fmt: skip
def test_bitsandbytes_options_say_what_to_use_instead(checkpoint, name, instead):
    with pytest.raises(vlmzoo.UnsupportedArgumentError, match=instead):
        vlmzoo.from_pretrained(checkpoint, **{name: True})
    vlmzoo.from_pretrained(checkpoint, **{name: False if name != "quantization_config" else None})


def test_options_that_change_nothing_and_unknown_ones(checkpoint):
    vlmzoo.from_pretrained(checkpoint, low_cpu_mem_usage=True, use_safetensors=True, trust_remote_code=True)
    with pytest.raises(vlmzoo.UnsupportedArgumentError, match="never loads pickled"):
        vlmzoo.from_pretrained(checkpoint, use_safetensors=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        vlmzoo.from_pretrained(checkpoint, colour="blue")


def test_local_files_only_and_cache_dir_reach_the_hub_client(checkpoint, monkeypatch, tmp_path):
    seen = []

    def fake_snapshot_download(repo_id, **kwargs):
        seen.append(kwargs)
        return str(checkpoint)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    vlmzoo.from_pretrained("owner/model", local_files_only=True, cache_dir=tmp_path / "hub")
    assert seen[-1]["local_files_only"] is True and seen[-1]["cache_dir"] == str(tmp_path / "hub")
    vlmzoo.from_pretrained("owner/model")
    assert "local_files_only" not in seen[-1] and "cache_dir" not in seen[-1]


def test_local_files_only_with_an_empty_cache(tmp_path):
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match="local_files_only=True"):
        vlmzoo.from_pretrained("owner/not-cached", local_files_only=True, cache_dir=tmp_path)


# -------------------------------------------------------------------------------------------- processor


@pytest.fixture(scope="module")
def processor():
    return vlmzoo.PaliGemmaProcessor(make_tiny_tokenizer(), image_size=28, num_image_tokens=4)


def test_processor_text_and_suffix_aliases(processor):
    image = torch.zeros(3, 10, 10, dtype=torch.uint8)
    ours = processor(images=[image], prompts=["caption en"], suffixes=["a cat"])
    theirs = processor(images=[image], text=["caption en"], suffix=["a cat"])
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(TypeError, match="both prompts= and text="):
        processor(images=[image], prompts=["a"], text=["b"])
    with pytest.raises(TypeError, match="needs prompts="):
        processor(images=[image])


# ------------------------------------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def model():
    return vlmzoo.build(tiny_config(), seed=0)


def test_do_sample_false_is_greedy(model):
    ids, pixels = tiny_inputs(model.config)
    greedy = model.generate(ids, pixels, max_new_tokens=4)
    assert torch.equal(model.generate(ids, pixels, max_new_tokens=4, do_sample=False, num_beams=1), greedy)
    with pytest.warns(UserWarning, match="ignored"):
        assert torch.equal(model.generate(ids, pixels, max_new_tokens=4, do_sample=False, temperature=0.5), greedy)


@pytest.mark.parametrize("options,spec,expected", [
    ({}, "temperature+top_k", {"temperature": 1.0, "top_k": 50}),
    ({"temperature": 0.7, "top_p": 0.9}, "temperature+top_k+top_p", {"temperature": 0.7, "top_k": 50, "top_p": 0.9}),
    ({"top_k": 0, "top_p": 0.8}, "temperature+top_p", {"temperature": 1.0, "top_p": 0.8}),
    ({"top_k": 5, "repetition_penalty": 1.2}, "repetition_penalty+temperature+top_k",
     {"temperature": 1.0, "top_k": 5, "repetition_penalty": 1.2}),
])  # fmt: skip
def test_do_sample_true_means_what_it_means_in_transformers(model, options, spec, expected):
    ids, pixels = tiny_inputs(model.config)
    ours = model.generate(ids, pixels, max_new_tokens=5, do_sample=True, seed=3, **options)
    named = model.generate(ids, pixels, max_new_tokens=5, sampler=spec, seed=3, **expected)
    assert torch.equal(ours, named)


def test_hf_sampler_chain_order():
    from vlmzoo.generation.checks import hf_sampler_arguments
    from vlmzoo.generation.samplers import make_sampler

    spec, options = hf_sampler_arguments("greedy", {"do_sample": True, "temperature": 0.5, "top_p": 0.9})
    sampler = make_sampler(spec, **options)
    assert isinstance(sampler, Chain)
    assert [type(s) for s in sampler.samplers] == [Temperature, TopK, TopP]


def test_unsupported_generate_arguments(model):
    ids, pixels = tiny_inputs(model.config)
    with pytest.raises(vlmzoo.UnsupportedArgumentError, match="beam search is not supported.*do_sample=True"):
        model.generate(ids, pixels, num_beams=4)
    with pytest.raises(TypeError, match="pass one of them"):
        model.generate(ids, pixels, do_sample=True, sampler="top_p")
    with pytest.raises(ValueError, match="temperature=0 with do_sample=True"):
        model.generate(ids, pixels, do_sample=True, temperature=0)


def test_without_do_sample_the_sampler_rules_stay(model):
    ids, pixels = tiny_inputs(model.config)
    with pytest.raises(TypeError, match="not taken by sampler 'greedy'"):
        model.generate(ids, pixels, top_p=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(ids, pixels, sampler="temperature", temperature=0.7, seed=1, max_new_tokens=2)
