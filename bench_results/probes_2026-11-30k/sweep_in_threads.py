"""m = 2's time-last in-thread paths (scan_time_last.M2_IN_THREADS, M2_BACKWARD_IN_THREADS) over launch tiles
(BC channels, BT steps, warps), forward and backward timed separately against the default tile scan, as library code;
GPU time of CUDA-graph replays, % of copy under 5 elements per step forward (3 logits, value, state) and 10 backward
(3 logits, value, state, state gradient in; 3 logit gradients, value gradient out).
Usage: python3 sweep_in_threads.py OUT_DIR"""
import json
import sys

import torch
from triton.testing import do_bench, do_bench_cudagraph

import hf_lrnn.scan_time_last as lib

out = sys.argv[1]
x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
y = torch.empty_like(x)
copy_tbps = 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=10, rep=50) * 1e-3) / 1e12
del x, y
tiles = [(1, 256, 1), (1, 512, 1), (1, 1024, 1), (1, 128, 1), (2, 256, 1), (2, 256, 2), (2, 512, 2), (4, 256, 4),
         (4, 256, 2), (8, 256, 8)]
lines, rows = [f"copy {copy_tbps:.2f} TB/s; m = 2 time-last, % of copy (GPU time, CUDA graph); tiles BC/BT/warps"], []


def pct(ms, elements, B, T, N):
    return 100 * 2 * B * T * N * elements / (ms * 1e-3) / 1e12 / copy_tbps


for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (8, 2048, 768), (64, 2048, 1024), (1, 16384, 1024)):
    N = D // 2
    g = torch.randn(B, N, 3, T, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
    h0 = torch.randn(B, N, 2, device="cuda")
    dy = torch.randn_like(v)
    dfinal = torch.randn(B, N, 2, device="cuda")
    row = dict(B=B, T=T, D=D)
    if B == 1:
        lib.PREFETCH_BELOW = 0  # B1: what the in-thread forward would give without the prefetch
    lib.M2_IN_THREADS = lib.M2_BACKWARD_IN_THREADS = False
    want_f = lib.time_last_forward(g, v, h0, "softmax", True)
    want_b = lib.time_last_backward(g, v, want_f[0], h0, dy, dfinal, "softmax")
    fwd = lambda: lib.time_last_forward(g, v, None, "softmax", False)
    states = want_f[0]
    bwd = lambda: lib.time_last_backward(g, v, states, None, dy, None, "softmax")
    row["default_fwd_pct"] = pct(do_bench_cudagraph(fwd, rep=50), 5, B, T, N)
    row["default_bwd_pct"] = pct(do_bench_cudagraph(bwd, rep=50), 10, B, T, N)
    f_line, b_line = [], []
    for bc, bt, w in tiles:
        key = f"{bc}_{bt}_{w}"
        lib.IN_THREADS_TILE = {"BC": bc, "BT": bt, "num_warps": w}
        lib.M2_IN_THREADS = lib.M2_BACKWARD_IN_THREADS = True
        try:
            got_f = lib.time_last_forward(g, v, h0, "softmax", True)
            got_b = lib.time_last_backward(g, v, want_f[0], h0, dy, dfinal, "softmax")
            row[f"diff_fwd_{key}"] = max((a.float() - b.float()).abs().max().item() for a, b in zip(got_f, want_f))
            row[f"diff_bwd_{key}"] = max((a.float() - b.float()).abs().max().item() for a, b in zip(got_b, want_b))
            row[f"fwd_{key}_pct"] = pct(do_bench_cudagraph(fwd, rep=50), 5, B, T, N)
            row[f"bwd_{key}_pct"] = pct(do_bench_cudagraph(bwd, rep=50), 10, B, T, N)
            f_line.append(f"{bc}/{bt}/{w} {row[f'fwd_{key}_pct']:.1f}")
            b_line.append(f"{bc}/{bt}/{w} {row[f'bwd_{key}_pct']:.1f}")
        except Exception as e:  # a tile that does not compile or run: recorded, not fatal
            row[f"error_{key}"] = repr(e)[:300]
            f_line.append(f"{bc}/{bt}/{w} error")
            b_line.append(f"{bc}/{bt}/{w} error")
    lib.M2_IN_THREADS = lib.M2_BACKWARD_IN_THREADS = False
    lib.PREFETCH_BELOW = 16
    rows.append(row)
    diffs = max(v_ for k, v_ in row.items() if k.startswith("diff"))
    for line in (f"B{B} T{T} D{D} forward: default {row['default_fwd_pct']:.1f}; " + ", ".join(f_line),
                 f"B{B} T{T} D{D} backward: default {row['default_bwd_pct']:.1f}; " + ", ".join(b_line)
                 + f"; max |diff| {diffs:.2g}"):
        lines.append(line)
        print(line, flush=True)
open(f"{out}/sweep_in_threads.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/sweep_in_threads.json", "w"), indent=1)
