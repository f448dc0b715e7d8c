# Where does the ~1 ms floor of a small fwd+bwd come from? Current scan_triton vs f23d132's, same run:
# do_bench, a plain synchronised loop, host enqueue time of the loop, and the syncs / copies the profiler sees.
import importlib.util, sys, time, torch
sys.path.insert(0, ".")
from triton.testing import do_bench
from torch.profiler import profile, ProfilerActivity
from hf_lrnn import scan_triton as new
spec = importlib.util.spec_from_file_location("hf_lrnn.scan_triton_old", ".prof/scan_triton_f23d132.py")
old = importlib.util.module_from_spec(spec); sys.modules["hf_lrnn.scan_triton_old"] = old; spec.loader.exec_module(old)
cases = [("hlru", 8, 4096, 1024, 1), ("hlru", 8, 4096, 1024, 2), ("bdlru", 8, 2048, 768, 4), ("hlru", 1, 2048, 64, 2)]
for op, B, T, D, m in cases:
    N = D // m
    shape = (B, T, N, m, m + 1) if op == "bdlru" else (B, T, N, m + 1)
    vshape = (B, T, N, m) if op == "bdlru" else (B, T, N)
    g = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(vshape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    for name, mod in (("f23d132", old), ("now", new)):
        fn = mod.bdlru_scan_triton if op == "bdlru" else mod.hlru_scan_triton
        def fb():
            o, _ = fn(g, v, None, "softmax", False, None)
            o.backward(do)
        for _ in range(3): fb()
        torch.cuda.synchronize()
        bench = do_bench(fb, grad_to_none=[g, v], warmup=5, rep=25)
        t0 = time.perf_counter()
        for _ in range(20): fb()
        host = (time.perf_counter() - t0) / 20
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / 20
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5): fb()
            torch.cuda.synchronize()
        ev = prof.key_averages()
        syncs = {e.key: e.count // 5 for e in ev if any(s in e.key for s in ("ynchronize", "Memcpy", "local_scalar", "item", "tolist", "EventQuery"))}
        gpu = sum(e.device_time_total for e in ev if e.device_time_total > 0 and not e.key.startswith("aten::") and "cuda" not in e.key.lower()[:4]) / 5
        top = sorted(((e.cpu_time_total / 5, e.key) for e in ev if e.cpu_time_total > 0), reverse=True)[:6]
        print(f"{op} B{B} T{T} D{D} m{m} {name:8s}: do_bench {bench*1e3:.0f} us, loop wall {wall*1e6:.0f} us, host enqueue {host*1e6:.0f} us,"
              f" kernels {gpu:.0f} us; syncs/copies per iter {syncs}", flush=True)
        print("    cpu top: " + "; ".join(f"{k[:45]} {t:.0f}" for t, k in top), flush=True)
