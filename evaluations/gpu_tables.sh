#!/usr/bin/env bash
# The paper's Tables 2 and 1 on our shipped models, all three training-data rows, on one GPU in one call.
#
# Table 2 (paper and adaptive protocol): one process per training-data row, side by side on the device; then one
# process over all rows that resumes every cell from the three stores and writes the combined defence_table.md.
# Table 1 with the exact WNLL gradient (the paper-protocol version, surrogate gradient, is in
# results/transfer_table_trained_n500.md) runs beside them. Settings as results/adaptive_n200.md.
#
# Usage (from the repository root):
#   OUT=/tmp/gpu DEVICE=cuda WNLL_ART_DATA=../shared/data WEIGHTS=../shared/weights/resnet56-4bfd9763.th \
#       bash evaluations/gpu_tables.sh
# The paper's other eps (issue 19's adaptive column): EPS=0.04,0.06,0.1 (default 0.02,0.08) with a fresh RES folder.
# A quick wiring check on the CPU (a few images, tiny budgets): QUICK=1 DEVICE=cpu ... bash evaluations/gpu_tables.sh
# Every process stops at DEADLINE seconds after the start (default 480); the stores are resumable (same device,
# torch and thread count only: the device facts are part of each run's settings). Writes $OUT/log.txt (this
# script's lines), $OUT/tables.tgz (the result stores and every process's log). Exit status 1 if any process failed
# or reached the deadline (the combined table is then over the finished rows only, or absent).
set -u -o pipefail
: "${OUT:?set OUT}" "${WEIGHTS:?set WEIGHTS}"
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-480}
THREADS=${THREADS:-4}
ROWS=(original tvm original+tvm)
RES=${RES:-results/gpu_tables$( [ "${QUICK:-0}" = 1 ] && echo _quick)}
mkdir -p "$OUT" "$RES/logs"
export OMP_NUM_THREADS=$THREADS MPLBACKEND=Agg PYTHONUNBUFFERED=1
T0=$(date +%s)
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
# runs "$@" until the deadline (timeout 0 would mean no limit, a negative one is refused: both say 124 instead)
limited() { local l; l=$(left); if [ "$l" -lt 2 ]; then echo "deadline reached before the start" >&2; return 124; fi
            timeout "$l" "$@"; }

if [ "${QUICK:-0}" = 1 ]; then
    N=4; BATCH=4; SIZES=(--steps 2 --square-queries 2 --convergence-steps 1,2 --convergence-eot 1 --convergence-images 2)
else
    N=500; BATCH=500; SIZES=(--steps 20 --square-queries 100 --convergence-steps 10,20,50,100 --convergence-eot 1,2,4 --convergence-images 20)
fi
COMMON=(--n "$N" --wnll-batch-size "$BATCH" --eps "${EPS:-0.02,0.08}" --defences none,tvm --tvm-prob 0.5 --tvm-lamb 0.03
        --tvm-iterations 20 --eot-samples 2 --tvm-draws 3 --weights "$WEIGHTS" --device "$DEVICE")
TABLE2=(evaluations/defence_table.py "${COMMON[@]}" "${SIZES[@]}" --restarts 1 --out "$RES/table2")

say "device $DEVICE, $N images, deadline ${DEADLINE}s, $THREADS threads per process"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$OUT/log.txt"
declare -A PID
DONE=()
FAIL=0
for row in "${ROWS[@]}"; do
    limited python3 "${TABLE2[@]}" --trained "$row" > "$RES/logs/table2_$row.log" 2>&1 &
    PID[$row]=$!
done
limited python3 evaluations/transfer_table.py "${COMMON[@]}" --trained --gradient exact \
    --out "$RES/table1_exact" > "$RES/logs/table1_exact.log" 2>&1 &
PID[table1]=$!
for job in "${ROWS[@]}" table1; do
    wait "${PID[$job]}"; rc=$?
    say "$job: exit $rc $( [ $rc = 124 ] && echo '(deadline reached; its store holds the finished cells)')"
    if [ $rc != 0 ]; then FAIL=1; elif [ "$job" != table1 ]; then DONE+=("$job"); fi
    tail -n 3 "$RES/logs/$( [ "$job" = table1 ] && echo table1_exact || echo "table2_$job").log" | tee -a "$OUT/log.txt"
done
rm -f "$RES/table2/defence_table.md"  # each row's process wrote its own one-row table there; the combined one replaces it
if [ ${#DONE[@]} -gt 0 ]; then
    limited python3 "${TABLE2[@]}" --trained "$(IFS=,; echo "${DONE[*]}")" > "$RES/logs/table2_all.log" 2>&1
    rc=$?; [ $rc != 0 ] && FAIL=1
    say "combined table 2 over ${DONE[*]}: exit $rc"
fi
tar -czf "$OUT/tables.tgz" "$RES"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null | tee -a "$OUT/log.txt"
say "done$( [ $FAIL = 1 ] && echo ': some process failed or reached the deadline (see above)')"
exit $FAIL
