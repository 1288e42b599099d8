"""Run every fuzz target (tests/fuzz_targets.py) for many examples and print a table.

    python scripts/fuzz.py --examples 10000                 # every target
    python scripts/fuzz.py --examples 2000 --target config  # targets whose name contains "config"

For each target: examples run, how many were accepted and how many raised a documented error,
seconds, and findings (an undocumented error; hypothesis shrinks it and the script prints it).
The exit code is 1 when there is a finding.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_targets import TARGETS, FuzzTarget, check  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402


def campaign(target: FuzzTarget, examples: int, seed: int | None) -> dict:
    """Run ``target`` for ``examples`` examples; the counts and the finding, if any."""
    counts = {"examples": 0, "accepted": 0, "refused": 0}

    def counted(example) -> None:
        counts["examples"] += 1
        try:
            target.run(example)
        except target.allowed + target.plain_allowed:
            check(target, example)  # re-run to apply the full rule (deliberate, with a message)
            counts["refused"] += 1
            return
        counts["accepted"] += 1

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def run(example) -> None:
        counted(example)

    if seed is not None:
        run = __import__("hypothesis").seed(seed)(run)
    started = time.perf_counter()
    finding = None
    try:
        run()
    except Exception as error:  # the shrunk failing example: a finding
        finding = "".join(traceback.format_exception_only(type(error), error)).strip()
        traceback.print_exc()
    return {**counts, "seconds": time.perf_counter() - started, "finding": finding}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000, help="examples per target (default 1000)")
    parser.add_argument("--target", default="", help="run only targets whose name contains this")
    parser.add_argument("--seed", type=int, help="hypothesis seed, for a repeatable run")
    args = parser.parse_args()
    names = [name for name in sorted(TARGETS) if args.target in name]
    rows = []
    for name in names:
        print(f"fuzzing {name} ...", file=sys.stderr, flush=True)
        result = campaign(TARGETS[name], args.examples, args.seed)
        rows.append((name, result))
    print("| target | examples | accepted | refused (documented error) | seconds | findings |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in rows:
        finding = r["finding"] or "none"
        print(f"| {name} | {r['examples']} | {r['accepted']} | {r['refused']} | {r['seconds']:.0f} | {finding} |")
    return 1 if any(r["finding"] for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
