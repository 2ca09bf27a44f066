#!/usr/bin/env bash
# Everything the open issues ask to measure on a GPU, batched for one device call (about 20 min on
# an H100). Run from the repository root on the GPU machine (no network; torch is preinstalled):
#
#     OUT=/some/dir bash reports/gpu_session.sh
#
# Results land in $OUT/<gpu-name>/; copy that folder to reports/<gpu-name>/ and commit it.
# Each step runs on its own: one failing step is logged and the rest still run.
# Prepared without a GPU (no session so far had one): the commands are the ones tested on CPU.
set -u
export PYTHONPATH="${PYTHONPATH:-.}"
OUT="${OUT:-/tmp/bench-gpu}"
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
SLUG="$(echo "${GPU_NAME:-unknown-gpu}" | tr '[:upper:] ' '[:lower:]-' | tr -cd 'a-z0-9-')"
R="$OUT/$SLUG"
DB="$R/results.db"
mkdir -p "$R"
B=(python3 -m bench)
# Overridable only to smoke-test this script on a CPU (e.g. DEVICE=cpu MODELS="resnet18" IMAGE=32
# BATCH=8 SWEEP_BATCHES=2,4 MAXBATCH_LIMIT=1GiB); on the GPU leave them alone.
DEVICE="${DEVICE:-cuda}"
MODELS="${MODELS:-efficientnet_b0 resnet50}"
IMAGE="${IMAGE:-224}"
BATCH="${BATCH:-256}"
TRACE_BATCH="${TRACE_BATCH:-128}"
ANNOT_BATCH="${ANNOT_BATCH:-32}"  # small steps: where per-step annotation cost shows most
SWEEP=(${SWEEP_BATCHES:+-b "$SWEEP_BATCHES"} --image-size "$IMAGE")
LIMIT=(${MAXBATCH_LIMIT:+--memory-limit "$MAXBATCH_LIMIT"} --image-size "$IMAGE")
FIRST="${MODELS%% *}"

step() {  # step NAME CMD... : run, tee the output to $R/NAME.log, keep going on failure
    local name="$1"; shift
    echo "=== $name: $*" | tee -a "$R/steps.log"
    local t0=$SECONDS
    "$@" > "$R/$name.log" 2>&1
    local rc=$?
    echo "    rc=$rc, $((SECONDS - t0)) s" | tee -a "$R/steps.log"
    tail -n 25 "$R/$name.log"
}

step env "${B[@]}" env --json
nvidia-smi > "$R/nvidia-smi.txt" 2>&1

# Issue 2: fidelity against a hand-written loop, and the reference sweeps.
FID=(--model "$FIRST" --device "$DEVICE" --image-size "$IMAGE" --batch-size "$BATCH")
step fidelity_fp32 python3 -m bench.benchmarks.fidelity "${FID[@]}"
step fidelity_bf16_cl python3 -m bench.benchmarks.fidelity "${FID[@]}" --precision bf16 --channels-last
step sweep_fp32 "${B[@]}" sweep "$FIRST" --device "$DEVICE" "${SWEEP[@]}" -o "$R/sweep_${FIRST}_fp32.json" --db "$DB"
step sweep_bf16_cl "${B[@]}" sweep "$FIRST" --device "$DEVICE" "${SWEEP[@]}" --precision bf16 --channels-last \
    -o "$R/sweep_${FIRST}_bf16_cl.json" --db "$DB"

# Issue 3: the exact max batch, in-process and isolated, and against doubling + bisection.
for model in $MODELS; do
    for prec in fp32 bf16; do
        step "maxbatch_${model}_${prec}" "${B[@]}" max-batch "$model" --device "$DEVICE" --precision "$prec" \
            "${LIMIT[@]}" -o "$R/maxbatch_${model}_${prec}.json" --db "$DB"
    done
done
step maxbatch_isolate "${B[@]}" max-batch "$FIRST" --device "$DEVICE" --isolate "${LIMIT[@]}" \
    -o "$R/maxbatch_${FIRST}_fp32_isolate.json" --db "$DB"
for model in $MODELS; do  # Lightning's and Accelerate's finders on the same workloads (both installed there)
    for prec in fp32 bf16; do
        step "peers_${model}_${prec}" python3 -m bench.benchmarks.peer_finders --model "$model" --device "$DEVICE" \
            --precision "$prec" --image-size "$IMAGE" --json "$R/peers_${model}_${prec}.json"
    done
done
step maxbatch_vs_doubling python3 -m bench.benchmarks.maxbatch_vs_doubling --model "$FIRST" --device "$DEVICE" \
    "${LIMIT[@]}"

# Issue 4: a trace of one batch (nsys is not on that machine's PATH: the script it writes is the
# artefact), the allocator snapshot, and the cost of the annotations.
step trace "${B[@]}" trace "$FIRST" --device "$DEVICE" --image-size "$IMAGE" --batch-size "$TRACE_BATCH" --memory \
    -o "$R/trace_${FIRST}_b${TRACE_BATCH}"
step annotation_overhead python3 -m bench.benchmarks.annotation_overhead --model "$FIRST" --device "$DEVICE" \
    --image-size "$IMAGE" --batch-size "$ANNOT_BATCH"

# Issue 5: the report over the sweeps (screenshot it later where Chromium is installed).
step report "${B[@]}" report "$R/sweep_${FIRST}_fp32.json" "$R/sweep_${FIRST}_bf16_cl.json" --out "$R/report" --db "$DB"

echo "done: $R"

# Issue 6 (a second device call: it can take longer than one call's 10 minutes):
#     python3 -m bench run efficientnet_b0 --device cuda --db "$R/results.db" --out "$R/efficientnet_b0"
