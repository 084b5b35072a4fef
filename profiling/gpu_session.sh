#!/usr/bin/env bash
# One device call for a session that is lent a GPU (see profiling/NOTES.md). Every step has its own
# time limit and writes to $OUT (default ./gpu_out), so a step that fails or runs long still leaves
# the others' results. Run from the repository root:  OUT=$OUT bash profiling/gpu_session.sh
set -u -o pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GPUMAT_TEST_NATIVE=1
step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs=$2; shift 2
    echo "== $name (limit ${secs}s)" | tee -a "$OUT/steps.log"
    local t0=$SECONDS
    timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
    echo "   rc=$? in $((SECONDS - t0))s" | tee -a "$OUT/steps.log"
    tail -3 "$OUT/$name.log"
}
pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" > "$OUT/versions.txt" 2>&1
step native_tests 200 python -m pytest -q -x tests/test_decode_gather.py tests/test_jagged_hstu.py tests/test_ops.py
step sanitizer 120 compute-sanitizer --tool memcheck --error-exitcode 1 python -m pytest -q -x tests/test_decode_gather.py -k "random_batches_jagged or corrupt or specializations"
step bench_kernels 120 gpumat bench kernels --json "$OUT/bench_kernels.json" --plot "$OUT/bench_kernels.png"
step bench_e2e 150 gpumat bench e2e --device cuda --json "$OUT/bench_e2e.json" --plot "$OUT/bench_e2e.png"
