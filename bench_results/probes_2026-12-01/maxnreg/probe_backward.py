"""The time-last backward kernels under a register cap (Triton's `maxnreg`, added to `_grid`'s options for the
backward launches only; the forwards keep the compiler's choice, which the first probe (probe.py in
../../probes_2026-11-30l/maxnreg) found best or equal). Each cap is timed twice, interleaved with no cap, so the
table shows the run-to-run spread. Usage: python3 probe_backward.py OUT_DIR"""
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
    if kwargs.get("backward") and cap["value"]:
        options = dict(options, maxnreg=cap["value"])
    return g, options


lib._grid = capped
copy_tbps = bench_scan.copy_bandwidth()
lines = [f"copy {copy_tbps:.2f} TB/s; time-last forward+backward % of copy by the backward's register cap "
         "(none = the compiler's), two passes: pass 1 / pass 2"]
rows = []
cases = ((2, False, (None, 64, 72, 80)), (2, True, (None, 64, 72, 80, 96)), (4, False, (None, 128, 112, 96)),
         (4, True, (None, 128, 112)))
for m, extras, caps in cases:
    for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (8, 2048, 768), (1, 16384, 1024)):
        N = D // m
        g = torch.randn(B, N, m + 1, T).to("cuda", torch.bfloat16).requires_grad_()
        v = torch.randn(B, N, T).to("cuda", torch.bfloat16).requires_grad_()
        bias = torch.randn(N, m + 1).cuda().requires_grad_() if extras else None
        kw = dict(gate_bias=bias, output_window=True) if extras else {}
        do = torch.randn(B, N, m if extras else 1, T).to("cuda", torch.bfloat16).squeeze(2)

        def fb():
            hlru_scan_time_last(g, v, backend="triton", **kw)[0].backward(do)

        row, parts = dict(m=m, bias_window=extras, B=B, T=T, D=D), []
        for value in caps:
            times = []
            for _ in range(2):
                cap["value"] = value
                times.append(bench_scan.bench(fb, grad_to_none=[t for t in (g, v, bias) if t is not None]))
            pct = [100 * B * T * N * (3 * m + 8) * 2 / (t * 1e-3) / 1e12 / copy_tbps for t in times]
            row[f"cap{value or 0}_fwdbwd_pct"] = pct
            parts.append(f"{value or 'none'} {pct[0]:.1f}/{pct[1]:.1f}")
        rows.append(row)
        lines.append(f"m={m}{' bias+window' if extras else ''} B{B} T{T} D{D}: " + ", ".join(parts))
        print(lines[-1], flush=True)
if bench_scan.TIMING_FALLBACKS:
    lines.append(f"timed eagerly (capture failed): {bench_scan.TIMING_FALLBACKS}")
open(f"{out}/maxnreg_backward.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/maxnreg_backward.json", "w"), indent=1)
