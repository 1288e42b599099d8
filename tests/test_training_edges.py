"""Fine-tuning details a user would feel if they broke: the logged gradient norm, nested output folders,
evaluation steps, LoRA dropout and dtypes, data files with blank lines and defaults, data specs,
torchrun detection, seeded mask VAEs."""

# ruff: noqa: F811  (pytest fixtures imported from test_training are redefined as arguments)
from __future__ import annotations

import json

import pytest
import torch
from test_training import data_file, processor, processor_dir, read_metrics, tiny_model  # noqa: F401

import vlmzoo
from vlmzoo.training import Collator, SuffixLoss, load_records

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_logged_gradient_norm_is_that_of_the_mean_token_loss(tmp_path, data_file, processor, processor_dir):  # noqa: F811
    """Step 1's grad_norm is the norm of the gradient of the loss averaged over suffix tokens (the loss
    Hugging Face reports), computed here by hand; eval lines carry their step; nested folders are made."""
    out = tmp_path / "runs" / "deep" / "run"  # parents that do not exist yet
    vlmzoo.train(
        tiny_model(), processor_dir, data_file, eval_data=data_file, output_dir=out, max_steps=2, batch_size=4,
        learning_rate=1e-3, warmup_steps=0, eval_every=1, eval_detection=False, max_grad_norm=1e6,
    )  # fmt: skip
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics if "eval_loss" in m] == [1, 2]
    assert metrics[0]["event"] == "start" and metrics[0]["world_size"] == 1
    assert json.loads((out / "training_config.json").read_text())["processor"] == str(processor_dir)
    first = [m for m in metrics if "grad_norm" in m][0]

    model = tiny_model()
    batch = Collator(processor, padding_side="right")(load_records(data_file))
    keys = ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "labels")
    summed = SuffixLoss(model)(**{k: batch[k] for k in keys})
    (summed / int((batch["labels"][:, 1:] != -100).sum())).backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert first["step"] == 1 and first["grad_norm"] == pytest.approx(float(norm), rel=1e-4)


def test_lora_dropout_reaches_the_adapters(
    tmp_path,
    data_file,
    processor,
    monkeypatch,  # noqa: F811
):
    from vlmzoo.training import trainer
    from vlmzoo.training.lora import LoraLinear, apply_lora

    made: list[LoraLinear] = []

    def recording_apply_lora(model, targets, **options):
        names = apply_lora(model, targets, **options)
        made.extend(m for m in model.modules() if isinstance(m, LoraLinear))
        return names

    monkeypatch.setattr(trainer, "apply_lora", recording_apply_lora)
    vlmzoo.train(
        tiny_model(), processor, data_file, output_dir=tmp_path / "run", max_steps=2, batch_size=4,
        train="lora", lora={"rank": 2, "dropout": 0.25}, save_every=1, keep_checkpoints=None,
    )  # fmt: skip
    assert made and all(a.dropout.p == 0.25 for a in made)
    from safetensors import safe_open

    with safe_open(tmp_path / "run" / "checkpoints" / "step-00000001" / "adapters.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}  # what Hugging Face tools look for in a PyTorch file


def test_data_files_skip_blank_lines_and_default_the_prefix(tmp_path):
    from test_training import write_images

    write_images(tmp_path / "images", count=3)
    lines = [
        json.dumps({"image": "images/img0.png", "suffix": "a"}),
        "",
        "   ",
        json.dumps({"image": "images/img1.png", "prefix": "caption en", "suffix": "b"}),
        json.dumps({"image": "images/img2.png", "prefix": "caption en", "suffix": "c"}),
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records = load_records(path)
    assert [r.suffix for r in records] == ["a", "b", "c"]
    assert records[0].prefix == "" and records[1].prefix == "caption en"


def test_data_specs_by_mapping_generate_or_read_records(tmp_path):
    from vlmzoo.data import records_from_spec

    spec = {"generator": "shapes", "seed": 3, "images": 2, "size": 112}
    generated, direct = load_records(spec), records_from_spec(spec)
    assert [r.prefix for r in generated] == [d["prefix"] for d in direct] and generated

    import PIL.Image

    PIL.Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 3, 20, 15]}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    records = load_records({"coco": str(tmp_path / "instances.json"), "images": str(tmp_path)})
    assert len(records) == 1 and [o.label for o in records[0].objects] == ["cat"]
    assert records[0].objects[0].box == pytest.approx((4, 3, 24, 18))


def test_torchrun_is_recognised_from_two_processes(monkeypatch):
    from vlmzoo.training.distributed import launched_by_torchrun

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_by_torchrun()


def test_mask_vae_training_repeats_from_its_seed_and_follows_the_learning_rate():
    import random

    from vlmzoo.training.mask_vae import train_mask_vae

    def crops(rng: random.Random, n: int) -> torch.Tensor:
        out = torch.zeros(n, 64, 64)
        for i in range(n):
            x, y = rng.randrange(0, 32), rng.randrange(0, 32)
            out[i, y : y + 24, x : x + 24] = 1.0
        return out

    def weights(**options):
        vae = train_mask_vae(crops, steps=2, batch_size=4, **options)
        return torch.cat([p.detach().flatten() for p in vae.state_dict().values() if p.is_floating_point()])

    first, again = weights(seed=1), weights(seed=1)
    assert torch.equal(first, again)
    assert not torch.equal(first, weights(seed=2))
    assert not torch.equal(first, weights(seed=1, learning_rate=1e-1))


def test_answers_gathered_across_processes_keep_labels_scores_and_masks(tmp_path):
    import numpy as np
    import torch.distributed as dist

    from vlmzoo.tasks import DetectedObject
    from vlmzoo.training.coco_evaluation import gather_answers
    from vlmzoo.training.distributed import ProcessGroup

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        group = ProcessGroup(active=True)
        mask = np.zeros((4, 4), dtype=bool)
        mask[1:3, 1:3] = True
        found = [DetectedObject("cat", (1.0, 1.0, 3.0, 3.0), mask=mask, score=0.75)]
        truth = [DetectedObject("dog", (0.0, 0.0, 2.0, 2.0))]
        ((index, classes, size, true_objects, found_objects),) = gather_answers(
            [(3, ["cat"], (4, 4), truth, found)], group
        )
        assert (index, classes, size) == (3, ["cat"], (4, 4))
        assert [(o.label, tuple(o.box)) for o in true_objects] == [("dog", (0.0, 0.0, 2.0, 2.0))]
        assert found_objects[0].label == "cat" and found_objects[0].score == 0.75
        assert np.array_equal(found_objects[0].mask, mask)
        assert group.sum([1.5, 2.0]) == [1.5, 2.0]
    finally:
        dist.destroy_process_group()


def test_segment_records_with_written_answers_are_scored_in_their_images_pixels(tmp_path):
    """A record whose suffix is the model's own answer scores mIoU 1 and box accuracy 1 (the written
    <loc>/<seg> tokens are read at the record's image size, whatever it is)."""
    import PIL.Image

    from vlmzoo.data import shapes
    from vlmzoo.training.evaluation import segmentation_scores

    pipeline = vlmzoo.load("shapes-demo")
    path = shapes.write_dataset(tmp_path / "data", seed=43, num_images=2, size=96, kinds=["segment_shape"])
    records = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        image = PIL.Image.open(path.parent / item["image"]).convert("RGB")
        answer = pipeline.segment(image, item["prefix"].removeprefix("segment "))
        if answer.objects:
            records.append({"image": image, "prefix": item["prefix"], "suffix": answer.raw_text})
    assert records
    scores = segmentation_scores(pipeline.model, pipeline.processor, load_records(records))
    assert scores["segment_miou"] == pytest.approx(1.0) and scores["segment_boxacc@0.5"] == 1.0


def test_unreadable_configs_and_data_specs_say_what_failed(tmp_path):
    from vlmzoo.training import DataError, TrainingConfig

    bad = tmp_path / "run.toml"
    bad.write_text("max_steps = = 3\n")
    with pytest.raises(ValueError, match=r"run.toml is not valid TOML: "):
        TrainingConfig.from_file(bad)
    with pytest.raises(DataError, match=r"^cannot generate training data from \{'generator': 'no-such'"):
        load_records({"generator": "no-such"})
    (tmp_path / "instances.json").write_text('{"images": 3}')
    with pytest.raises(DataError, match=r"^cannot read training data from \{'coco'"):
        load_records({"coco": str(tmp_path / "instances.json")})


def test_siglip_trains_from_records_held_in_memory(tmp_path):
    import PIL.Image
    from test_siglip_use import _shapes_model_and_processor

    config, processor = _shapes_model_and_processor(tmp_path)
    colours = {"red": (230, 30, 30), "blue": (30, 30, 230)}
    pairs = [
        {"image": PIL.Image.new("RGB", (32, 32), rgb), "text": f"a {name} square"} for name, rgb in colours.items()
    ]
    trained = vlmzoo.train(vlmzoo.build(config, device="cpu", seed=0), processor, pairs * 2,
                           output_dir=tmp_path / "run", max_steps=2, batch_size=2, progress=False)  # fmt: skip
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert len(losses) == 2 and trained is not None


def test_bad_training_options_name_vlmzoo_train(tmp_path, processor_dir):  # noqa: F811
    import PIL.Image

    records = [{"image": PIL.Image.new("RGB", (28, 28)), "prefix": "caption en", "suffix": "a"}]
    with pytest.raises(ValueError, match=r"^vlmzoo.train\(\): max_steps"):
        vlmzoo.train(tiny_model(), processor_dir, records, output_dir=tmp_path / "x", max_steps=0)


def test_bfloat16_training_steps_run_under_autocast(tmp_path, data_file, processor):  # noqa: F811
    """The step's forward runs in bfloat16 (its loss differs from float32's on the same weights and batch)
    while the weights stay float32."""
    losses = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        model = vlmzoo.train(tiny_model(), processor, data_file, output_dir=out, max_steps=1, batch_size=4,
                             precision=precision)  # fmt: skip
        losses[precision] = [m["loss"] for m in read_metrics(out) if "loss" in m][0]
        assert model.dtype == torch.float32
    assert losses["bfloat16"] != losses["float32"]
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.05)
