"""m = 2's time-last in-thread forward with and without PREFETCH (the next tile's loads in flight while this one
is scanned), over tiles (BC, BT, warps), by launching the library kernel directly; GPU time of CUDA-graph replays,
% of copy under 5 elements per step. Usage: python3 prefetch_in_threads.py OUT_DIR"""
import json
import sys

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

import hf_lrnn.scan_time_last as lib

out = sys.argv[1]
x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
y = torch.empty_like(x)
copy_tbps = 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=10, rep=50) * 1e-3) / 1e12
del x, y
tiles = [(2, 256, 2), (1, 256, 1), (4, 256, 4)]
lines, rows = [f"copy {copy_tbps:.2f} TB/s; m = 2 in-thread forward % of copy, PREFETCH off / on; tiles BC/BT/warps"], []
for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (8, 2048, 768), (1, 16384, 1024), (1, 65536, 1024),
                (4, 8192, 1024)):
    N = D // 2
    g = torch.randn(B, N, 3, T, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
    want = lib.time_last_forward(g, v, None, "softmax", False)[0]
    states = torch.empty_like(v)
    row, parts = dict(B=B, T=T, D=D), []
    for bc, bt, w in tiles:
        for prefetch in (False, True):
            def fwd():
                lib._time_last_m2_fwd_kernel[(B * triton.cdiv(N, bc),)](
                    gates=g, values=v, initial_state=None, starts=None, states=states, final_state=None, T=T, N=N,
                    ACT=0, BC=bc, BT=bt, PREFETCH=prefetch, IN_THREADS=True, HAS_H0=False, WRITE_FINAL=False,
                    HAS_STARTS=False, num_warps=w)
            fwd()
            key = f"{bc}_{bt}_{w}_{'prefetch' if prefetch else 'plain'}"
            row[f"diff_{key}"] = (states.float() - want.float()).abs().max().item()
            row[f"{key}_pct"] = 100 * 2 * B * T * N * 5 / (do_bench_cudagraph(fwd, rep=50) * 1e-3) / 1e12 / copy_tbps
        parts.append(f"{bc}/{bt}/{w} {row[f'{bc}_{bt}_{w}_plain_pct']:.1f} / {row[f'{bc}_{bt}_{w}_prefetch_pct']:.1f}")
    rows.append(row)
    diff = max(v_ for k, v_ in row.items() if k.startswith("diff"))
    line = f"B{B} T{T} D{D}: " + ", ".join(parts) + f"; max |diff| {diff:.2g}"
    lines.append(line)
    print(line, flush=True)
open(f"{out}/prefetch_in_threads.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/prefetch_in_threads.json", "w"), indent=1)
