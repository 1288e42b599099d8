"""Every fuzz target, a few hundred examples each: only documented errors may come out of a reader."""

from __future__ import annotations

import pytest
from fuzz_targets import TARGETS, check
from hypothesis import HealthCheck, given, settings

#: Examples per target in the test suite; ``scripts/fuzz.py --examples N`` runs longer campaigns.
CI_EXAMPLES = {"processor (prompts, images)": 150, "processor files": 150}
DEFAULT_EXAMPLES = 300


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name):
    target = TARGETS[name]

    @settings(
        max_examples=CI_EXAMPLES.get(name, DEFAULT_EXAMPLES),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.strategy)
    def run(example):
        check(target, example)

    run()
