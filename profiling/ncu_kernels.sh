#!/usr/bin/env bash
# Profile the fused history kernel of one `gpumat bench kernels` tenant under Nsight Compute, one
# warmed run per launch (TP, SEQ, warps[, maxnreg]) named (profiling/ncu_launches.py).
#
# What to read: DRAM throughput against peak and the bytes DRAM really moved (against the bench's
# count), achieved against theoretical occupancy, the warp stall reasons per issued instruction
# (long_scoreboard: waiting on global loads; lg_throttle / mio: the load-store queues), the L2 hit
# rate (the dictionary gathers), bytes used per sector requested and, in the MemoryWorkloadAnalysis
# tables, the L1/TEX wavefronts of global loads (a random gather: about one per lane).
#
# Usage: profiling/ncu_kernels.sh TENANT OUT LAUNCH...   e.g. profiling/ncu_kernels.sh long /tmp/ncu 1,2,1 2,1,1
#        writes OUT.ncu-rep, OUT.txt (details page) and OUT.csv (raw metrics)
set -euo pipefail
cd "$(dirname "$0")/.."
TENANT="${1:-long}"; OUT="${2:-profiling/ncu_${TENANT}}"; shift 2 || true
LAUNCHES=("${@:-1,2,1}")
N=${#LAUNCHES[@]}
PY=$(command -v python3 || command -v python)
command -v ncu >/dev/null || { echo "ncu (Nsight Compute) is not on PATH" >&2; exit 2; }
METRICS=dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.pct,smsp__sass_average_data_bytes_per_sector_mem_global_op_st.pct,launch__registers_per_thread,lts__t_sector_hit_rate.pct,smsp__inst_executed.sum,smsp__average_warp_latency_per_inst_issued.ratio
STALLS="regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
profile() {  # profile METRICS [SECTION...]
  local metrics=$1; shift
  ncu --clock-control none --kernel-name regex:_history_kernel --launch-skip "$N" --launch-count "$N" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats "$@" --metrics "$metrics" --export "$OUT" --force-overwrite \
    "$PY" profiling/ncu_launches.py --tenant "$TENANT" --launches "${LAUNCHES[@]}" > "$OUT.txt" 2>&1
}
# (the stall breakdown by regex and the wavefront tables; without them should this ncu refuse either)
profile "$METRICS,$STALLS" --section MemoryWorkloadAnalysis_Tables || { STALLS=; profile "$METRICS"; }
ncu --import "$OUT.ncu-rep" --page details >> "$OUT.txt" 2>&1
ncu --import "$OUT.ncu-rep" --page raw --csv \
  --metrics "$METRICS${STALLS:+,$STALLS}" > "$OUT.csv" 2>&1
grep -E "Duration|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|Registers Per" "$OUT.txt" | head -40
