import sys, time, os
sys.path.insert(0, sys.argv[1])
from bench.results.schema import MeasureSettings, Workload
from bench.measure.runner import run_point
from bench.measure.models import resolve
from bench.measure.step import ModelCache
from bench.hw.device import open_device
nw = int(sys.argv[2]); pt = sys.argv[3] == "1"
wl = Workload(model="abmodel:build", image_size=32, device="cpu")
st = MeasureSettings(warmup_steps=3, min_steps=3, max_time_seconds=1.0, min_time_seconds=1.0, isolate=True)
dev = open_device("cpu"); cache = ModelCache(); spec = resolve(wl.model)
out=[]
for i in range(nw):
    p = run_point(wl, spec, 16, st, dev, model_cache=cache, own_process=True, phase_timing=pt)
    out.append(p.samples_per_sec)
print(("pt " if pt else "nopt ") + " ".join(f"{v:.0f}" for v in out), flush=True)
