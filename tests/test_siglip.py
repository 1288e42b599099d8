"""The SigLIP family: configs, parameter counts, transformers parity of logits and processor, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hf_siglip import make_hf_siglip, make_hf_siglip_processor_dir, save_hf_siglip

import vlmzoo
from vlmzoo.checkpoints import ConfigConversionError
from vlmzoo.siglip import SiglipConfig, SiglipModel, load_siglip_processor

transformers = pytest.importorskip("transformers")

#: Parameter counts of transformers' SiglipModel for the public checkpoints' configs (meta device).
OFFICIAL_PARAMETERS = {
    "siglip-base-patch16-224": 203_155_970, "siglip-base-patch16-256": 203_202_050,
    "siglip-base-patch16-384": 203_447_810, "siglip-base-patch16-512": 203_791_874,
    "siglip-large-patch16-256": 652_150_786, "siglip-large-patch16-384": 652_478_466,
    "siglip-so400m-patch14-224": 877_360_306, "siglip-so400m-patch14-384": 877_960_498,
    "siglip2-base-patch16-224": 375_187_970, "siglip2-base-patch16-256": 375_234_050,
    "siglip2-base-patch16-384": 375_479_810, "siglip2-base-patch16-512": 375_823_874,
    "siglip2-large-patch16-256": 881_526_786, "siglip2-large-patch16-384": 881_854_466,
    "siglip2-large-patch16-512": 882_313_218, "siglip2-so400m-patch14-224": 1_135_463_602,
    "siglip2-so400m-patch14-384": 1_136_008_498, "siglip2-so400m-patch16-256": 1_135_670_962,
    "siglip2-so400m-patch16-384": 1_136_039_602, "siglip2-so400m-patch16-512": 1_136_555_698,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMETERS))
def test_public_variants_have_the_official_parameter_counts(name):
    model = vlmzoo.build(name, device="meta")
    assert isinstance(model, SiglipModel)
    assert model.num_parameters() == OFFICIAL_PARAMETERS[name]


def test_both_families_live_in_one_zoo():
    names = vlmzoo.list_models()
    assert "paligemma2-3b-224" in names and "siglip-so400m-patch14-384" in names
    assert isinstance(vlmzoo.get_config("siglip-so400m-patch14-384"), SiglipConfig)
    assert vlmzoo.get_config("siglip-so400m-patch14-384").num_image_tokens == 729
    assert vlmzoo.get_config("siglip-so400m-patch14-224").text.max_length == 16
    model = vlmzoo.build("siglip-tiny", device="cpu", seed=0, text__num_layers=1)
    assert len(model.text_model.layers) == 1
    # The paper's initialisation: t' = log 10, b = -10.
    assert model.logit_scale.item() == pytest.approx(np.log(10.0)) and model.logit_bias.item() == -10.0
    owners = {p.name: p.registered for p in vlmzoo.list_plugins()}
    assert owners["vlmzoo.siglip.plugin"]["pooling"] == ["attention_probe"]
    assert owners["vlmzoo.siglip.plugin"]["model_family"] == ["siglip"]


def test_text_and_image_embeddings_must_meet():
    with pytest.raises(ValueError, match="must match the image embedding"):
        SiglipConfig(text={"projection_size": 10})


def _inputs(hf, batch_texts=3, batch_images=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    text, vision = hf.config.text_config, hf.config.vision_config
    ids = torch.randint(0, text.vocab_size, (batch_texts, text.max_position_embeddings), generator=generator)
    pixels = torch.rand(batch_images, 3, vision.image_size, vision.image_size, generator=generator) * 2 - 1
    return ids, pixels


@pytest.mark.parametrize(
    "options", [{}, {"act": "gelu"}, {"text_hidden": 48, "image_size": 32, "patch": 7}], ids=["tanh", "exact", "mixed"]
)
def test_logits_match_transformers(tmp_path, options):
    hf = make_hf_siglip(**options)
    path = save_hf_siglip(hf, tmp_path / "ckpt")
    ours = vlmzoo.from_pretrained(path)
    assert isinstance(ours, SiglipModel)
    ids, pixels = _inputs(hf)
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    with torch.no_grad():
        for attention_mask in (None, mask):
            theirs = hf(input_ids=ids, pixel_values=pixels, attention_mask=attention_mask)
            mine = ours(ids, pixels, attention_mask)
            assert (mine.logits_per_image - theirs.logits_per_image).abs().max() < 1e-4
            assert (mine.text_embeds - theirs.text_embeds).abs().max() < 1e-5
            assert (mine.image_embeds - theirs.image_embeds).abs().max() < 1e-5


def test_saved_checkpoint_loads_in_transformers_with_the_same_logits(tmp_path):
    model = vlmzoo.build("siglip-tiny", device="cpu", seed=3, init_std=0.2)
    with torch.no_grad():
        model.logit_bias.fill_(-1.5)
    model.save_pretrained(tmp_path / "saved")
    hf = transformers.SiglipModel.from_pretrained(str(tmp_path / "saved"), attn_implementation="eager").eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 320, (4, 16), generator=generator)
    pixels = torch.rand(2, 3, 28, 28, generator=generator)
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=pixels).logits_per_image
        assert (model(ids, pixels).logits_per_image - theirs).abs().max() < 1e-4
    again = vlmzoo.from_pretrained(tmp_path / "saved")
    assert again.config == model.config.replace(name=str(tmp_path / "saved"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


def test_plugin_components_are_saved_so_transformers_refuses_them(tmp_path):
    model = vlmzoo.build("siglip-tiny", device="cpu", seed=0, vision__mlp="gelu_exact", text__norm="rms_norm")
    model.save_pretrained(tmp_path / "own")
    data = json.loads((tmp_path / "own" / "config.json").read_text())
    assert data["model_type"] == "vlmzoo"
    assert vlmzoo.from_pretrained(tmp_path / "own").config.text.norm == "rms_norm"


def test_edited_config_is_reported(tmp_path):
    model = vlmzoo.build("siglip-tiny", device="cpu", seed=0)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    data = json.loads(path.read_text())
    data["text_config"]["num_attention_heads"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigConversionError, match=r"config\.json: text_config\.num_attention_heads: must be"):
        vlmzoo.from_pretrained(tmp_path / "m")
    data["text_config"]["num_attention_heads"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigConversionError, match="describe different models"):
        vlmzoo.from_pretrained(tmp_path / "m")


def test_processor_matches_transformers(tmp_path):
    hf_processor = make_hf_siglip_processor_dir(tmp_path, image_size=28)
    config = {"model_type": "siglip", "text_config": {"max_position_embeddings": 16}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = load_siglip_processor(tmp_path)
    texts = ["a cat", "This is a photo of a dog sitting on a bench in the park with two cats.", "ocr"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 31, 3), dtype=np.uint8), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)]
    theirs = hf_processor(text=texts, images=images, padding="max_length", max_length=16, truncation=True,
                          return_tensors="pt")  # fmt: skip
    mine = ours(images=images, text=texts)
    assert torch.equal(mine["input_ids"], theirs["input_ids"])
    assert torch.equal(mine["attention_mask"], theirs["attention_mask"])
    assert mine["input_ids"].shape == (3, 16)
    assert torch.allclose(mine["pixel_values"], theirs["pixel_values"], atol=1e-6)
    ours.save_pretrained(tmp_path / "again")
    again = transformers.SiglipProcessor.from_pretrained(str(tmp_path / "again"))
    redo = again(text=texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert torch.equal(redo["input_ids"], mine["input_ids"])


def test_processor_errors_name_the_file_and_field(tmp_path):
    make_hf_siglip_processor_dir(tmp_path, image_size=28)
    (tmp_path / "spiece.model").write_bytes(b"")
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "prompt_template": "no slot"}))
    with pytest.raises(vlmzoo.InvalidFileError, match=r"tokenizer_config\.json: prompt_template: must be a string"):
        load_siglip_processor(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="spiece.model, whose tokenizer vlmzoo does not reproduce"):
        load_siglip_processor(tmp_path)
