# Same-run A/B of the single-pass forward (branch single-pass) against the 3-phase forward it replaces
# (SINGLE_PASS = False), fwd and fwd+bwd, auto chunk; per-kernel CUDA time at the model shape.
# Float64 exactness first. Usage: python3 .prof/single_pass_probe.py [rounds]
import json, os, sys, torch
sys.path.insert(0, ".")
from triton.testing import do_bench
from torch.profiler import profile, ProfilerActivity
from hf_lrnn import scan_triton as st
from hf_lrnn.scan_torch import bdlru_scan_torch, hlru_scan_torch
OUT = os.environ.get("OUT", "/tmp")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.manual_seed(0)
print("exactness (max rel err vs float64, fwd; chunk 16 / 64):", flush=True)
for blocked, ms in ((False, (2, 3, 4, 8)), (True, (2, 3, 4))):
    for m in ms:
        B, T, N = 2, 700, 40
        g = torch.randn((B, T, N, m, m + 1) if blocked else (B, T, N, m + 1), device="cuda", dtype=torch.float64)
        v = torch.randn((B, T, N, m) if blocked else (B, T, N), device="cuda", dtype=torch.float64)
        h0 = torch.randn(B, N, m, device="cuda", dtype=torch.float64)
        ref = (bdlru_scan_torch if blocked else hlru_scan_torch)(g, v, h0, "softmax")
        fn = st.bdlru_scan_triton if blocked else st.hlru_scan_triton
        errs = []
        for chunk in (16, 64):
            out = fn(g.float(), v.float(), h0.float(), "softmax", True, None, chunk)
            errs.append(max(((a.double() - r).abs().max() / r.abs().max()).item() for a, r in zip(out, ref)))
        print(f"  {'bdlru' if blocked else 'hlru'} m={m}: " + " ".join(f"{e:.1e}" for e in errs), flush=True)
x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
copy = 2 * x.numel() / (do_bench(lambda: y.copy_(x)) * 1e-3) / 1e12
del x, y
print(f"copy {copy:.2f} TB/s; fwd / fwd+bwd us, best of {rounds} alternating rounds", flush=True)
rows = []
cases = [("hlru", 8, 4096, 1024, 2), ("hlru", 8, 4096, 1024, 4), ("hlru", 8, 4096, 1024, 8), ("hlru", 8, 2048, 768, 2),
         ("hlru", 32, 2048, 2048, 2), ("hlru", 1, 16384, 1024, 2), ("bdlru", 8, 4096, 1024, 2),
         ("bdlru", 8, 4096, 1024, 4), ("bdlru", 8, 2048, 768, 4), ("bdlru", 32, 2048, 2048, 4), ("bdlru", 1, 16384, 1024, 4)]
for op, B, T, D, m in cases:
    N = D // m
    g = torch.randn((B, T, N, m, m + 1) if op == "bdlru" else (B, T, N, m + 1), device="cuda", dtype=torch.bfloat16,
                    requires_grad=True)
    v = torch.randn((B, T, N, m) if op == "bdlru" else (B, T, N), device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    fn = st.bdlru_scan_triton if op == "bdlru" else st.hlru_scan_triton
    tok = B * T * (D if op == "bdlru" else N)
    res = {}
    for rnd in range(rounds):
        for name, single in (("3-phase", False), ("single", True)):
            st.SINGLE_PASS = single
            with torch.no_grad():
                f = do_bench(lambda: fn(g, v, None, "softmax", False, None), warmup=5, rep=25)
            def fb():
                o, _ = fn(g, v, None, "softmax", False, None)
                o.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v], warmup=5, rep=25)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                with torch.no_grad():
                    for _ in range(5):
                        fn(g, v, None, "softmax", False, None)
                torch.cuda.synchronize()
            kern = sum(e.device_time_total for e in prof.key_averages() if e.device_time_total > 0 and "kernel" in e.key) / 5
            res.setdefault(name, []).append((f, fbt, kern))
    line = f"{op:5s} B{B:<2} T{T:<5} D{D:<4} m{m}:"
    for name in ("3-phase", "single"):
        f = min(r[0] for r in res[name]); fbt = min(r[1] for r in res[name]); kern = min(r[2] for r in res[name])
        rows.append(dict(op=op, B=B, T=T, D=D, m=m, forward=name, fwd_ms=f, fwdbwd_ms=fbt, fwd_kernels_us=kern,
                         fwd_pct_copy=100 * tok * (m + 3) * 2 / (f * 1e-3) / 1e12 / copy))
        line += f"  {name} {f*1e3:7.1f} (kernels {kern:6.1f}) / {fbt*1e3:7.1f} ({rows[-1]['fwd_pct_copy']:4.1f}%)"
    print(line, flush=True)
    del g, v, do
    torch.cuda.empty_cache()
st.SINGLE_PASS = True
json.dump(dict(copy=copy, rows=rows), open(os.path.join(OUT, "single_pass_probe.json"), "w"), indent=1)
