# Same-run A/B for BD-LRU m <= 4 one block per thread: landed kernels (strided stores) against
# .prof/scan_triton_stores_v2.py (contiguous [BLOCK, width] stores). Exactness against float64 first.
import importlib.util, os, sys, torch
sys.path.insert(0, ".")
from triton.testing import do_bench
import hf_lrnn
from hf_lrnn import scan_triton as landed
from hf_lrnn.scan_torch import bdlru_scan_torch
spec = importlib.util.spec_from_file_location("hf_lrnn.scan_triton_stores", ".prof/scan_triton_stores_v2.py")
stores = importlib.util.module_from_spec(spec); sys.modules["hf_lrnn.scan_triton_stores"] = stores
spec.loader.exec_module(stores)
for m in (1, 2, 3, 4):
    B, T, N = 2, 300, 40
    g = torch.randn(B, T, N, m, m + 1, device="cuda", dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, T, N, m, device="cuda", dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, N, m, device="cuda", dtype=torch.float64, requires_grad=True)
    do = torch.randn_like(v); df = torch.randn_like(h0)
    ref = bdlru_scan_torch(g, v, h0, "softmax")
    rg = torch.autograd.grad((ref[0] * do).sum() + (ref[1] * df).sum(), [g, v, h0])
    for chunk in (0, 64):
        out = stores.bdlru_scan_triton(g.float(), v.float(), h0.float(), "softmax", True, None, chunk)
        og = torch.autograd.grad((out[0] * do.float()).sum() + (out[1] * df.float()).sum(), [g, v, h0])
        e = max(((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(list(out) + list(og), list(ref) + list(rg)))
        print(f"stores m={m} chunk={chunk} max rel err {e:.1e}", flush=True)
for B, T, D, m in [(32, 2048, 2048, 4), (8, 2048, 768, 4), (8, 2048, 768, 2), (8, 4096, 1024, 4), (8, 4096, 1024, 2),
                   (1, 16384, 1024, 4), (32, 2048, 2048, 2)]:
    N = D // m
    g = torch.randn(B, T, N, m, m + 1, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, N, m, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    line = f"B{B:<2} T{T:<5} D{D:<4} m{m}:"
    for rnd in range(2):
        for name, mod in (("landed", landed), ("stores", stores)):
            with torch.no_grad():
                f = do_bench(lambda: mod.bdlru_scan_triton(g, v, None, "softmax", False, None), warmup=5, rep=25)
            def fb():
                o, _ = mod.bdlru_scan_triton(g, v, None, "softmax", False, None)
                o.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v], warmup=5, rep=25)
            line += f"  {name} {f*1e3:6.1f}/{fbt*1e3:7.1f}us"
    print(line, flush=True)
    del g, v, do
