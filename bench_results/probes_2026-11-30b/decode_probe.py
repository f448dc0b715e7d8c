# Where a batch-1 decode step's 0.9 ms goes: the captured graph's replay alone (GPU time per token, CUDA events),
# our wrapper per step, generate() per token; kernels in the graph (profiler). Usage: python3 .prof/decode_probe.py
import importlib.util, sys, time, torch
sys.path.insert(0, ".")
from torch.profiler import profile, ProfilerActivity
spec = importlib.util.spec_from_file_location("bench_generate", "scripts/bench_generate.py")
bg = importlib.util.module_from_spec(spec); spec.loader.exec_module(bg)
dev = torch.device("cuda")
for name in ("hlru-m2", "bdlru-m4"):
    for batch in (1, 64):
        torch.manual_seed(0)
        model = bg.build(name, False, 50304).to(dev, torch.bfloat16).eval()
        ids = torch.randint(3, 50304, (batch, 128), device=dev)
        gen = bg.decode_seconds(model, batch, 128, 32, dev, {}) / 32
        step = next(iter(model._decode_graphs.values()))
        g = step.graph.graph
        for _ in range(10):
            g.replay()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(200):
            g.replay()
        e1.record(); torch.cuda.synchronize()
        replay = e0.elapsed_time(e1) / 200
        cache = step.cache
        tok = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(200):
            step(cache, tok)
        torch.cuda.synchronize(); wrapped = (time.perf_counter() - t0) / 200 * 1e3
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                g.replay()
            torch.cuda.synchronize()
        ev = [e for e in prof.key_averages() if e.device_time_total > 0]
        kernels = sum(e.count for e in ev) / 5
        ktime = sum(e.device_time_total for e in ev) / 5 / 1e3
        print(f"{name} batch {batch}: generate {gen*1e3:.3f} ms/token | step() {wrapped:.3f} ms | graph replay "
              f"{replay:.3f} ms | {kernels:.0f} kernels, {ktime:.3f} ms kernel time", flush=True)
        top = sorted(ev, key=lambda e: -e.device_time_total)[:12]
        for e in top:
            print(f"    {e.count/5:5.0f} x {e.device_time_total/e.count:7.1f} us  {e.key[:90]}", flush=True)
        del model, step, g, cache
        torch.cuda.empty_cache()
