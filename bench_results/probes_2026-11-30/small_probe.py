# Why is the branch slower at B8 T2048 D768? Per-kernel CUDA time (torch.profiler) of main vs branch, fwd+bwd,
# and the branch's fwd / fwd+bwd at several forced chunk sizes. Usage: python3 .prof/small_probe.py
import importlib.util, sys, torch
sys.path.insert(0, ".")
from triton.testing import do_bench
from torch.profiler import profile, ProfilerActivity
from hf_lrnn import scan_triton as new
spec = importlib.util.spec_from_file_location("hf_lrnn.scan_triton_main", ".prof/scan_triton_main.py")
old = importlib.util.module_from_spec(spec); sys.modules["hf_lrnn.scan_triton_main"] = old; spec.loader.exec_module(old)
cases = [("hlru", 8, 2048, 768, 2), ("bdlru", 8, 2048, 768, 4), ("bdlru", 8, 2048, 768, 2), ("bdlru", 8, 4096, 1024, 4)]
for op, B, T, D, m in cases:
    N = D // m
    shape = (B, T, N, m, m + 1) if op == "bdlru" else (B, T, N, m + 1)
    vshape = (B, T, N, m) if op == "bdlru" else (B, T, N)
    g = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(vshape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    print(f"== {op} B{B} T{T} D{D} m{m}; auto chunk main {old._auto_chunk(B, N, m, op == 'bdlru', T, 132)}"
          f" branch {new._auto_chunk(B, N, m, op == 'bdlru', T, 132)}", flush=True)
    for name, mod, chunk in (("main", old, None), ("branch", new, None)):
        fn = mod.bdlru_scan_triton if op == "bdlru" else mod.hlru_scan_triton
        def fb():
            o, _ = fn(g, v, None, "softmax", False, None, chunk)
            o.backward(do)
        for _ in range(3):
            fb()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                fb()
            torch.cuda.synchronize()
        rows = [(e.key, e.device_time_total / 10, e.count // 10) for e in prof.key_averages() if e.device_time_total > 0]
        rows.sort(key=lambda r: -r[1])
        print(f"  {name}: " + "; ".join(f"{k[:40]} {t:.1f}us x{c}" for k, t, c in rows[:7]), flush=True)
    fn = new.bdlru_scan_triton if op == "bdlru" else new.hlru_scan_triton
    line = "  branch chunk:"
    for chunk in (0, 16, 32, 64, 128, 256):
        with torch.no_grad():
            f = do_bench(lambda: fn(g, v, None, "softmax", False, None, chunk), warmup=5, rep=20)
        def fb():
            o, _ = fn(g, v, None, "softmax", False, None, chunk)
            o.backward(do)
        fbt = do_bench(fb, grad_to_none=[g, v], warmup=5, rep=20)
        line += f"  {chunk}: {f*1e3:.0f}/{fbt*1e3:.0f}"
    print(line, flush=True)
