#!/usr/bin/env bash
# The GPU evidence (issue "On a lent GPU"), staged for the device tool's limits: one command runs at
# most 10 minutes, a session has 15 minutes of device time (start-up included), only 8 files come
# back from $OUT (at most 2 folders deep), the machine has no network and no nsys. Run from the
# repository root on the GPU machine (python3 with torch; never changes clocks or power limits):
#
#     bash reports/gpu_session.sh A    # <= 540 s of step timeouts: the targets, most valuable first
#     bash reports/gpu_session.sh B    # <= 300 s: fp32, autotune off, trace, loader, torchrun 1 vs 2
#
# Everything is written in a temporary folder; after every step $OUT holds exactly two files:
# gpu_<stage>.tgz (all of it so far, unpacks to <gpu-slug>/: JSON, logs, the report) and
# gpu_<stage>.log (each step's seconds, exit code and last lines). A command cut short still returns
# what finished. Unpack into reports/ and commit. A step whose timeout no longer fits the budget is
# skipped, said in the log. Rehearse on a CPU with the fake H100 (bench.hw.fake_cuda), tiny settings:
#
#     BENCH_FAKE_CUDA=h100 MODEL=tests.tiny_models:tiny_cnn IMAGE=16 SWEEP_B=2:16 BATCH=8 MB_CAP=64 \
#         HAND_DEVICE=cpu MAXTIME=0.3 OUT=/tmp/gpu-rehearsal bash reports/gpu_session.sh A
#     BENCH_FAKE_CUDA=h100 MODEL=tests.tiny_models:tiny_cnn IMAGE=16 BATCH=8 FP32_B=4,8 NOBENCH_B=4,8 \
#         WORKERS=0 HAND_DEVICE=cpu PEER_MODEL=tests.tiny_models:oom_above_4 OUT=/tmp/gpu-rehearsal \
#         bash reports/gpu_session.sh B
set -u
STAGE="${1:-A}"
case "$STAGE" in
    A) BUDGET="${BUDGET:-540}" ;;
    B) BUDGET="${BUDGET:-300}" ;;
    *) echo "error: usage: bash reports/gpu_session.sh A|B" >&2; exit 2 ;;
esac
export PYTHONPATH="${PYTHONPATH:-.}"
OUT="${OUT:-/tmp/bench-gpu-out}"
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-gpu.XXXXXX")"
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-efficientnet_b0}"
IMAGE="${IMAGE:-224}"
BATCH="${BATCH:-256}"               # fidelity, trace (half), loader
SWEEP_B="${SWEEP_B:-16:8192}"       # powers of two; the sweep stops at the first OOM: the memory limit
MAXTIME="${MAXTIME:-2}"             # seconds of timed steps per point
# fidelity's hand-written loops and the peer finders put tensors on the device themselves, and the
# trace's profiler asks CUPTI (C++) for CUDA activity: the fake GPU (bench.hw.fake_cuda, tensors on
# the CPU) cannot stand in for them, so the rehearsal gives them HAND_DEVICE=cpu
HAND_DEVICE="${HAND_DEVICE:-$DEVICE}"
PEER_MODEL="${PEER_MODEL:-$MODEL}"
GPUS="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
GPU_NAME="$(echo "$GPUS" | head -1)"
if [ -z "$GPU_NAME" ]; then  # no nvidia-smi (the CPU rehearsal): ask bench's device layer
    GPU_NAME="$(python3 -c "from bench.hw.device import open_device; print(open_device('$DEVICE').name() or 'cpu')" 2>/dev/null)"
    GPUS="$(python3 -c "from bench.hw.device import cuda_device_count as n; print('\n'.join(['gpu'] * n()))" 2>/dev/null)"
fi
NGPU="$(echo "$GPUS" | grep -c .)"
SLUG="$(echo "${GPU_NAME:-cpu}" | tr '[:upper:] ' '[:lower:]-' | tr -cd 'a-z0-9-')"
R="$WORK/$SLUG"
mkdir -p "$R"
LOG="$OUT/gpu_$STAGE.log"
DB="$R/results.db"
B=(python3 -m bench)
COMMON=(--device "$DEVICE" --image-size "$IMAGE")
BF16=(--precision bf16 --channels-last)
MB=(${MB_LIMIT:+--memory-limit "$MB_LIMIT"} ${MB_CAP:+--max-batch "$MB_CAP"})
USED=0
START="$EPOCHREALTIME"
: > "$LOG"

say() { echo "$*" | tee -a "$LOG"; }

pack() {  # the whole work folder so far -> $OUT/gpu_<stage>.tgz, replaced whole (never half a file)
    tar czf "$WORK.tgz" -C "$WORK" "$SLUG" 2>/dev/null && mv -f "$WORK.tgz" "$OUT/gpu_$STAGE.tgz"
}

step() {  # step TIMEOUT NAME CMD... : run under its timeout, log its seconds, pack
    local limit="$1" name="$2"; shift 2
    if [ $((USED + limit)) -gt "$BUDGET" ]; then
        say "--- $name skipped: its ${limit} s timeout does not fit the ${BUDGET} s budget ($USED s given out)"
        return
    fi
    USED=$((USED + limit))
    local t0="$EPOCHREALTIME"
    echo "\$ $*" > "$R/$name.log"
    timeout --kill-after=3 "$limit" "$@" >> "$R/$name.log" 2>&1
    local rc=$?
    local secs
    secs="$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $t0 }")"
    say "=== $name: ${secs} s (timeout ${limit} s) rc=$rc$([ $rc = 124 ] && echo ' TIMED OUT')"
    tail -n 4 "$R/$name.log" | cut -c1-200 | sed 's/^/    /' | tee -a "$LOG"
    pack
}

say "stage $STAGE on ${GPU_NAME:-no GPU} ($NGPU GPU(s)), budget ${BUDGET} s of step timeouts, work in $WORK"
if [ "$STAGE" = A ]; then
    # 1. The sweep a user runs, up to the memory limit (it stops at the first OOM), every point's
    #    time accounted (build, first step with cuDNN's autotune, warm-up, window): the 2-minute target.
    step 210 sweep_bf16_cl "${B[@]}" sweep "$MODEL" "${COMMON[@]}" "${BF16[@]}" -b "$SWEEP_B" \
        --max-time "$MAXTIME" -o "$R/sweep_bf16_cl.json" --db "$DB"
    # 2. The exact max batch: few probes, each probe's seconds, first-step and steady peaks.
    step 120 maxbatch_bf16_cl "${B[@]}" max-batch "$MODEL" "${COMMON[@]}" "${BF16[@]}" "${MB[@]}" \
        --max-seconds 100 -o "$R/maxbatch_bf16_cl.json" --db "$DB"
    # 3. Fidelity through the command: `bench sweep` (a fresh process) against the same hand-written
    #    loop as a script of its own, interleaved.
    step 130 fidelity_bf16_cl python3 -m bench.benchmarks.fidelity --model "$MODEL" --device "$HAND_DEVICE" \
        --image-size "$IMAGE" --batch-size "$BATCH" --precision bf16 --channels-last --rounds 2 --steps 30 \
        --cli --arms hand-proc,sweep
    step 45 report "${B[@]}" report "$R/sweep_bf16_cl.json" --out "$R/report" --db "$DB"
    step 20 diagnose "${B[@]}" diagnose "$R/sweep_bf16_cl.json"
    step 15 env bash -c "${B[*]} env --json > '$R/env.json'; nvidia-smi > '$R/nvidia-smi.txt' 2>&1; true"
fi
if [ "$STAGE" = B ]; then
    step 60 sweep_fp32 "${B[@]}" sweep "$MODEL" "${COMMON[@]}" -b "${FP32_B:-64,256,1024}" --max-time 1 \
        -o "$R/sweep_fp32.json" --db "$DB"
    # cuDNN autotune off beside stage A's sweep (on): samples/s and seconds per point
    step 45 sweep_bf16_cl_noautotune "${B[@]}" sweep "$MODEL" "${COMMON[@]}" "${BF16[@]}" \
        -b "${NOBENCH_B:-64,256}" --max-time 1 --no-cudnn-benchmark -o "$R/sweep_bf16_cl_noautotune.json" --db "$DB"
    step 45 trace "${B[@]}" trace "$MODEL" --device "$HAND_DEVICE" --image-size "$IMAGE" "${BF16[@]}" \
        -b "$((BATCH / 2))" -o "$R/trace"
    step 45 sweep_loader "${B[@]}" sweep "$MODEL" "${COMMON[@]}" "${BF16[@]}" -b "$BATCH" --max-time 1 \
        --data loader --workers "${WORKERS:-8}" -o "$R/sweep_bf16_cl_loader.json" --db "$DB"
    if [ "$NGPU" -ge 2 ]; then  # torchrun with 1 and 2 processes, scaling efficiency between them
        step 90 sweep_torchrun_1_2 "${B[@]}" sweep "$MODEL" --device cuda --image-size "$IMAGE" "${BF16[@]}" \
            -b "${DDP_B:-256}" --max-time 1 --nproc 1,2 -o "$R/sweep_bf16_cl_ddp.json" --db "$DB"
    else
        say "--- sweep_torchrun_1_2 skipped: one GPU"
        step 90 peers_bf16 python3 -m bench.benchmarks.peer_finders --model "$PEER_MODEL" --device "$HAND_DEVICE" \
            --image-size "$IMAGE" --precision bf16 --channels-last --steps 2 --json "$R/peers_bf16.json"
    fi
fi
rm -rf "$WORK"
say "done in $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $START }") s: $OUT/gpu_$STAGE.tgz ($SLUG/), $LOG"
