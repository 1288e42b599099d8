#!/usr/bin/env bash
# Set up vlmzoo in ./.venv on a fresh machine, with or without a GPU.
#
#   bash scripts/setup.sh          # PyTorch + vlmzoo
#   bash scripts/setup.sh --dev    # plus the test, lint and docs tools and the example plugins
#
# PyTorch's default wheels carry several GB of CUDA libraries; on a machine without an NVIDIA GPU
# the CPU build comes from PyTorch's own CPU index instead.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

[[ -x .venv/bin/python ]] || python3 -m venv .venv
py=.venv/bin/python
$py -m pip install --quiet --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $py -m pip install --quiet "torch==${TORCH_VERSION}"
elif $py -c "import urllib.request; urllib.request.urlopen('$CPU_INDEX/torch/', timeout=10)" 2>/dev/null; then
    $py -m pip install --quiet "torch==${TORCH_VERSION}" --extra-index-url "$CPU_INDEX"
else
    # PyTorch's index cannot be reached (a mirror or a local wheel cache is configured): take what pip finds.
    $py -m pip install --quiet "torch==${TORCH_VERSION}"
fi
if [[ $dev == 1 ]]; then
    $py -m pip install --quiet -e ".[dev]"
    for plugin in plugins/*/; do
        $py -m pip install --quiet --no-deps "$plugin"
    done
else
    $py -m pip install --quiet -e .
fi
echo "vlmzoo is set up in .venv ($($py -c 'import torch; print("torch", torch.__version__)'))" >&2
