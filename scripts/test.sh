#!/usr/bin/env bash
# Set up ./.venv (scripts/setup.sh --dev), then lint, build the docs strictly and run the test suite:
# exactly what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --dev
py=.venv/bin/python

$py -m ruff check vlmzoo tests benchmarks plugins scripts
NO_MKDOCS_2_WARNING=1 $py -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
# pytest exits 5 when it collects nothing: that is a failure here too.
$py -m pytest -q -p no:cacheprovider "$@"
