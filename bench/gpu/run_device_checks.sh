#!/usr/bin/env bash
# Issue 12's GPU checks in one run on the lent device machine (see bench/README.md, "On a
# GPU"): installs what the machine lacks from the carried wheels in .whl/, then runs
#   1. bench/inference.py --device cuda  (brain, base-64 CT, batch of .nii.gz; same GPU)
#   2. the non-GUI tests that touch torch, with the GPU visible (CUDA variants run)
#   3. bench/training.py --device cuda   (the issue's two sizes, Dice after 300 its)
# and writes JSON and logs to $OUT (at most 8 files come back). Each step has a time limit
# so that the whole script ends within 8.5 minutes; a step that runs out is logged
# and the next one still runs. DEVICE=cpu runs the same steps on the CPU (a smoke test).
set -u
OUT=${OUT:-$PWD/device-out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/checks.log"; }

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to $OUT/NAME.log
    local name=$1 limit=$2 rc
    shift 2
    log "start $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    log "end $name rc=$rc$([ $rc = 124 ] && echo ' (time limit)')"
    tail -n 25 "$OUT/$name.log"
}

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >"$OUT/install.log" 2>&1 || log "wheel install failed"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader >>"$OUT/checks.log" 2>&1
python3 - <<'PY' 2>&1 | tee -a "$OUT/checks.log"
import monai, nibabel, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "monai", monai.__version__, "nibabel", nibabel.__version__)
PY

step inference 200 python3 bench/inference.py --device "$DEVICE" \
    -o "$OUT/inference_$DEVICE.json" ${INFERENCE_ARGS:-}
step tests 150 python3 -m pytest -q -p no:cacheprovider --durations=8 \
    ${TEST_PATHS:-tests/inference tests/test_devices.py tests/model tests/training}
step training 140 python3 bench/training.py --device "$DEVICE" \
    -o "$OUT/training_$DEVICE.json" ${TRAINING_ARGS:-}
log "done"
