"""The time-last kernels before this session's change (hf_lrnn/_time_last_before.py, a copy of
scan_time_last_before.py put there by the command) against after it (register prefetch of the next tile; m = 2's
backward on (lam, mu) with the logits of one step ahead only), in one process, GPU time per call from CUDA-graph
replay (triton.testing.do_bench_cudagraph: no host time), % of copy under bench_scan.py's byte model; then the new
forwards with the prefetch off and on. Usage: python3 compare_prefetch.py OUT_DIR"""
import json
import sys

import torch
from triton.testing import do_bench, do_bench_cudagraph

import hf_lrnn._time_last_before as before
import hf_lrnn.scan_time_last as after

out = sys.argv[1]
x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
y = torch.empty_like(x)
copy_tbps = 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=10, rep=50) * 1e-3) / 1e12
del x, y
lines = [f"copy {copy_tbps:.2f} TB/s; GPU us per call (CUDA graph), % of copy"]
print(lines[0], flush=True)
shapes = [(8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (1, 65536, 1024), (8, 2048, 768)]
rows = []


def measure(module, g, v, do):
    fwd = do_bench_cudagraph(lambda: module.time_last_forward(g, v, None, "softmax", False, None), rep=60)
    s, _ = module.time_last_forward(g, v, None, "softmax", False, None)

    def fb():
        st, _ = module.time_last_forward(g, v, None, "softmax", False, None)
        module.time_last_backward(g, v, st, None, do, None, "softmax", None)
    return fwd, do_bench_cudagraph(fb, rep=60)


def check(g, v, do):  # the new kernels give the old ones' results (bf16 outputs: within a rounding)
    s0, _ = before.time_last_forward(g, v, None, "softmax", False, None)
    s1, _ = after.time_last_forward(g, v, None, "softmax", False, None)
    d0 = before.time_last_backward(g, v, s0, None, do, None, "softmax", None)
    d1 = after.time_last_backward(g, v, s1, None, do, None, "softmax", None)
    return max((a.float() - b.float()).abs().max().item() for a, b in zip((s0,) + d0[:2], (s1,) + d1[:2]))


for m in (1, 2):
    for B, T, D in shapes:
        N = D // m
        g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        do = torch.randn_like(v)
        fwd_bytes, fb_bytes = 2 * B * T * N * (m + 3), 2 * B * T * N * (3 * m + 8)
        row = dict(m=m, B=B, T=T, D=D, N=N, max_abs_diff=check(g, v, do))
        for name, module in (("before", before), ("after", after)):
            f, fb = measure(module, g, v, do)
            row.update({f"{name}_fwd_us": f * 1e3, f"{name}_fwdbwd_us": fb * 1e3,
                        f"{name}_fwd_pct": 100 * fwd_bytes / (f * 1e-3) / 1e12 / copy_tbps,
                        f"{name}_fwdbwd_pct": 100 * fb_bytes / (fb * 1e-3) / 1e12 / copy_tbps})
        rows.append(row)
        line = (f"m={m} B{B:<2} T{T:<5} D{D}: fwd {row['before_fwd_us']:6.1f} -> {row['after_fwd_us']:6.1f} us "
                f"({row['before_fwd_pct']:4.1f} -> {row['after_fwd_pct']:4.1f} %)   f+b {row['before_fwdbwd_us']:6.1f} -> "
                f"{row['after_fwdbwd_us']:6.1f} us ({row['before_fwdbwd_pct']:4.1f} -> {row['after_fwdbwd_pct']:4.1f} %)"
                f"   max |diff| {row['max_abs_diff']:.3g}")
        lines.append(line)
        print(line, flush=True)

# the new forwards with the prefetch forced off and on (the rule in _grid picks one by programs per SM)
sweep = []
lines.append("new forward kernels, prefetch off / on: % of copy")
for m in (1, 2):
    for B, T, D in shapes:
        N = D // m
        g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        fwd_bytes = 2 * B * T * N * (m + 3)
        r = dict(m=m, B=B, T=T, D=D, chosen=after._grid(B, N, T, "cuda")[1]["PREFETCH"])
        for name, below in (("off", 0), ("on", 10**9)):
            after.PREFETCH_BELOW = below
            f = do_bench_cudagraph(lambda: after.time_last_forward(g, v, None, "softmax", False, None), rep=60)
            r[f"prefetch_{name}_fwd_pct"] = 100 * fwd_bytes / (f * 1e-3) / 1e12 / copy_tbps
        after.PREFETCH_BELOW = 16
        sweep.append(r)
        line = (f"m={m} B{B:<2} T{T:<5} D{D}: {r['prefetch_off_fwd_pct']:4.1f} / {r['prefetch_on_fwd_pct']:4.1f} %"
                f"   (the rule picks {'on' if r['chosen'] else 'off'})")
        lines.append(line)
        print(line, flush=True)
open(f"{out}/compare_prefetch.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows, sweep=sweep), open(f"{out}/compare_prefetch.json", "w"), indent=1)
