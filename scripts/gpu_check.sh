#!/usr/bin/env bash
# shellcheck disable=SC2329  # the step functions run exported, through `timeout bash -c`
# Verify rfstream's GPU path on a CUDA 12 machine, in one call (docs/gpu.md, "Verifying on a GPU").
#
#   bash scripts/gpu_check.sh            # from the repository root or anywhere
#
# Steps, all within GPU_CHECK_BUDGET_S seconds (default 480 = 8 minutes):
#   1. a virtual environment (.venv-gpu, with --system-site-packages so JetPack's TensorRT is seen)
#      with rfstream and its `gpu` and `test` extras (skipped where CuPy and TensorRT already import);
#   2. what the machine is: GPU, compute capability, CUDA runtime, CuPy and TensorRT versions;
#   3. the CUDA and TensorRT tests (pytest -m "cuda or tensorrt"): none may fail, and none may skip,
#      since a skip on a GPU machine means that part of the path was not verified;
#   4. TensorRT engines built from the shipped frame detector and crop classifier (timing cache kept);
#   5. `rfstream bench` with the CuPy spectrogram and the engines, checked for GPU memory figures.
# It prints a summary table and exits 0 when every step passed, 1 when one failed, 2 when no CUDA
# GPU is visible (nothing is run), 3 when the gpu extra cannot be installed (no package index?).
#
# Environment: GPU_CHECK_BUDGET_S, GPU_CHECK_VENV (default .venv-gpu), GPU_CHECK_INSTALL (default 1;
# 0 uses GPU_CHECK_VENV as it is, for machines whose CUDA stack is preinstalled and offline),
# GPU_CHECK_WORK (default a temporary directory: engines, bench JSON, test report, logs),
# PYTHON (default python3), GPU_CHECK_RATES (default 20e6,50e6), GPU_CHECK_CHUNKS (default 10).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
INSTALL=${GPU_CHECK_INSTALL:-1}
export VENV=${GPU_CHECK_VENV:-.venv-gpu}
export PYTHON=${PYTHON:-python3}
export RATES=${GPU_CHECK_RATES:-20e6,50e6}
export CHUNKS=${GPU_CHECK_CHUNKS:-10}
export PY="$VENV/bin/python" RFSTREAM="$VENV/bin/rfstream"
START=$SECONDS
SUMMARY=()
FAILED=0

say() { printf 'gpu_check: %s\n' "$*"; }

gpu_visible() {
    # CUDA_VISIBLE_DEVICES="" (or -1) hides every device from CUDA, whatever nvidia-smi lists.
    if [[ ${CUDA_VISIBLE_DEVICES+set} == set && ( -z $CUDA_VISIBLE_DEVICES || $CUDA_VISIBLE_DEVICES == -1 ) ]]; then
        return 1
    fi
    command -v nvidia-smi >/dev/null 2>&1 || return 1
    nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

if ! gpu_visible; then
    say "no CUDA GPU visible (no nvidia-smi, no GPU listed by 'nvidia-smi -L', or CUDA_VISIBLE_DEVICES hides them); nothing was checked"
    exit 2
fi

WORK=${GPU_CHECK_WORK:-$(mktemp -d -t rfstream-gpu-check.XXXXXX)}
export WORK
mkdir -p "$WORK/models" "$WORK/logs"

remaining() { echo $((BUDGET_S - (SECONDS - START))); }

# step NAME CAP_S COMMAND... : run with a timeout of min(CAP_S, time left), log to $WORK/logs/NAME.log.
# COMMAND may be one of the functions below: they are exported, and `timeout` runs them in a child bash.
step() {
    local name=$1 cap=$2
    shift 2
    local left t0 rc status
    left=$(remaining)
    if ((left < 15)); then
        SUMMARY+=("$(printf '%-14s %-6s %5s  %s' "$name" FAIL - "out of time (budget ${BUDGET_S}s)")")
        FAILED=1
        return 1
    fi
    ((cap > left)) && cap=$left
    say "$name (up to ${cap}s) ..."
    t0=$SECONDS
    timeout --signal=TERM --kill-after=10 "$cap" bash -c '"$@"' step "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    if ((rc == 0)); then status=PASS; else status=FAIL; FAILED=1; fi
    local detail="log: $WORK/logs/$name.log"
    ((rc == 124)) && detail="timed out after ${cap}s; $detail"
    SUMMARY+=("$(printf '%-14s %-6s %4ds  %s' "$name" "$status" $((SECONDS - t0)) "$detail")")
    if ((rc != 0)); then tail -n 15 "$WORK/logs/$name.log" | sed 's/^/    | /'; fi
    return "$rc"
}

summary() {
    echo
    echo "rfstream GPU check — $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - START))s of ${BUDGET_S}s, work dir $WORK"
    [[ -f $WORK/machine.txt ]] && sed 's/^/  /' "$WORK/machine.txt"
    printf '  %s\n' "${SUMMARY[@]}"
    [[ -f $WORK/bench.txt ]] && { echo; cat "$WORK/bench.txt"; }
}

# 1. environment ---------------------------------------------------------------------------------
install_env() {
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv --system-site-packages "$VENV" || return 1
    "$VENV/bin/python" -m pip install -q -e '.[test]' || return 1
    if "$VENV/bin/python" -c 'import cupy, tensorrt' 2>/dev/null; then
        echo "CuPy and TensorRT already importable: the gpu extra is not reinstalled"
        return 0
    fi
    "$VENV/bin/python" -m pip install -q -e '.[gpu,test]'
}
use_env() {
    "$PY" -c 'import rfstream, pytest' && echo "using $VENV as it is (GPU_CHECK_INSTALL=0)"
}
export -f install_env use_env
if ((INSTALL)); then setup=install_env; else setup=use_env; fi
if ! step install 300 "$setup"; then
    SUMMARY+=("the gpu extra could not be installed: is a package index reachable? (see the install log)")
    summary
    exit 3
fi

# 2. what this machine is --------------------------------------------------------------------------
step machine 60 "$PY" - <<'EOF' && cp "$WORK/logs/machine.log" "$WORK/machine.txt"
import cupy, tensorrt
props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
free, total = cupy.cuda.runtime.memGetInfo()
print(f"GPU {name}, compute capability {props['major']}.{props['minor']}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free)")
print(f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, driver {cupy.cuda.runtime.driverGetVersion()}, "
      f"CuPy {cupy.__version__}, TensorRT {tensorrt.__version__}")
EOF

# 3. the marked tests: no failure and no skip ------------------------------------------------------
marked_tests() {
    "$PY" -m pytest -q -p no:cacheprovider -m "cuda or tensorrt" -rs \
        tests/test_gpu.py tests/test_tensorrt.py --junitxml="$WORK/gpu-tests.xml" || return 1
    "$PY" - "$WORK/gpu-tests.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot().iter("testsuite")
counts = [(int(s.get("tests", 0)), int(s.get("skipped", 0)), int(s.get("failures", 0)) + int(s.get("errors", 0))) for s in suite]
tests, skipped, failed = (sum(c[i] for c in counts) for i in range(3))
print(f"{tests} GPU tests: {tests - skipped - failed} passed, {skipped} skipped, {failed} failed")
sys.exit(0 if tests and not skipped and not failed else 1)
EOF
}
export -f marked_tests
step tests 180 marked_tests

# 4. engines from the shipped models ---------------------------------------------------------------
build_engines() {
    "$RFSTREAM" models build-engine frame_detector -o "$WORK/models/frame_detector.engine" || return 1
    "$RFSTREAM" models build-engine crop_classifier --max-batch 64 -o "$WORK/models/crop_classifier.engine" || return 1
    test -s "$WORK/models/frame_detector.engine.timing" || { echo "no timing cache was written"; return 1; }
    RFSTREAM_MODEL_DIR="$WORK/models" "$RFSTREAM" models info frame_detector
}
export -f build_engines
step engines 150 build_engines

# 5. bench on the GPU backend with the engines -----------------------------------------------------
bench() {
    RFSTREAM_MODEL_DIR="$WORK/models" RFSTREAM_SPECTROGRAM__BACKEND=cupy \
        "$RFSTREAM" bench --rates "$RATES" --chunks "$CHUNKS" --replay-s 2 --paced-s 5 --json >"$WORK/bench.json" || return 1
    "$PY" - "$WORK/bench.json" "$WORK/bench.txt" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write(report["table"] + "\n")
gpu = report["memory"]["gpu"]
assert gpu and "error" not in gpu, f"no GPU memory figures in the bench report: {gpu}"
assert report["runs"] and all(run["chunks"] > 0 for run in report["runs"]), "a rate produced no chunks"
print(report["table"])
EOF
}
export -f bench
step bench 120 bench

summary
exit "$FAILED"
