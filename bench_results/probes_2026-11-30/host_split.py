# Host time split without a GPU (.venv-t36): (a) launches compiled-and-bound (fake driver, warmup), (b) launches
# skipped entirely at the heuristics wrapper, so (a) - (b) is Triton's Python launch path and (b) is ours + torch.
import sys, time, torch
sys.argv += [] 
src = open(".prof/host_probe.py").read().split("for _ in range(3): fb()")[0]
exec(src)
def fb():
    g.grad = None; v.grad = None
    o, _ = fn(g, v, None, "softmax", False, None)
    o.backward(do)
for _ in range(3): fb()
def timeit(n=300):
    t0 = time.perf_counter()
    for _ in range(n): fb()
    return (time.perf_counter() - t0) / n * 1e6
a = min(timeit() for _ in range(3))
from triton.runtime.autotuner import Heuristics, Autotuner
Heuristics.run = lambda self, *args, **kwargs: None
Autotuner.run = lambda self, *args, **kwargs: None
JITFunction.run = lambda self, *args, grid, warmup, **kwargs: None
b = min(timeit() for _ in range(3))
with torch.no_grad():
    t0 = time.perf_counter()
    for _ in range(300): fn(g, v, None, "softmax", False, None)
    c = (time.perf_counter() - t0) / 300 * 1e6
def fwd_only():
    t0 = time.perf_counter()
    for _ in range(300): o, _ = fn(g, v, None, "softmax", False, None)
    return (time.perf_counter() - t0) / 300 * 1e6
d = fwd_only()
def plain_ag():
    x = v.detach().requires_grad_()
    t0 = time.perf_counter()
    for _ in range(300):
        x.grad = None
        (x * 2).backward(do)
    return (time.perf_counter() - t0) / 300 * 1e6
e = plain_ag()
print(f"grad-mode fwd without launches {d:.0f} us; a trivial autograd fwd+bwd (x*2) {e:.0f} us")
print(f"{sys.argv[1]} m={m}: fwd+bwd {a:.0f} us with Triton's launch path, {b:.0f} us without; no-grad fwd without launches {c:.0f} us")
