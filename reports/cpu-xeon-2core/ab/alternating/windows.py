import sys, time, torch, os
sys.path.insert(0, sys.argv[1])
import abmodel
nw = int(sys.argv[2]); win = float(sys.argv[3])
torch.manual_seed(0)
m = abmodel.build(); opt = torch.optim.SGD(m.parameters(), lr=0.01)
x = torch.randn(16, 3, 32, 32); y = torch.randint(0, 10, (16,))
def step():
    opt.zero_grad(set_to_none=True); loss = torch.nn.functional.cross_entropy(m(x), y); loss.backward(); opt.step()
for _ in range(3): step()
out=[]
for w in range(nw):
    n = 0; t0 = time.perf_counter()
    while time.perf_counter() - t0 < win:
        step(); n += 1
    out.append(16 * n / (time.perf_counter() - t0))
print(" ".join(f"{v:.0f}" for v in out), flush=True)
