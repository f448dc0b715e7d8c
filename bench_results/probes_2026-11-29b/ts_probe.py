# A/B: sub-tiled (TS) sequential/chunked kernels vs the landed ones, m >= 2.
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
only = os.environ.get("ONLY", "")
for B, T, D in [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)]:
    for op, m in [("hlru", 2), ("hlru", 4), ("hlru", 8), ("bdlru", 2), ("bdlru", 4), ("bdlru", 8), ("bdlru", 16)]:
        blocked = op == "bdlru"
        N = D // m
        gs = (B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)
        vs = (B, T, N, m) if blocked else (B, T, N)
        g = torch.randn(gs, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(vs, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        units = B * T * D if blocked else B * T * N
        fbytes, fbbytes = units * (m + 3) * 2, units * (3 * m + 8) * 2
        line = f"{op:5} m{m:<2} B{B:<2} T{T:<5} D{D}:"
        ref = None
        for name, mod, chunk in [("old", old, None), ("seq", new, 0), ("auto", new, None), ("c32", new, 32),
                                 ("c64", new, 64), ("c128", new, 128), ("c256", new, 256)]:
            fn = mod.bdlru_scan_triton if blocked else mod.hlru_scan_triton
            try:
                with torch.no_grad():
                    out = fn(g, v, None, "softmax", False, None, chunk)[0].float()
                    if ref is None:
                        ref = out
                    err = (out - ref).abs().max().item()
                    f = do_bench(lambda: fn(g, v, None, "softmax", False, None, chunk))
                def fb():
                    o, _ = fn(g, v, None, "softmax", False, None, chunk)
                    o.backward(do)
                fbt = do_bench(fb, grad_to_none=[g, v])
            except Exception as e:
                print(name, "FAILED", type(e).__name__, str(e)[:300], flush=True)
                continue
            r = dict(op=op, m=m, B=B, T=T, D=D, variant=name, fwd_ms=f, fwdbwd_ms=fbt, err=err,
                     fwd_pct=100 * fbytes / (f * 1e-3) / 1e12 / copy, fb_pct=100 * fbbytes / (fbt * 1e-3) / 1e12 / copy)
            rows.append(r)
            line += f" {name} {f:.3f}/{fbt:.3f} ({r['fwd_pct']:.0f}/{r['fb_pct']:.0f}%)"
            if err > 0.1:
                line += f" ERR{err:.2g}"
        print(line, flush=True)
        del g, v, do
        torch.cuda.empty_cache()
json.dump(dict(copy=copy, rows=rows), open(os.path.join(OUT, "ts_probe.json"), "w"), indent=1)
with open(os.path.join(OUT, "ts_kernels.txt"), "w") as fh:
    for kn in ("_hlru_fwd_kernel", "_bdlru_fwd_kernel", "_hlru_bwd_kernel", "_bdlru_bwd_kernel"):
        kern = getattr(new, kn)
        for dev_cache in kern.device_caches.values():
            for key, k in dev_cache[0].items():
                fh.write(f"{kn} warps {k.metadata.num_warps} regs {k.n_regs} spills {k.n_spills} key {str(key)[:300]}\n")
    kern = new._hlru_fwd_kernel
    for dev_cache in kern.device_caches.values():
        for key, k in list(dev_cache[0].items())[:1]:
            fh.write(k.asm["ttgir"])
