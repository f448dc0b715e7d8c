# Device-machine host time of a scan, split: with launches, and with every Triton launch skipped (Heuristics.run /
# JITFunction.run stubbed), for no-grad forward, grad forward, forward+backward. Host loop time, no sync inside.
import sys, time, torch
sys.path.insert(0, ".")
from hf_lrnn import scan_triton as st
from triton.runtime.autotuner import Heuristics, Autotuner
from triton.runtime.jit import JITFunction
def timeit(f, n=200):
    for _ in range(5): f()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n): f()
    t = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return t
x = torch.randn(1024, device="cuda", requires_grad=True); dx = torch.randn(1024, device="cuda")
def trivial():
    x.grad = None; (x * 2).backward(dx)
print(f"trivial autograd fwd+bwd (x * 2): {timeit(trivial):.0f} us", flush=True)
rows = {}
for stub in (False, True):
    if stub:
        Heuristics.run = lambda self, *a, **k: None; Autotuner.run = lambda self, *a, **k: None
        JITFunction.run = lambda self, *a, grid, warmup, **k: None
    for op, m in (("hlru", 1), ("hlru", 2), ("bdlru", 4)):
        B, T, D = 8, 2048, 768
        N = D // m
        shape = (B, T, N, m, m + 1) if op == "bdlru" else (B, T, N, m + 1)
        vshape = (B, T, N, m) if op == "bdlru" else (B, T, N)
        g = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(vshape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        fn = st.bdlru_scan_triton if op == "bdlru" else st.hlru_scan_triton
        def nograd():
            with torch.no_grad(): fn(g, v, None, "softmax", False, None)
        def fwd(): fn(g, v, None, "softmax", False, None)
        def fb():
            g.grad = None; v.grad = None
            o, _ = fn(g, v, None, "softmax", False, None); o.backward(do)
        r = (timeit(nograd), timeit(fwd), timeit(fb))
        print(f"{op} m={m} launches {'skipped' if stub else 'real   '}: no-grad fwd {r[0]:.0f} us, grad fwd {r[1]:.0f} us, fwd+bwd {r[2]:.0f} us", flush=True)
