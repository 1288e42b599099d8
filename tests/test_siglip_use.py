"""Using and training SigLIP models: load, classify, embed, the classify command, vlmzoo.train and torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_tokenizer import TINY_VOCAB_SIZE, make_tiny_tokenizer

import vlmzoo
from vlmzoo.cli import main
from vlmzoo.data.shapes_tokenizer import build_tokenizer
from vlmzoo.siglip import SiglipProcessor
from vlmzoo.siglip.pipeline import ImageTextModel
from vlmzoo.siglip.tasks import Classification
from vlmzoo.tasks.base import TaskError

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def checkpoint(tmp_path):
    """A random siglip-tiny with its processor (the tiny Gemma-like tokenizer), saved as one directory."""
    model = vlmzoo.build("siglip-tiny", device="cpu", seed=0, init_std=0.2, text__vocab_size=TINY_VOCAB_SIZE)
    with torch.no_grad():
        model.logit_bias.fill_(0.5)
    path = tmp_path / "tiny"
    model.save_pretrained(path)
    SiglipProcessor(make_tiny_tokenizer(), image_size=28, max_length=16).save_pretrained(path)
    return path


def test_load_gives_an_image_text_model_that_classifies_with_sigmoid_probabilities(checkpoint, tmp_path):
    clip = vlmzoo.load(checkpoint)
    assert isinstance(clip, ImageTextModel)
    image = torch.rand(40, 30, 3).mul(255).to(torch.uint8).numpy()
    result = clip.classify(image, ["a cat", "a dog", "two cats"])
    assert isinstance(result, Classification) and result.labels == ["a cat", "a dog", "two cats"]
    assert result.texts == ["This is a photo of a cat.", "This is a photo of a dog.", "This is a photo of two cats."]
    # Per-label sigmoid of exactly the model's logits for these texts: not a softmax.
    batch = clip.processor(images=[image], text=result.texts)
    with torch.no_grad():
        logits = clip.model(batch["input_ids"], batch["pixel_values"]).logits_per_image[0]
    torch.testing.assert_close(torch.tensor(result.probabilities), torch.sigmoid(logits))
    assert abs(sum(result.probabilities) - 1) > 1e-3
    assert result.best == result.ranked()[0][0]
    several = clip.classify([image, image], "a cat", template="{}")
    assert len(several) == 2 and several[0].texts == ["a cat"]
    with pytest.raises(TaskError, match="one '{}'"):
        clip.classify(image, ["a cat"], template="no slot")


def test_embeddings_are_normalised_and_those_of_the_model(checkpoint):
    clip = vlmzoo.load(checkpoint)
    texts = clip.embed_texts(["a cat", "a dog"])
    assert texts.shape == (2, 32)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(2))
    tokens = clip.processor.tokenize(["a cat", "a dog"])
    with torch.no_grad():
        torch.testing.assert_close(texts, clip.model.text_embeddings(tokens["input_ids"]))
    images = clip.embed_images([torch.rand(28, 28, 3).numpy()] * 3)
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(3))


def test_classify_is_a_registered_task_that_paligemma_refuses(checkpoint):
    assert "classify" in vlmzoo.get_registries().postprocessor
    with pytest.raises(TaskError, match="image-text model"):
        vlmzoo.get_postprocessor("classify").prompt(["a cat"])
    with pytest.raises(ValueError, match="generates text"):
        vlmzoo.load(checkpoint).run("caption", torch.rand(28, 28, 3).numpy())


def test_classify_command(checkpoint, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    assert main(["classify", str(checkpoint), "--image", str(tmp_path / "red.png"), "--labels", "a cat; a dog",
                 "--json"]) == 0  # fmt: skip
    line = json.loads(capsys.readouterr().out.strip())
    assert line["labels"] == ["a cat", "a dog"] and len(line["probabilities"]) == 2
    assert main(["classify", str(checkpoint), "--image", str(tmp_path / "red.png"), "--labels", ";"]) == 2
    assert "--labels must name at least one label" in capsys.readouterr().err


def _shapes_model_and_processor(tmp_path):
    processor = SiglipProcessor(build_tokenizer(), image_size=32, max_length=16, prompt_template="a {}")
    processor.save_pretrained(tmp_path / "processor")
    config = vlmzoo.get_config("shapes-siglip").replace(
        vision={"image_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1},
        text={"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "projection_size": 32},
    )
    return config, processor


def test_vlmzoo_train_trains_siglip_on_image_text_pairs(tmp_path):
    config, processor = _shapes_model_and_processor(tmp_path)
    model = vlmzoo.build(config, device="cpu", seed=0, init_std=0.05)
    data = {"generator": "shapes", "seed": 0, "images": 32, "size": 32}
    trained = vlmzoo.train(model, processor, data, data, output_dir=tmp_path / "run", max_steps=12, batch_size=8,
                           learning_rate=3e-3, eval_every=12, progress=False)  # fmt: skip
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert any("eval_image_to_text_top1" in line for line in lines)
    again = vlmzoo.load(tmp_path / "run")
    assert again.processor.prompt_template == "a {}"
    for name, tensor in trained.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name


def test_pair_data_errors_name_the_line(tmp_path):
    config, processor = _shapes_model_and_processor(tmp_path)
    (tmp_path / "pairs.jsonl").write_text('{"image": "missing.png", "text": "a red circle"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"pairs\.jsonl:1: image file .*missing\.png does not exist"):
        vlmzoo.train(vlmzoo.build(config, device="cpu"), processor, tmp_path / "pairs.jsonl",
                     output_dir=tmp_path / "run", max_steps=1, batch_size=1)  # fmt: skip


TRAIN_CONFIG = """
model = "shapes-siglip"
init = "random"
init_std = 0.05
processor = "{processor}"
train_data = {{ generator = "shapes", seed = 0, images = 16, size = 32 }}
output_dir = "{output}"
max_steps = 3
batch_size = 8
learning_rate = 3e-3
device = "cpu"
progress = false

[model_overrides.vision]
image_size = 32
hidden_size = 32
intermediate_size = 64
num_layers = 1

[model_overrides.text]
hidden_size = 32
intermediate_size = 64
num_layers = 1
projection_size = 32
"""


def test_two_processes_train_like_one_over_the_same_global_batch(tmp_path):
    """Under torchrun the chunked loss and summed gradients give the single process's weights."""
    _shapes_model_and_processor(tmp_path)
    for run in ("one", "two"):
        (tmp_path / f"{run}.toml").write_text(
            TRAIN_CONFIG.format(processor=tmp_path / "processor", output=tmp_path / run)
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLMZOO_QUIET": "1", "CUDA_VISIBLE_DEVICES": ""}
    assert main(["train", "--config", str(tmp_path / "one.toml")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "vlmzoo", "train", "--config", str(tmp_path / "two.toml")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = vlmzoo.from_pretrained(tmp_path / "one"), vlmzoo.from_pretrained(tmp_path / "two")
    for name, tensor in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], tensor, rtol=1e-4, atol=2e-5, msg=name)
