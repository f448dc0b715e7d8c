"""BD-LRU block size 4 on time-last tensors, forward only (`kernel.py`): steps a thread (8 or 4), blocks a program
(BC), logits kept across the groups' scan or loaded again; against the [B, T, N] kernels' forward (one block per
thread) on the same data, in % of the copy bandwidth (bytes: 20 logits, 4 values, 4 states a block-step, bf16).
Usage: python probe.py OUT"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel import bd4_time_last_forward  # noqa: E402

from hf_lrnn.scan_torch import bdlru_scan_torch  # noqa: E402
from hf_lrnn.scan_triton import bdlru_scan_triton  # noqa: E402

out_dir = sys.argv[1]
rows, lines = [], []


def say(line):
    print(line, flush=True)
    lines.append(line)


def timed(fn, reps=5):
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


src = torch.empty(256 * 2**20, dtype=torch.float32, device="cuda")
dst = torch.empty_like(src)
copy_tbps = 2 * src.numel() * 4 / timed(lambda: dst.copy_(src)) / 1e9
say(f"copy {copy_tbps:.2f} TB/s")

variants = [dict(steps=8, BC=1, BT=256, num_warps=1, reload=False), dict(steps=8, BC=1, BT=256, num_warps=1, reload=True),
            dict(steps=4, BC=1, BT=128, num_warps=1, reload=False), dict(steps=4, BC=1, BT=128, num_warps=1, reload=True),
            dict(steps=4, BC=2, BT=128, num_warps=2, reload=False), dict(steps=4, BC=1, BT=256, num_warps=2, reload=False)]
torch.manual_seed(0)
g = torch.randn(2, 16, 4, 5, 3000, device="cuda") * 2
v = torch.randn(2, 16, 4, 3000, device="cuda")
ref, _ = bdlru_scan_torch(g.permute(0, 4, 1, 2, 3).double(), v.permute(0, 3, 1, 2).double())
for variant in variants:
    out = bd4_time_last_forward(g, v, **variant)
    err = ((out.permute(0, 3, 1, 2).double() - ref).norm() / ref.norm()).item()
    say(f"accuracy {variant}: relative error {err:.1e}")
    rows.append(dict(kind="accuracy", **variant, error=err))

for B, T, D in ((8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048), (8, 2048, 768)):
    N = D // 4
    gates = (torch.randn(B, N, 4, 5, T, device="cuda") * 2).to(torch.bfloat16)
    values = torch.randn(B, N, 4, T, device="cuda").to(torch.bfloat16)
    gb, vb = gates.permute(0, 4, 1, 2, 3).contiguous(), values.permute(0, 3, 1, 2).contiguous()
    nbytes = B * T * N * 28 * 2
    with torch.no_grad():
        base_ms = timed(lambda: bdlru_scan_triton(gb, vb, None, "softmax", False, None))
    base_pct = 100 * nbytes / base_ms / 1e9 / copy_tbps
    say(f"B{B} T{T} D{D}: [B, T, N] kernels {base_ms:.3f} ms ({base_pct:.1f} %)")
    rows.append(dict(kind="time", B=B, T=T, D=D, path="[B, T, N]", fwd_ms=base_ms, fwd_pct_copy=base_pct))
    for variant in variants:
        ms = timed(lambda: bd4_time_last_forward(gates, values, **variant))
        pct = 100 * nbytes / ms / 1e9 / copy_tbps
        say(f"B{B} T{T} D{D}: {variant} {ms:.3f} ms ({pct:.1f} %, {base_ms / ms:.2f}x)")
        rows.append(dict(kind="time", B=B, T=T, D=D, path="time-last", **variant, fwd_ms=ms, fwd_pct_copy=pct))

with open(f"{out_dir}/bd4.json", "w") as fh:
    json.dump(dict(copy_tbps=copy_tbps, rows=rows), fh, indent=1)
with open(f"{out_dir}/bd4.txt", "w") as fh:
    fh.write("\n".join(lines) + "\n")
