#!/usr/bin/env bash
# The GPU training of the zoo's whole networks (evaluations/gpu_train_zoo.py) in three device calls that follow
# each other while the machine stays warm, each carrying one part of CIFAR-10 made here by
#   python evaluations/devdata.py pack ../shared/data/cifar-10-batches-py .devdata --parts 3
# (about 43 MB a part; the repository travels with each call).
#
#   bash evaluations/gpu_train_zoo.sh smoke      # (first session's try) carry .devdata/part1: stage it; every code
#                                                #   path on random images; 1 vs 7 processes side by side (steps/s)
#   bash evaluations/gpu_train_zoo.sh mps        # carry .devdata/part1: stage it; 7 processes side by side without,
#                                                #   then with, CUDA MPS, which stays on for the training if it works
#   bash evaluations/gpu_train_zoo.sh stage 2    # carry .devdata/part2: stage it
#   BUDGET=500 bash evaluations/gpu_train_zoo.sh train   # carry .devdata/part3: stage, unpack + md5, train, measure
#
# Outputs go to $OUT: the seven model files and records.tgz (train), smoke_records.tgz (smoke). Afterwards, here:
#   python evaluations/gpu_train_zoo.py ship FETCHED_DIR
set -u -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STAGE=/tmp/wnll_stage
T0=$(date +%s)
MPS_ON=/tmp/wnll_mps_on
say() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
measure() {  # steps/s of $1 copies of the softmax run side by side, on random images
    python3 evaluations/gpu_train_zoo.py measure --copies "$1" --calib 8,16 --start-delay 10 --n-train 20000 \
        --budget 30 --work /tmp/wnll_measure --out /tmp/wnll_measure
}
case "${1:-}" in
  smoke)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
    python3 evaluations/devdata.py stage .devdata/part1 "$STAGE" || exit 1
    python3 evaluations/gpu_train_zoo.py all --fake --n-test 2000 --budget 25 --calib 6,14 --start-delay 15 \
        --work /tmp/wnll_smoke --out /tmp/wnll_smoke_out
    rc=$?
    cp /tmp/wnll_smoke_out/records.tgz "${OUT:-/tmp}/smoke_records.tgz" 2>/dev/null
    say "smoke exit $rc"
    for n in 1 7; do measure $n; done
    say "done"
    exit $rc ;;
  mps)  # carry .devdata/part1: stage it; 7 processes side by side without, then with, CUDA MPS (kept on if it works)
    python3 evaluations/devdata.py stage .devdata/part1 "$STAGE" || exit 1
    measure 7
    rm -f "$MPS_ON"
    if nvidia-cuda-mps-control -d; then
        sleep 1
        ok=0
        for i in 1 2; do timeout 60 python3 -c "import torch; print(float(torch.ones(1000, device='cuda').sum()))" \
            > "/tmp/mps_check_$i.txt" 2>&1 & done
        wait
        for i in 1 2; do grep -q "^1000.0$" "/tmp/mps_check_$i.txt" && ok=$((ok + 1)); done
        if [ "$ok" = 2 ]; then
            touch "$MPS_ON"; say "CUDA MPS on"; measure 7
        else
            echo quit | nvidia-cuda-mps-control; cat /tmp/mps_check_*.txt; say "CUDA MPS check failed: off"
        fi
    else
        say "CUDA MPS daemon did not start"
    fi
    say "done" ;;
  stage)
    python3 evaluations/devdata.py stage ".devdata/part${2:?part number}" "$STAGE" ;;
  train)
    python3 evaluations/devdata.py stage .devdata/part3 "$STAGE" || exit 1
    python3 evaluations/devdata.py unpack "$STAGE" /tmp/wnll_data || exit 1
    say "data ready"
    export WNLL_MPS=$([ -f "$MPS_ON" ] && echo 1 || echo 0)
    say "CUDA MPS: $WNLL_MPS"
    python3 evaluations/gpu_train_zoo.py all --data-root /tmp/wnll_data --budget "${BUDGET:-500}" \
        --work /tmp/wnll_work --out "${OUT:?set OUT}"
    rc=$?
    say "train exit $rc"
    exit $rc ;;
  *)
    echo "usage: $0 smoke | mps | stage N | train" >&2; exit 2 ;;
esac
