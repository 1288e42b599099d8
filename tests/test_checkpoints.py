"""Checkpoint loading and saving, checked against transformers (the test-only oracle) on the same files.

Every parity test saves one tiny random checkpoint, loads it with both libraries, and compares logits at
the real (non-padding) positions of a left-padded batch, with and without suffixes.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers  # noqa: E402, F401  (the reference oracle must be importable: a failure, never a skip)
from hf_checkpoints import (
    load_hf_model,
    make_hf_model,
    make_inputs,
    max_abs_diff,
    perturb_,
    save_hf_checkpoint,
)
from safetensors import safe_open
from safetensors.torch import save_file

import vlmzoo
from vlmzoo.checkpoints import ConfigConversionError, config_from_hf, config_to_hf, hf_differences

ATOL = 1e-4

#: name -> make_hf_model kwargs. Gemma 2 gets a window shorter than the sequences and soft-caps low
#: enough to change the result (50 / 30 would barely touch a tiny model's scores and logits).
CASES = {
    "gemma-mha": {"family": "gemma", "num_heads": 4, "num_kv_heads": 4},
    "gemma-mqa": {"family": "gemma", "num_heads": 4, "num_kv_heads": 1},
    "gemma2-gqa": {
        "family": "gemma2", "num_layers": 3, "num_heads": 4, "num_kv_heads": 2, "sliding_window": 5,
        "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
    },
}  # fmt: skip

#: The PaliGemma variants (the SigLIP family has its own config conversion, tested in test_siglip).
PALIGEMMA_MODELS = [
    name for name in vlmzoo.list_models() if isinstance(vlmzoo.get_config(name), vlmzoo.PaliGemmaConfig)
]


@pytest.fixture(scope="module")
def hf_models():
    return {name: make_hf_model(**kwargs, seed=i) for i, (name, kwargs) in enumerate(CASES.items())}


def batches(config) -> list[dict[str, torch.Tensor]]:
    """Left-padded batches with suffixes, and without."""
    return [make_inputs(config, batch=3, seed=1), make_inputs(config, batch=3, suffix=False, seed=2)]


@torch.no_grad()
def assert_same_logits(ours, theirs, inputs_list, atol: float = ATOL) -> None:
    for inputs in inputs_list:
        assert inputs["attention_mask"].min() == 0, "the batch should be left-padded"
        a, b = ours(**inputs).logits, theirs(**inputs).logits
        assert a.shape == b.shape
        diff = max_abs_diff(a, b, inputs["attention_mask"])
        assert diff < atol, f"max |logits difference| {diff:.3g} at real positions"


# --------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("layout", ["hub", "transformers", "new"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(hf_models, tmp_path, case, layout):
    path = save_hf_checkpoint(hf_models[case], tmp_path / "ckpt", layout=layout)
    reference = load_hf_model(path)
    model = vlmzoo.from_pretrained(path, progress=False)
    assert isinstance(model, vlmzoo.PaliGemma)
    assert model.dtype == torch.float32 and not model.training
    assert_same_logits(model, reference, batches(reference.config))


def test_without_token_type_ids_the_input_is_prefix(hf_models, tmp_path):
    """vlmzoo reads input without token_type_ids as prefix (as the checkpoints read a prompt); transformers
    5 as causal, which token_type_ids of ones reproduce. Labels without token_type_ids are refused."""
    path = save_hf_checkpoint(hf_models["gemma2-gqa"], tmp_path / "ckpt")
    model, reference = vlmzoo.from_pretrained(path, progress=False), load_hf_model(path)
    inputs = make_inputs(model.config, batch=3, suffix=False, seed=2)
    del inputs["token_type_ids"]
    mask = inputs["attention_mask"]
    prefix, causal = torch.zeros_like(mask), torch.ones_like(mask)
    with torch.no_grad():
        theirs = reference(**inputs).logits
        ours = model(**inputs).logits
        assert max_abs_diff(ours, model(**inputs, token_type_ids=prefix).logits, mask) == 0
        assert max_abs_diff(model(**inputs, token_type_ids=causal).logits, theirs, mask) < ATOL
        assert max_abs_diff(ours, theirs, mask) > 0.1
        with pytest.raises(ValueError, match="labels need token_type_ids"):
            model(**inputs, labels=inputs["input_ids"])
        assert model(**inputs, token_type_ids=causal, labels=inputs["input_ids"]).loss is not None


def test_sliding_window_is_exercised(hf_models, tmp_path):
    """The Gemma 2 window is shorter than the batch, so a model without one gives other logits."""
    path = save_hf_checkpoint(hf_models["gemma2-gqa"], tmp_path / "ckpt")
    model = vlmzoo.from_pretrained(path, progress=False)
    assert model.config.decoder.sliding_window == 5
    assert [model.config.decoder.window_of(i) for i in range(3)] == [5, None, 5]
    inputs = make_inputs(model.config, batch=3, seed=1)
    assert inputs["input_ids"].shape[1] > 2 * model.config.decoder.sliding_window
    unwindowed = vlmzoo.build(model.config.with_overrides({"decoder": {"sliding_window": None}}), device="meta")
    unwindowed.load_state_dict(model.state_dict(), assign=True)
    with torch.no_grad():
        diff = max_abs_diff(model(**inputs).logits, unwindowed.eval()(**inputs).logits, inputs["attention_mask"])
    assert diff > 1e-3


@pytest.mark.parametrize("layout", ["hub", "new"])
@pytest.mark.parametrize("case", ["gemma-mqa", "gemma2-gqa"])
def test_sharded_checkpoint(hf_models, tmp_path, case, layout):
    path = save_hf_checkpoint(hf_models[case], tmp_path / "ckpt", layout=layout, shards=3)
    assert len(list(path.glob("model-*-of-00003.safetensors"))) == 3
    assert not (path / "model.safetensors").exists()
    model = vlmzoo.from_pretrained(path, progress=False)
    assert_same_logits(model, load_hf_model(path), batches(model.config))


def test_new_layout_with_vision_model_prefix(hf_models, tmp_path):
    """``model.vision_tower.vision_model.*``, ``model.language_model.*`` and an explicit ``lm_head.weight``."""
    path = save_hf_checkpoint(hf_models["gemma2-gqa"], tmp_path / "ckpt", layout="new", new_vision_model=True)
    with safe_open(str(path / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert "lm_head.weight" in keys
    assert any(k.startswith("model.vision_tower.vision_model.encoder.layers.") for k in keys)
    assert any(k.startswith("model.language_model.layers.") for k in keys)
    model = vlmzoo.from_pretrained(path, progress=False)
    assert_same_logits(model, load_hf_model(path), batches(model.config))


def test_untied_lm_head(tmp_path):
    """A checkpoint whose output head is its own tensor (tie_word_embeddings false)."""
    hf = make_hf_model("gemma", tie_word_embeddings=False, seed=7)
    assert not torch.equal(hf.lm_head.weight, hf.model.language_model.embed_tokens.weight)
    path = save_hf_checkpoint(hf, tmp_path / "ckpt", layout="new")
    model = vlmzoo.from_pretrained(path, progress=False)
    assert model.config.decoder.tie_word_embeddings is False
    torch.testing.assert_close(model.language_model.lm_head.weight, hf.lm_head.weight, rtol=0, atol=0)
    assert_same_logits(model, load_hf_model(path), batches(model.config))


def test_query_pre_attn_scalar_other_than_head_dim(tmp_path):
    """PaliGemma 2 28B scales scores by 144^-0.5 with head_dim 128; here 24 with head_dim 16."""
    hf = make_hf_model("gemma2", num_kv_heads=2, sliding_window=5, query_pre_attn_scalar=24, seed=9)
    path = save_hf_checkpoint(hf, tmp_path / "ckpt")
    model = vlmzoo.from_pretrained(path, progress=False)
    assert model.config.decoder.query_pre_attn_scalar == 24 and model.config.decoder.head_dim == 16
    assert_same_logits(model, load_hf_model(path), batches(model.config))
    by_head_dim = vlmzoo.build(model.config.with_overrides({"decoder": {"query_pre_attn_scalar": None}}), device="meta")
    by_head_dim.load_state_dict(model.state_dict(), assign=True)
    inputs = make_inputs(model.config, batch=3, seed=1)
    with torch.no_grad():
        diff = max_abs_diff(model(**inputs).logits, by_head_dim.eval()(**inputs).logits, inputs["attention_mask"])
    assert diff > 1e-3  # the scalar matters at this size, so ignoring it would fail the parity above


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_sparse_hub_config(tmp_path, family):
    """config.json as sparse as the hub's: defaults must be transformers' (head_dim 256, image_size 224, ...)."""
    hf = make_hf_model(family, head_dim=256, image_size=224, patch=56, sliding_window=6, seed=3)
    path = save_hf_checkpoint(hf, tmp_path / "ckpt", layout="hub", sparse_config=True, shards=2)
    data = json.loads((path / "config.json").read_text())
    for key in ("head_dim", "rope_theta", "rope_parameters", "layer_types", "rms_norm_eps"):
        assert key not in data["text_config"]
    assert "image_size" not in data["vision_config"]
    if family == "gemma2":
        assert data["hidden_size"] == 2048  # stale, as in the real PaliGemma 2 files
    model = vlmzoo.from_pretrained(path, progress=False)
    decoder = model.config.decoder
    assert (decoder.hidden_size, decoder.head_dim, decoder.rope_theta) == (64, 256, 10000.0)
    assert model.config.vision.image_size == 224 and model.config.num_image_tokens == 16
    if family == "gemma2":
        assert decoder.sliding_window == 6 and decoder.query_pre_attn_scalar == 256
    assert_same_logits(model, load_hf_model(path), batches(model.config))


# ------------------------------------------------------------------------------------------ saving


@pytest.mark.parametrize("max_shard_size", ["5GB", "60KB"])
@pytest.mark.parametrize("name", ["paligemma-tiny", "paligemma2-tiny"])
def test_save_pretrained_round_trip(tmp_path, name, max_shard_size):
    model = perturb_(vlmzoo.build(name, seed=0), seed=1)
    model.save_pretrained(tmp_path, max_shard_size=max_shard_size)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    if max_shard_size == "5GB":
        assert (tmp_path / "model.safetensors").is_file() and not shards
    else:
        assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
        for shard in shards:
            with safe_open(str(shard), "pt") as handle:
                sizes = [handle.get_slice(k).get_shape() for k in handle.keys()]  # noqa: SIM118
            nbytes = sum(4 * torch.Size(shape).numel() for shape in sizes)
            assert len(sizes) == 1 or nbytes <= 60_000  # only a tensor bigger than the limit gets a shard alone
    assert_same_logits(model, load_hf_model(tmp_path), batches(model.config))
    again = vlmzoo.from_pretrained(tmp_path, progress=False)
    assert again.config == model.config.model_copy(update={"name": os.fspath(tmp_path)})
    expected = model.state_dict()
    loaded = again.state_dict()
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key
    assert_same_logits(again, model, batches(model.config), atol=1e-6)


def test_save_pretrained_untied_head(tmp_path):
    model = perturb_(vlmzoo.build("paligemma-tiny", seed=0, decoder__tie_word_embeddings=False), seed=2)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        assert "lm_head.weight" in set(handle.keys())  # noqa: SIM118
    assert_same_logits(model, load_hf_model(tmp_path), batches(model.config))
    again = vlmzoo.from_pretrained(tmp_path, progress=False)
    assert torch.equal(again.language_model.lm_head.weight, model.language_model.lm_head.weight)


def test_save_pretrained_hub_layout(tmp_path):
    model = vlmzoo.build("paligemma-tiny", seed=0)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert "vision_tower.vision_model.encoder.layers.0.self_attn.out_proj.weight" in keys
    assert "language_model.model.embed_tokens.weight" in keys
    assert "multi_modal_projector.linear.bias" in keys
    assert not any(k.startswith("lm_head") or ".lm_head" in k for k in keys)  # tied


# ------------------------------------------------------------------------------------------- dtypes


def test_bfloat16_load_is_close_to_float32(hf_models, tmp_path):
    path = save_hf_checkpoint(hf_models["gemma2-gqa"], tmp_path / "ckpt")
    full = vlmzoo.from_pretrained(path, progress=False)
    half = vlmzoo.from_pretrained(path, dtype=torch.bfloat16, progress=False)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert half.dtype == torch.bfloat16
    inputs = make_inputs(full.config, batch=3, seed=1)
    with torch.no_grad():
        reference, approx = full(**inputs).logits, half(**inputs).logits
    assert approx.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa (relative step 2^-8 ~ 0.4%); a few layers of it stay within a few
    # percent of the logits' scale.
    scale = float(reference[inputs["attention_mask"].bool()].abs().max())
    assert max_abs_diff(approx, reference, inputs["attention_mask"]) < 0.05 * scale


@pytest.mark.parametrize("in_config", [True, False])
def test_dtype_none_keeps_checkpoint_dtype(hf_models, tmp_path, in_config):
    f32 = save_hf_checkpoint(hf_models["gemma-mqa"], tmp_path / "f32")
    bf16 = save_hf_checkpoint(hf_models["gemma-mqa"], tmp_path / "bf16", bf16=True)
    if not in_config:  # then the safetensors header decides
        for path in (f32, bf16):
            data = json.loads((path / "config.json").read_text())
            for section in (data, data["text_config"], data["vision_config"]):
                section.pop("dtype", None)
                section.pop("torch_dtype", None)
            (path / "config.json").write_text(json.dumps(data))
    assert vlmzoo.from_pretrained(f32, progress=False).dtype == torch.float32
    model = vlmzoo.from_pretrained(bf16, progress=False)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert vlmzoo.from_pretrained(bf16, dtype="float32", progress=False).dtype == torch.float32


def test_bfloat16_checkpoint_upcast_matches_transformers(hf_models, tmp_path):
    """Both libraries upcast the same bfloat16 weights exactly, so float32 logits agree closely."""
    path = save_hf_checkpoint(hf_models["gemma2-gqa"], tmp_path / "ckpt", bf16=True)
    model = vlmzoo.from_pretrained(path, dtype=torch.float32, progress=False)
    assert model.dtype == torch.float32
    assert_same_logits(model, load_hf_model(path, dtype=torch.float32), batches(model.config))


# ------------------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def small_checkpoint(hf_models, tmp_path_factory):
    """A two-layer Gemma 1 checkpoint in the hub layout, sharded in 3."""
    return save_hf_checkpoint(hf_models["gemma-mqa"], tmp_path_factory.mktemp("small"), shards=3)


def copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def test_nonexistent_path(tmp_path):
    with pytest.raises(vlmzoo.CheckpointNotFoundError) as caught:
        vlmzoo.from_pretrained(tmp_path / "does" / "not" / "exist")
    assert isinstance(caught.value, FileNotFoundError)
    assert "does/not/exist" in str(caught.value)


def test_path_is_a_file(small_checkpoint):
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match="is a file"):
        vlmzoo.from_pretrained(small_checkpoint / "config.json")


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match="no config.json"):
        vlmzoo.from_pretrained(tmp_path)


def test_missing_shard_is_named(small_checkpoint, tmp_path):
    path = copy_checkpoint(small_checkpoint, tmp_path / "ckpt")
    (path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match=r"model-00002-of-00003\.safetensors"):
        vlmzoo.from_pretrained(path, progress=False)


def test_config_with_more_layers_than_weights(small_checkpoint, tmp_path):
    path = copy_checkpoint(small_checkpoint, tmp_path / "ckpt")
    data = json.loads((path / "config.json").read_text())
    data["text_config"]["num_hidden_layers"] = 3
    (path / "config.json").write_text(json.dumps(data))
    with pytest.raises(vlmzoo.CheckpointMismatchError) as caught:
        vlmzoo.from_pretrained(path, progress=False)
    error = caught.value
    assert isinstance(error, ValueError)
    assert "language_model.layers.2.self_attn.q_proj.weight" in error.missing
    assert all(".layers.2." in key for key in error.missing)
    assert error.unexpected == [] and error.mis_shaped == []
    assert "missing" in str(error) and "language_model.layers.2.mlp.down_proj.weight" in str(error)


def test_wrong_shaped_and_unexpected_tensors(small_checkpoint, tmp_path):
    path = copy_checkpoint(small_checkpoint, tmp_path / "ckpt")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    key = "language_model.model.layers.1.mlp.up_proj.weight"
    shard = path / index["weight_map"][key]
    with safe_open(str(shard), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    tensors[key] = tensors[key][:-1].clone()
    tensors["language_model.model.layers.1.mlp.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(shard))
    with pytest.raises(vlmzoo.CheckpointMismatchError) as caught:
        vlmzoo.from_pretrained(path, progress=False)
    error = caught.value
    assert [entry.split(" ")[0] for entry in error.mis_shaped] == [key]
    assert "[127, 64]" in error.mis_shaped[0] and "[128, 64]" in error.mis_shaped[0]
    assert error.unexpected == ["language_model.model.layers.1.mlp.extra.weight"]
    assert error.missing == []  # a mis-shaped tensor is reported once, not also as missing
    assert key in str(error) and "mlp.extra.weight" in str(error)


def test_duplicate_tensor_is_reported(hf_models, tmp_path):
    """The same parameter under two layouts' names is ambiguous: an error, not a silent overwrite."""
    path = save_hf_checkpoint(hf_models["gemma-mqa"], tmp_path / "ckpt")
    with safe_open(str(path / "model.safetensors"), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    tensors["model.multi_modal_projector.linear.bias"] = torch.zeros_like(tensors["multi_modal_projector.linear.bias"])
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(vlmzoo.CheckpointMismatchError, match="multi_modal_projector.linear.bias"):
        vlmzoo.from_pretrained(path, progress=False)


def test_pickle_only_directory_is_refused(small_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "config.json").write_bytes((small_checkpoint / "config.json").read_bytes())
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(vlmzoo.CheckpointNotFoundError, match="pytorch_model.bin") as caught:
        vlmzoo.from_pretrained(tmp_path, progress=False)
    assert "pickle" in str(caught.value)


def test_hub_id_offline_with_empty_cache(tmp_path):
    """HF_HUB_OFFLINE=1 and nothing cached: a clear CheckpointNotFoundError, and no socket is ever opened."""
    script = textwrap.dedent(
        """
        import socket

        def refuse(*args, **kwargs):
            raise AssertionError("network use while HF_HUB_OFFLINE=1")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        import vlmzoo

        try:
            vlmzoo.from_pretrained("google/paligemma2-3b-pt-224", progress=False)
        except vlmzoo.CheckpointNotFoundError as exc:
            print("RAISED", type(exc).__name__, exc)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "TRANSFORMERS_CACHE"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RAISED CheckpointNotFoundError" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "google/paligemma2-3b-pt-224" in result.stdout
    assert "cache" in result.stdout


def test_hub_id_offline_cache_hit(small_checkpoint, tmp_path):
    """HF_HUB_OFFLINE=1 with the repo in the cache (the layout huggingface_hub writes): it loads from there,
    without a socket, and holds the checkpoint's weights."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf_home" / "hub" / "models--google--paligemma-cached"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for item in small_checkpoint.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = textwrap.dedent(
        f"""
        import socket

        def refuse(*args, **kwargs):
            raise AssertionError("network use while HF_HUB_OFFLINE=1")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        import torch
        import vlmzoo

        cached = vlmzoo.from_pretrained("google/paligemma-cached", progress=False)
        local = vlmzoo.from_pretrained({str(small_checkpoint)!r}, progress=False)
        assert cached.config.decoder.num_layers == 2
        expected = local.state_dict()
        assert all(torch.equal(t, expected[k]) for k, t in cached.state_dict().items())
        from vlmzoo.checkpoints.hub import resolve

        print("LOADED", resolve("google/paligemma-cached"))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "TRANSFORMERS_CACHE"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED" in result.stdout and commit in result.stdout


def test_hub_id_downloads_safetensors_only(small_checkpoint, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(small_checkpoint)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = vlmzoo.from_pretrained("google/paligemma-3b-pt-224", revision="bfloat16", token="hf_x", progress=False)
    assert model.config.decoder.num_layers == 2
    [(repo_id, kwargs)] = calls
    assert repo_id == "google/paligemma-3b-pt-224"
    assert kwargs["revision"] == "bfloat16" and kwargs["token"] == "hf_x"
    patterns = kwargs["allow_patterns"]

    def fetched(name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)

    pickles = ("pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "model.pth", "model.pt", "weights.ckpt")
    for name in (*pickles, "flax_model.msgpack", "tf_model.h5"):
        assert not fetched(name), name
    for name in ("config.json", "model.safetensors", "model-00001-of-00003.safetensors",
                 "model.safetensors.index.json", "tokenizer.json"):  # fmt: skip
        assert fetched(name), name


# ------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", PALIGEMMA_MODELS)
def test_config_round_trip(name):
    config = vlmzoo.get_config(name)
    if hf_differences(config):  # a plugin's components: no Hugging Face form (see test_saving_lossless)
        with pytest.raises(ConfigConversionError, match="no faithful Hugging Face"):
            config_to_hf(config)
        return
    back = config_from_hf(config_to_hf(config))
    assert back.model_copy(update={"name": config.name}) == config


def test_several_end_tokens_are_all_kept():
    """Gemma 2 instruction configs end rows at <eos> or <end_of_turn>: ``[1, 107]`` must not become 1."""
    data = config_to_hf(vlmzoo.get_config("paligemma2-tiny"))
    data["text_config"]["eos_token_id"] = [1, 107]
    config = config_from_hf(data)
    assert config.eos_token_id == (1, 107) and config.eos_token_ids == (1, 107)
    assert config_to_hf(config)["eos_token_id"] == [1, 107]
    assert config_from_hf(config_to_hf(config)) == config
    assert vlmzoo.PaliGemmaConfig.from_json(config.to_json()) == config
    assert config_from_hf({**data, "text_config": {**data["text_config"], "eos_token_id": 1}}).eos_token_ids == (1,)
    with pytest.raises(ValueError, match="eos_token_id"):
        config.replace(eos_token_id=(1, config.decoder.vocab_size))


@pytest.mark.parametrize("name", PALIGEMMA_MODELS)
def test_config_to_hf_matches_transformers(name):
    """transformers reads config_to_hf's dict as the same architecture (checked on the meta device)."""
    from transformers import PaliGemmaConfig

    config = vlmzoo.get_config(name)
    if hf_differences(config):
        return  # saved as model_type "vlmzoo", which transformers refuses (see test_saving_lossless)
    hf = PaliGemmaConfig(**config_to_hf(config))
    assert hf.text_config.hidden_size == config.decoder.hidden_size
    assert hf.text_config.num_key_value_heads == config.decoder.num_kv_heads
    assert hf.text_config.head_dim == config.decoder.head_dim
    assert hf.vision_config.image_size == config.vision.image_size
    assert hf.text_config.num_image_tokens == config.num_image_tokens
    assert config_from_hf(hf.to_dict()).model_copy(update={"name": config.name}) == config


# ----------------------------------------------------------------------------------- safetensors reader


def test_reader_converts_dtype_in_chunks(tmp_path, monkeypatch):
    from vlmzoo.checkpoints import safetensors_io

    tensors = {
        "a": torch.randn(37, 11),
        "b": torch.arange(10, dtype=torch.int64),
        "c": torch.randn(()),
        "d": torch.randn(0, 3),
        "e": torch.randn(5).to(torch.bfloat16),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"))
    monkeypatch.setattr(safetensors_io, "CHUNK_BYTES", 40)  # many chunks, one not full
    read = dict(safetensors_io.iter_tensors(tmp_path / "x.safetensors", dtype=torch.bfloat16))
    assert read.keys() == tensors.keys()
    for key, tensor in tensors.items():
        expected = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
        assert read[key].dtype == expected.dtype and torch.equal(read[key], expected), key
    same = dict(safetensors_io.iter_tensors(tmp_path / "x.safetensors", keys={"a", "b"}))
    assert same.keys() == {"a", "b"} and torch.equal(same["a"], tensors["a"])


@pytest.mark.parametrize("block_bytes", [1, 40, 2**20])
def test_iter_row_blocks_reads_whole_rows_in_order(tmp_path, block_bytes):
    from vlmzoo.checkpoints import safetensors_io

    weight = torch.randn(7, 5, dtype=torch.float32)
    save_file({"w": weight, "x": torch.ones(3)}, str(tmp_path / "x.safetensors"))
    blocks = list(safetensors_io.iter_row_blocks(tmp_path / "x.safetensors", "w", torch.bfloat16, block_bytes))
    assert [first for first, _ in blocks] == list(range(0, 7, len(blocks[0][1])))
    assert torch.equal(torch.cat([rows for _, rows in blocks]), weight.to(torch.bfloat16))
    with pytest.raises(ValueError, match="no such tensor"):
        next(safetensors_io.iter_row_blocks(tmp_path / "x.safetensors", "missing"))


def test_quantized_loading_of_a_sharded_hub_checkpoint_matches_quantizing_after(small_checkpoint, monkeypatch):
    # Weights spread over three shards, read in blocks of a few rows: the same int8 weights as quantizing
    # the float model, and the same logits.
    from vlmzoo.checkpoints import safetensors_io

    monkeypatch.setattr(safetensors_io, "CHUNK_BYTES", 1000)
    loaded = vlmzoo.from_pretrained(small_checkpoint, quantize="int8", progress=False)
    reference = vlmzoo.from_pretrained(small_checkpoint, progress=False).quantize("int8")
    assert loaded.state_dict().keys() == reference.state_dict().keys()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_truncated_file_is_reported(small_checkpoint, tmp_path):
    path = copy_checkpoint(small_checkpoint, tmp_path / "ckpt")
    shard = path / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        vlmzoo.from_pretrained(path, progress=False)
