#!/usr/bin/env bash
# The GPU evidence the open issues ask for, staged for the device tool's limits: one call runs at
# most 10 minutes, a session has 15 minutes of device time (start-up included), and only a few
# files come back. Run from the repository root on the GPU machine (no network, torch installed):
#
#     bash reports/gpu_session.sh A      # ~8 min: the H100 targets of issue 10 (most important first)
#     bash reports/gpu_session.sh B      # ~8 min: fp32, peers, trace, torchrun, loader (a 2nd call)
#
# Every step has its own timeout; after every step everything so far is packed into
# $OUT/gpu_<stage>.tgz, so a call cut short still returns what finished. Unpack into
# reports/<gpu-name>/ and commit. Smoke-test on CPU (no GPU needed):
#     DEVICE=cpu MODEL=tests.tiny_models:tiny_cnn IMAGE=16 SWEEP_B=2,4 BIG_B=2,4 MB_LIMIT=1GiB \
#         MB_CAP=64 BATCH=4 OUT=/tmp/gpu bash reports/gpu_session.sh A
set -u
export PYTHONPATH="${PYTHONPATH:-.}"
STAGE="${1:-A}"
OUT="${OUT:-/tmp/bench-gpu}"
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
SLUG="$(echo "${GPU_NAME:-cpu}" | tr '[:upper:] ' '[:lower:]-' | tr -cd 'a-z0-9-')"
R="$OUT/$SLUG"
DB="$R/results.db"
mkdir -p "$R"
B=(python3 -m bench)
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-efficientnet_b0}"
IMAGE="${IMAGE:-224}"
BATCH="${BATCH:-256}"
SWEEP_B="${SWEEP_B:-16:1024}"   # issue 10's target: 7 points in <= 2 minutes (bf16 + channels-last)
BIG_B="${BIG_B:-16:4096}"       # fp32 up to the first OOM
MB=(${MB_LIMIT:+--memory-limit "$MB_LIMIT"} ${MB_CAP:+--max-batch "$MB_CAP"} --image-size "$IMAGE")
BF16=(--precision bf16 --channels-last)

step() {  # step SECONDS NAME CMD... : run under a timeout, log, pack everything so far
    local limit="$1" name="$2"; shift 2
    echo "=== $name (timeout ${limit}s): $*" | tee -a "$R/steps.log"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$R/$name.log" 2>&1
    local rc=$?
    echo "    rc=$rc, $((SECONDS - t0)) s" | tee -a "$R/steps.log"
    tail -n 6 "$R/$name.log"
    tar czf "$OUT/gpu_$STAGE.tgz" -C "$OUT" "$SLUG" 2>/dev/null
}

if [ "$STAGE" = A ]; then
    step 30 env "${B[@]}" env --json
    nvidia-smi > "$R/nvidia-smi.txt" 2>&1
    # 1. The sweep a user runs, with its time accounting (build, first steps, warm-up, measuring).
    step 200 sweep_bf16_cl "${B[@]}" sweep "$MODEL" --device "$DEVICE" --image-size "$IMAGE" "${BF16[@]}" \
        -b "$SWEEP_B" --max-time 2 -o "$R/sweep_${MODEL}_bf16_cl.json" --db "$DB"
    # 2. The max batch: exact, few probes, each probe's time and first-step/steady peaks recorded.
    step 150 maxbatch_bf16_cl "${B[@]}" max-batch "$MODEL" --device "$DEVICE" "${BF16[@]}" "${MB[@]}" \
        --max-seconds 110 -o "$R/maxbatch_${MODEL}_bf16_cl.json" --db "$DB"
    # 3. Fidelity through the command a user runs (bench sweep) and in-process, vs a hand loop.
    #    The command measures in a fresh process: its like-with-like reference is the hand-written
    #    loop as a script of its own (hand-proc, the first arm); the in-process pair follows.
    step 150 fidelity_bf16_cl python3 -m bench.benchmarks.fidelity --model "$MODEL" --device "$DEVICE" \
        --image-size "$IMAGE" --batch-size "$BATCH" --precision bf16 --channels-last --rounds 2 \
        --arms hand-proc,sweep,hand,run_point
    # 4. cuDNN autotuning off: time-to-answer and throughput side by side with step 1's points.
    step 90 sweep_bf16_cl_nobench "${B[@]}" sweep "$MODEL" --device "$DEVICE" --image-size "$IMAGE" "${BF16[@]}" \
        -b 64,256 --max-time 2 --no-cudnn-benchmark -o "$R/sweep_${MODEL}_bf16_cl_nobench.json" --db "$DB"
    step 60 report "${B[@]}" report "$R/sweep_${MODEL}_bf16_cl.json" --out "$R/report" --db "$DB"
    step 30 diagnose "${B[@]}" diagnose "$R/sweep_${MODEL}_bf16_cl.json"
fi

if [ "$STAGE" = B ]; then
    step 150 sweep_fp32 "${B[@]}" sweep "$MODEL" --device "$DEVICE" --image-size "$IMAGE" -b "$BIG_B" \
        --max-time 1 -o "$R/sweep_${MODEL}_fp32.json" --db "$DB"
    step 120 maxbatch_fp32 "${B[@]}" max-batch "$MODEL" --device "$DEVICE" "${MB[@]}" --max-seconds 90 \
        -o "$R/maxbatch_${MODEL}_fp32.json" --db "$DB"
    step 150 peers_bf16 python3 -m bench.benchmarks.peer_finders --model "$MODEL" --device "$DEVICE" \
        --precision bf16 --image-size "$IMAGE" --json "$R/peers_${MODEL}_bf16.json"
    step 60 trace "${B[@]}" trace "$MODEL" --device "$DEVICE" --image-size "$IMAGE" "${BF16[@]}" \
        --batch-size 128 -o "$R/trace_${MODEL}_b128"
    step 90 sweep_torchrun1 python3 -m torch.distributed.run --nproc-per-node 1 -m bench sweep "$MODEL" \
        --device "$DEVICE" --image-size "$IMAGE" "${BF16[@]}" -b 64,256 --max-time 2 \
        -o "$R/sweep_${MODEL}_bf16_cl_torchrun1.json" --no-history
    step 90 sweep_loader "${B[@]}" sweep "$MODEL" --device "$DEVICE" --image-size "$IMAGE" "${BF16[@]}" \
        -b 256 --max-time 2 --data loader --workers 8 -o "$R/sweep_${MODEL}_bf16_cl_loader8.json" --db "$DB"
fi
echo "done: $R ($OUT/gpu_$STAGE.tgz)"
