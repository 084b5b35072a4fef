#!/usr/bin/env bash
# Profile the fused history kernel of one `gpumat bench kernels` tenant under Nsight Compute, one
# warmed run per launch (TP, SEQ, warps[, maxnreg]) named (profiling/ncu_launches.py).
#
# What to read: DRAM throughput against peak and the bytes DRAM really moved (against the bench's
# count), achieved against theoretical occupancy, the warp stall reasons per issued instruction
# (long_scoreboard: waiting on global loads; lg_throttle / mio: the load-store queues), the L2 hit
# rate (the dictionary gathers), bytes used per sector requested and, in the MemoryWorkloadAnalysis
# tables, the L1/TEX wavefronts of global loads (a random gather: about one per lane). The L2 sector
# counts (SECTORS: sectors global loads ask L1 for and find there, sectors L1 asks L2 for, reads and
# writes, L2's throughput against peak) check profiling/l2_model.py, which counts them on a CPU: on the
# H200 the long tenant ran with L2 at 90-92% of its peak and DRAM at 32% (2026-12-04).
#
# Usage: profiling/ncu_kernels.sh TENANT OUT LAUNCH...   e.g. profiling/ncu_kernels.sh long /tmp/ncu 1,2,1 2,1,1
#        (NCU_CODES=tier: the batch's DICT codes drawn as the bench tier's; gpumat.bench.kernels.CODE_KINDS)
#        writes OUT.ncu-rep, OUT.txt (details page) and OUT.csv (raw metrics)
set -euo pipefail
cd "$(dirname "$0")/.."
TENANT="${1:-long}"; OUT="${2:-profiling/ncu_${TENANT}}"; shift 2 || true
LAUNCHES=("${@:-1,2,1}")
N=${#LAUNCHES[@]}
PY=$(command -v python3 || command -v python)
command -v ncu >/dev/null || { echo "ncu (Nsight Compute) is not on PATH" >&2; exit 2; }
METRICS=dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.pct,smsp__sass_average_data_bytes_per_sector_mem_global_op_st.pct,launch__registers_per_thread,lts__t_sector_hit_rate.pct,smsp__inst_executed.sum,smsp__average_warp_latency_per_inst_issued.ratio
SECTORS=lts__t_requests_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_write.sum,lts__t_sectors.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld_lookup_hit.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum
STALLS="regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
BREAKDOWN=breakdown:lts__throughput.avg.pct_of_peak_sustained_elapsed  # (which of L2's units is the busiest)
profile() {  # profile METRICS [SECTION...]
  local metrics=$1; shift
  ncu --clock-control none --kernel-name regex:_history_kernel --launch-skip "$N" --launch-count "$N" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats "$@" --metrics "$metrics" --export "$OUT" --force-overwrite \
    "$PY" profiling/ncu_launches.py --tenant "$TENANT" --codes "${NCU_CODES:-uniform}" --launches "${LAUNCHES[@]}" > "$OUT.txt" 2>&1
}
# (the L2 breakdown, the sector counts, the stall breakdown by regex and the wavefront tables; then
# without the L2 breakdown, without the sector counts, without the rest, should this ncu refuse a name)
profile "$METRICS,$SECTORS,$STALLS,$BREAKDOWN" --section MemoryWorkloadAnalysis_Tables \
  || { BREAKDOWN=; profile "$METRICS,$SECTORS,$STALLS" --section MemoryWorkloadAnalysis_Tables; } \
  || { SECTORS=; profile "$METRICS,$STALLS" --section MemoryWorkloadAnalysis_Tables; } \
  || { SECTORS=; STALLS=; profile "$METRICS"; }
ncu --import "$OUT.ncu-rep" --page details >> "$OUT.txt" 2>&1
ncu --import "$OUT.ncu-rep" --page raw --csv \
  --metrics "$METRICS${SECTORS:+,$SECTORS}${STALLS:+,$STALLS}${BREAKDOWN:+,$BREAKDOWN}" > "$OUT.csv" 2>&1 \
  || ncu --import "$OUT.ncu-rep" --page raw --csv \
       --metrics "$METRICS${SECTORS:+,$SECTORS}${STALLS:+,$STALLS}" > "$OUT.csv" 2>&1
grep -E "Duration|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|Registers Per" "$OUT.txt" | head -40
