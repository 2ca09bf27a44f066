import subprocess, sys, math, statistics, random, time, os
py = sys.executable
a, b, rounds, pairs, win = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
env = dict(os.environ, OMP_NUM_THREADS="1")
lr = []
rng = random.Random(1)
t0=time.time()
for r in range(rounds):
    ps = {s: subprocess.Popen([py, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lockchild.py"), d], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for s, d in (("A", a), ("B", b))}
    for p in ps.values(): assert p.stdout.readline().strip() == "ready"
    vals = {"A": [], "B": []}
    for k in range(pairs):
        order = rng.sample(["A", "B"], 2)
        for s in order:
            ps[s].stdin.write(f"{win}\n"); ps[s].stdin.flush()
            vals[s].append(float(ps[s].stdout.readline()))
    for p in ps.values(): p.stdin.close(); p.wait()
    ratio = statistics.median([math.log(bb / aa) for aa, bb in zip(vals["A"], vals["B"])])
    lr.append(ratio)
    print(f"round {r+1}: A {min(vals['A']):.0f}-{max(vals['A']):.0f} B {min(vals['B']):.0f}-{max(vals['B']):.0f} log ratio {ratio:+.3f}", flush=True)
print(f"mean {statistics.mean(lr):+.3f} sd {statistics.stdev(lr):.3f}  {time.time()-t0:.0f}s")
