#!/usr/bin/env bash
# Set up ./.venv (scripts/setup.sh --dev), then lint and check the formatting, build the docs strictly and
# run the test suite: exactly what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --dev
py=.venv/bin/python

$py -m ruff check vlmzoo tests benchmarks plugins scripts
$py -m ruff format --check vlmzoo tests benchmarks plugins scripts
# Imports flow one way (pyproject.toml's [tool.importlinter]; tests/test_import_layers.py checks the rest).
imports_log="$(mktemp)"
if ! .venv/bin/lint-imports --no-cache >"$imports_log" 2>&1; then
    cat "$imports_log" >&2
    echo "lint-imports failed: a lower layer imports a higher one (see above)" >&2
    exit 1
fi
# Not --quiet: it also silences the warnings that --strict turns into a failure.
docs_log="$(mktemp)"
if ! NO_MKDOCS_2_WARNING=1 $py -m mkdocs build --strict --site-dir "$(mktemp -d)" >"$docs_log" 2>&1; then
    grep -v "^INFO" "$docs_log" >&2
    echo "mkdocs build --strict failed: fix the warnings above" >&2
    exit 1
fi
# pytest exits 5 when it collects nothing: that is a failure here too.
$py -m pytest -q -p no:cacheprovider "$@"
