"""Data generators as training data: a config names one instead of a JSONL file."""

from __future__ import annotations

import PIL.Image
import pytest

from vlmzoo.data import generate_records, shapes
from vlmzoo.training import DataError, TrainingConfig, load_records


def test_a_generator_spec_gives_the_same_records_as_the_generator():
    records = load_records({"generator": "shapes", "seed": 3, "images": 4, "size": 64})
    expected = [r for _, rs in shapes.make_records(3, 4, size=64) for r in rs]
    assert [(r.prefix, r.suffix) for r in records] == [(r.prefix, r.suffix) for r in expected]
    assert all(isinstance(r.image, PIL.Image.Image) and r.image.size == (64, 64) for r in records)
    # "none" where nothing matches: fine-tuning needs a target; segment records carry objects instead
    assert all(r.suffix for r in records if r.objects is None)
    segments = [r for r in records if r.prefix.startswith("segment ")]
    assert len(segments) == 4 and all(r.suffix is None and r.objects for r in segments)


def test_bad_generator_specs_say_what_to_use():
    with pytest.raises(ValueError, match="unknown data generator 'dots'.*'shapes'"):
        generate_records({"generator": "dots"})
    with pytest.raises(ValueError, match=r"no option\(s\) \['colours'\].*'images'"):
        generate_records({"generator": "shapes", "seed": 0, "images": 2, "colours": 3})
    with pytest.raises(DataError, match="cannot generate training data"):
        load_records({"generator": "shapes", "seed": 0, "images": 0})


def test_a_config_file_keeps_a_generator_table(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'model = "shapes-demo"\ninit = "random"\nprocessor = "shapes-demo"\noutput_dir = "out"\nmax_steps = 1\n'
        "batch_size = 1\n"
        'train_data = { generator = "shapes", seed = 0, images = 2, size = 64 }\n'
    )
    config = TrainingConfig.from_file(path)
    assert config.train_data == {"generator": "shapes", "seed": 0, "images": 2, "size": 64}
    assert TrainingConfig.model_validate_json(config.to_json()) == config


def test_init_std_sets_the_spread_of_random_weights():
    import torch

    import vlmzoo

    narrow = vlmzoo.build("shapes-demo", seed=0)
    wide = vlmzoo.build("shapes-demo", seed=0, init_std=0.1)
    for model, std in ((narrow, 0.02), (wide, 0.1)):
        weight = model.language_model.layers[0].mlp.gate_proj.weight
        assert weight.std().item() == pytest.approx(std, rel=0.05)
    assert torch.equal(
        wide.language_model.layers[0].mlp.gate_proj.weight,
        vlmzoo.build("shapes-demo", seed=0, init_std=0.1).language_model.layers[0].mlp.gate_proj.weight,
    )
    with pytest.raises(ValueError, match="init_std must be positive"):
        vlmzoo.build("shapes-demo", init_std=0)
    with pytest.raises(ValueError, match="init_std only applies with init='random'"):
        TrainingConfig(model="x", init_std=0.1, output_dir="o", max_steps=1, batch_size=1)
