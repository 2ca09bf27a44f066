#!/usr/bin/env bash
# CPU side-by-side: the same sweep fed by bench's input pipeline (--data loader --workers 0: JPEGs
# decoded and augmented in the training process every step) and by synthetic data (a batch that
# already lives in memory). The gap is what the input pipeline costs on this machine; the data
# wait column says how much of each step went to waiting for it. About 2 minutes on the 2-core VM.
#
#   reports/cpu-epyc-2core/loader/run.sh            (PYTHON=... to pick the interpreter)
#
# The log (run.log) starts and ends with `uptime`: other work on the machine makes CPU numbers
# slower and noisier, and the per-point `contended N%` marks say where it did.
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=reports/cpu-epyc-2core/loader
PY=${PYTHON:-python}
ARGS=(resnet18 --image-size 64 -b 8,32 --device cpu --max-time 4 --no-history)
export COLUMNS=${COLUMNS:-100}
{
  echo "# $HERE/run.sh at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $(nproc) cores"
  echo "# uptime before: $(uptime)"
  for data in synthetic loader; do
    echo
    echo "# bench sweep ${ARGS[*]} --data $data --workers 0"
    "$PY" -m bench sweep "${ARGS[@]}" --data "$data" --workers 0 -o "$HERE/$data.json"
  done
  echo
  "$PY" - "$HERE/synthetic.json" "$HERE/loader.json" <<'PYEOF'
import sys
from bench.results.schema import load_result
syn, lod = (load_result(p) for p in sys.argv[1:3])
print("side by side (samples/s; data wait = share of the step spent waiting for the batch):")
print(f"{'batch':>6} {'synthetic':>10} {'loader w0':>10} {'loader/syn':>11} {'data wait':>10}  status (synthetic | loader)")
def status(p):
    c = p.contention
    return ("contended %.0f%%" % c.felt_percent) if c is not None and c.contended else p.status
for a in syn.points:
    b = next((p for p in lod.points if p.batch_size == a.batch_size), None)
    if b is None or not (a.samples_per_sec and b.samples_per_sec):
        continue
    wait = b.breakdown.data_wait_fraction if b.breakdown is not None else None
    w = "-" if wait is None else f"{wait:.0%}"
    print(f"{a.batch_size:>6} {a.samples_per_sec:>10.1f} {b.samples_per_sec:>10.1f} "
          f"{b.samples_per_sec / a.samples_per_sec:>11.2f} {w:>10}  {status(a)} | {status(b)}")
PYEOF
  echo
  echo "# uptime after: $(uptime)"
} 2>&1 | tee "$HERE/run.log"
