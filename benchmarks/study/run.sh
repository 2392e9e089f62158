#!/usr/bin/env bash
# Reproduces the 200-prompt tables of docs/models/embedded.md: the experiments `study` (quality) and
# `study_kv_dtype` (K/V cache dtype) through `python -m rasfw.app.study`, one torch thread per process.
# Kept here: each sweep's study.md, results.csv/md, and every job's summary.json.
# Usage: bash benchmarks/study/run.sh [study|study_kv_dtype ...]   (from the repository root)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
for name in ${*:-study study_kv_dtype}; do
  sweep=multirun/docs/$name
  rm -rf "$sweep"
  $PY -m rasfw.app.study +experiment="$name" hydra.sweep.dir="$sweep" hydra/job_logging=none hydra/hydra_logging=none
  keep=benchmarks/study/$name
  rm -rf "$keep" && mkdir -p "$keep"
  cp "$sweep"/study.md "$sweep"/results.md "$sweep"/results.csv "$keep"/
  for summary in "$sweep"/*/summary.json; do
    job=$(basename "$(dirname "$summary")")
    mkdir -p "$keep/$job" && cp "$summary" "$keep/$job/"
  done
done
