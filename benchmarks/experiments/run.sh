#!/usr/bin/env bash
# Reproduces docs/experiments.md: every shipped experiment on the embedded model, on 32 prompts of the
# fixed prompt set (eval.batch=4: timing runs 4 prompts, warm-up 1, median of 3 alternating runs).
# One torch thread per process (OMP_NUM_THREADS=1): on a shared CPU two threads made the same run 6-12x
# slower and its time erratic.
# The raw outputs kept here are each sweep's results.csv/md, its plots with their data, and every job's summary.json.
# Usage: bash benchmarks/experiments/run.sh [experiment ...]   (from the repository root)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
EXPERIMENTS=${*:-matched_flops ablation_metric ablation_starvation ablation_reset ablation_kv_cache ablation_ratio_schedule ablation_selection pareto}
for name in $EXPERIMENTS; do
  sweep=multirun/docs/$name
  rm -rf "$sweep"
  $PY -m rasfw -m +experiment="$name" eval.prompts=32 eval.batch=4 hydra.sweep.dir="$sweep" \
    hydra/job_logging=none hydra/hydra_logging=none
  keep=benchmarks/experiments/$name
  rm -rf "$keep" && mkdir -p "$keep"
  cp "$sweep"/results.md "$sweep"/*.png "$sweep"/*.csv "$keep"/
  for summary in "$sweep"/*/summary.json; do
    job=$(basename "$(dirname "$summary")")
    mkdir -p "$keep/$job" && cp "$summary" "$keep/$job/"
  done
  mkdir -p docs/img/experiments   # the plots docs/experiments.md shows
  case $name in
    pareto) shown="pareto_flops pareto_time" ;;
    matched_flops) shown="pareto_flops" ;;
    *) shown="ablation" ;;
  esac
  for plot in $shown; do cp "$keep/$plot.png" "docs/img/experiments/${name}_$plot.png"; done
done
