"""BD-LRU block size 4 time-last: whole rows, one warp each (the library's default, BD4_SEGMENTS off), against
segments of a row by the rule (BD4_WARPS_PER_SM) and against 2, 4 and 8 runs fixed (M2_SEGMENTS), forward and the
adjoint scan alike; bf16, CUDA-graph timing, bench_scan.py's byte model, each mode's outputs and gradients against
the first's. Written in the sixteenth session, not yet run (its device time was spent).

    PYTHONPATH=. python3 bench_results/probes_2026-12-02c/probe_bd4_segments.py --out OUT/bd4_segments.json
"""

import argparse
import json
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import bench_scan  # noqa: E402
from hf_lrnn import scan_time_last  # noqa: E402
from hf_lrnn.ops import bdlru_scan_time_last  # noqa: E402

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024), (4, 4096, 1024), (8, 4096, 1024)]
# mode: (BD4_SEGMENTS, M2_SEGMENTS)
MODES = {"rows": (False, None), "segments": (True, None), "segments-2": (True, 2), "segments-4": (True, 4),
         "segments-8": (True, 8)}


def _outputs_and_gradients(g, v, do):
    out, _ = bdlru_scan_time_last(g, v, backend="triton")
    return (out.detach(),) + torch.autograd.grad(out, (g, v), do)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bd4_segments.json")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    m, rows = 4, []
    for B, T, D in SHAPES:
        N = D // m
        g = torch.randn(B, N, m, m + 1, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, N, m, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        tok = B * T * D
        fwd_bytes, fb_bytes = tok * (m + 3) * 2, tok * (3 * m + 8) * 2  # bench_scan.py's, per channel
        reference = None
        for mode, (segments_on, segments) in MODES.items():
            scan_time_last.BD4_SEGMENTS, scan_time_last.M2_SEGMENTS = segments_on, segments
            forward = scan_time_last._grid(B, N, T, g.device, order=4, blocked=True)[1]
            backward = scan_time_last._grid(B, N, T, g.device, backward=True, order=4, blocked=True)[1]
            got = [x.float() for x in _outputs_and_gradients(g, v, do)]
            if reference is None:
                reference, error = got, 0.0
            else:
                error = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference))
            with torch.no_grad():
                fwd = bench_scan.bench(lambda: bdlru_scan_time_last(g, v, backend="triton"))

            def fb():
                bdlru_scan_time_last(g, v, backend="triton")[0].backward(do)
            fbt = bench_scan.bench(fb, grad_to_none=[g, v])
            row = dict(B=B, T=T, D=D, m=m, mode=mode, forward_segments=forward["SEGMENTS"],
                       backward_segments=backward["SEGMENTS"], programs_per_sm=B * N / 132, fwd_ms=fwd,
                       fwdbwd_ms=fbt, max_rel_difference_to_first=error,
                       timing_fallbacks=list(bench_scan.TIMING_FALLBACKS),
                       fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                       fwdbwd_pct_copy=100 * fb_bytes / (fbt * 1e-3) / 1e12 / copy)
            bench_scan.TIMING_FALLBACKS.clear()
            rows.append(row)
            print(f"B{B:<3} T{T:<6} D{D:<5} {mode:11} (S {forward['SEGMENTS']}/{backward['SEGMENTS']}) fwd "
                  f"{fwd:7.4f} ms {row['fwd_pct_copy']:5.1f} %  f+b {fbt:7.4f} ms {row['fwdbwd_pct_copy']:5.1f} %  "
                  f"diff {error:.1e}", flush=True)
        g = v = do = reference = got = None
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
