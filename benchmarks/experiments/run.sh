#!/usr/bin/env bash
# Reproduces docs/experiments.md: every shipped experiment on the embedded model, on $PROMPTS prompts of the
# fixed prompt set (default 64, the experiments' own size; eval.batch=$BATCH, default 8: timing runs the first
# 8 prompts, warm-up 1, median of 3 alternating runs).
# One torch thread per process (OMP_NUM_THREADS=1): on a shared CPU two threads made the same run 6-12x
# slower and its time erratic.
# The raw outputs kept here are each sweep's results.csv/md, its plots with their data, and every job's summary.json
# and eval_features.npz (what `python -m rasfw.app.stats <job> <job>` needs to compare two jobs).
# Usage: bash benchmarks/experiments/run.sh [experiment ...]   (from the repository root)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
PROMPTS=${PROMPTS:-64}
BATCH=${BATCH:-8}
EXPERIMENTS=${*:-table2 ablation_fill matched_flops ablation_metric ablation_starvation ablation_reset ablation_kv_cache ablation_ratio_schedule ablation_selection pareto}
for name in $EXPERIMENTS; do
  sweep=multirun/docs/$name
  rm -rf "$sweep"
  $PY -m rasfw -m +experiment="$name" eval.prompts="$PROMPTS" eval.batch="$BATCH" hydra.sweep.dir="$sweep" \
    hydra/job_logging=none hydra/hydra_logging=none
  keep=benchmarks/experiments/$name
  bash benchmarks/keep_sweep.sh "$sweep" "$keep"
  mkdir -p docs/img/experiments   # the plots docs/experiments.md shows
  case $name in
    pareto|table2) shown="pareto_flops pareto_time" ;;
    matched_flops) shown="pareto_flops" ;;
    *) shown="ablation" ;;
  esac
  for plot in $shown; do cp "$keep/$plot.png" "docs/img/experiments/${name}_$plot.png"; done
done
