"""Samplers draw from exactly the set they promise, with the probabilities they promise.

The property tests in test_generation.py check that picks stay inside a set; these pin the set itself
(ties and boundaries included), the draw's distribution, and how a chain decides between argmax and a
random draw, so a sampler that quietly keeps one token too many or too few fails here.
"""

from __future__ import annotations

import math

import pytest
import torch

from vlmzoo.generation import Chain, Greedy, MinP, RepetitionPenalty, Sampler, Temperature, TopK, TopP, make_sampler

HISTORY = torch.zeros(1, 1, dtype=torch.long)


def kept(sampler: Sampler, logits: list[float], history: torch.Tensor = HISTORY) -> set[int]:
    """The tokens a sampler's warp leaves drawable (finite logits)."""
    warped = sampler.warp(torch.tensor([logits]), history)[0]
    return {i for i, value in enumerate(warped.tolist()) if math.isfinite(value)}


def log_probs(probs: list[float]) -> list[float]:
    return [math.log(p) for p in probs]


def draw_counts(sampler: Sampler, logits: list[float], draws: int = 4000, seed: int = 0) -> list[int]:
    rows = torch.tensor([logits]).repeat(draws, 1)
    picks = sampler(rows, torch.zeros(draws, 1, dtype=torch.long), torch.Generator().manual_seed(seed))
    return torch.bincount(picks, minlength=len(logits)).tolist()


# --- the kept set, exactly ------------------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_most_likely_and_ties_at_the_edge():
    logits = [0.5, 3.0, -1.0, 2.0, 2.0, 1.0]
    assert kept(TopK(1), logits) == {1}
    assert kept(TopK(2), logits) == {1, 3, 4}  # the second place is a tie: both stay
    assert kept(TopK(4), logits) == {1, 3, 4, 5}
    assert kept(TopK(100), logits) == set(range(6))  # more than the vocabulary: everything
    kept_logits = TopK(4).warp(torch.tensor([logits]), HISTORY)[0]
    assert kept_logits[[1, 3, 4, 5]].tolist() == [3.0, 2.0, 2.0, 1.0]  # kept logits are unchanged


def test_top_p_keeps_the_smallest_prefix_that_reaches_p():
    logits = log_probs([0.1, 0.5, 0.05, 0.3, 0.05])  # sorted: 0.5, 0.3, 0.1, 0.05, 0.05
    assert kept(TopP(0.4), logits) == {1}
    assert kept(TopP(0.5), logits) == {1}  # 0.5 reaches 0.5 exactly: nothing more is needed
    assert kept(TopP(0.6), logits) == {1, 3}
    assert kept(TopP(0.85), logits) == {0, 1, 3}
    assert kept(TopP(1.0), logits) == set(range(5))
    assert kept(TopP(0.01), logits) == {1}  # the most likely token always stays


def test_top_p_works_per_row():
    logits = torch.tensor([log_probs([0.7, 0.2, 0.1]), log_probs([0.1, 0.2, 0.7])])
    warped = TopP(0.8).warp(logits, torch.zeros(2, 1, dtype=torch.long))
    assert torch.isfinite(warped).tolist() == [[True, True, False], [False, True, True]]


def test_min_p_keeps_tokens_at_least_min_p_of_the_top():
    logits = log_probs([0.4, 0.2, 0.1, 0.3])
    assert kept(MinP(0.5), logits) == {0, 1, 3}  # 0.2 is exactly half of 0.4: kept
    assert kept(MinP(0.76), logits) == {0}
    assert kept(MinP(0.0), logits) == {0, 1, 2, 3}
    assert kept(MinP(1.0), logits) == {0}
    assert kept(MinP(1.0), [1.0, 1.0, 0.0]) == {0, 1}  # a tie for the top keeps both


def test_repetition_penalty_touches_only_seen_tokens_and_only_once():
    logits = torch.tensor([[3.0, -2.0, 1.0, -1.0, 0.5]])
    history = torch.tensor([[0, 1, 1, 0, 4]])  # repeats in the history still penalise once
    warped = RepetitionPenalty(2.0).warp(logits, history)
    assert warped.tolist() == [[1.5, -4.0, 1.0, -1.0, 0.25]]  # a small positive logit is divided too
    assert RepetitionPenalty(1.0).warp(logits, history).tolist() == logits.tolist()


def test_temperature_divides_the_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert Temperature(0.5).warp(logits, HISTORY).tolist() == [[4.0, -2.0, 1.0]]
    assert Temperature(0).warp(logits, HISTORY).tolist() == logits.tolist()
    assert Temperature(2.0).stochastic and not Temperature(0).stochastic


# --- the draw ---------------------------------------------------------------------------------------------


def test_plain_sampling_draws_with_the_softmax_probabilities():
    probs = [0.6, 0.3, 0.1]
    counts = draw_counts(Sampler(), log_probs(probs))
    for count, p in zip(counts, probs, strict=True):
        assert abs(count / 4000 - p) < 0.03


def test_temperature_sharpens_and_flattens_the_draw():
    logits = log_probs([0.6, 0.3, 0.1])
    hot = draw_counts(Temperature(1e3), logits)  # nearly uniform
    assert all(abs(c / 4000 - 1 / 3) < 0.04 for c in hot)
    cold = draw_counts(Temperature(0.05), logits)  # nearly greedy
    assert cold[0] > 3950


def test_top_p_then_renormalised_draw():
    counts = draw_counts(TopP(0.85), log_probs([0.5, 0.3, 0.1, 0.1]))
    assert counts[3] == 0 or counts[2] == 0  # of the tied 0.1s only what reaches 0.85 is drawable
    kept_mass = 0.9
    assert abs(counts[0] / 4000 - 0.5 / kept_mass) < 0.03
    assert abs(counts[1] / 4000 - 0.3 / kept_mass) < 0.03


def test_greedy_is_the_argmax_per_row():
    logits = torch.tensor([[0.0, 5.0, 1.0], [9.0, 5.0, 1.0], [0.0, 0.0, 7.0]])
    assert Greedy()(logits, torch.zeros(3, 1, dtype=torch.long)).tolist() == [1, 0, 2]


# --- chains: argmax or draw -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "members, stochastic",
    [
        ((Temperature(0.7), TopP(0.9)), True),
        ((RepetitionPenalty(1.2),), False),  # no opinion: greedy
        ((RepetitionPenalty(1.2), Temperature(0.7)), True),
        ((Greedy(), Temperature(0.7)), False),  # greedy insists
        ((Temperature(0.0), TopK(3)), False),
        ((TopK(3), TopP(0.5)), True),
    ],
)
def test_a_chain_draws_only_when_a_member_asks_and_none_insists_on_greedy(members, stochastic):
    assert Chain(*members).stochastic is stochastic


def test_a_chain_applies_every_warp_in_order_and_flattens():
    chain = Temperature(0.5) + TopK(2) + RepetitionPenalty(2.0)
    assert isinstance(chain, Chain) and [type(s) for s in chain.samplers] == [Temperature, TopK, RepetitionPenalty]
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    warped = chain.warp(logits, torch.tensor([[1]]))
    assert warped.tolist() == [[float("-inf"), 3.0, 4.0, float("-inf")]]
    assert int(chain(logits, torch.tensor([[1]]), torch.Generator().manual_seed(0))[0]) in {1, 2}


def test_make_sampler_routes_each_option_to_the_samplers_that_take_it():
    sampler = make_sampler(" temperature + top_k + min_p ", temperature=0.25, top_k=7, min_p=0.2)
    temperature, top_k, min_p = sampler.samplers
    assert (temperature.temperature, top_k.top_k, min_p.min_p) == (0.25, 7, 0.2)
    assert isinstance(make_sampler("top_p", top_p=0.3), TopP) and make_sampler("top_p", top_p=0.3).top_p == 0.3
    assert isinstance(make_sampler(None), Greedy)
    assert isinstance(make_sampler("top_k"), TopK) and make_sampler("top_k").top_k == 50
    ready = TopK(4)
    assert make_sampler(ready) is ready
    with pytest.raises(TypeError, match="only apply when the sampler is given by name"):
        make_sampler(ready, top_k=3)
    with pytest.raises(TypeError, match=r"\['top_p'\] are not taken by sampler 'top_k'"):
        make_sampler("top_k", top_k=3, top_p=0.5)
    with pytest.raises(TypeError, match="a name or a Sampler"):
        make_sampler(3)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Temperature(-0.1), "temperature must be >= 0"),
        (lambda: TopK(0), "top_k must be >= 1"),
        (lambda: TopP(0.0), r"top_p must be in \(0, 1\]"),
        (lambda: TopP(1.01), r"top_p must be in \(0, 1\]"),
        (lambda: MinP(-0.01), r"min_p must be in \[0, 1\]"),
        (lambda: MinP(1.01), r"min_p must be in \[0, 1\]"),
        (lambda: RepetitionPenalty(0.0), "repetition_penalty must be > 0"),
    ],
)
def test_out_of_range_options_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_boundary_options_are_accepted():
    assert Temperature(0).temperature == 0 and TopK(1).top_k == 1 and TopP(1.0).top_p == 1.0
    assert MinP(0.0).min_p == 0.0 and MinP(1.0).min_p == 1.0
    assert RepetitionPenalty(1.0).repetition_penalty == 1.0  # no penalty
    boost = RepetitionPenalty(0.5).warp(torch.tensor([[2.0, -2.0]]), torch.tensor([[0, 1]]))  # below 1: a bonus
    assert boost.tolist() == [[4.0, -1.0]]


def test_samplers_asked_for_by_name_alone_use_their_documented_defaults():
    assert make_sampler("temperature").temperature == 1.0
    assert make_sampler("top_k").top_k == 50
    assert make_sampler("top_p").top_p == 0.9
    assert make_sampler("min_p").min_p == 0.05
    assert make_sampler("repetition_penalty").repetition_penalty == 1.1
    assert make_sampler("temperature").stochastic and not make_sampler("repetition_penalty").stochastic
