"""m = 2's time-last scans: the default tile scan against the IN_THREADS paths (scan_time_last.M2_IN_THREADS,
M2_BACKWARD_IN_THREADS), as library code, in one process; GPU time of CUDA-graph replays, % of copy under
bench_scan.py's byte model (3m+8 = 14 elements forward+backward); the in-thread forward over tiles too.
Usage: python3 compare_in_threads.py OUT_DIR"""
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
lines, rows = [f"copy {copy_tbps:.2f} TB/s; m = 2 time-last forward % of copy (GPU time, CUDA graph)"], []
tiles = [(512, 2), (512, 4), (1024, 2), (1024, 4), (256, 1)]
for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (1, 65536, 1024), (8, 2048, 768)):
    N = D // 2
    g = torch.randn(B, N, 3, T, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
    h0 = torch.randn(B, N, 2, device="cuda")
    nbytes = 2 * B * T * N * 5
    row = dict(B=B, T=T, D=D)
    lib.M2_IN_THREADS = False
    want = lib.time_last_forward(g, v, h0, "softmax", True)
    row["default_pct"] = 100 * nbytes / (do_bench_cudagraph(
        lambda: lib.time_last_forward(g, v, None, "softmax", False), rep=60) * 1e-3) / 1e12 / copy_tbps
    lib.M2_IN_THREADS = True
    got = lib.time_last_forward(g, v, h0, "softmax", True)
    row["max_abs_diff"] = max((a.float() - b.float()).abs().max().item() for a, b in zip(got, want))
    for bt, w in tiles:
        lib.IN_THREADS_TILE = {"BT": bt, "num_warps": w}
        ms = do_bench_cudagraph(lambda: lib.time_last_forward(g, v, None, "softmax", False), rep=60)
        row[f"in_threads_{bt}_{w}_pct"] = 100 * nbytes / (ms * 1e-3) / 1e12 / copy_tbps
    lib.M2_IN_THREADS, lib.IN_THREADS_TILE = False, {"BT": 512, "num_warps": 2}
    rows.append(row)
    line = (f"B{B} T{T} D{D}: default {row['default_pct']:.1f} %, in threads "
            + ", ".join(f"{bt}/{w} {row[f'in_threads_{bt}_{w}_pct']:.1f} %" for bt, w in tiles)
            + f" (prefetching shapes run the default either way); max |diff| {row['max_abs_diff']:.2g}")
    lines.append(line)
    print(line, flush=True)
# forward+backward: the default against the in-thread backward (with the in-thread forward where it applies)
lines.append("m = 2 time-last forward+backward % of copy: default / in-thread forward and backward (512/2 tiles)")
for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (8, 2048, 768)):
    N = D // 2
    g = torch.randn(B, N, 3, T, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
    do = torch.randn_like(v)
    nbytes = 2 * B * T * N * 14

    def fb():
        s, _ = lib.time_last_forward(g, v, None, "softmax", False)
        return lib.time_last_backward(g, v, s, None, do, None, "softmax", None)

    want = fb()
    default = do_bench_cudagraph(fb, rep=60)
    lib.M2_IN_THREADS = lib.M2_BACKWARD_IN_THREADS = True
    got = fb()
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(got[:2], want[:2]))
    threads = do_bench_cudagraph(fb, rep=60)
    lib.M2_IN_THREADS = lib.M2_BACKWARD_IN_THREADS = False
    pct = [100 * nbytes / (ms * 1e-3) / 1e12 / copy_tbps for ms in (default, threads)]
    rows.append(dict(B=B, T=T, D=D, fwdbwd_default_pct=pct[0], fwdbwd_in_threads_pct=pct[1], max_abs_diff=diff))
    line = f"B{B} T{T} D{D}: {pct[0]:.1f} / {pct[1]:.1f} %; max |diff| of the gradients {diff:.2g}"
    lines.append(line)
    print(line, flush=True)
open(f"{out}/compare_in_threads.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/compare_in_threads.json", "w"), indent=1)
