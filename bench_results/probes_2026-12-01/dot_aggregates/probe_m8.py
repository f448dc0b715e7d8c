"""BD-LRU m = 8 (and the new m = 16 defaults): one block per thread (the library's path for m <= 8) against the
[m, m] tile kernels with `_bdlru_tile_launch`'s shapes, sequential, automatic and chunks of 128.
Usage: python probe_m8.py OUT"""
import json
import sys

import torch

from hf_lrnn import scan_triton as st

out_dir = sys.argv[1]
rows, lines = [], []
per_thread_max = st._BLOCK_PER_THREAD_MAX_M


def say(line):
    print(line, flush=True)
    lines.append(line)


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


for m in (8, 16):
    for B, T, D in ((8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)):
        N = D // m
        g = torch.randn(B, T, N, m, m + 1, device="cuda").mul(2).to(torch.bfloat16).requires_grad_()
        v = torch.randn(B, T, N, m, device="cuda").to(torch.bfloat16).requires_grad_()
        paths = [("per thread", per_thread_max), ("tiles", 4)] if m == 8 else [("tiles", per_thread_max)]
        for path, limit in paths:
            st._BLOCK_PER_THREAD_MAX_M = limit
            for chunk in (0, None, 128):

                def fb():
                    o, _ = st.bdlru_scan_triton(g, v, None, "softmax", False, None, chunk)
                    torch.autograd.grad(o.float().sum(), [g, v])
                with torch.no_grad():
                    f_ms = timed(lambda: st.bdlru_scan_triton(g, v, None, "softmax", False, None, chunk))
                fb_ms = timed(fb)
                rows.append(dict(B=B, T=T, D=D, m=m, path=path, chunk=chunk, fwd_ms=f_ms, fwdbwd_ms=fb_ms))
                say(f"m{m} B{B} T{T} D{D} {path:10s} chunk {str(chunk):4s}: fwd {f_ms:8.3f} ms, fwd+bwd {fb_ms:8.3f} ms")
        st._BLOCK_PER_THREAD_MAX_M = per_thread_max

with open(f"{out_dir}/m8.json", "w") as fh:
    json.dump(rows, fh, indent=1)
with open(f"{out_dir}/m8.txt", "w") as fh:
    fh.write("\n".join(lines) + "\n")
