#!/usr/bin/env bash
# The GPU benchmark and GPU tests in one run, for a machine with one H100/H200 and no network.
#
#   bash benchmarks/gpu.sh            # from the repository root; raw outputs under $OUT (default benchmarks/out)
#
# It keeps the machine's own torch and the packages it already has. What it lacks comes from wheels in .whl/
# when that folder exists; make it beforehand for the device's Python (3.12 on the lent machines), e.g.
#   pip download -d .whl --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       diffusers hydra-core omegaconf importlib_metadata lazy-importer
#   pip wheel -w .whl --no-deps antlr4-python3-runtime==4.9.3     # published as a source archive only
# With .whl/ every wheel goes, without resolving dependencies, to $SITE (default
# /tmp/rasfw-site), which is put first on PYTHONPATH; then the package itself (editable) and the rasfw_edge plugin
# go to the interpreter's environment.
#
# Order, most important first; each step runs under `timeout`, capped by what is left of BUDGET_S (default
# 480 s), so the whole run fits in about 8 minutes:
#   1. install;
#   2. pytest -m gpu (correctness of the CUDA paths: kernels, captured graphs);
#   3. SD3-medium (preset=gpu): eager and cudagraph, ratios 0.5/0.25/0.125, kv dtypes model and float8;
#   4. Lumina-Next-SFT 2B (gpu_lumina): eager and cudagraph, ratios 0.5/0.125, both kv dtypes, 2 repeats;
#   5. Flux.1-dev 12B (gpu_flux): eager only, model kv dtype (compute-bound: host launch overhead is small beside its
#      ~0.25 s steps), ratios 0.5/0.125, both kv dtypes, 2 repeats;
#   6. Wan 2.1 T2V 1.3B (gpu_wan: 81 frames at 480x832, 32760 video tokens, cond and uncond calls): eager
#      only (each call takes far longer than its launches), 10 steps, ratios 0.5/0.25/0.125, 1 repeat;
#   7. SD3 with execution compile (inductor builds a graph per call shape per configuration: minutes), one
#      ratio, with whatever time is left.
# STEPS="install lumina" runs only the steps named (a rerun of some).
# Every step writes <name>.log under $OUT (each bench row is also printed there as JSON the moment it is
# measured, so a step cut off by its timeout still leaves its finished rows), the benches also
# $OUT/<name>/bench.json and bench.md; $OUT/summary.txt lists each step's exit code and seconds.
set -u

OUT=${OUT:-benchmarks/out}
BUDGET_S=${BUDGET_S:-480}
PY=${PYTHON:-python}
START=$(date +%s)
mkdir -p "$OUT"
SITE=${SITE:-/tmp/rasfw-site}
if [ -d .whl ]; then
    mkdir -p "$SITE"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
: > "$OUT/summary.txt"

# step NAME CAP_S COMMAND...: run COMMAND with its output in $OUT/NAME.log, for at most CAP_S seconds and at
# most what is left of the budget; print the log's tail.
step() {
    local name=$1 cap=$2
    shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
        return 0
    fi
    local left=$((BUDGET_S - ($(date +%s) - START)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 30)); then
        echo "== $name: skipped, ${left}s of the budget left" | tee -a "$OUT/summary.txt"
        return 0
    fi
    echo "== $name (at most ${limit}s): $*"
    local began rc
    began=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "== $name: rc=$rc in $(($(date +%s) - began))s$( ((rc == 124)) && echo ' (timed out)')" | tee -a "$OUT/summary.txt"
    tail -n 20 "$OUT/$name.log"
}

install_packages() {
    local packages=(diffusers transformers hydra-core omegaconf antlr4-python3-runtime pytest hypothesis)
    if [ -d .whl ]; then
        # The device has no index: the wheels (with no dependencies resolved) go to their own folder on the path.
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
            || return 1
    elif ! "$PY" -c "import diffusers, transformers, hydra, omegaconf, pytest, hypothesis" 2> /dev/null; then
        "$PY" -m pip install -q "${packages[@]}" || return 1
    fi
    # Editable, into the interpreter's own environment: run from the repository root, a plain install would be
    # shadowed by the rasfw/ folder there, which lacks the mapped rasfw.conf and rasfw.kernels.
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . || return 1
    "$PY" -m pip install -q --no-deps --no-build-isolation plugins/rasfw_edge || echo "rasfw_edge not installed"
    "$PY" -c "import rasfw.app.bench, rasfw.conf, diffusers, hydra; print('rasfw', rasfw.__file__, 'diffusers', diffusers.__version__)"
}

gpu_tests() {
    # Only the modules that hold gpu-marked tests: collecting the whole suite costs a minute of device time.
    # TRITON_INTERPRET=0: tests/kernels/conftest.py otherwise runs the kernels in Triton's interpreter.
    TRITON_INTERPRET=0 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests/kernels tests/execution
}

export PY SITE
export -f install_packages gpu_tests  # `timeout` runs programs: the functions run in `bash -c`

echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2> /dev/null || echo 'no nvidia-smi')"
echo "python: $("$PY" --version 2>&1)"
echo "torch: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")' 2>&1)"
echo "commit: $(git rev-parse HEAD 2> /dev/null || echo unknown)"

step install 120 bash -c install_packages
echo "diffusers: $("$PY" -c 'import diffusers; print(diffusers.__version__)' 2>&1)"

step gpu_tests 90 bash -c gpu_tests

step sd3 170 "$PY" -m rasfw.app.bench preset=gpu 'executions=[eager,cudagraph]' 'ratios=[0.5,0.25,0.125]' repeats=3 \
    backend=triton 'kv_dtypes=[model,float8_e4m3fn]' "hydra.run.dir=$OUT/sd3"

step lumina 110 "$PY" -m rasfw.app.bench preset=gpu_lumina 'executions=[eager,cudagraph]' 'ratios=[0.5,0.125]' repeats=2 \
    backend=triton 'kv_dtypes=[model,float8_e4m3fn]' "hydra.run.dir=$OUT/lumina"

step flux 100 "$PY" -m rasfw.app.bench preset=gpu_flux 'executions=[eager]' 'ratios=[0.5,0.125]' repeats=2 \
    backend=triton 'kv_dtypes=[model]' "hydra.run.dir=$OUT/flux"

step wan 150 "$PY" -m rasfw.app.bench preset=gpu_wan 'executions=[eager]' 'ratios=[0.5,0.25,0.125]' repeats=1 \
    steps=10 ratio.warmup=2 'reset.steps=[6]' backend=triton 'kv_dtypes=[model]' "hydra.run.dir=$OUT/wan"

step sd3_compile 600 "$PY" -m rasfw.app.bench preset=gpu 'executions=[compile]' 'ratios=[0.25]' repeats=2 \
    backend=triton 'kv_dtypes=[model]' "hydra.run.dir=$OUT/sd3_compile"

echo "== total $(($(date +%s) - START))s"
cat "$OUT/summary.txt"
