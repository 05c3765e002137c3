#!/usr/bin/env bash
# The comparison of defences (issue 21) in one device call: WNLL + TVM beside ART's defences and adversarial training
# under the adaptive protocol, with the paper protocol for the per-image check, on the first N test images at eps
# 0.02, 8/255 and 0.08, then the convergence checks the >5-points rule asks for and the full-budget re-runs they call
# for, then the document.
#   OUT=/tmp/gpu DEVICE=cuda WNLL_ART_DATA=../shared/data WEIGHTS=../shared/weights/resnet56-4bfd9763.th bash evaluations/gpu_compare.sh
# Dry run on a CPU (wiring only, tiny budgets):
#   N=4 JOBS=2 DEVICE=cpu OUT=/tmp/dry WNLL_ART_DATA=../shared/data WEIGHTS=... bash evaluations/gpu_compare.sh
# Phase 1 runs one `wnll-art evaluate` process per job side by side (JOBS at a time, 0: all): the FGSM-RS rows
# (adaptive, paper), each fast defence on softmax + our strongest WNLL model in a folder of its own (adaptive), and
# all of them under the paper protocol; every process stops at P1 seconds after the start (default 330; the stores
# are resumable, so a later call with the same settings finishes them). The defences are the registry's
# (`compare_defences.py defences`); its slow ones (ArtEntry.slow: ART's TotalVarMin, art_tvm and art_tvm_guo,
# L-BFGS-B per image on the CPU, hours at N=500) are left out unless SLOW_N > 0, which runs them on the first
# SLOW_N images in folders of their own. Phase 2 (until DEADLINE, default 450) runs the convergence ladders of every
# row the report's rule selects, then the full-budget re-run of each ladder that still falls past the plan's steps.
# Phase 3 writes $OUT/compare_defences_n$N.md, its PNG and
# $OUT/compare_defences_records.tgz, and prints the document. Writes $OUT/log.txt and $OUT/logs.tgz (run folders in
# $RES, default results/compare_defences_gpu_n$N; the archive holds their records); exit status 1
# if any process failed or reached its deadline (the document then lists what is missing).
set -u -o pipefail
: "${OUT:?set OUT}" "${WEIGHTS:?set WEIGHTS}"
DEVICE=${DEVICE:-cuda}
N=${N:-500}
EPS=${EPS:-0.02,0.0313725,0.08}
P1=${P1:-330}
DEADLINE=${DEADLINE:-450}
JOBS=${JOBS:-0}
SLOW_N=${SLOW_N:-0}
THREADS=${THREADS:-1}
PY=${PYTHON:-python3}
RES=${RES:-results/compare_defences_gpu_n$N}  # the run folders (resumable); $OUT gets the archive
DEFENDED=softmax,resnet56-wnll-tvmaug     # the public ResNet-56 and our strongest WNLL model (original + TVM data)
ADVERSARIAL=resnet56-fgsmrs,fgsmrs-wnll   # FGSM-RS (Wong et al. 2020) alone and through a WNLL head
mkdir -p "$OUT" "$RES/logs"
rm -f "$RES"/logs/*.rc  # exit statuses of an earlier call would count as this one's
export OMP_NUM_THREADS=$THREADS MPLBACKEND=Agg PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }
# The defences are the registry's (a new entry joins without an edit here), ART's slow ones (ArtEntry.slow) apart.
# The paper protocol's shared folder keeps the list it was started with (its run.json: a folder resumes only with its
# own settings); defences registered later get paper folders of their own.
fast=$("$PY" evaluations/compare_defences.py defences) &&
    slow=$("$PY" evaluations/compare_defences.py defences --slow) &&
    paper=$("$PY" evaluations/compare_defences.py defences --recorded-in "$RES/defences_paper") ||
    { say "cannot read the defences from the registry (evaluations/compare_defences.py defences)"; exit 1; }
read -ra FAST <<< "$fast"; read -ra SLOW <<< "$slow"; read -ra PAPER <<< "${paper:-$fast}"
if [ ${#FAST[@]} -eq 0 ]; then say "no defence in the registry (evaluations/compare_defences.py defences)"; exit 1; fi
# runs "$@" until second $1 after the start (timeout 0 would mean no limit: 124 instead when no time is left)
until_s() { local l=$(( $1 - ($(date +%s) - T0) )); shift
            if [ "$l" -lt 2 ]; then echo "deadline reached before the start" >&2; return 124; fi; timeout "$l" "$@"; }
throttle() { if [ "$JOBS" -gt 0 ]; then while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done; fi; }
# job NAME END CMD...: in the background, its log and exit status under $RES/logs
job() { local name=$1 end=$2; shift 2; throttle
        ( until_s "$end" "$@" > "$RES/logs/$name.log" 2>&1; echo $? > "$RES/logs/$name.rc" ) & }

if [ "$N" -lt 50 ]; then  # a dry run: the wiring, not the numbers
    SIZES=(--steps 2 --square-queries 2 --cw-steps 2 --template-size 100 --wnll-batch-size "$N")
    LADDER=(--convergence-steps 1,2 --convergence-eot 1 --convergence-images 2)
else
    SIZES=(--steps 20 --square-queries 100 --cw-steps 10 --wnll-batch-size 500)
    LADDER=(--convergence-steps 10,20,50,100 --convergence-eot 1,2,4 --convergence-images 20)
fi
COMMON=(--eps "$EPS" --eot-samples 2 --tvm-draws 3 --weights "$WEIGHTS" --device "$DEVICE" --no-progress "${SIZES[@]}")
EVALUATE=("$PY" -m wnll_art evaluate "${COMMON[@]}")  # wnll-art evaluate (the package from this checkout)

say "device $DEVICE, $N images, eps $EPS, phase 1 until ${P1}s, all until ${DEADLINE}s, $THREADS threads per process"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$OUT/log.txt"
job adversarial "$P1" "${EVALUATE[@]}" --protocol adaptive --models "$ADVERSARIAL" --defences none,tvm --n "$N" --out "$RES/adversarial"
job adversarial_paper "$P1" "${EVALUATE[@]}" --protocol paper --models "$ADVERSARIAL" --defences none,tvm --n "$N" --out "$RES/adversarial_paper"
for d in "${FAST[@]}"; do
    job "defences_$d" "$P1" "${EVALUATE[@]}" --protocol adaptive --models "$DEFENDED" --defences "$d" --n "$N" --out "$RES/defences_$d"
done
job defences_paper "$P1" "${EVALUATE[@]}" --protocol paper --models "$DEFENDED" --defences "$(IFS=,; echo "${PAPER[*]}")" --n "$N" \
    --out "$RES/defences_paper"
for d in "${FAST[@]}"; do  # registered after the shared paper folder was started
    case " ${PAPER[*]} " in
        *" $d "*) ;;
        *) job "paper_$d" "$P1" "${EVALUATE[@]}" --protocol paper --models "$DEFENDED" --defences "$d" --n "$N" --out "$RES/paper_$d" ;;
    esac
done
if [ "$SLOW_N" -gt 0 ] && [ ${#SLOW[@]} -gt 0 ]; then
    for d in "${SLOW[@]}"; do
        for protocol in adaptive paper; do
            job "${d}_${protocol}_n$SLOW_N" "$P1" "${EVALUATE[@]}" --protocol "$protocol" --models "$DEFENDED" --defences "$d" \
                --n "$SLOW_N" --out "$RES/${d}_${protocol}_n$SLOW_N"
        done
    done
fi
wait
FAIL=0
for rc in "$RES"/logs/*.rc; do
    name=$(basename "$rc" .rc); status=$(cat "$rc")
    say "$name: exit $status $( [ "$status" = 124 ] && echo '(deadline reached; its store holds the finished cells)')"
    [ "$status" != 0 ] && { FAIL=1; tail -n 3 "$RES/logs/$name.log" | tee -a "$OUT/log.txt"; }
done
FOLDERS=()
for f in "$RES"/*/; do [ -f "$f/run.json" ] && FOLDERS+=("${f%/}"); done
# round KIND CHECKS_OPTION EXTRA...: `compare_defences.py KIND LINE EXTRA...` for every line `checks CHECKS_OPTION`
# prints ("--records FOLDER --victims M+D,...", split on purpose), until DEADLINE, then their exit statuses
round() {
    local kind=$1 opt=$2 n=0 i line status; shift 2
    # shellcheck disable=SC2086  # an empty option is no word
    "$PY" evaluations/compare_defences.py checks $opt --records "${FOLDERS[@]}" > "$RES/logs/$kind.txt" \
        2> "$RES/logs/$kind.err" || FAIL=1
    while read -r line; do
        case "$line" in --records\ *) ;; *) continue ;; esac  # its lines only (a warning is no job)
        n=$((n + 1)); say "$kind $n: $line"
        # shellcheck disable=SC2086
        job "${kind}_$n" "$DEADLINE" "$PY" evaluations/compare_defences.py "$kind" $line "$@" --weights "$WEIGHTS" \
            --device "$DEVICE"
    done < "$RES/logs/$kind.txt"
    wait
    for ((i = 1; i <= n; i++)); do
        status=$(cat "$RES/logs/${kind}_$i.rc"); say "$kind $i: exit $status"
        [ "$status" != 0 ] && { FAIL=1; tail -n 3 "$RES/logs/${kind}_$i.log" | tee -a "$OUT/log.txt"; }
    done
}

# phase 2: the convergence ladders of every defence beating no defence by more than 5 points at 8/255
if [ ${#FOLDERS[@]} -gt 0 ]; then
    round convergence "" "${LADDER[@]}"
    # the full-budget re-runs the ladders call for: a ladder still falling past the plan's steps re-runs its attack
    # at the ladder's top step count on every image (compare_defences.py budget), and the report's worst case takes
    # it. One cell per victim over all N images, written when it ends: it shares DEADLINE with the ladders (seconds
    # on a GPU; about 11 minutes of one CPU core per victim at N = 500 and 100 steps)
    round budget --budget
    # phase 3: the document, its chart and the records archive (printed: the run's summary)
    "$PY" evaluations/compare_defences.py report --records "${FOLDERS[@]}" --out-dir "$OUT" \
        --archive "$OUT/compare_defences_records.tgz" | tee "$OUT/report.txt" || FAIL=1
else
    say "no run folder was written"; FAIL=1
fi
tar -czf "$OUT/logs.tgz" -C "$RES" logs
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null | tee -a "$OUT/log.txt"
say "done$( [ $FAIL = 1 ] && echo ': some process failed or reached its deadline (see above)')"
exit $FAIL
