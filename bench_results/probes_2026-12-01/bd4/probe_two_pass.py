"""BD-LRU block size 4's time-last backward: the library's one kernel (`time_last_backward`, 255 registers by ptxas)
against `two_pass.py`'s adjoint kernel (128 registers) and time-parallel gradient kernel (56-95), per gradient tile;
the two-pass results against the library's (float32, expected equal). Usage: python probe_two_pass.py OUT"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from two_pass import bd4_backward_two_pass  # noqa: E402

from hf_lrnn.scan_time_last import time_last_backward, time_last_forward  # noqa: E402

out_dir = sys.argv[1]
rows, lines = [], []


def say(line):
    print(line, flush=True)
    lines.append(line)


def timed(fn, reps=10):
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


torch.manual_seed(0)
g = torch.randn(2, 64, 4, 5, 3000, device="cuda") * 2
v = torch.randn(2, 64, 4, 3000, device="cuda")
s, _ = time_last_forward(g, v, None, "softmax", False)
ds = torch.randn_like(s)
dg, dv, _, _ = time_last_backward(g, v, s, None, ds, None, "softmax")
dg2, dv2 = bd4_backward_two_pass(g, v, s, ds)
say(f"float32, two-pass against the library: d gates {(dg - dg2).abs().max().item():.1e}, d values "
    f"{(dv - dv2).abs().max().item():.1e}")

for B, T, D in ((8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048), (8, 2048, 768)):
    N = D // 4
    gates = (torch.randn(B, N, 4, 5, T, device="cuda") * 2).to(torch.bfloat16)
    values = torch.randn(B, N, 4, T, device="cuda").to(torch.bfloat16)
    states, _ = time_last_forward(gates, values, None, "softmax", False)
    d_states = torch.randn_like(states)
    one = timed(lambda: time_last_backward(gates, values, states, None, d_states, None, "softmax"))
    say(f"B{B} T{T} D{D}: library backward {one:.3f} ms")
    rows.append(dict(B=B, T=T, D=D, path="library", ms=one))
    for bt, warps in ((128, 1), (256, 4), (512, 4)):
        ms = timed(lambda: bd4_backward_two_pass(gates, values, states, d_states, BT_GRADIENTS=bt,
                                                 num_warps_gradients=warps))
        say(f"B{B} T{T} D{D}: two-pass (gradient tiles {bt}, {warps} warps) {ms:.3f} ms ({one / ms:.2f}x)")
        rows.append(dict(B=B, T=T, D=D, path="two-pass", gradient_tile=bt, warps=warps, ms=ms))

with open(f"{out_dir}/two_pass.json", "w") as fh:
    json.dump(rows, fh, indent=1)
with open(f"{out_dir}/two_pass.txt", "w") as fh:
    fh.write("\n".join(lines) + "\n")
