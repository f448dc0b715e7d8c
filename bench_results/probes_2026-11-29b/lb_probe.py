# Same-run A/B, m = 1: the look-back with flag-free 64-bit words (working tree) against the landed one (flags + fences).
import os, sys, json, importlib.util, torch
sys.path.insert(0, ".")
from triton.testing import do_bench
import hf_lrnn
from hf_lrnn import scan_triton as new
spec = importlib.util.spec_from_file_location("hf_lrnn.scan_triton_old", ".prof/scan_triton_old.py")
old = importlib.util.module_from_spec(spec); sys.modules["hf_lrnn.scan_triton_old"] = old; spec.loader.exec_module(old)
OUT = os.environ.get("OUT", "/tmp")
x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
copy = 2 * x.numel() / (do_bench(lambda: y.copy_(x)) * 1e-3) / 1e12
del x, y
print(f"copy {copy:.2f} TB/s", flush=True)
rows = []
for B, T, D in [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048), (1, 65536, 1024), (64, 2048, 1024), (4, 2048, 768)]:
    g = torch.randn(B, T, D, 2, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    tok = B * T * D
    res = {}
    outs = {}
    for rnd in range(3):
        for name, mod in (("old", old), ("new", new)):
            fn = mod.hlru_scan_triton
            out = fn(g, v, None, "softmax", False, None)[0]
            gg, gv = torch.autograd.grad(out, [g, v], do)
            outs[name] = (out.float(), gg.float(), gv.float())
            with torch.no_grad():
                f = do_bench(lambda: fn(g, v, None, "softmax", False, None))
            def fb():
                o, _ = fn(g, v, None, "softmax", False, None)
                o.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v])
            res.setdefault(name, []).append((f, fbt))
    err = max((a - b).abs().max().item() / max(b.abs().max().item(), 1e-30) for a, b in zip(outs["new"], outs["old"]))
    line = f"B{B:<2} T{T:<5} D{D}:"
    for name in ("old", "new"):
        fs = [r[0] for r in res[name]]; fbs = [r[1] for r in res[name]]
        row = dict(B=B, T=T, D=D, kernel=name, fwd_ms=min(fs), fwd_ms_max=max(fs), fwdbwd_ms=min(fbs), fwdbwd_ms_max=max(fbs),
                   fwd_pct=100 * tok * 8 / (min(fs) * 1e-3) / 1e12 / copy, fb_pct=100 * tok * 22 / (min(fbs) * 1e-3) / 1e12 / copy,
                   max_rel_diff_new_vs_old=err)
        rows.append(row)
        line += f"  {name} fwd {min(fs)*1e3:6.1f}-{max(fs)*1e3:6.1f}us ({row['fwd_pct']:4.1f}%) f+b {min(fbs)*1e3:7.1f}-{max(fbs)*1e3:7.1f}us ({row['fb_pct']:4.1f}%)"
    print(line + f"  maxreldiff {err:.1e}", flush=True)
    del g, v, do
    torch.cuda.empty_cache()
json.dump(dict(copy=copy, rows=rows), open(os.path.join(OUT, "lb_probe.json"), "w"), indent=1)
