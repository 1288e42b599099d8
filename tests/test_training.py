"""Fine-tuning: data checks, the suffix-only loss, what trains, memorisation, configs and the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import ScriptedAnswers, tiny_config
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

SUFFIXES = ["<loc0100><loc0200><loc0700><loc0800> square", "a dog running in the park", "two cats", "the sky is blue"]
PREFIXES = ["detect square", "caption en", "caption en", "caption en"]
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
        json.dumps({"image": f"images/img{i}.png", "prefix": PREFIXES[i], "suffix": SUFFIXES[i]}) for i in range(4)
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
    final_eval = [m for m in metrics if "eval_loss" in m][-1]
    assert final_eval["detect_examples"] == 1 and 0 <= final_eval["detect_recall"] <= 1
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


# ---------------------------------------------------------------------- LoRA


def test_lora_starts_as_an_exact_no_op_and_merges_to_the_same_logits(processor, data_file):
    from vlmzoo.training.lora import LoraLinear, apply_lora, merge_lora

    model = tiny_model()
    batch = Collator(processor)(load_records(data_file))
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        before = model(**inputs).logits
        wrapped = apply_lora(model, ["language_model.*.q_proj", "language_model.*.v_proj", "*.mlp.*"], rank=4)
        assert "language_model.layers.0.self_attn.q_proj" in wrapped
        assert "vision_tower.layers.0.mlp.fc1" in wrapped  # patterns are shell-style over module names
        assert torch.equal(model(**inputs).logits, before)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {
            f"{name}.{ab}" for name in wrapped for ab in ("lora_a", "lora_b")
        }
        for module in model.modules():
            if isinstance(module, LoraLinear):
                module.lora_b.normal_(0, 0.05)
        adapted = model(**inputs).logits
        assert (adapted - before).abs().max() > 1e-3
        merge_lora(model)
        assert not any(isinstance(m, LoraLinear) for m in model.modules())
        torch.testing.assert_close(model(**inputs).logits, adapted, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(tiny_model(), ["*.nothing"])


def test_lora_training_changes_only_the_targets_and_saves_a_plain_checkpoint(tmp_path, data_file, processor):
    model = tiny_model()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = vlmzoo.train(
        model, processor, data_file, output_dir=tmp_path / "run", max_steps=3, batch_size=4, learning_rate=1e-2,
        train="lora", lora={"rank": 4, "alpha": 8, "targets": ["language_model.*.o_proj"]},
    )  # fmt: skip
    for name, param in trained.named_parameters():
        target = name.startswith("language_model.") and name.endswith("self_attn.o_proj.weight")
        assert torch.equal(param, original[name]) != target, name
    reloaded = vlmzoo.from_pretrained(tmp_path / "run")
    for name, tensor in trained.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name

    # The merged model is a plain PaliGemma checkpoint: transformers loads it with the same logits.
    from hf_checkpoints import load_hf_model, max_abs_diff

    batch = Collator(processor, padding_side="left")(load_records(data_file))
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        ours = trained(**inputs).logits
        theirs = load_hf_model(tmp_path / "run")(**inputs).logits
    assert max_abs_diff(ours, theirs, batch["attention_mask"]) < 1e-4


# ---------------------------------------------------------------------- quantization-aware


def int4_ready_model(seed: int = 0):
    """A tiny model whose decoder layers int4 stores as int4 (inputs of 64 and 128)."""
    config = tiny_config(vocab_size=TINY_VOCAB_SIZE, num_layers=1, hidden_size=64, intermediate_size=128, head_dim=16)
    return vlmzoo.build(config, seed=seed)


def stored(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """``weight`` as the scheme stores it, dequantized."""
    from vlmzoo.model.quantize import get_scheme

    q = get_scheme(scheme)
    return q.dequantize(*q.quantize(weight), weight.dtype)


def test_quantization_aware_steps_see_the_stored_weights_and_update_the_float_ones(processor, data_file):
    from vlmzoo.model.quantize import quantization_plan
    from vlmzoo.training.quantization_aware import QuantizedWeights

    model = int4_ready_model()
    plan = quantization_plan(model, "int4")
    assert {"int4", "int8"} <= set(plan.values())  # decoder layers int4, the tied head int8
    weights = QuantizedWeights(model, "int4")
    floats = {path: model.get_submodule(path).weight.detach().clone() for path in plan}
    batch = Collator(processor)(load_records(data_file)[:2])
    inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "labels")}
    with weights.applied():
        for path, scheme in plan.items():
            assert torch.equal(model.get_submodule(path).weight, stored(floats[path], scheme)), path
        SuffixLoss(model)(**inputs).backward()
    for path in plan:  # the float weights are back, with the gradients of the stored ones
        assert torch.equal(model.get_submodule(path).weight, floats[path]), path
    qat_grads = {path: model.get_submodule(path).weight.grad.clone() for path in plan}

    reference = int4_ready_model()  # the same model with the stored weights for good: same gradients
    QuantizedWeights(reference, "int4").snap()
    SuffixLoss(reference)(**inputs).backward()
    for path in plan:
        torch.testing.assert_close(reference.get_submodule(path).weight.grad, qat_grads[path], rtol=1e-5, atol=1e-6)
    assert not torch.equal(reference.get_submodule(path).weight, floats[path])
    # no scheme: nothing changes
    with QuantizedWeights(model, None).applied():
        assert torch.equal(model.get_submodule(path).weight, floats[path])


def test_a_quantization_aware_run_saves_weights_its_quantized_form_keeps(tmp_path, data_file, processor):
    """The final model holds the stored weights (quantizing again changes almost nothing); checkpoints the
    float ones, and a run resumed from one with another quantization_aware is refused."""
    from vlmzoo.model.quantize import quantization_plan

    options = dict(max_steps=4, batch_size=2, learning_rate=1e-2, warmup_steps=1, save_every=2)
    trained = vlmzoo.train(int4_ready_model(), processor, data_file, output_dir=tmp_path / "run",
                           quantization_aware="int4", **options)  # fmt: skip
    plain = vlmzoo.train(int4_ready_model(), processor, data_file, output_dir=tmp_path / "plain", **options)
    int4_paths = [path for path, scheme in quantization_plan(trained, "int4").items() if scheme == "int4"]
    assert len(int4_paths) == 7  # q, k, v, o, gate, up, down
    with torch.no_grad():
        for path in int4_paths:  # on int4's levels: quantizing again moves them a tenth as far as plain weights
            ours, theirs = trained.get_submodule(path).weight, plain.get_submodule(path).weight
            ours_error = (stored(ours, "int4") - ours).abs().max() / ours.abs().max()
            theirs_error = (stored(theirs, "int4") - theirs).abs().max() / theirs.abs().max()
            assert ours_error < 0.1 * theirs_error, (path, float(ours_error), float(theirs_error))
    saved = vlmzoo.from_pretrained(tmp_path / "run").language_model.layers[0].mlp.down_proj.weight
    assert torch.equal(saved, trained.language_model.layers[0].mlp.down_proj.weight)
    checkpoint = vlmzoo.from_pretrained(tmp_path / "run" / "checkpoints" / "step-00000002")
    weight = checkpoint.language_model.layers[0].mlp.down_proj.weight
    assert (stored(weight, "int4") - weight).abs().max() > 1e-4  # float weights, for an exact resume
    with pytest.raises(ValueError, match="options changed .*quantization_aware"):
        vlmzoo.train(int4_ready_model(), processor, data_file, output_dir=tmp_path / "run", max_steps=6,
                     batch_size=2, resume_from="latest", quantization_aware="int8")  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"train": "lora"}, "train='lora' freezes them"),
        ({"distributed": "fsdp"}, "distributed='ddp'"),
        ({"quantization_aware": "int5"}, r"quantization_aware: .*unknown quantization 'int5'; did you mean 'int8'"),
    ],
)
def test_quantization_aware_refuses_what_it_cannot_train(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig.checked({"model": "m", "output_dir": str(tmp_path), "max_steps": 1, "batch_size": 1,
                                "quantization_aware": "int4", **options})  # fmt: skip


# ---------------------------------------------------------------------- resume


@pytest.mark.parametrize("part", ["all", "lora"])
def test_an_interrupted_run_resumes_exactly(tmp_path, data_file, processor, monkeypatch, part):
    from vlmzoo.training import trainer as trainer_module

    options = dict(
        max_steps=5, batch_size=2, learning_rate=1e-2, warmup_steps=1, save_every=2, train=part,
        lora={"rank": 2, "dropout": 0.1},
    )  # fmt: skip
    full = vlmzoo.train(tiny_model(), processor, data_file, output_dir=tmp_path / "full", **options)

    write = trainer_module.MetricsLog.write

    def interrupted(self, **fields):
        if fields.get("step") == 3 and "loss" in fields:
            raise KeyboardInterrupt
        write(self, **fields)

    monkeypatch.setattr(trainer_module.MetricsLog, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vlmzoo.train(tiny_model(), processor, data_file, output_dir=tmp_path / "cut", **options)
    monkeypatch.setattr(trainer_module.MetricsLog, "write", write)

    checkpoint = tmp_path / "cut" / "checkpoints" / "step-00000002"
    names = sorted(p.name for p in checkpoint.iterdir())
    assert all(n.endswith((".safetensors", ".json")) for n in names), names
    if part == "all":
        assert "model.safetensors" in names and "config.json" in names
    else:
        assert "adapters.safetensors" in names and "model.safetensors" not in names

    # Full checkpoints hold the weights (a different start is overwritten); LoRA ones the adapters only.
    start = tiny_model(seed=1 if part == "all" else 0)
    resumed = vlmzoo.train(start, processor, data_file, output_dir=tmp_path / "cut", resume_from="latest", **options)
    for name, tensor in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    steps = [m["step"] for m in read_metrics(tmp_path / "cut") if "loss" in m]
    assert steps == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]

    with pytest.raises(ValueError, match="options changed .*batch_size"):
        vlmzoo.train(tiny_model(), processor, data_file, output_dir=tmp_path / "cut",
                     resume_from=str(checkpoint), **{**options, "batch_size": 4})  # fmt: skip


# ---------------------------------------------------------------------- detection metrics


def test_boxes_match_one_to_one_by_label_at_iou_one_half():
    from vlmzoo.tasks import box_iou, match_objects

    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    truth = [("cat", (0, 0, 10, 10)), ("cat", (20, 20, 30, 30)), ("dog", (0, 0, 10, 10))]
    guess = [("cat", (1, 1, 10, 10)), ("cat", (0, 0, 10, 9)), ("dog", (20, 20, 30, 30)), ("cat", (20, 21, 30, 30))]
    assert match_objects(guess, truth) == 2  # one of the two boxes on the first cat, and the second cat


def test_detection_records_are_scored_through_the_detect_postprocessor(processor):
    """Answers are parsed by the task post-processor and matched to the suffix's boxes at IoU 0.5."""
    from vlmzoo.training.evaluation import detection_scores

    image = PIL.Image.new("RGB", (28, 28), "white")
    truth = ["<loc0100><loc0100><loc0500><loc0500> cat", "<loc0000><loc0000><loc0200><loc0200> dog ; "
             "<loc0600><loc0600><loc0900><loc0900> dog"]  # fmt: skip
    records = load_records([(image, "detect cat", truth[0]), (image, "detect dog", truth[1]), (image, "ocr", "x")])

    perfect = detection_scores(ScriptedAnswers(processor, truth), processor, records, batch_size=4)
    assert perfect == {"detect_precision": 1.0, "detect_recall": 1.0, "detect_examples": 2,
                       "detect_mAP": 1.0, "detect_AP50": 1.0, "detect_AP75": 1.0, "detect_AR100": 1.0}  # fmt: skip
    # One dog box moved off its object, one extra cat box: 2 found of 4 guesses and 3 true boxes.
    guesses = [
        "<loc0100><loc0100><loc0500><loc0500> cat ; <loc0700><loc0000><loc0900><loc0200> cat",
        "<loc0000><loc0000><loc0200><loc0200> dog ; <loc0000><loc0600><loc0300><loc0900> dog",
    ]
    scores = detection_scores(ScriptedAnswers(processor, guesses), processor, records, batch_size=4)
    assert scores["detect_precision"] == pytest.approx(2 / 4) and scores["detect_recall"] == pytest.approx(2 / 3)
    # COCO: the cat's exact box ranks first (equal scores keep the answer's order): AP 1; one dog of two
    # found, at precision 1: 51 of the 101 recall points, at every IoU threshold.
    assert scores["detect_mAP"] == pytest.approx((1 + 51 / 101) / 2)
    assert scores["detect_AR100"] == pytest.approx((1 + 0.5) / 2)


def test_bfloat16_autocast_trains_and_evaluates(tmp_path, data_file, processor):
    out = tmp_path / "run"
    model = vlmzoo.train(tiny_model(), processor, data_file, eval_data=data_file, output_dir=out, max_steps=2,
                         batch_size=4, learning_rate=1e-2, precision="bfloat16")  # fmt: skip
    metrics = read_metrics(out)
    assert metrics[0]["autocast"] == "bfloat16"
    assert model.dtype == torch.float32  # weights and optimizer state stay in float32
    final = [m for m in metrics if "eval_loss" in m][-1]
    assert math.isfinite(final["eval_loss"]) and final["detect_examples"] == 1
