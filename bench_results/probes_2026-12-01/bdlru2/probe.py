"""BD-LRU block size 2 on time-last tensors (`bdlru_scan_time_last`) against the [B, T, N] kernels (`bdlru_scan`),
forward and forward+backward % of copy under bench_scan.py's byte model (m + 3 / 3m + 8 elements per state channel
and step), GPU time of CUDA-graph replays, in one run: the forward with and without prefetch, the backward under the
library's register rule, no cap, and caps of 64, 80 and 96. Usage: python3 probe.py OUT_DIR"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts"))
import bench_scan  # noqa: E402

import hf_lrnn.scan_time_last as lib  # noqa: E402
from hf_lrnn import bdlru_scan, bdlru_scan_time_last  # noqa: E402

out = sys.argv[1]
grid = lib._block_grid
setting = {"prefetch": True, "cap": "rule"}


def patched(*args, **kwargs):
    g, options = grid(*args, **kwargs)
    options = dict(options)
    if "PREFETCH" in options:
        options["PREFETCH"] = setting["prefetch"]
    elif setting["cap"] != "rule":
        options.pop("maxnreg", None)
        if setting["cap"]:
            options["maxnreg"] = setting["cap"]
    return g, options


lib._block_grid = patched
copy_tbps = bench_scan.copy_bandwidth()
lines, rows = [f"copy {copy_tbps:.2f} TB/s; BD-LRU block size 2, % of copy"], []
for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (8, 2048, 768)):
    N, m = D // 2, 2
    fwd_bytes, fb_bytes = B * T * D * (m + 3) * 2, B * T * D * (3 * m + 8) * 2
    pct = lambda nbytes, ms: 100 * nbytes / (ms * 1e-3) / 1e12 / copy_tbps  # noqa: E731
    g = torch.randn(B, N, 2, 3, T).to("cuda", torch.bfloat16).requires_grad_()
    v = torch.randn(B, N, 2, T).to("cuda", torch.bfloat16).requires_grad_()
    do = torch.randn(B, N, 2, T).to("cuda", torch.bfloat16)
    row = dict(B=B, T=T, D=D, m=m)
    for prefetch in (True, False):
        setting["prefetch"] = prefetch
        with torch.no_grad():
            row[f"time_last_fwd_pct_prefetch{int(prefetch)}"] = pct(fwd_bytes, bench_scan.bench(
                lambda: bdlru_scan_time_last(g, v, backend="triton")))
    setting["prefetch"] = True
    for cap in ("rule", None, 64, 80, 96):
        setting["cap"] = cap

        def fb():
            bdlru_scan_time_last(g, v, backend="triton")[0].backward(do)

        row[f"time_last_fwdbwd_pct_cap_{cap}"] = pct(fb_bytes, bench_scan.bench(fb, grad_to_none=[g, v]))
    setting["cap"] = "rule"
    row["rule_cap"] = lib._backward_register_cap(B * N, 1, "cuda")
    # the [B, T, N] kernels on the same numbers
    gt = g.detach().permute(0, 4, 1, 2, 3).contiguous().requires_grad_()
    vt = v.detach().permute(0, 3, 1, 2).contiguous().requires_grad_()
    dot = do.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        row["btn_fwd_pct"] = pct(fwd_bytes, bench_scan.bench(lambda: bdlru_scan(gt, vt, backend="triton")))

    def fb_btn():
        bdlru_scan(gt, vt, backend="triton")[0].backward(dot)

    row["btn_fwdbwd_pct"] = pct(fb_bytes, bench_scan.bench(fb_btn, grad_to_none=[gt, vt]))
    rows.append(row)
    lines.append(f"B{B} T{T} D{D}: fwd prefetch {row['time_last_fwd_pct_prefetch1']:.1f} / none "
                 f"{row['time_last_fwd_pct_prefetch0']:.1f} ([B, T, N] {row['btn_fwd_pct']:.1f}); f+b rule "
                 f"(cap {row['rule_cap']}) {row['time_last_fwdbwd_pct_cap_rule']:.1f}, none "
                 f"{row['time_last_fwdbwd_pct_cap_None']:.1f}, 64 {row['time_last_fwdbwd_pct_cap_64']:.1f}, 80 "
                 f"{row['time_last_fwdbwd_pct_cap_80']:.1f}, 96 {row['time_last_fwdbwd_pct_cap_96']:.1f} "
                 f"([B, T, N] {row['btn_fwdbwd_pct']:.1f})")
    print(lines[-1], flush=True)
    torch.cuda.empty_cache()
if bench_scan.TIMING_FALLBACKS:
    lines.append(f"timed eagerly (capture failed): {bench_scan.TIMING_FALLBACKS}")
open(f"{out}/bdlru2.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/bdlru2.json", "w"), indent=1)
