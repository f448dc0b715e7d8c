"""Where a batch-1 decode token's time goes on the GPU machine: the captured step's replays back to back (GPU time per
token without generate()'s host loop), its kernels (one replay under the profiler), and generate() per token over
256 tokens (the loop included). python decode_profile.py OUT.json"""
import json
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "scripts")
from bench_generate import build, without_end_of_sequence  # noqa: E402

device = torch.device("cuda")
rows = []
for name in ("hlru-m2", "bdlru-m4"):
    torch.manual_seed(0)
    model = without_end_of_sequence(build(name, False, 50304)).to(device, torch.bfloat16).eval()
    for batch in (1, 64):
        ids = torch.randint(3, 50304, (batch, 128), device=device)
        kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(ids, max_new_tokens=4, **kw)
            step = next(s for (b, _, c), s in model._decode_graphs.items() if b == batch and not c)
            for _ in range(20):
                step.graph.replay()
            torch.cuda.synchronize()
            n = 500
            start = time.perf_counter()
            for _ in range(n):
                step.graph.replay()
            torch.cuda.synchronize()
            replay_ms = (time.perf_counter() - start) / n * 1e3
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step.graph.replay()
                torch.cuda.synchronize()
            kernels = sorted(((e.key, e.count, e.device_time_total) for e in prof.key_averages()
                              if e.device_time_total > 0), key=lambda k: -k[2])
            gpu_us = sum(k[2] for k in kernels)
            walls = []
            for new in (257, 1, 257, 1, 257, 1):
                torch.cuda.synchronize()
                start = time.perf_counter()
                model.generate(ids, max_new_tokens=new, **kw)
                torch.cuda.synchronize()
                walls.append(time.perf_counter() - start)
            per_token = sorted((walls[i] - walls[i + 1]) / 256 * 1e3 for i in (0, 2, 4))
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof2:
                model.generate(ids, max_new_tokens=17, **kw)
                torch.cuda.synchronize()
            cpu_top = sorted(((e.key, e.count, e.cpu_time_total) for e in prof2.key_averages()),
                             key=lambda k: -k[2])[:25]
        row = dict(model=name, batch=batch, replay_ms=replay_ms, kernels=sum(k[1] for k in kernels),
                   kernel_us=gpu_us, generate_ms_per_token=per_token, top_kernels=kernels[:15], cpu_top=cpu_top)
        rows.append(row)
        print(f"{name} batch {batch}: replays back to back {replay_ms:.3f} ms/token, {row['kernels']} kernels "
              f"{gpu_us:.0f} us under the profiler; generate() {per_token[1]:.3f} ms/token "
              f"(runs {per_token[0]:.3f}-{per_token[2]:.3f})", flush=True)
        for key, count, us in kernels[:12]:
            print(f"    {us:8.1f} us  x{count:3d}  {key[:110]}")
        print("  host, generate() of 17 tokens (cpu_time_total, us):")
        for key, count, us in cpu_top[:18]:
            print(f"    {us:9.0f} us  x{count:4d}  {key[:100]}")
json.dump(rows, open(sys.argv[1], "w"), indent=1)
