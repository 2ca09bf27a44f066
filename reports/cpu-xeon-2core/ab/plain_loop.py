# A hand-written training loop of the ab_error_rates model, 2 s timed after 3 warm-up steps; prints samples/s.
# python reports/cpu-xeon-2core/ab/plain_loop.py DIR_WITH_abmodel.py   (one fresh process per run)
import sys, time, torch
sys.path.insert(0, sys.argv[1])
import abmodel
torch.manual_seed(0)
m = abmodel.build(); opt = torch.optim.SGD(m.parameters(), lr=0.01)
x = torch.randn(16, 3, 32, 32); y = torch.randint(0, 10, (16,))
def step():
    opt.zero_grad(set_to_none=True); loss = torch.nn.functional.cross_entropy(m(x), y); loss.backward(); opt.step()
for _ in range(3): step()
n = 0; t0 = time.perf_counter()
while time.perf_counter() - t0 < 2.0:
    step(); n += 1
print(f"{16 * n / (time.perf_counter() - t0):.1f}")
