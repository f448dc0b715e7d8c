"""Forward+backward of hlru_scan_time_last at small shapes: wall per call against the kernels' GPU time (is the
do_bench f+b number the kernels, or the host?). Usage: python3 fb_profile.py OUT_DIR"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from hf_lrnn.ops import hlru_scan_time_last

out = sys.argv[1]
lines = []
for m, B, T, N in [(1, 8, 4096, 1024), (2, 8, 2048, 384), (1, 32, 2048, 2048)]:
    g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)

    def fb():
        hlru_scan_time_last(g, v, backend="triton")[0].backward(do)
        g.grad = v.grad = None

    for _ in range(5):
        fb()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        fb()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 50 * 1e6
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fb()
        torch.cuda.synchronize()
    lines.append(f"== m={m} B{B} T{T} N{N}: wall {wall:.1f} us per f+b (50 back to back)")
    lines.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=60))
    lines.append(prof.key_averages().table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=60))
text = "\n".join(lines)
print(text)
open(f"{out}/fb_profile.txt", "w").write(text + "\n")
