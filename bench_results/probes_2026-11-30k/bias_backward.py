"""The time-last backward kernels with and without the gate bias (its gradient summed in the kernel), at the models'
shape (B8 T2048, d = 768: N = 768 at m = 1, 384 at m = 2), GPU time of CUDA-graph replays; and torch's sum of the
logit gradients over (batch, time), what the bias gradient cost before it moved into the kernel.
Usage: python3 bias_backward.py OUT_DIR"""
import json
import sys

import torch
from triton.testing import do_bench_cudagraph

import hf_lrnn.scan_time_last as lib

out, lines, rows = sys.argv[1], [], []
for m, N in ((1, 768), (2, 384)):
    B, T = 8, 2048
    g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn_like(v)
    bias = torch.randn(N, m + 1, device="cuda")
    states = lib.time_last_forward(g, v, None, "softmax", False)[0]
    plain = do_bench_cudagraph(lambda: lib.time_last_backward(g, v, states, None, dy, None, "softmax"), rep=50)
    with_bias = do_bench_cudagraph(
        lambda: lib.time_last_backward(g, v, states, None, dy, None, "softmax", None, bias), rep=50)
    d_gates = lib.time_last_backward(g, v, states, None, dy, None, "softmax", None, bias)
    want = d_gates[0].float().sum((0, 3))
    diff = (d_gates[3] - want).abs().max().item() / want.abs().max().item()
    torch_sum = do_bench_cudagraph(lambda: d_gates[0].view(B, N * (m + 1), T).sum((0, 2)), rep=50)
    row = dict(m=m, B=B, T=T, N=N, backward_us=plain * 1e3, backward_with_bias_us=with_bias * 1e3,
               torch_bias_sum_us=torch_sum * 1e3, bias_gradient_relative_diff=diff)
    rows.append(row)
    line = (f"m = {m} B{B} T{T} N{N}: backward {row['backward_us']:.1f} us, with the bias {row['backward_with_bias_us']:.1f}"
            f" us; torch's sum of the logit gradients {row['torch_bias_sum_us']:.1f} us; bias gradient against the"
            f" bf16 logit gradients summed: {diff:.1e} relative")
    lines.append(line)
    print(line, flush=True)
open(f"{out}/bias_backward.txt", "w").write("\n".join(lines) + "\n")
json.dump(rows, open(f"{out}/bias_backward.json", "w"), indent=1)
