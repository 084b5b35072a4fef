#!/usr/bin/env bash
# Nsight Systems timeline of `gpumat bench e2e` for one tenant: NVTX ranges + CUDA API/kernels/copies.
#
# Only the timed overlapped steps are captured (the bench calls cudaProfilerStart/Stop around them
# with --cuda-profiler-range; nsys --capture-range=cudaProfilerApi), so the report holds the steady
# state, not the workload build or the warm-up.
#
# What to look for in the timeline (nsys-ui OUT.nsys-rep):
#   - host-stage thread "gpumat-gpumat host stage-0": NVTX gpumat.plan / gpumat.pack, one batch per
#     step, running while the main thread is inside e2e.step;
#   - main thread: e2e.wait_batch (the loop waiting for data: short when the overlap works) holding
#     gpumat.h2d / gpumat.decode / gpumat.handoff, then e2e.step;
#   - CUDA rows: the Memcpy HtoD of the packed batch on one stream and _decode_gather_kernel /
#     _gather_tail_kernel on another, both under the compute stream's kernels of the previous step.
#     A gap on the compute stream right after e2e.wait_batch is exposed materialization.
#
# Usage: profiling/nsys_e2e.sh [TENANT] [OUT] [extra bench args...]   TENANT: short|mid|long (default mid)
#        writes OUT.nsys-rep (default profiling/nsys_e2e_<TENANT>) and prints NVTX and kernel summaries.
set -euo pipefail
cd "$(dirname "$0")/.."

TENANT="${1:-mid}"
OUT="${2:-profiling/nsys_e2e_${TENANT}}"
shift $(( $# > 2 ? 2 : $# ))
command -v nsys >/dev/null || { echo "nsys (Nsight Systems) is not on PATH" >&2; exit 2; }
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "nsys_e2e.sh needs a CUDA GPU (torch.cuda.is_available() is False)" >&2; exit 2; }

nsys profile \
  --trace=cuda,nvtx,osrt \
  --sample=none --cpuctxsw=none \
  --capture-range=cudaProfilerApi --capture-range-end=stop \
  --force-overwrite=true \
  --output="$OUT" \
  gpumat bench e2e --device cuda --tenants "$TENANT" --steps 20 --profile-steps 0 --no-sync-check \
    --cuda-profiler-range --json "${OUT}.json" "$@"

REP="${OUT}.nsys-rep"
[ -f "$REP" ] || REP="${OUT}.qdrep"   # Nsight Systems before 2021.4
if [ ! -f "$REP" ]; then
  echo "nsys wrote no report at ${OUT}.nsys-rep (was the capture range reached?)" >&2
  exit 1
fi
# Report names changed in Nsight Systems 2023 (nvtx_sum, cuda_gpu_kern_sum); fall back to the old ones.
nsys stats --report nvtx_sum,cuda_gpu_kern_sum,cuda_gpu_mem_time_sum "$REP" 2>/dev/null \
  || nsys stats --report nvtxsum,gpukernsum,gpumemtimesum "$REP" \
  || echo "(nsys stats failed; open the report in nsys-ui)" >&2
echo "nsys report: $REP"
echo "bench results: ${OUT}.json"
