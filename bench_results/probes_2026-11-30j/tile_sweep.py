"""hlru_scan_time_last's kernels over tiles: (BT steps, warps, software-pipelining stages), m = 1 and 2, bf16, % of
copy under bench_scan.py's byte model. Usage: python3 tile_sweep.py OUT_DIR [m ...]"""
import json
import sys

import torch
from triton.testing import do_bench

import hf_lrnn.scan_time_last as tl_mod
from hf_lrnn.ops import hlru_scan_time_last

out = sys.argv[1]
orders = [int(a) for a in sys.argv[2:]] or [1, 2]
x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
y = torch.empty_like(x)
copy_tbps = 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=10, rep=50) * 1e-3) / 1e12
del x, y
print(f"copy {copy_tbps:.2f} TB/s")
original_grid = tl_mod._grid
current = {}


def grid(B, N, T):
    g, blocks = original_grid(B, N, T)
    blocks.update(current)
    return g, blocks


tl_mod._grid = grid
shapes = [(8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (8, 2048, 768)]
configs = [dict(BT=bt, num_warps=w, num_stages=s) for bt in (512, 1024, 2048) for w in (4, 8) for s in (1, 3)]
configs = [c for c in configs if not (c["BT"] == 512 and c["num_warps"] == 8)]
rows = []
for m in orders:
    for B, T, D in shapes:
        N = D // m  # bench_scan.py's rows: D state channels, N = D / m units
        g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        # bench_scan.py's byte model
        fwd_bytes = 2 * B * T * N * (m + 3)
        fb_bytes = 2 * B * T * N * (3 * m + 8)
        for c in configs:
            current.clear()
            current.update(c)
            try:
                with torch.no_grad():
                    f = do_bench(lambda: hlru_scan_time_last(g, v, backend="triton"), warmup=10, rep=40)

                def fb():
                    hlru_scan_time_last(g, v, backend="triton")[0].backward(do)
                fbt = do_bench(fb, warmup=5, rep=40, grad_to_none=[g, v])
            except Exception as err:  # e.g. out of shared memory
                print(m, B, T, N, c, "failed", str(err).splitlines()[0][:120])
                continue
            row = dict(m=m, B=B, T=T, N=N, **c, fwd_us=f * 1e3, fwdbwd_us=fbt * 1e3,
                       fwd_pct=100 * fwd_bytes / (f * 1e-3) / 1e12 / copy_tbps,
                       fwdbwd_pct=100 * fb_bytes / (fbt * 1e-3) / 1e12 / copy_tbps)
            rows.append(row)
            print(f"m={m} B{B} T{T} N{N} BT={c['BT']:5d} w={c['num_warps']} s={c['num_stages']}: fwd {row['fwd_us']:7.1f} us "
                  f"{row['fwd_pct']:5.1f} %  f+b {row['fwdbwd_us']:7.1f} us {row['fwdbwd_pct']:5.1f} %", flush=True)
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/tile_sweep.json", "w"), indent=1)
