#!/usr/bin/env bash
# Reproduces the testbed comparison of docs/models/patterns.md: +experiment=low_step on both embedded models
# (shapes, the default, 32x32; patterns, 64x64), then the paired comparisons of each (contrast.md).
# One torch thread per process (OMP_NUM_THREADS=1) unless set. Raw outputs (results.csv/md, plots, every job's
# summary.json and eval_features.npz) are kept under benchmarks/testbeds/<model>/.
# Usage: bash benchmarks/testbeds/run.sh [model ...]   (from the repository root; default: patterns shapes)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
PROMPTS=${PROMPTS:-64}
BATCH=${BATCH:-16}
MODELS=${*:-patterns shapes}
for name in $MODELS; do
  case $name in shapes) model=default ;; *) model=$name ;; esac
  sweep=multirun/testbeds/$name
  rm -rf "$sweep"
  $PY -m rasfw -m +experiment=low_step model="$model" eval.prompts="$PROMPTS" eval.batch="$BATCH" \
    hydra.sweep.dir="$sweep" hydra/job_logging=none hydra/hydra_logging=none
  keep=benchmarks/testbeds/$name
  rm -rf "$keep" && mkdir -p "$keep"
  cp "$sweep"/results.md "$sweep"/*.png "$sweep"/*.csv "$keep"/
  for summary in "$sweep"/*/summary.json; do
    job=$(basename "$(dirname "$summary")")
    mkdir -p "$keep/$job" && cp "$summary" "$keep/$job/"
    if [ -f "$(dirname "$summary")/eval_features.npz" ]; then cp "$(dirname "$summary")/eval_features.npz" "$keep/$job/"; fi
  done
done
$PY benchmarks/testbeds/contrast.py benchmarks/testbeds/patterns benchmarks/testbeds/shapes > benchmarks/testbeds/contrast.md
echo "wrote benchmarks/testbeds/contrast.md"
