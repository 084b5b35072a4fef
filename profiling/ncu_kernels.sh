#!/usr/bin/env bash
# Profile the fused decode-gather kernels of `gpumat bench kernels` under Nsight Compute.
#
# What to read in the report: DRAM throughput as a fraction of peak (the kernel is a streaming
# gather and should sit near the copy ceiling), achieved vs theoretical occupancy (registers are
# int64-heavy: ~74 per thread at TILES_PER_PROG=4), and global load/store efficiency (bytes used
# per sector requested: the packed words are read with lane-varying addresses, the stores are
# contiguous per tile).
#
# Usage: profiling/ncu_kernels.sh [TENANT] [OUT]      TENANT: short|mid|long (default mid)
#        writes OUT.ncu-rep (default profiling/ncu_decode_gather_<TENANT>) and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

TENANT="${1:-mid}"
OUT="${2:-profiling/ncu_decode_gather_${TENANT}}"
command -v ncu >/dev/null || { echo "ncu (Nsight Compute) is not on PATH" >&2; exit 2; }

# --profile 3: build one staged batch and launch the fused path 3 times, no timing loop. One
# materialization is 6 launches (decode + tail for item_id, action, and ts checked only); skip
# the first (JIT warm-up) and profile the second.
ncu \
  --target-processes all \
  --kernel-name regex:'_decode_gather_kernel|_gather_tail_kernel' \
  --launch-skip 6 --launch-count 6 \
  --section SpeedOfLight \
  --section MemoryWorkloadAnalysis \
  --section MemoryWorkloadAnalysis_Tables \
  --section Occupancy \
  --section LaunchStats \
  --metrics dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.pct,smsp__sass_average_data_bytes_per_sector_mem_global_op_st.pct,launch__registers_per_thread \
  --export "$OUT" --force-overwrite \
  gpumat bench kernels --profile 3 --tenants "$TENANT"

ncu --import "$OUT.ncu-rep" --page raw --csv \
  --metrics dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.pct,smsp__sass_average_data_bytes_per_sector_mem_global_op_st.pct,launch__registers_per_thread,gpu__time_duration.sum
