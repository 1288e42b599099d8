#!/usr/bin/env bash
# Train the bundled shapes-demo model from scratch, all four stages, in one command (about three and a
# half hours on one core; docs/guides/demo-model.md):
#
#   bash scripts/train_shapes_demo.sh
#
# 1. detection and captions from random weights, written into vlmzoo/bundled/shapes-demo
#    (configs/shapes-demo.toml); 2. segmentation (configs/shapes-demo-segment.toml); 3. two-shape
# detection more often (configs/shapes-demo-segment-2.toml); 4. quantization-aware for int4
# (configs/shapes-demo-int4.toml), whose weights replace the bundled ones. Each stage starts from the one
# before and repeats exactly from its seeds. The mask VQ-VAE the later stages encode masks with is
# trained separately (scripts/train_mask_vae.py) and stays as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

vlmzoo=.venv/bin/vlmzoo
[[ -x $vlmzoo ]] || vlmzoo=vlmzoo
# a model this small gains nothing from a second thread and loses much when two wait for each other
export OMP_NUM_THREADS=1

for stage in shapes-demo shapes-demo-segment shapes-demo-segment-2 shapes-demo-int4; do
    echo "== configs/$stage.toml"
    $vlmzoo train --config "configs/$stage.toml" --overwrite
done
# written whole beside the bundled file, then moved over it
cp runs/shapes-demo-int4/model.safetensors vlmzoo/bundled/shapes-demo/model.safetensors.partial
mv vlmzoo/bundled/shapes-demo/model.safetensors.partial vlmzoo/bundled/shapes-demo/model.safetensors
# the bundled metrics.jsonl holds the four runs' logs one after another
for stage in shapes-demo-segment shapes-demo-segment-2 shapes-demo-int4; do
    cat "runs/$stage/metrics.jsonl" >> vlmzoo/bundled/shapes-demo/metrics.jsonl
done
python_bin=.venv/bin/python
[[ -x $python_bin ]] || python_bin=python3
$python_bin scripts/evaluate_shapes_demo.py --images 200 --seed 1000 --segment
