# Same-run A/B, BD-LRU m >= 2: block-per-thread kernels (MAX_M=4/8) against the [m, m] tile kernels (MAX_M=0).
import os, sys, json, torch
sys.path.insert(0, ".")
from triton.testing import do_bench
import hf_lrnn
from hf_lrnn import scan_triton as st
from hf_lrnn.scan_torch import bdlru_scan_torch
OUT = os.environ.get("OUT", "/tmp")
torch.manual_seed(0)
# 1. exactness against the float64 reference (fwd, grads), forced chunks and auto
print("exactness (max rel err vs float64 reference):", flush=True)
for maxm in ():
    st._BLOCK_PER_THREAD_MAX_M = maxm
    for m in (2, 3, 4, 8):
        for act in (("softmax", "sigmoid", "relu", "tanh") if m == 4 else ("softmax",)):
            B, T, N = 2, 700, 48
            g = torch.randn(B, T, N, m, m + 1, device="cuda", dtype=torch.float64, requires_grad=True)
            v = torch.randn(B, T, N, m, device="cuda", dtype=torch.float64, requires_grad=True)
            h0 = torch.randn(B, N, m, device="cuda", dtype=torch.float64, requires_grad=True)
            do = torch.randn_like(v); dfin = torch.randn_like(h0)
            ref = bdlru_scan_torch(g, v, h0, act)
            rg = torch.autograd.grad((ref[0] * do).sum() + (ref[1] * dfin).sum(), [g, v, h0])
            errs = []
            for chunk in (None, 0, 64):
                out = st.bdlru_scan_triton(g.float(), v.float(), h0.float(), act, True, None, chunk)
                og = torch.autograd.grad((out[0] * do.float()).sum() + (out[1] * dfin.float()).sum(), [g, v, h0])
                e = max(((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(list(out) + list(og), list(ref) + list(rg)))
                errs.append(e)
            print(f"  MAX_M={maxm} m={m} {act:8s} " + " ".join(f"{e:.1e}" for e in errs), flush=True)
st._BLOCK_PER_THREAD_MAX_M = 4
x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
copy = 2 * x.numel() / (do_bench(lambda: y.copy_(x)) * 1e-3) / 1e12
del x, y
print(f"copy {copy:.2f} TB/s", flush=True)
rows = []
variants = {"tiles": dict(MAX_M=0), "thread": dict(MAX_M=4)}
cases = [(8, 2048, 768, 4), (8, 2048, 768, 2), (32, 2048, 2048, 4), (1, 16384, 1024, 4), (32, 2048, 2048, 2)]
for B, T, D, m in cases:
    N = D // m
    g = torch.randn(B, T, N, m, m + 1, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, N, m, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    tok = B * T * D
    res = {}
    for rnd in range(1):
        for name, var in variants.items():
            st._BLOCK_PER_THREAD_MAX_M = var["MAX_M"]
            fn = st.bdlru_scan_triton
            with torch.no_grad():
                f = do_bench(lambda: fn(g, v, None, "softmax", False, None))
            def fb():
                o, _ = fn(g, v, None, "softmax", False, None)
                o.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v])
            res.setdefault(name, []).append((f, fbt))
    line = f"B{B:<2} T{T:<5} D{D} m{m}:"
    for name in variants:
        fs = [r[0] for r in res[name]]; fbs = [r[1] for r in res[name]]
        row = dict(B=B, T=T, D=D, m=m, kernel=name, fwd_ms=min(fs), fwdbwd_ms=min(fbs),
                   fwd_pct=100 * tok * (m + 3) * 2 / (min(fs) * 1e-3) / 1e12 / copy,
                   fb_pct=100 * tok * (3 * m + 8) * 2 / (min(fbs) * 1e-3) / 1e12 / copy)
        rows.append(row)
        line += f"  {name} fwd {min(fs)*1e3:7.1f}us ({row['fwd_pct']:4.1f}%) f+b {min(fbs)*1e3:7.1f}us ({row['fb_pct']:4.1f}%)"
    print(line, flush=True)
    del g, v, do
    torch.cuda.empty_cache()
# 3. knobs of the block-per-thread kernels at two shapes
st._BLOCK_PER_THREAD_MAX_M = 8
for B, T, D, m in []:
    N = D // m
    g = torch.randn(B, T, N, m, m + 1, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, N, m, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    for blocks in (32, 64, 128):
        for tps in (512, 1024, 2048):
            st.BLOCK_PER_THREAD_BLOCKS, st.THREADS_PER_SM = blocks, tps
            cs = st._auto_chunk(B, N, m, True, T, 132)
            with torch.no_grad():
                f = do_bench(lambda: st.bdlru_scan_triton(g, v, None, "softmax", False, None))
            def fb():
                o, _ = st.bdlru_scan_triton(g, v, None, "softmax", False, None)
                o.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v])
            print(f"  B{B} T{T} D{D} m{m} blocks {blocks:3d} threads/SM {tps:4d} chunk {cs:4d}: fwd {f*1e3:7.1f}us f+b {fbt*1e3:7.1f}us", flush=True)
            rows.append(dict(B=B, T=T, D=D, m=m, blocks=blocks, threads_per_sm=tps, chunk=cs, fwd_ms=f, fwdbwd_ms=fbt))
    del g, v, do
json.dump(dict(copy=copy, rows=rows), open(os.path.join(OUT, "bd_probe.json"), "w"), indent=1)
