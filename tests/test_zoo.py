"""The zoo: names, aliases, unknown names, and every registered variant built on the meta device."""

from __future__ import annotations

import pytest
import torch

import vlmzoo
from vlmzoo.components import Gemma2Block, GemmaBlock, GemmaRMSNorm

pytestmark = pytest.mark.usefixtures("single_thread")

PUBLIC = {
    "paligemma-3b-224": 2_923_466_480,
    "paligemma-3b-448": 2_924_351_216,
    "paligemma-3b-896": 2_927_890_160,
    "paligemma2-3b-224": 3_032_242_416,
    "paligemma2-3b-448": 3_033_127_152,
    "paligemma2-3b-896": 3_036_666_096,
    "paligemma2-10b-224": 9_662_638_832,
    "paligemma2-10b-448": 9_663_523_568,
    "paligemma2-10b-896": 9_667_062_512,
    "paligemma2-28b-224": 27_650_487_024,
    "paligemma2-28b-448": 27_651_371_760,
    "paligemma2-28b-896": 27_654_910_704,
}
DECODERS = {  # hidden, intermediate, layers, heads, kv heads, head_dim, query_pre_attn_scalar
    "paligemma-3b": (2048, 16384, 18, 8, 1, 256, None),
    "paligemma2-3b": (2304, 9216, 26, 8, 4, 256, 256),
    "paligemma2-10b": (3584, 14336, 42, 16, 8, 256, 256),
    "paligemma2-28b": (4608, 36864, 46, 32, 16, 128, 144),
}
#: Small variants that come with trained weights inside the package.
DEMO = {"shapes-demo"}
#: The PaliGemma variants (the SigLIP family's are tested in test_siglip).
PALIGEMMA = [name for name in vlmzoo.list_models() if isinstance(vlmzoo.get_config(name), vlmzoo.PaliGemmaConfig)]
TINY = [name for name in PALIGEMMA if name not in PUBLIC and name not in DEMO]


def test_list_models_is_the_public_names_plus_tiny_and_demo_ones_sorted():
    assert vlmzoo.list_models() == sorted(vlmzoo.list_models())
    assert {"siglip-so400m-patch14-384", "shapes-siglip"} <= set(vlmzoo.list_models())  # the second family
    names = PALIGEMMA
    assert names == sorted(names) and len(set(names)) == len(names)
    assert set(PUBLIC) <= set(names)
    assert TINY and all("tiny" in name for name in TINY)
    assert {"paligemma-tiny", "paligemma2-tiny"} <= set(TINY)
    assert set(names) >= DEMO
    assert len(names) == len(PUBLIC) + len(TINY) + len(DEMO)
    for alias in ("paligemma-224", "paligemma2-896"):  # aliases are not listed as models
        assert alias not in names


def test_list_models_pattern():
    assert vlmzoo.list_models("paligemma2-28b-*") == ["paligemma2-28b-224", "paligemma2-28b-448", "paligemma2-28b-896"]
    assert vlmzoo.list_models("*-448") == sorted(n for n in PUBLIC if n.endswith("-448"))
    assert vlmzoo.list_models("nothing*") == []


@pytest.mark.parametrize("size", [224, 448, 896])
@pytest.mark.parametrize("family", ["paligemma", "paligemma2"])
def test_aliases_resolve_to_the_3b_variants(family, size):
    config = vlmzoo.get_config(f"{family}-{size}")
    assert config == vlmzoo.get_config(f"{family}-3b-{size}")
    assert config.name == f"{family}-3b-{size}"
    model = vlmzoo.build(f"{family}-{size}", device="meta")
    assert model.config == config


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("paligemma2-3b-225", "paligemma2-3b-224"), ("paligema-3b-448", "paligemma-3b-448"),
     ("paligemma2-28b", "paligemma2-28b-224"), ("paligemma2-tinyy", "paligemma2-tiny")],
)  # fmt: skip
def test_unknown_names_list_close_names(name, suggestion):
    with pytest.raises(vlmzoo.UnknownModelError) as info:
        vlmzoo.get_config(name)
    message = str(info.value)
    assert f"unknown model {name!r}" in message
    assert "Did you mean" in message and repr(suggestion) in message
    assert isinstance(info.value, KeyError)  # still a lookup error for callers that catch those
    with pytest.raises(vlmzoo.UnknownModelError, match=repr(suggestion)):
        vlmzoo.build(name, device="meta")


def test_unknown_name_without_close_matches():
    with pytest.raises(vlmzoo.UnknownModelError, match="unknown model 'llama-7b'") as info:
        vlmzoo.get_config("llama-7b")
    assert "list_models" in str(info.value)


def test_build_rejects_other_types():
    with pytest.raises(TypeError, match="a PaliGemmaConfig or the config of a registered model family, got int"):
        vlmzoo.build(224, device="meta")
    with pytest.raises(TypeError, match="got dict"):
        vlmzoo.build({"name": "paligemma2-224"}, device="meta")


@pytest.mark.parametrize("name", PALIGEMMA)
def test_every_variant_builds_on_meta(name):
    config = vlmzoo.get_config(name)
    model = vlmzoo.build(name, device="meta")
    assert isinstance(model, vlmzoo.PaliGemma)
    assert model.config == config and model.device.type == "meta" and model.dtype == torch.float32
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    # one tied embedding: the output head adds no parameters
    assert model.language_model.lm_head is None
    assert model.num_parameters() == sum(p.numel() for p in params)
    if name in PUBLIC:
        assert model.num_parameters() == PUBLIC[name]
    decoder = config.decoder
    layers = model.language_model.layers
    assert len(layers) == decoder.num_layers
    assert len(model.vision_tower.layers) == config.vision.num_layers
    block = Gemma2Block if decoder.block == "gemma2" else GemmaBlock
    assert all(type(layer) is block for layer in layers)
    assert [layer.window for layer in layers] == [decoder.window_of(i) for i in range(decoder.num_layers)]
    embed = model.language_model.embed_tokens.weight
    assert tuple(embed.shape) == (decoder.vocab_size, decoder.hidden_size)
    assert model.vision_tower.embeddings.position_embedding.weight.shape[0] == config.num_image_tokens


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_variants_match_the_reference_architecture(name):
    config = vlmzoo.get_config(name)
    family, size = name.rsplit("-", 1)
    hidden, intermediate, layers, heads, kv, head_dim, scalar = DECODERS[family]
    d = config.decoder
    assert (d.hidden_size, d.intermediate_size, d.num_layers, d.num_heads, d.num_kv_heads, d.head_dim) == (
        hidden, intermediate, layers, heads, kv, head_dim,
    )  # fmt: skip
    assert d.query_pre_attn_scalar == scalar
    assert d.vocab_size == 257216 and d.rope_theta == 10000 and d.rms_norm_eps == 1e-6 and d.tie_word_embeddings
    v = config.vision
    assert (v.image_size, v.patch_size, v.hidden_size, v.intermediate_size, v.num_layers, v.num_heads) == (
        int(size), 14, 1152, 4304, 27, 16,
    )  # fmt: skip
    assert config.num_image_tokens == {224: 256, 448: 1024, 896: 4096}[int(size)]
    assert (config.image_token_id, config.pad_token_id, config.eos_token_id, config.bos_token_id) == (257152, 0, 1, 2)
    if family == "paligemma-3b":
        assert d.block == "gemma" and d.sliding_window is None
        assert d.attn_logit_softcap is None and d.final_logit_softcap is None
    else:
        assert d.block == "gemma2" and d.sliding_window == 4096
        assert (d.attn_logit_softcap, d.final_logit_softcap) == (50.0, 30.0)
        assert [d.window_of(i) for i in range(4)] == [4096, None, 4096, None]


@pytest.mark.parametrize("dtype", [torch.bfloat16, "bf16", "float16"])
def test_build_in_a_dtype(dtype):
    model = vlmzoo.build("paligemma2-3b-224", dtype=dtype, device="meta")
    expected = torch.float16 if dtype == "float16" else torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {expected}
    assert model.dtype == expected
    assert torch.get_default_dtype() == torch.float32  # the default dtype is restored


def test_build_rejects_bad_dtypes():
    with pytest.raises(ValueError, match="unknown dtype 'float7'"):
        vlmzoo.build("paligemma-tiny", dtype="float7", device="meta")
    with pytest.raises(ValueError, match="floating-point"):
        vlmzoo.build("paligemma-tiny", dtype=torch.int8, device="meta")
    assert torch.get_default_dtype() == torch.float32


def test_build_with_overrides():
    model = vlmzoo.build("paligemma2-10b-448", device="meta", decoder__num_layers=2, vision={"num_layers": 1})
    assert len(model.language_model.layers) == 2 and len(model.vision_tower.layers) == 1
    assert model.config.decoder.hidden_size == 3584
    with pytest.raises(TypeError, match="unknown override"):
        vlmzoo.build("paligemma2-10b-448", device="meta", num_layers=2)


@pytest.mark.parametrize("name", TINY)
def test_tiny_variants_build_on_cpu_reproducibly_and_run(name):
    a = vlmzoo.build(name, seed=0)
    b = vlmzoo.build(name, seed=0)
    c = vlmzoo.build(name, seed=1)
    assert not a.training and a.device.type == "cpu"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for key in sa:
        assert torch.isfinite(sa[key]).all(), key
        assert torch.equal(sa[key], sb[key]), key
    assert any(not torch.equal(sa[key], sc[key]) for key in sa)
    # reference initialisation: identity Gemma norms, small normal weights, zero biases
    assert all(torch.count_nonzero(m.weight) == 0 for m in a.modules() if isinstance(m, GemmaRMSNorm))
    weight = a.language_model.embed_tokens.weight
    assert 0.015 < weight.detach().std().item() < 0.025
    assert torch.count_nonzero(a.multi_modal_projector.linear.bias) == 0

    config = a.config
    g = torch.Generator().manual_seed(0)
    n_img, text = config.num_image_tokens, 6
    ids = torch.randint(3, config.decoder.vocab_size, (2, n_img + text), generator=g)
    ids[ids == config.image_token_id] = 5
    ids[:, :n_img] = config.image_token_id
    ids[:, n_img] = config.bos_token_id
    pixels = torch.rand(2, 3, config.vision.image_size, config.vision.image_size, generator=g) * 2 - 1
    types = torch.zeros_like(ids)
    types[:, -2:] = 1
    with torch.no_grad():
        out = a(input_ids=ids, pixel_values=pixels, token_type_ids=types)
        again = b(input_ids=ids, pixel_values=pixels, token_type_ids=types)
    assert out.logits.shape == (2, n_img + text, config.decoder.vocab_size)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()
    assert torch.equal(out.logits, again.logits)
    if config.decoder.final_logit_softcap is not None:
        assert out.logits.abs().max() <= config.decoder.final_logit_softcap


def test_cli_list_prints_a_table_and_json(capsys):
    import json

    from vlmzoo.cli import main

    assert main(["list", "paligemma2-3b-*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "aliases", "family", "parameters", "image", "tokens", "resolution"]
    assert any(line.split()[:3] == ["paligemma2-3b-224", "paligemma2-224", "paligemma2"] for line in lines)
    assert main(["list", "paligemma2-3b-448", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["parameters"] == 3_033_127_152 and row["image_tokens"] == 1024 and row["resolution"] == 448
    assert main(["list", "no-such-*"]) == 2
    assert "no variant matches" in capsys.readouterr().err
