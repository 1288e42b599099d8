#!/usr/bin/env bash
# Mutation testing with mutmut: change the code one small edit at a time (a `<` for a `<=`, a 1 for a 2,
# a dropped argument) and check that some test fails. A mutant that survives is a bug the tests would
# let through. The code and the tests it runs are configured in pyproject.toml ([tool.mutmut]).
#
#   bash scripts/mutation.sh                                   # every module in [tool.mutmut] (hours)
#   bash scripts/mutation.sh "vlmzoo.generation.samplers.*"    # one module (mutant names are globs)
#   bash scripts/mutation.sh "vlmzoo.tasks.locations.*" "vlmzoo.training.loss.*"
#   MUTATION_SAMPLE=100 bash scripts/mutation.sh                # 100 mutants a package, seeded (minutes)
#   .venv/bin/python scripts/mutation_sample.py score          # that sample's score per package
#   .venv/bin/mutmut results                                   # the survivors of the runs so far
#   .venv/bin/mutmut show NAME                                 # one mutant's diff
#
# mutmut copies the tree to ./mutants (ignored by git) and keeps its results there, so a second run
# only tests what changed; delete ./mutants to start over. It forgets every result when [tool.mutmut]
# changes, and traces which tests reach which functions once: after editing a test's body, delete
# mutants/mutmut-stats.json so that the test is traced again. It runs one process (set MUTATION_JOBS to
# change that) at low priority: a run over one module takes minutes, the whole scope hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

# The mutants never touch the compiled CPU kernels; building them in each forked test process would
# cost a minute per mutant. One intra-op thread: tiny models are faster on one, and the runs steadier.
export VLMZOO_CPU_KERNELS=0 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [[ -n "${MUTATION_SAMPLE:-}" ]]; then
    [[ -d mutants/vlmzoo ]] || nice -n 5 .venv/bin/mutmut run "vlmzoo.processing.batch.*"  # generates the mutants (and runs 12)
    mapfile -t sampled < <(.venv/bin/python scripts/mutation_sample.py names --per-package "$MUTATION_SAMPLE")
    set -- "${sampled[@]}" "$@"
fi
nice -n 5 .venv/bin/mutmut run --max-children "${MUTATION_JOBS:-1}" "$@"
.venv/bin/mutmut results
