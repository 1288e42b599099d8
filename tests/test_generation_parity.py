"""Decoding checked step by step against transformers' generate on the same checkpoint.

Tiny random models repeat one token under greedy decoding, so matching greedy tokens proves little. Here
both libraries pick tokens with the same per-step random bias added to the logits (so the tokens vary
from step to step), and the raw logits of every step must agree to 1e-4 in float32: over left-padded
batches, sliding windows shorter than the run, and one-token prompts.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from hf_checkpoints import load_hf_model, make_hf_model, make_inputs, save_hf_checkpoint

import vlmzoo
from vlmzoo.generation import Greedy, RepetitionPenalty

ATOL = 1e-4
NEW_TOKENS = 12

#: family -> make_hf_model kwargs; Gemma 2's window (5) is shorter than every run below.
FAMILIES = {
    "gemma": {"family": "gemma", "num_heads": 4, "num_kv_heads": 1},
    "gemma2": {"family": "gemma2", "num_layers": 3, "num_kv_heads": 2, "sliding_window": 5,
               "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0},
}  # fmt: skip


@pytest.fixture(scope="module", params=list(FAMILIES))
def checkpoint(request, tmp_path_factory):
    """(transformers model, vlmzoo model) loaded from the same files."""
    hf = make_hf_model(**FAMILIES[request.param], seed=11)
    directory = save_hf_checkpoint(hf, tmp_path_factory.mktemp(request.param))
    return load_hf_model(directory), vlmzoo.from_pretrained(directory, progress=False)


def step_biases(batch: int, vocab: int, image_token_id: int, length: int, scale: float = 3.0) -> torch.Tensor:
    """[length, batch, vocab] bias per sequence length and row: large enough to change the pick at every step
    (and differently in each row); never <image>."""
    bias = torch.randn(length, batch, vocab, generator=torch.Generator().manual_seed(0)) * scale
    bias[..., image_token_id] = float("-inf")
    return bias


class BiasedGreedy(Greedy):
    """Greedy after adding the bias row of the current length (prompt + tokens so far)."""

    def __init__(self, bias: torch.Tensor) -> None:
        self.bias = bias

    def warp(self, logits, history):
        return logits + self.bias[history.shape[1]]


class BiasProcessor(transformers.LogitsProcessor):
    """The same bias on transformers' side."""

    def __init__(self, bias: torch.Tensor) -> None:
        self.bias = bias

    def __call__(self, input_ids, scores):
        return scores + self.bias[input_ids.shape[1]]


def text_only(batch: int, length: int, vocab: int, image_token_id: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, image_token_id, (batch, length), generator=torch.Generator().manual_seed(length))
    ids[:, 0] = 2
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def assert_same_steps(
    hf, ours, inputs, *, repetition_penalty=None, eos_token_id=None, model=None, bias_scale=3.0
) -> torch.Tensor:
    """Decode with both libraries; every step's raw logits and the tokens must agree. Returns the tokens.

    ``eos_token_id`` (an id or a list) makes both stop rows at those tokens; ``model`` replaces ``ours``
    for the vlmzoo side (e.g. a copy whose config names several end tokens) and then vlmzoo is given no
    ``eos_token_id``, so the config's is used.
    """
    vocab, image = ours.config.decoder.vocab_size, ours.config.image_token_id
    batch, length = inputs["input_ids"].shape
    bias = step_biases(batch, vocab, image, length + NEW_TOKENS + 1, bias_scale)
    hf_options = {} if repetition_penalty is None else {"repetition_penalty": repetition_penalty}
    with torch.no_grad():
        expected = hf.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos_token_id,
            pad_token_id=0,
            logits_processor=transformers.LogitsProcessorList([BiasProcessor(bias)]),
            output_logits=True,
            return_dict_in_generate=True,
            **hf_options,
        )
    sampler = BiasedGreedy(bias)
    if repetition_penalty is not None:
        sampler = RepetitionPenalty(repetition_penalty) + sampler
    options = {"stop_at_eos": eos_token_id is not None, "pad_token_id": 0}
    if model is None:
        model, options["eos_token_id"] = ours, eos_token_id
    steps = list(model.stream(**inputs, max_new_tokens=NEW_TOKENS, sampler=sampler, **options))
    tokens = torch.stack([s.tokens for s in steps], 1)
    assert len(steps) == len(expected.logits)
    for index, (step, theirs) in enumerate(zip(steps, expected.logits, strict=True)):
        diff = float((step.logits - theirs.float()).abs().max())
        assert diff < ATOL, f"step {index}: max |logits difference| {diff:.3g}"
    assert torch.equal(tokens, expected.sequences[:, inputs["input_ids"].shape[1] :])
    if bias_scale >= 1:
        row = max(range(len(tokens)), key=lambda i: int((tokens[i] != 0).sum()))  # the longest-running row
        assert len(set(tokens[row].tolist())) > len(steps) // 2, "the bias should make the tokens vary"
    return tokens


def test_step_logits_left_padded_batch_and_one_token_prompts(checkpoint):
    """Rows with 1, 7 and 3 prompt tokens after the image: 4 image tokens + <bos> + 7 = 12 columns, so the
    generated tokens run far past Gemma 2's window of 5."""
    hf, ours = checkpoint
    inputs = make_inputs(ours.config, 3, suffix=False, prompt_lengths=[1, 7, 3], seed=3)
    assert inputs["attention_mask"].min() == 0
    assert assert_same_steps(hf, ours, inputs).shape[1] == NEW_TOKENS


@pytest.mark.parametrize("length", [1, 2])
def test_step_logits_text_only_prompts(checkpoint, length):
    """No image: a lone <bos> is a prefill of one column."""
    hf, ours = checkpoint
    assert_same_steps(hf, ours, text_only(2, length, ours.config.decoder.vocab_size, ours.config.image_token_id))


def test_repetition_penalty_inside_the_loop(checkpoint):
    """transformers penalises every id in its input, padding included, so rows here are not padded
    (that padding is not history in vlmzoo is tested on its own)."""
    hf, ours = checkpoint
    inputs = make_inputs(ours.config, 2, suffix=False, prompt_lengths=[4, 4], seed=5)
    assert inputs["attention_mask"].min() == 1
    # A small bias leaves the tiny model repeating itself, which is what the penalty is there to stop.
    penalised = assert_same_steps(hf, ours, inputs, repetition_penalty=4.0, bias_scale=0.1)
    plain = assert_same_steps(hf, ours, inputs, bias_scale=0.1)
    assert not torch.equal(penalised, plain), "the penalty should change the tokens"
    assert len(set(penalised[0].tolist())) > len(set(plain[0].tolist()))


def test_several_end_tokens(checkpoint):
    """Rows stop at any of the end tokens, given to generate or named by the config (e.g. [1, 107])."""
    hf, ours = checkpoint
    inputs = make_inputs(ours.config, 3, suffix=False, prompt_lengths=[1, 7, 3], seed=3)
    free = assert_same_steps(hf, ours, inputs)
    first = int(free[0, 2])
    second = next(int(t) for t in free[1, 3:] if t not in free[0, :3] and t != first)  # ends row 1 only
    stops = [first, second]
    stopped = assert_same_steps(hf, ours, inputs, eos_token_id=stops)
    assert (stopped[0, 3:] == 0).all() and second in stopped[1]
    twin = vlmzoo.build(ours.config.replace(eos_token_id=tuple(stops)), device="meta")
    twin.load_state_dict(ours.state_dict(), assign=True)
    assert torch.equal(assert_same_steps(hf, ours, inputs, eos_token_id=stops, model=twin.eval()), stopped)
