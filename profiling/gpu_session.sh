#!/usr/bin/env bash
# One device call for a session that is lent a GPU (see profiling/NOTES.md). Every step has its own
# time limit and its log, so a step that fails or runs long still leaves the others' results. The
# device tool brings back at most 8 files: the JSON and PNG results, and logs.tgz with every log
# (rebuilt after each step, so it comes back even if the call is cut short). Run from the
# repository root:  GPUMAT_COMMIT=<the commit sent> OUT=$OUT bash profiling/gpu_session.sh
# (GPUMAT_COMMIT: the device's copy of the tree carries an older .git, so the JSON would name that)
set -u -o pipefail
OUT=${OUT:-gpu_out}
LOGS=${LOGS:-/tmp/gpumat_gpu_logs}
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1 GPUMAT_TEST_NATIVE=1
PY=$(command -v python3 || command -v python)
T0=$SECONDS
pack() { tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null; }
step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs=$2; shift 2
    echo "== $name (limit ${secs}s, at ${SECONDS}s)" | tee -a "$LOGS/steps.log"
    local t0=$SECONDS
    timeout -k 5 "$secs" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    echo "   $name rc=$rc in $((SECONDS - t0))s" | tee -a "$LOGS/steps.log"
    tail -n 12 "$LOGS/$name.log" | cut -c1-300
    pack
}
"$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$LOGS/install.log" 2>&1
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1
"$PY" -c "import torch, triton, gpumat.kernels, gpumat.host; print(torch.__version__, triton.__version__, torch.version.cuda, torch.cuda.get_device_name())" 2>&1 | tee "$LOGS/versions.txt"
"$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|triton|numpy|pyarrow|cupy|pytest|matplotlib) " >> "$LOGS/versions.txt"
command -v gpumat > /dev/null || echo "note: no gpumat script on PATH; using $PY -m gpumat" | tee -a "$LOGS/steps.log"
pack
# Which steps, in order (default: all): GPU_STEPS="bench_kernels hstu_gpu" OUT=$OUT bash profiling/gpu_session.sh
# E2E_ARGS / HSTU_ARGS add options to those steps (e.g. E2E_ARGS="--tenants long --steps 10").
# The default limits of all steps sum to more than one call allows (600 s, setup and kill grace on
# top): pick steps with GPU_STEPS. The first session (2026-11-30) saw setup ~15 s, bench_kernels
# 42 s, native_tests 24 s, sanitizer 16 s, hstu_gpu ~52 s TF32 + ~100 s IEEE (now timed up to W
# 4096 only), bench_e2e ~150 s for short and mid plus ~110 s for long at 40 steps. The second
# (2026-12-04): setup 16-24 s, bench_kernels 41-60 s, ncu 11-13 s, native_tests 77-89 s (-n 8,
# verbose, so a cut-short run still names each test's result), sanitizer 8 s; native_tests and
# sanitizer had outrun their old 90 / 75 s limits in its first call. The sanitizer now runs the
# deterministic tests of launch shapes, corrupt headers, unmasked loads and clamped codes
# (SANITIZER_TESTS picks others). native_tests also runs the Materializer's two tests of segment dictionaries kept on the
# device (the second: beside stripe tables, a device-to-device copy of them each batch; about 12 s
# on this project's CPU). They run the Materializer on the GPU since 2026-12-04; before, on the
# CPU, where their Triton cases skipped.
# ncu: profiling/ncu_kernels.sh on the long tenant (after bench_kernels, whose tuned launch it profiles)
for s in ${GPU_STEPS:-bench_kernels native_tests sanitizer hstu_gpu bench_e2e}; do
    case $s in
    bench_kernels) step bench_kernels "${KERNELS_LIMIT:-240}" "$PY" -m gpumat bench kernels --json "$OUT/bench_kernels.json" --plot "$OUT/bench_kernels.png" ;;
    native_tests) step native_tests "${NATIVE_LIMIT:-160}" "$PY" -m pytest -v -rfE --tb=short --durations=15 -n 8 -p no:cacheprovider tests/test_decode_gather.py tests/test_ops.py \
        tests/test_materializer.py::test_segment_dictionaries_are_copied_once_and_batches_stay_exact \
        tests/test_materializer.py::test_segment_dictionaries_stay_beside_stripe_tables ;;
    hstu_gpu) step hstu_gpu "${HSTU_LIMIT:-120}" "$PY" profiling/hstu_gpu.py --json "$OUT/hstu_gpu.json" ${HSTU_ARGS:-} ;;
    hstu_sweep) step hstu_sweep "${SWEEP_LIMIT:-120}" "$PY" profiling/hstu_sweep.py --json "$OUT/hstu_sweep.json" ;;
    bench_e2e) step bench_e2e "${E2E_LIMIT:-160}" "$PY" -m gpumat bench e2e --device cuda --json "$OUT/bench_e2e.json" --plot "$OUT/bench_e2e.png" ${E2E_ARGS:-} ;;
    ncu) # the default launch, it under a 64-register cap (32 warps an SM, not 28), (1, 4, 1) so capped (64 registers with
        # triton 3.6, 361 SASS a tile against 377; it spills with 3.9, so not a tuning candidate), the one bench_kernels
        # kept for the long tenant, and (2, 1, 1)
        best=$("$PY" -c "import json; print(','.join(map(str, json.load(open('$OUT/bench_kernels.json'))['results'][-1]['launch']['best'])))" 2>/dev/null || echo 1,2,1)
        step ncu "${NCU_LIMIT:-90}" bash profiling/ncu_kernels.sh long "$LOGS/ncu_long" $(printf '%s\n' 1,2,1 1,2,1,64 1,4,1,64 "$best" 2,1,1 | awk '!seen[$0]++')
        # and (1, 2, 1), the launch profiling/l2_model.py models, and the kept one on the same batch with its codes
        # drawn as the bench tier's and in frequency order: the L2 sectors the model predicts for each
        # (docs/results/cpu-2026-12-04i/)
        for codes in tier frequency; do
            NCU_CODES=$codes step "ncu_$codes" "${NCU_LIMIT:-90}" bash profiling/ncu_kernels.sh long "$LOGS/ncu_long_$codes" \
                $(printf '%s\n' 1,2,1 "$best" | awk '!seen[$0]++')
        done ;;
    sanitizer) step sanitizer "${SANITIZER_LIMIT:-110}" compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" -m pytest -v -p no:cacheprovider tests/test_decode_gather.py -k "${SANITIZER_TESTS:-groups_of_tiles or one_warp_programs or corrupt or unmasked or clamped or without_low_bits}" ;;
    *) echo "unknown step $s" ;;
    esac
done
echo "== done in $((SECONDS - T0))s" | tee -a "$LOGS/steps.log"
pack
cat "$LOGS/steps.log"
