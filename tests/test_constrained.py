"""Constrained decoding for closed-set detection: whatever the logits, every object is valid."""

from __future__ import annotations

import pytest
import torch

import vlmzoo
from vlmzoo.generation import make_sampler
from vlmzoo.generation.constrained import ClosedSetSampler
from vlmzoo.tasks.locations import parse_located_text

CLASSES = ["red circle", "blue square", "triangle", "green triangle", "circle"]


@pytest.fixture(scope="module")
def processor():
    return vlmzoo.load_processor("shapes-demo")


def _generate(sampler, processor, logits_for_step, steps=60):
    prompt = processor.tokenizer.encode("detect x\n", add_special_tokens=False).ids
    history = torch.tensor([prompt])
    for step in range(steps):
        token = sampler(logits_for_step(step), history)
        history = torch.cat([history, token[:, None]], dim=1)
        if int(token) == processor.eos_token_id:
            break
    return history[0, len(prompt) :].tolist()


@pytest.mark.parametrize("segment", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_random_logits_give_only_valid_objects_of_the_given_classes(processor, seed, segment):
    size = processor.tokenizer.get_vocab_size()
    generator = torch.Generator().manual_seed(seed)
    sampler = ClosedSetSampler(CLASSES, processor, segment=segment)
    ids = _generate(sampler, processor, lambda _: torch.randn(1, size, generator=generator) * 5, steps=200)
    text = processor.decode(ids, skip_special_tokens=False)
    objects = parse_located_text(text)
    written = [part for part in text.replace("<eos>", "").split(";") if part.strip()]
    assert len(objects) == len(written) and all(o.label in CLASSES for o in objects), text
    assert all((o.seg_codes is not None) == segment for o in objects), text


def test_the_grammar_step_by_step(processor):
    tok = processor.tokenizer
    sampler = ClosedSetSampler(["circle", "red circle"], processor)
    loc = [tok.token_to_id(f"<loc{i:04d}>") for i in (1, 2, 3, 4)]
    at_start = set(sampler.allowed([]).tolist())
    assert at_start == {*sampler._loc.tolist(), processor.eos_token_id}  # an object, or nothing at all
    assert set(sampler.allowed(loc[:2]).tolist()) == set(sampler._loc.tolist())
    after_box = {sampler._text[i] for i in sampler.allowed(loc).tolist()}
    assert " circle" in after_box and " red" in after_box and " blue" not in after_box
    label = tok.encode(" circle", add_special_tokens=False).ids
    done = set(sampler.allowed(loc + label).tolist())
    assert processor.eos_token_id in done and not done & set(sampler._loc.tolist())  # ends, or " ;" first
    separated = loc + label + tok.encode(" ; ", add_special_tokens=False).ids
    assert set(sampler.allowed(separated).tolist()) >= set(sampler._loc.tolist())


def test_with_a_budget_the_answer_ends_before_it_would_be_cut_off(processor):
    size = processor.tokenizer.get_vocab_size()
    prefer_loc = torch.zeros(1, size)
    prefer_loc[0, ClosedSetSampler(["circle"], processor)._loc] = 10.0  # a model that never wants to stop
    prefer_loc[0, processor.tokenizer.token_to_id("\u2581;")] = 9.0
    sampler = ClosedSetSampler(["circle", "square"], processor, segment=True, max_new_tokens=70)
    ids = _generate(sampler, processor, lambda _: prefer_loc, steps=70)
    text = processor.decode(ids, skip_special_tokens=False)
    assert ids[-1] == processor.eos_token_id and len(ids) <= 70, text
    assert len(parse_located_text(text)) == text.count(";") + 1 == 2, text


def test_no_match_text_is_allowed_as_a_whole_answer(processor):
    sampler = ClosedSetSampler(["circle"], processor, no_match="none")
    none = processor.tokenizer.encode("none", add_special_tokens=False).ids
    assert set(none) <= set(sampler.allowed([]).tolist()) | set(sampler.allowed(none[:1]).tolist())
    assert sampler.allowed(none).tolist() == [processor.eos_token_id]


def test_it_is_a_registered_sampler_that_chains(processor):
    sampler = make_sampler("closed_set", classes=["circle"], processor=processor)
    assert isinstance(sampler, ClosedSetSampler) and not sampler.stochastic
    chained = make_sampler("closed_set+temperature", classes=["circle"], processor=processor, temperature=0.7)
    assert chained.stochastic
    with pytest.raises(ValueError, match="non-empty list of names"):
        ClosedSetSampler(["a;b"], processor)
