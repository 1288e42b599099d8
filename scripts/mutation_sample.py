"""A seeded random sample of mutmut's mutants per package, and the sample's mutation score.

The configured scope has about 8,500 mutants: hours on 2 cores. A uniform sample of N per package
estimates each package's score to within about +-1.96 * sqrt(p(1-p)/N) (95%), in minutes.

    python scripts/mutation_sample.py names --per-package 100 --seed 23   # the sample, one name a line
    python scripts/mutation_sample.py score --per-package 100 --seed 23   # its score from mutants/*.meta

`bash scripts/mutation.sh` with MUTATION_SAMPLE=N runs such a sample (mutmut must have generated the
mutants once: any `mutmut run` does, e.g. `bash scripts/mutation.sh "vlmzoo.processing.batch.*"`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Package of each mutated module, by path prefix under vlmzoo/ (PaliGemma's processor is processing);
#: packages are sampled in this order from one seeded generator.
PACKAGES = {
    "paligemma/": "processing",
    "processing/": "processing",
    "tasks/": "tasks",
    "training/": "training",
    "components/quantized.py": "quantized",
    "generation/samplers.py": "samplers",
}

#: mutmut's exit codes: 0 the tests passed (survived), 33 no test reaches the mutant, None not run yet.
OUTCOMES = {0: "survived", 33: "no tests", None: "not run"}


def outcome(code: int | None) -> str:
    return OUTCOMES.get(code, "timeout" if code in (36, 152, -24) else "killed")


def mutants() -> dict[str, dict[str, int | None]]:
    """Every generated mutant's latest exit code, by package (modules in path order, names sorted in each)."""
    by_package: dict[str, dict[str, int | None]] = {package: {} for package in PACKAGES.values()}
    metas = sorted((ROOT / "mutants" / "vlmzoo").rglob("*.meta"), key=lambda path: path.as_posix())
    if not metas:
        raise SystemExit('no mutants/ yet: run `bash scripts/mutation.sh "vlmzoo.processing.batch.*"` once first')
    for meta in metas:
        module = meta.relative_to(ROOT / "mutants" / "vlmzoo").as_posix().removesuffix(".meta")
        package = next((p for prefix, p in PACKAGES.items() if module.startswith(prefix)), None)
        if package is not None:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            by_package[package].update((name, codes[name]) for name in sorted(codes))
    return by_package


def sample(per_package: int, seed: int) -> dict[str, dict[str, int | None]]:
    rng = random.Random(seed)
    out = {}
    for package, codes in mutants().items():
        names = list(codes)
        picked = sorted(rng.sample(names, min(per_package, len(names))))
        out[package] = {name: codes[name] for name in picked}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["names", "score"])
    parser.add_argument("--per-package", type=int, default=100)
    parser.add_argument("--seed", type=int, default=23)
    args = parser.parse_args()
    picked = sample(args.per_package, args.seed)
    if args.what == "names":
        print("\n".join(name for codes in picked.values() for name in codes))
        return
    for package, codes in picked.items():
        counts = Counter(outcome(code) for code in codes.values())
        judged = len(codes) - counts["not run"]
        detected = counts["killed"] + counts["timeout"]
        share = detected / judged if judged else 0.0
        margin = 1.96 * math.sqrt(share * (1 - share) / judged) if judged else 0.0
        print(f"{package:<11} {share:6.1%} +-{margin:.1%}  of {judged} run ({dict(sorted(counts.items()))})")
        for name, code in codes.items():
            if outcome(code) in ("survived", "no tests"):
                print(f"    {outcome(code):<9} {name}")


if __name__ == "__main__":
    main()
