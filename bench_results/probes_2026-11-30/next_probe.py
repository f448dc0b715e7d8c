# Same-run A/B of the next-kernels branch (working tree: H-LRU one channel per thread, contiguous stores in the
# per-thread kernels) against main (.prof/scan_triton_main.py = `git show main:hf_lrnn/scan_triton.py`).
# Exactness of the branch against the float64 reference first. Usage: python3 .prof/next_probe.py [rounds]
import importlib.util, json, os, sys, torch
sys.path.insert(0, ".")
from triton.testing import do_bench
import hf_lrnn
from hf_lrnn import scan_triton as new
from hf_lrnn.scan_torch import bdlru_scan_torch, hlru_scan_torch
spec = importlib.util.spec_from_file_location("hf_lrnn.scan_triton_main", ".prof/scan_triton_main.py")
old = importlib.util.module_from_spec(spec); sys.modules["hf_lrnn.scan_triton_main"] = old; spec.loader.exec_module(old)
OUT = os.environ.get("OUT", "/tmp")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.manual_seed(0)
print("exactness of the branch (max rel err vs float64; chunk 0 / 64):", flush=True)
for op, ms in (("hlru", (2, 3, 4, 8)), ("bdlru", (2, 4))):
    for m in ms:
        for act in (("softmax", "relu") if m == 2 else ("softmax",)):  # every activation: the GPU tests
            B, T, N = 2, 300, 40
            shape = (B, T, N, m, m + 1) if op == "bdlru" else (B, T, N, m + 1)
            vshape = (B, T, N, m) if op == "bdlru" else (B, T, N)
            g = torch.randn(shape, device="cuda", dtype=torch.float64, requires_grad=True)
            v = torch.randn(vshape, device="cuda", dtype=torch.float64, requires_grad=True)
            h0 = torch.randn(B, N, m, device="cuda", dtype=torch.float64, requires_grad=True)
            do = torch.randn_like(v); df = torch.randn_like(h0)
            ref_fn = bdlru_scan_torch if op == "bdlru" else hlru_scan_torch
            fn = new.bdlru_scan_triton if op == "bdlru" else new.hlru_scan_triton
            ref = ref_fn(g, v, h0, act)
            rg = torch.autograd.grad((ref[0] * do).sum() + (ref[1] * df).sum(), [g, v, h0])
            errs = []
            for chunk in (0, 64):
                out = fn(g.float(), v.float(), h0.float(), act, True, None, chunk)
                og = torch.autograd.grad((out[0] * do.float()).sum() + (out[1] * df.float()).sum(), [g, v, h0])
                errs.append(max(((a.double() - b).abs().max() / b.abs().max()).item()
                                for a, b in zip(list(out) + list(og), list(ref) + list(rg))))
            print(f"  {op} m={m} {act:8s} " + " ".join(f"{e:.1e}" for e in errs), flush=True)
x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
copy = 2 * x.numel() / (do_bench(lambda: y.copy_(x)) * 1e-3) / 1e12
del x, y
print(f"copy {copy:.2f} TB/s; times: fwd / fwd+bwd us, best of {rounds} alternating rounds", flush=True)
rows = []
cases = [("hlru", 8, 4096, 1024, 2), ("hlru", 8, 4096, 1024, 4), ("hlru", 8, 4096, 1024, 8), ("hlru", 8, 2048, 768, 2),
         ("hlru", 32, 2048, 2048, 2), ("hlru", 1, 16384, 1024, 2), ("bdlru", 8, 4096, 1024, 2), ("bdlru", 8, 4096, 1024, 4),
         ("bdlru", 8, 2048, 768, 4), ("bdlru", 8, 2048, 768, 2), ("bdlru", 32, 2048, 2048, 4), ("bdlru", 1, 16384, 1024, 4)]
for op, B, T, D, m in cases:
    N = D // m
    shape = (B, T, N, m, m + 1) if op == "bdlru" else (B, T, N, m + 1)
    vshape = (B, T, N, m) if op == "bdlru" else (B, T, N)
    g = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(vshape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    tok = B * T * (D if op == "bdlru" else N)
    res = {}
    for rnd in range(rounds):
        for name, mod in (("main", old), ("branch", new)):
            fn = mod.bdlru_scan_triton if op == "bdlru" else mod.hlru_scan_triton
            with torch.no_grad():
                f = do_bench(lambda: fn(g, v, None, "softmax", False, None), warmup=5, rep=25)
            def fb():
                o, _ = fn(g, v, None, "softmax", False, None)
                o.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v], warmup=5, rep=25)
            res.setdefault(name, []).append((f, fbt))
    line = f"{op:5s} B{B:<2} T{T:<5} D{D:<4} m{m}:"
    for name in ("main", "branch"):
        f = min(r[0] for r in res[name]); fbt = min(r[1] for r in res[name])
        row = dict(op=op, B=B, T=T, D=D, m=m, kernels=name, fwd_ms=f, fwdbwd_ms=fbt,
                   fwd_pct_copy=100 * tok * (m + 3) * 2 / (f * 1e-3) / 1e12 / copy,
                   fwdbwd_pct_copy=100 * tok * (3 * m + 8) * 2 / (fbt * 1e-3) / 1e12 / copy)
        rows.append(row)
        line += f"  {name} {f*1e3:7.1f} / {fbt*1e3:7.1f} ({row['fwd_pct_copy']:4.1f}% / {row['fwdbwd_pct_copy']:4.1f}%)"
    print(line, flush=True)
    del g, v, do
    torch.cuda.empty_cache()
json.dump(dict(copy=copy, rows=rows), open(os.path.join(OUT, "next_probe.json"), "w"), indent=1)
