"""The time-last kernels under a register cap (Triton's `maxnreg` launch option, added to `_grid`'s options): m = 2
plain and with the model's bias and window output, m = 4 plain, forward and forward+backward % of copy under
bench_scan.py's byte model (m + 3 / 3m + 8 elements per step), GPU time of CUDA-graph replays, each cap against no
cap in one run. `ptxas -v` (../registers/) gave 96 registers for m = 2 (21 resident one-warp programs per SM), 141-146
with bias and window, 168 for m = 4's backward; a cap of 128 removes the spills it would cost there, 80 and 64 spill.
Usage: python3 probe.py OUT_DIR"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts"))
import bench_scan  # noqa: E402

import hf_lrnn.scan_time_last as lib  # noqa: E402
from hf_lrnn import hlru_scan_time_last  # noqa: E402

out = sys.argv[1]
grid = lib._grid
cap = {"value": None}


def capped(*args, **kwargs):
    g, options = grid(*args, **kwargs)
    return g, (dict(options, maxnreg=cap["value"]) if cap["value"] else options)


lib._grid = capped
copy_tbps = bench_scan.copy_bandwidth()
lines, rows = [f"copy {copy_tbps:.2f} TB/s; time-last % of copy fwd / f+b by register cap (none = the compiler's)"], []
for m, extras, caps in ((2, False, (None, 64, 80, 128)), (2, True, (None, 80, 96, 128)), (4, False, (None, 128, 96))):
    for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (8, 2048, 768)):
        N = D // m
        # inputs drawn on the CPU: a failed capture would leave the CUDA generator unusable
        g = torch.randn(B, N, m + 1, T).to("cuda", torch.bfloat16).requires_grad_()
        v = torch.randn(B, N, T).to("cuda", torch.bfloat16).requires_grad_()
        bias = torch.randn(N, m + 1).cuda().requires_grad_() if extras else None
        kw = dict(gate_bias=bias, output_window=True) if extras else {}
        do = torch.randn(B, N, m if extras else 1, T).to("cuda", torch.bfloat16).squeeze(2)
        row, parts = dict(m=m, bias_window=extras, B=B, T=T, D=D), []
        for value in caps:
            cap["value"] = value
            with torch.no_grad():
                fwd = bench_scan.bench(lambda: hlru_scan_time_last(g, v, backend="triton", **kw))

            def fb():
                hlru_scan_time_last(g, v, backend="triton", **kw)[0].backward(do)

            fbt = bench_scan.bench(fb, grad_to_none=[t for t in (g, v, bias) if t is not None])
            key = f"cap{value or 0}"
            row[f"{key}_fwd_pct"] = 100 * B * T * N * (m + 3) * 2 / (fwd * 1e-3) / 1e12 / copy_tbps
            row[f"{key}_fwdbwd_pct"] = 100 * B * T * N * (3 * m + 8) * 2 / (fbt * 1e-3) / 1e12 / copy_tbps
            parts.append(f"{value or 'none'} {row[key + '_fwd_pct']:.1f} / {row[key + '_fwdbwd_pct']:.1f}")
        rows.append(row)
        lines.append(f"m={m}{' bias+window' if extras else ''} B{B} T{T} D{D}: " + ", ".join(parts))
        print(lines[-1], flush=True)
if bench_scan.TIMING_FALLBACKS:
    lines.append(f"timed eagerly (capture failed): {bench_scan.TIMING_FALLBACKS}")
open(f"{out}/maxnreg.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/maxnreg.json", "w"), indent=1)
