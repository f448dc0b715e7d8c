# Per-kernel CUDA time of forward and backward separately, single-pass vs 3-phase (same run), to choose the mode per
# op and direction. Usage: python3 .prof/single_pass_probe2.py [rounds]
import json, os, sys, torch
sys.path.insert(0, ".")
from torch.profiler import profile, ProfilerActivity
from hf_lrnn import scan_triton as st
OUT = os.environ.get("OUT", "/tmp")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.manual_seed(0)


def kernel_us(fn, reps=5):
    fn(); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return sum(e.device_time_total for e in prof.key_averages() if e.device_time_total > 0) / reps


rows = []
cases = [("hlru", 8, 4096, 1024, 2), ("hlru", 8, 4096, 1024, 4), ("hlru", 8, 4096, 1024, 8), ("hlru", 8, 2048, 768, 2),
         ("hlru", 32, 2048, 2048, 2), ("hlru", 1, 16384, 1024, 2), ("hlru", 64, 2048, 1024, 4),
         ("bdlru", 8, 4096, 1024, 2), ("bdlru", 8, 4096, 1024, 4), ("bdlru", 8, 2048, 768, 4),
         ("bdlru", 32, 2048, 2048, 4), ("bdlru", 1, 16384, 1024, 4), ("bdlru", 64, 2048, 1024, 2)]
print("kernel us (sum of CUDA kernels incl. memsets/copies), best of rounds: fwd | bwd (= fwd+bwd - fwd)", flush=True)
for op, B, T, D, m in cases:
    N = D // m
    g = torch.randn((B, T, N, m, m + 1) if op == "bdlru" else (B, T, N, m + 1), device="cuda", dtype=torch.bfloat16,
                    requires_grad=True)
    v = torch.randn((B, T, N, m) if op == "bdlru" else (B, T, N), device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    fn = st.bdlru_scan_triton if op == "bdlru" else st.hlru_scan_triton
    res = {}
    for rnd in range(rounds):
        for name, single in (("3-phase", False), ("single", True)):
            st.SINGLE_PASS = single
            def f():
                with torch.no_grad():
                    fn(g, v, None, "softmax", False, None)
            def fb():
                g.grad = v.grad = None
                o, _ = fn(g, v, None, "softmax", False, None)
                o.backward(do)
            kf = kernel_us(f)
            kfb = kernel_us(fb)
            res.setdefault(name, []).append((kf, kfb - kf))
    line = f"{op:5s} B{B:<2} T{T:<5} D{D:<4} m{m}:"
    for name in ("3-phase", "single"):
        kf = min(r[0] for r in res[name]); kb = min(r[1] for r in res[name])
        rows.append(dict(op=op, B=B, T=T, D=D, m=m, mode=name, fwd_kernels_us=kf, bwd_kernels_us=kb))
        line += f"  {name} {kf:7.1f} | {kb:7.1f}"
    print(line, flush=True)
    del g, v, do
    torch.cuda.empty_cache()
json.dump(rows, open(os.path.join(OUT, "single_pass_probe2.json"), "w"), indent=1)
