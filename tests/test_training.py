"""Fine-tuning: data checks, the suffix-only loss, what trains, memorisation, configs and the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import tiny_config
from tiny_tokenizer import TINY_VOCAB_SIZE, make_tiny_processor_dir

import vlmzoo
from vlmzoo.cli import main
from vlmzoo.training import (
    Collator,
    DataError,
    StepBatches,
    SuffixLoss,
    TrainingConfig,
    load_records,
    validate,
    warmup_cosine,
)

pytestmark = pytest.mark.usefixtures("single_thread")

SUFFIXES = ["a red square", "a dog running in the park", "two cats", "the sky is blue"]
COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (240, 240, 0)]


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory):
    return make_tiny_processor_dir(tmp_path_factory.mktemp("proc"), image_size=28, num_image_tokens=4)["path"]


@pytest.fixture(scope="module")
def processor(processor_dir):
    return vlmzoo.load_processor(processor_dir)


def tiny_model(seed: int = 0):
    config = tiny_config(vocab_size=TINY_VOCAB_SIZE, num_layers=1)
    return vlmzoo.build(config, seed=seed)


def write_images(directory, count=4):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = np.zeros((28, 28, 3), dtype=np.uint8)
        image[4 + i : 20 + i, 6:22] = COLOURS[i % len(COLOURS)]
        path = directory / f"img{i}.png"
        PIL.Image.fromarray(image).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def data_file(tmp_path):
    write_images(tmp_path / "images")
    lines = [
        json.dumps({"image": f"images/img{i}.png", "prefix": "caption en", "suffix": SUFFIXES[i]}) for i in range(4)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_metrics(directory):
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- data


def test_jsonl_records_resolve_images_against_the_file(data_file):
    records = load_records(data_file)
    assert [r.suffix for r in records] == SUFFIXES
    assert records[0].image == str(data_file.parent / "images" / "img0.png")
    assert records[2].where == f"{data_file}:3"


def test_bad_records_are_all_named_by_file_and_line(tmp_path, processor):
    write_images(tmp_path, count=1)
    (tmp_path / "broken.png").write_text("not an image")
    lines = [
        '{"image": "img0.png", "prefix": "caption en", "suffix": "fine"}',
        '{"image": "img0.png", "prefix": "caption en"',
        '{"image": "img0.png", "prefix": "caption en"}',
        '{"image": "img0.png", "prefix": "caption en", "suffix": "  "}',
        '{"prefix": "caption en", "suffix": "no image"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_records(path)
    message = str(info.value)
    assert "4 bad record(s)" in message
    assert f"{path}:2: not valid JSON" in message
    assert f"{path}:3: missing field 'suffix'" in message
    assert f"{path}:4: field 'suffix' is empty" in message
    assert f"{path}:5: missing field 'image'" in message
    assert f"{path}:1" not in message

    good = tmp_path / "images.jsonl"
    good.write_text(
        '{"image": "img0.png", "prefix": "caption en", "suffix": "fine"}\n'
        '{"image": "missing.png", "prefix": "caption en", "suffix": "fine"}\n'
        '{"image": "broken.png", "prefix": "caption en", "suffix": "fine"}\n'
        '{"image": "img0.png", "prefix": "caption en", "suffix": "' + "a cat " * 20 + '"}\n'
    )
    with pytest.raises(DataError) as info:
        validate(load_records(good), processor, max_length=30)
    message = str(info.value)
    assert f"{good}:2: image" in message and "does not exist" in message
    assert f"{good}:3: image" in message and "not a readable image" in message
    assert f"{good}:4:" in message and "more than the limit of 30" in message
    assert f"{good}:1" not in message


def test_python_records_accept_pil_images_and_report_bad_ones(processor):
    image = PIL.Image.new("RGB", (30, 30), "red")
    records = load_records([{"image": image, "prefix": "caption en", "suffix": "red"}, (image, "ocr", "text")])
    validate(records, processor)
    assert records[1].prefix == "ocr"
    with pytest.raises(DataError, match="record 1: missing field 'suffix'"):
        load_records([{"image": image, "suffix": "x"}, {"image": image, "prefix": "caption en"}])


# ---------------------------------------------------------------------- loss


def test_labels_and_loss_cover_the_suffix_only(data_file, processor):
    records = load_records(data_file)
    batch = Collator(processor, padding_side="right")(records)
    suffix = batch["token_type_ids"] == 1
    assert torch.equal(batch["labels"] != -100, suffix)
    assert (batch["attention_mask"][:, 0] == 1).all()  # right padding: rows start at column 0

    model = tiny_model()
    loss_module = SuffixLoss(model)
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "labels")}
    with torch.no_grad():
        summed = loss_module(**inputs)
        mean = model(**{k: v for k, v in inputs.items()}).loss
        n = int((batch["labels"][:, 1:] != -100).sum())
        torch.testing.assert_close(summed / n, mean, rtol=1e-5, atol=1e-6)

        # Labels placed on prefix positions are ignored: only suffix positions count.
        changed = dict(inputs, labels=torch.where(suffix, batch["labels"], batch["input_ids"]))
        torch.testing.assert_close(loss_module(**changed), summed, rtol=0, atol=0)

        # Left padding gives the same loss (positions follow the attention mask).
        left = Collator(processor, padding_side="left")(records)
        assert (left["attention_mask"][:, -1] == 1).all()
        left_inputs = {k: left[k] for k in inputs}
        torch.testing.assert_close(loss_module(**left_inputs), summed, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- schedule and sampling


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, warmup_steps=4, max_steps=14, min_ratio=0.1) for s in range(15)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


def test_processes_split_the_same_global_batches():
    single = list(StepBatches(10, 4, seed=3, max_steps=6))
    per_rank = [list(StepBatches(10, 4, rank=r, world_size=2, seed=3, max_steps=6)) for r in range(2)]
    for step in range(6):
        assert sorted(per_rank[0][step] + per_rank[1][step]) == sorted(single[step])
    seen = [i for batch in single[:5] for i in batch]
    assert sorted(seen[:10]) == list(range(10))  # each epoch visits every example once
    resumed = list(StepBatches(10, 4, seed=3, start_step=4, max_steps=6))
    assert resumed == single[4:]
    with pytest.raises(ValueError, match="multiple of processes x grad_accumulation"):
        StepBatches(10, 6, world_size=2, grad_accumulation=2, max_steps=1)


# ---------------------------------------------------------------------- training


def test_a_few_steps_memorise_a_fixed_batch(tmp_path, data_file, processor):
    out = tmp_path / "run"
    model = vlmzoo.train(
        tiny_model(),
        processor,
        data_file,
        eval_data=data_file,
        output_dir=out,
        max_steps=20,
        batch_size=4,
        learning_rate=1e-2,
        warmup_steps=2,
        eval_every=10,
    )
    metrics = read_metrics(out)
    losses = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    assert len(losses) == 20 and len(evals) == 2
    assert losses[-1] < 0.5 * losses[0]
    assert evals[-1] < 0.5 * losses[0]
    assert all(m["tokens_per_s"] > 0 for m in metrics if "tokens_per_s" in m)
    assert not model.training
    reloaded = vlmzoo.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert vlmzoo.load_processor(out).vocab_size == processor.vocab_size
    assert TrainingConfig.model_validate_json((out / "training_config.json").read_text()).max_steps == 20


@pytest.mark.parametrize(
    ("part", "trains"),
    [
        ("projector+decoder", lambda n: not n.startswith("vision_tower.")),
        ("attention", lambda n: n.startswith("language_model.") and ".self_attn." in n),
    ],
)
def test_frozen_parts_do_not_change(tmp_path, data_file, processor, part, trains):
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    vlmzoo.train(
        model, processor, data_file, output_dir=tmp_path / "run", max_steps=2, batch_size=2, learning_rate=1e-2,
        train=part,
    )  # fmt: skip
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == trains(name), name


def test_an_existing_run_is_not_overwritten(tmp_path, data_file, processor):
    out = tmp_path / "run"
    options = dict(output_dir=out, max_steps=1, batch_size=2, learning_rate=1e-3)
    vlmzoo.train(tiny_model(), processor, data_file, **options)
    with pytest.raises(ValueError, match="already holds a training run"):
        vlmzoo.train(tiny_model(), processor, data_file, **options)
    vlmzoo.train(tiny_model(), processor, data_file, overwrite=True, **options)


# ---------------------------------------------------------------------- configs and the command line


def test_config_files_resolve_paths_and_name_bad_fields(tmp_path, data_file, processor_dir):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'model = "paligemma-tiny"\ninit = "random"\nprocessor = "proc"\ntrain_data = "train.jsonl"\n'
        'output_dir = "out"\nmax_steps = 3\nbatch_size = 2\n'
    )
    (tmp_path / "proc").symlink_to(processor_dir)
    config = TrainingConfig.from_file(toml, max_steps=5)
    assert config.train_data == str(tmp_path / "train.jsonl")
    assert config.processor == str(tmp_path / "proc")
    assert config.model == "paligemma-tiny" and config.max_steps == 5
    (tmp_path / "run.json").write_text(json.dumps({"model": "m", "output_dir": "o", "max_step": 3, "batch_size": 2}))
    with pytest.raises(ValueError, match=r"run.json: .*max_step: Extra inputs are not permitted"):
        TrainingConfig.from_file(tmp_path / "run.json")
    with pytest.raises(ValueError, match="init='random' .* set processor"):
        TrainingConfig(model="paligemma-tiny", init="random", output_dir="o", max_steps=1, batch_size=1)


def test_command_line_trains_a_random_zoo_variant_from_a_config(tmp_path, data_file, processor_dir, processor, capsys):
    toml = tmp_path / "demo.toml"
    toml.write_text(
        'model = "paligemma-tiny"\ninit = "random"\n'
        f'processor = "{processor_dir}"\ntrain_data = "train.jsonl"\noutput_dir = "out"\n'
        "max_steps = 3\nbatch_size = 2\nlearning_rate = 1e-3\n\n"
        f"[model_overrides]\nimage_token_id = {processor.image_token_id}\nvision = {{ image_size = 28 }}\n"
        f"decoder = {{ vocab_size = {TINY_VOCAB_SIZE}, num_layers = 1 }}\n"
    )
    assert main(["--quiet", "train", "--config", str(toml), "--max-steps", "4", "--seed", "7"]) == 0
    out = tmp_path / "out"
    assert [m["step"] for m in read_metrics(out) if "loss" in m] == [1, 2, 3, 4]
    assert vlmzoo.from_pretrained(out).config.decoder.vocab_size == TINY_VOCAB_SIZE

    assert main(["eval", str(out), "--data", str(data_file)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["examples"] == 4 and metrics["loss"] > 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "nowhere.png", "prefix": "x", "suffix": "y"}\n')
    code = main(["train", "--config", str(toml), "--train-data", str(bad), "--output-dir", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{bad}:1: image" in err and "does not exist" in err


def test_worker_processes_and_accumulation_give_the_same_run(tmp_path, data_file, processor):
    """Images decoded in DataLoader workers, and a batch split into micro-batches, change nothing."""
    options = dict(max_steps=3, batch_size=4, learning_rate=1e-2)
    plain = vlmzoo.train(tiny_model(), processor, data_file, output_dir=tmp_path / "a", **options)
    split = vlmzoo.train(
        tiny_model(), processor, data_file, output_dir=tmp_path / "b", num_workers=2, grad_accumulation=2, **options
    )
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(split.state_dict()[name], tensor, rtol=1e-4, atol=2e-5)
