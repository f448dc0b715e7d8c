# Host time of a scan fwd+bwd on the device machine's CPU: cProfile (tottime) of m = 1 and m = 2, and what one
# Triton launch costs there (plain JIT, and behind heuristics + a one-config autotune), and torch.empty / zeros.
import cProfile, pstats, sys, time, torch, triton, triton.language as tl
sys.path.insert(0, ".")
from hf_lrnn import scan_triton as st

@triton.jit
def _noop(a, b, c, d, e, f, g, h, n0, n1, n2, n3, X: tl.constexpr, Y: tl.constexpr):
    pass

_wrapped = triton.autotune([triton.Config({}, num_warps=4)], key=["n0"])(
    triton.heuristics({"Y": lambda args: args["e"] is not None})(_noop))
t = torch.empty(16, device="cuda")
def plain(): _noop[(1,)](a=t, b=t, c=t, d=t, e=t, f=t, g=t, h=t, n0=1, n1=2, n2=3, n3=4, X=1, Y=True)
def wrapped(): _wrapped[(1,)](a=t, b=t, c=t, d=t, e=t, f=t, g=t, h=t, n0=1, n1=2, n2=3, n3=4, X=1)
for name, fn in (("plain jit launch", plain), ("heuristics+autotune launch", wrapped),
                 ("torch.empty", lambda: torch.empty(1000, device="cuda")), ("torch.zeros", lambda: torch.zeros(1000, device="cuda"))):
    for _ in range(10): fn()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(1000): fn()
    print(f"{name}: {(time.perf_counter() - t0) * 1e3:.1f} us", flush=True)
    torch.cuda.synchronize()
for m in (1, 2):
    B, T, N = 8, 4096, 1024 // m
    g = torch.randn(B, T, N, m + 1, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    def fb():
        o, _ = st.hlru_scan_triton(g, v, None, "softmax", False, None)
        o.backward(do)
    for _ in range(5): fb()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(30): fb()
    print(f"m={m}: host {(time.perf_counter() - t0) / 30 * 1e6:.0f} us per fwd+bwd (no profiler)", flush=True)
    torch.cuda.synchronize()
    pr = cProfile.Profile(); pr.enable()
    for _ in range(30): fb()
    pr.disable(); torch.cuda.synchronize()
    pstats.Stats(pr).sort_stats("tottime").print_stats(22)
