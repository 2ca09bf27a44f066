# one process: A-model and B-model variants alternate 0.2 s windows; prints the geometric-mean ratio per depth
import sys, time, math, random, statistics, torch, importlib.util, types
sys.path.insert(0, ".")  # run from the repository root
from bench.benchmarks.ab_error_rates import MODEL
def load(body, extra):
    src = MODEL.format(extra=extra).replace("for _ in range(9)", f"for _ in range({body})")
    m = types.ModuleType("m"); exec(src, m.__dict__); return m.build()
def stepper(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.01); x = torch.randn(16, 3, 32, 32); y = torch.randint(0, 10, (16,))
    def step():
        opt.zero_grad(set_to_none=True); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
    for _ in range(3): step()
    return step
def window(step, sec=0.2):
    n = 0; t0 = time.perf_counter()
    while time.perf_counter() - t0 < sec: step(); n += 1
    return n / (time.perf_counter() - t0)
torch.manual_seed(0); rng = random.Random(0)
for body in [int(b) for b in sys.argv[1].split(",")]:
    a, b = stepper(load(body, 0)), stepper(load(body, 1))
    lr = []
    for _ in range(120):
        order = rng.sample([0, 1], 2); r = {}
        for o in order: r[o] = window(a if o == 0 else b)
        lr.append(math.log(r[1] / r[0]))
    print(f"body {body}: B/A - 1 = {math.expm1(statistics.fmean(lr)):+.1%} (sd of pair log ratios {statistics.stdev(lr):.3f}, n 120)", flush=True)
