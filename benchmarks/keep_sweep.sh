#!/usr/bin/env bash
# Keeps a sweep's raw outputs in a benchmarks folder: its results.csv/md and plots with their data, and every job's
# summary.json and eval_features.npz (what `python -m rasfw.app.stats <job> <job>` needs to compare two jobs).
# Usage: bash benchmarks/keep_sweep.sh <sweep folder> <keep folder>   (the keep folder is replaced)
set -euo pipefail
sweep=$1
keep=$2
rm -rf "$keep" && mkdir -p "$keep"
cp "$sweep"/results.md "$sweep"/*.png "$sweep"/*.csv "$keep"/
for summary in "$sweep"/*/summary.json; do
  job=$(basename "$(dirname "$summary")")
  mkdir -p "$keep/$job" && cp "$summary" "$keep/$job/"
  if [ -f "$(dirname "$summary")/eval_features.npz" ]; then cp "$(dirname "$summary")/eval_features.npz" "$keep/$job/"; fi
done
