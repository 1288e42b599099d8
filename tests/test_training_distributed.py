"""Training under torchrun: two processes (gloo, CPU) over a global batch match one process over it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_training import data_file, processor, processor_dir  # noqa: F401  (fixtures)
from tiny_tokenizer import TINY_VOCAB_SIZE

import vlmzoo
from vlmzoo.components.linear import forget_kernel_choices
from vlmzoo.training import TrainingConfig, run

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in"),
    # The same arithmetic in both runs: one thread each (torchrun starts its workers with one) and the
    # linear kernels chosen by priority, not by a timing that may differ from process to process.
    pytest.mark.usefixtures("single_thread", "fixed_linear_kernels"),
]


@pytest.fixture
def fixed_linear_kernels(monkeypatch):
    monkeypatch.setenv("VLMZOO_LINEAR_CALIBRATION", "0")
    forget_kernel_choices()
    yield
    forget_kernel_choices()


def write_config(path, processor_dir, processor, **options):  # noqa: F811
    lines = [
        'model = "paligemma-tiny"', 'init = "random"', f'processor = "{processor_dir}"', 'train_data = "train.jsonl"',
        "max_steps = 3", "batch_size = 4", "grad_accumulation = 2", "learning_rate = 1e-2", "warmup_steps = 1",
        "seed = 5", 'padding_side = "left"',
        *(f"{k} = {v!r}".replace("'", '"') for k, v in options.items()),
        "", "[model_overrides]", f"image_token_id = {processor.image_token_id}", "vision = { image_size = 28 }",
        f"decoder = {{ vocab_size = {TINY_VOCAB_SIZE}, num_layers = 2 }}",
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def launch(*arguments, processes=2):
    """``torchrun`` (two CPU processes, one thread each) with ``arguments``; fails the test if a worker fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLMZOO_QUIET": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    done = subprocess.run([*command, *arguments], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def torchrun(config_path, output_dir, processes=2, **extra):
    launch(
        "-m", "vlmzoo", "train", "--config", str(config_path), "--output-dir", str(output_dir), "--device", "cpu",
        *[item for k, v in extra.items() for item in (f"--{k.replace('_', '-')}", str(v))],
        processes=processes,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_over_the_same_global_batch(tmp_path, data_file, processor_dir, processor, mode):  # noqa: F811
    config_path = write_config(tmp_path / "run.toml", processor_dir, processor)
    single = run(TrainingConfig.from_file(config_path, output_dir=str(tmp_path / "one"), device="cpu"))
    torchrun(config_path, tmp_path / "two", distributed=mode)
    two = vlmzoo.from_pretrained(tmp_path / "two")
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], tensor, rtol=1e-4, atol=2e-5, msg=name)
    # Only rank 0 writes: one start line and one line per step.
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "start"' in line for line in lines) == 1
    assert sum('"loss"' in line for line in lines) == 3


FSDP_WORKER = """
import gc, json, sys
import torch.distributed as dist
from vlmzoo.training import TrainingConfig, run
model = run(TrainingConfig.from_file(sys.argv[1], output_dir=sys.argv[2], device="cpu", distributed="fsdp"))
alive = sum(type(o).__name__.startswith("FSDP") for o in gc.get_objects())
print(json.dumps({"returned": type(model).__name__, "fsdp_objects": alive, "group": dist.is_initialized()}))
"""


def test_fsdp_run_returns_the_gathered_model_on_rank_0_and_leaves_nothing_sharded(
    tmp_path,
    data_file,  # noqa: F811 - the fixtures imported above
    processor_dir,  # noqa: F811
    processor,  # noqa: F811
):
    # A sharded model left alive holds the destroyed process group until the interpreter exits.
    config_path = write_config(tmp_path / "run.toml", processor_dir, processor)
    worker = tmp_path / "worker.py"
    worker.write_text(FSDP_WORKER)
    done = launch("--tee=1", "--log-dir", str(tmp_path / "logs"), str(worker), str(config_path), str(tmp_path / "out"))
    reports = sorted(line for line in done.stdout.splitlines() if '"returned"' in line)  # "[default<rank>]:{...}"
    assert [json.loads(r.split(":", 1)[1]) for r in reports] == [
        {"returned": "PaliGemma", "fsdp_objects": 0, "group": False},
        {"returned": "NoneType", "fsdp_objects": 0, "group": False},
    ], done.stdout
