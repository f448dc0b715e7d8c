"""hlru_scan_time_last at m = 4 (the library's kernels) over tiles M4_TILE = (channels, steps, warps): forward and
forward+backward % of copy under bench_scan.py's byte model (7 / 20 elements per step), GPU time of CUDA-graph
replays. Usage: [TILES=2/256/2,1/256/1] python3 sweep_tiles.py OUT_DIR [NAME]"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts"))
import bench_scan  # noqa: E402

import hf_lrnn.scan_time_last as lib  # noqa: E402
from hf_lrnn import hlru_scan_time_last  # noqa: E402

out = sys.argv[1]
copy_tbps = bench_scan.copy_bandwidth()
lines, rows = [f"copy {copy_tbps:.2f} TB/s; H-LRU m = 4 time-last, % of copy fwd / f+b by tile (BC/BT/warps)"], []
tiles = tuple(tuple(int(x) for x in tile.split("/"))
              for tile in os.environ.get("TILES", "2/256/2,1/256/1,4/256/4,2/128/2,1/128/1").split(","))
for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (8, 2048, 768), (1, 16384, 1024)):
    N = D // 4
    g = torch.randn(B, N, 5, T).to("cuda", torch.bfloat16).requires_grad_()
    v = torch.randn(B, N, T).to("cuda", torch.bfloat16).requires_grad_()
    do = torch.randn(B, N, T).to("cuda", torch.bfloat16)
    row, parts = dict(B=B, T=T, D=D), []
    for bc, bt, w in tiles:
        lib.M4_TILE = {"BC": bc, "BT": bt, "num_warps": w}
        with torch.no_grad():
            fwd = bench_scan.bench(lambda: hlru_scan_time_last(g, v, backend="triton"))

        def fb():
            hlru_scan_time_last(g, v, backend="triton")[0].backward(do)

        fbt = bench_scan.bench(fb, grad_to_none=[g, v])
        key = f"{bc}_{bt}_{w}"
        row[f"{key}_fwd_pct"] = 100 * B * T * N * 7 * 2 / (fwd * 1e-3) / 1e12 / copy_tbps
        row[f"{key}_fwdbwd_pct"] = 100 * B * T * N * 20 * 2 / (fbt * 1e-3) / 1e12 / copy_tbps
        parts.append(f"{bc}/{bt}/{w} {row[key + '_fwd_pct']:.1f} / {row[key + '_fwdbwd_pct']:.1f}")
    rows.append(row)
    lines.append(f"B{B} T{T} D{D}: " + ", ".join(parts))
    print(lines[-1], flush=True)
if bench_scan.TIMING_FALLBACKS:
    lines.append(f"timed eagerly (capture failed): {bench_scan.TIMING_FALLBACKS}")
name = sys.argv[2] if len(sys.argv) > 2 else "sweep_tiles"
open(f"{out}/{name}.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/{name}.json", "w"), indent=1)
