"""BD-LRU block size 2 on time-last tensors at grids of few programs per SM: the in-thread kernels (IN_THREADS_TILE)
against the tile scan (TILE, four warps a program) and the [B, T, N] kernels (`bdlru_scan`), forward and
forward+backward % of copy under bench_scan.py's byte model, GPU time of CUDA-graph replays, in one run. Decides
`_grid`'s path for BD-LRU and `time_last_pays`' rule for block size 2 on small grids. Usage: python3 probe_small_grid.py OUT"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts"))
import bench_scan  # noqa: E402

import hf_lrnn.scan_time_last as lib  # noqa: E402
from hf_lrnn import bdlru_scan, bdlru_scan_time_last  # noqa: E402

out = sys.argv[1]
copy_tbps = bench_scan.copy_bandwidth()
lines, rows = [f"copy {copy_tbps:.2f} TB/s; BD-LRU block size 2, % of copy fwd / f+b"], []
for B, T, D in ((1, 16384, 1024), (2, 8192, 1024), (4, 4096, 1024), (4, 8192, 2048), (8, 2048, 768)):
    N, m = D // 2, 2
    fwd_bytes, fb_bytes = B * T * D * (m + 3) * 2, B * T * D * (3 * m + 8) * 2
    pct = lambda nbytes, ms: 100 * nbytes / (ms * 1e-3) / 1e12 / copy_tbps  # noqa: E731
    g = torch.randn(B, N, 2, 3, T).to("cuda", torch.bfloat16).requires_grad_()
    v = torch.randn(B, N, 2, T).to("cuda", torch.bfloat16).requires_grad_()
    do = torch.randn(B, N, 2, T).to("cuda", torch.bfloat16)
    row = dict(B=B, T=T, D=D, m=m, programs_per_sm=B * N / lib._num_sms("cuda"))
    for path, small_grid_below in (("in_threads", 0), ("tile_scan", 10**9)):
        lib.SMALL_GRID_BELOW = small_grid_below

        def fb():
            bdlru_scan_time_last(g, v, backend="triton")[0].backward(do)

        with torch.no_grad():
            row[f"{path}_fwd_pct"] = pct(fwd_bytes, bench_scan.bench(lambda: bdlru_scan_time_last(g, v, backend="triton")))
        row[f"{path}_fwdbwd_pct"] = pct(fb_bytes, bench_scan.bench(fb, grad_to_none=[g, v]))
    lib.SMALL_GRID_BELOW = 16
    gt = g.detach().permute(0, 4, 1, 2, 3).contiguous().requires_grad_()
    vt = v.detach().permute(0, 3, 1, 2).contiguous().requires_grad_()
    dot = do.permute(0, 3, 1, 2).contiguous()

    def fb_btn():
        bdlru_scan(gt, vt, backend="triton")[0].backward(dot)

    with torch.no_grad():
        row["btn_fwd_pct"] = pct(fwd_bytes, bench_scan.bench(lambda: bdlru_scan(gt, vt, backend="triton")))
    row["btn_fwdbwd_pct"] = pct(fb_bytes, bench_scan.bench(fb_btn, grad_to_none=[gt, vt]))
    rows.append(row)
    lines.append(f"B{B} T{T} D{D} ({row['programs_per_sm']:.1f} programs/SM): in threads "
                 f"{row['in_threads_fwd_pct']:.1f} / {row['in_threads_fwdbwd_pct']:.1f}, tile scan "
                 f"{row['tile_scan_fwd_pct']:.1f} / {row['tile_scan_fwdbwd_pct']:.1f}, [B, T, N] "
                 f"{row['btn_fwd_pct']:.1f} / {row['btn_fwdbwd_pct']:.1f}")
    print(lines[-1], flush=True)
    torch.cuda.empty_cache()
if bench_scan.TIMING_FALLBACKS:
    lines.append(f"timed eagerly (capture failed): {bench_scan.TIMING_FALLBACKS}")
open(f"{out}/bdlru2_small_grid.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/bdlru2_small_grid.json", "w"), indent=1)
