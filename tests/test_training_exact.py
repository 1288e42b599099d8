"""The training loss and the step batches, pinned to values computed by hand.

The loss is compared with a cross-entropy written out from the model's full forward logits, with
padding, prompt tokens and ignored labels in the batch; the sampler with the stream of seeded epochs
that makes a resumed run see exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

import vlmzoo
from vlmzoo.processing import IGNORE_INDEX
from vlmzoo.training import EpochIndex, StepBatches, SuffixLoss
from vlmzoo.training.loss import count_targets

pytestmark = pytest.mark.usefixtures("single_thread")


def loss_batch():
    """Two rows, right padded: 4 image tokens, <bos>, prompt, then the suffix (token type 1)."""
    config = tiny_config(num_layers=1)
    image, bos = config.image_token_id, config.bos_token_id
    input_ids = torch.tensor(
        [
            [image] * 4 + [bos, 10, 11, 20, 21, 22, 1],  # prompt 10 11, suffix 20 21 22 <eos>
            [image] * 4 + [bos, 12, 30, 31, 0, 0, 0],  # prompt 12, suffix 30 31, then padding
        ]
    )
    token_type_ids = torch.tensor([[0] * 7 + [1] * 4, [0] * 6 + [1] * 2 + [1] * 3])  # padding marked 1 too
    attention_mask = torch.tensor([[1] * 11, [1] * 8 + [0] * 3])
    labels = input_ids.masked_fill(token_type_ids == 0, IGNORE_INDEX)
    labels[0, 8] = IGNORE_INDEX  # an ignored suffix token (as padding records have)
    pixel_values = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return config, dict(
        input_ids=input_ids,
        pixel_values=pixel_values,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        labels=labels,
    )


def test_suffix_loss_is_the_summed_cross_entropy_of_the_real_suffix_tokens():
    config, batch = loss_batch()
    model = vlmzoo.build(config, seed=3)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        log_probs = logits.log_softmax(-1)
        # Position t predicts token t + 1: row 0 predicts 20 (t=6), 22 (t=8... skipped 21), <eos>; row 1: 30, 31.
        targets = [(0, 6, 20), (0, 8, 22), (0, 9, 1), (1, 5, 30), (1, 6, 31)]
        expected = -sum(float(log_probs[b, t, token]) for b, t, token in targets)
        got = SuffixLoss(model)(**batch)
    assert got.shape == ()
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-4)
    assert count_targets(batch) == len(targets)


def test_count_targets_counts_suffix_tokens_only():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, 9, 9]])
    token_type_ids = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    # The first column is never a target (nothing predicts it); masked and ignored columns are not either.
    batch = {"labels": labels, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    assert count_targets(batch) == 2 + 3
    prefix_labels = dict(batch, token_type_ids=torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]))
    assert count_targets(prefix_labels) == 1 + 3


# --- step batches -------------------------------------------------------------------------------------------


def epochs_of(stream: list[int], size: int) -> list[list[int]]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def test_steps_walk_a_stream_of_seeded_epochs_without_gaps():
    batches = StepBatches(5, 2, seed=7, max_steps=10)
    steps = list(batches)
    assert len(steps) == len(batches) == 10
    stream = [i for step in steps for i in step]
    assert all(sorted(epoch) == list(range(5)) for epoch in epochs_of(stream, 5))
    assert [batches.global_batch(s) for s in range(10)] == steps
    assert epochs_of(stream, 5)[0] != epochs_of(stream, 5)[1] or epochs_of(stream, 5)[1] != epochs_of(stream, 5)[2]
    assert list(StepBatches(5, 2, seed=7, max_steps=10)) == steps  # the seed fixes the order
    assert list(StepBatches(5, 2, seed=8, max_steps=10)) != steps


def test_a_resumed_sampler_continues_exactly():
    full = list(StepBatches(7, 3, seed=1, max_steps=9))
    for start in (1, 2, 5, 8):
        resumed = StepBatches(7, 3, seed=1, start_step=start, max_steps=9)
        assert list(resumed) == full[start:]
        assert len(resumed) == 9 - start


def test_processes_and_micro_batches_split_each_global_batch_exactly():
    sampler = StepBatches(9, 8, grad_accumulation=2, rank=1, world_size=2, seed=4, max_steps=3)
    assert sampler.micro_batch_size == 2
    micro = list(sampler)
    assert len(micro) == len(sampler) == 3 * 2
    for step in range(3):
        share = sampler.global_batch(step)[1::2]  # rank 1 of 2 takes every second example
        assert micro[2 * step] + micro[2 * step + 1] == share
        assert micro[2 * step] == share[:2] and micro[2 * step + 1] == share[2:]


def test_tagged_indices_carry_the_epoch_they_were_drawn_in():
    sampler = StepBatches(3, 2, seed=0, max_steps=4, tag_epochs=True)
    tagged = [item for step in sampler for item in step]
    assert all(isinstance(item, EpochIndex) for item in tagged)
    assert [epoch for _, epoch in tagged] == [0, 0, 0, 1, 1, 1, 2, 2]
    plain = [i for step in StepBatches(3, 2, seed=0, max_steps=4) for i in step]
    assert [index for index, _ in tagged] == plain
    split = StepBatches(3, 2, world_size=2, rank=1, seed=0, max_steps=2, tag_epochs=True)
    assert [tuple(item) for step in split for item in step] == [
        (tagged[1][0], 0),
        (tagged[3][0], 1),
    ]


def test_bad_sampler_settings_are_refused():
    with pytest.raises(ValueError, match="empty"):
        StepBatches(0, 2, max_steps=1)
    with pytest.raises(ValueError, match="multiple of processes x grad_accumulation"):
        StepBatches(4, 3, grad_accumulation=2, max_steps=1)
    assert StepBatches(4, 4, grad_accumulation=2, world_size=2, max_steps=1).micro_batch_size == 1


# --- checkpoints: what a resume restores ---------------------------------------------------------------


def test_a_checkpoint_restores_the_optimizer_schedule_and_every_random_generator(tmp_path):
    import random

    import numpy as np

    from vlmzoo.training import checkpointing

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(2):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    torch.manual_seed(11), random.seed(12), np.random.seed(13)
    saved = checkpointing.save_checkpoint(
        tmp_path, 7, save_model=lambda d: None, adapters={"a.lora_a": torch.ones(2)},
        optimizer_state=optimizer.state_dict(), scheduler=scheduler, run={"batch_size": 2}, keep=None,
    )  # fmt: skip
    expected = (torch.rand(3).tolist(), random.random(), np.random.rand())
    assert saved == tmp_path / "checkpoints" / "step-00000007"

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    state = checkpointing.read_state(saved)
    assert state["step"] == 7 and state["run"] == {"batch_size": 2}
    checkpointing.restore_rng(saved, state)
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == expected

    restored = checkpointing.load_optimizer_state(saved)
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]  # betas come back as a tuple
    for index, values in original["state"].items():
        for key, value in values.items():
            got = restored["state"][str(index)][key]
            assert torch.equal(torch.as_tensor(got), torch.as_tensor(value)), (index, key)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.load_state_dict({**restored, "state": {int(k): v for k, v in restored["state"].items()}})


def test_latest_is_the_highest_complete_step_and_old_ones_are_pruned(tmp_path):
    from vlmzoo.training import checkpointing

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    assert checkpointing.find_checkpoint("latest", tmp_path) is None
    for step in (9, 10, 100):
        checkpointing.save_checkpoint(
            tmp_path, step, save_model=lambda d: None, adapters={}, optimizer_state=optimizer.state_dict(),
            scheduler=scheduler, run={}, keep=2,
        )  # fmt: skip
    names = [p.name for p in checkpointing.list_checkpoints(tmp_path)]
    assert names == ["step-00000010", "step-00000100"]  # numeric order, the oldest pruned
    assert checkpointing.find_checkpoint("latest", tmp_path).name == "step-00000100"
    incomplete = tmp_path / "checkpoints" / "step-00000200"
    incomplete.mkdir()  # no trainer_state.json: not a checkpoint
    assert checkpointing.find_checkpoint("latest", tmp_path).name == "step-00000100"
    named = tmp_path / "checkpoints" / "step-00000010"
    assert checkpointing.find_checkpoint(str(named), tmp_path) == named
    with pytest.raises(checkpointing.CheckpointError, match="is not a training checkpoint"):
        checkpointing.find_checkpoint(str(incomplete), tmp_path)


def test_lora_adapters_resume_exactly_and_a_mismatch_names_the_file(tmp_path):
    """A checkpoint's adapters go back into the same LoRA layers value for value; adapters of other layers
    (a different `lora.targets`) are refused with the file and the missing / unexpected names."""
    from safetensors.torch import save_file

    from vlmzoo.training.checkpointing import ADAPTERS_FILE, CheckpointError, load_adapters
    from vlmzoo.training.lora import apply_lora

    def adapted(targets, seed):
        model = vlmzoo.build(tiny_config(num_layers=1), seed=0)
        apply_lora(model, targets, rank=2)
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith((".lora_a", ".lora_b")):
                    param.normal_()
        return model

    def adapters(model):
        return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith((".lora_a", ".lora_b"))}

    saved = adapted(["language_model.*.q_proj"], seed=1)
    save_file(adapters(saved), tmp_path / ADAPTERS_FILE)
    resumed = adapted(["language_model.*.q_proj"], seed=2)
    load_adapters(resumed, tmp_path)
    for name, tensor in adapters(saved).items():
        assert torch.equal(adapters(resumed)[name], tensor), name

    for targets, missing, unexpected in (
        (["language_model.*.q_proj", "language_model.*.v_proj"], "v_proj", None),  # a layer more
        (["language_model.*.k_proj"], "k_proj", "q_proj"),  # other layers
    ):
        with pytest.raises(CheckpointError) as error:
            load_adapters(adapted(targets, seed=3), tmp_path)
        message = str(error.value)
        assert str(tmp_path / ADAPTERS_FILE) in message and "resume with the same lora settings" in message
        assert missing in message.split("unexpected")[0]
        assert (unexpected or "[]") in message.split("unexpected")[1]


@pytest.mark.parametrize("text", [None, '{"step": 4,', '{"step": "caf\u00e9"}'])
def test_a_checkpoint_state_file_is_read_as_utf8_or_refused_by_name(tmp_path, text):
    from vlmzoo.training.checkpointing import STATE_FILE, CheckpointError, read_state

    if text is not None:
        (tmp_path / STATE_FILE).write_bytes(text.encode("utf-8"))
    if text == '{"step": "caf\u00e9"}':
        assert read_state(tmp_path) == {"step": "caf\u00e9"}
        return
    with pytest.raises(CheckpointError, match=rf"cannot read {tmp_path / STATE_FILE}: "):
        read_state(tmp_path)
