#!/usr/bin/env bash
# Reproduces the testbed comparisons of docs/models/patterns.md: +experiment=low_step (or EXPERIMENT=pareto) on
# both embedded models (shapes, the default, 32x32; patterns, 64x64), then the paired comparisons of every sweep
# kept here (contrast.md). FLOPs are the cost: no timed runs (timing.repeats=0).
# One torch thread per process (OMP_NUM_THREADS=1) unless set. Raw outputs (results.csv/md, plots, every job's
# summary.json and eval_features.npz) are kept under benchmarks/testbeds/<model>/ (low_step) or
# benchmarks/testbeds/<model>_<experiment>/.
# Usage: [EXPERIMENT=pareto] bash benchmarks/testbeds/run.sh [model ...]   (from the repository root; default: patterns shapes)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
PROMPTS=${PROMPTS:-64}
BATCH=${BATCH:-16}
EXPERIMENT=${EXPERIMENT:-low_step}
MODELS=${*:-patterns shapes}
for name in $MODELS; do
  case $name in shapes) model=default ;; *) model=$name ;; esac
  case $EXPERIMENT in low_step) folder=$name ;; *) folder=${name}_$EXPERIMENT ;; esac
  sweep=multirun/testbeds/$folder
  rm -rf "$sweep"
  $PY -m rasfw -m +experiment="$EXPERIMENT" model="$model" eval.prompts="$PROMPTS" eval.batch="$BATCH" timing.repeats=0 \
    hydra.sweep.dir="$sweep" hydra/job_logging=none hydra/hydra_logging=none
  keep=benchmarks/testbeds/$folder
  bash benchmarks/keep_sweep.sh "$sweep" "$keep"
  if [ "$EXPERIMENT" = pareto ]; then   # the plot docs/models/patterns.md shows
    mkdir -p docs/img/testbeds && cp "$keep/pareto_flops.png" "docs/img/testbeds/${folder}_pareto_flops.png"
  fi
done
$PY benchmarks/testbeds/contrast.py $(ls -d benchmarks/testbeds/*/ | sort) > benchmarks/testbeds/contrast.md
echo "wrote benchmarks/testbeds/contrast.md"
