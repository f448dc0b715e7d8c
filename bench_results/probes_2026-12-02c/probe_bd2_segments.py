"""BD-LRU block size 2 time-last on small grids (below BD2_SMALL_GRID_BELOW programs per SM): segments of a row by
H-LRU m = 2's rule (16 warps per SM forward, 32 backward; the library's default) against the tile scan
(BD2_SEGMENTS off) and against 2, 4 and 8 runs fixed for both directions (M2_SEGMENTS); bf16, CUDA-graph timing,
bench_scan.py's byte model, each mode's outputs and gradients against the first's.

    PYTHONPATH=. python3 bench_results/probes_2026-12-02c/probe_bd2_segments.py --out OUT/bd2_segments.json
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

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024), (3, 4096, 1024), (1, 16384, 2048)]
# mode: (BD2_SEGMENTS, M2_SEGMENTS)
MODES = {"tile scan": (False, None), "segments": (True, None), "segments-2": (True, 2), "segments-4": (True, 4),
         "segments-8": (True, 8)}


def _outputs_and_gradients(g, v, do):
    out, _ = bdlru_scan_time_last(g, v, backend="triton")
    return (out.detach(),) + torch.autograd.grad(out, (g, v), do)


def run(m, switch, shapes, modes, out):
    """Time every mode of `modes` ({name: (value of scan_time_last.<switch>, M2_SEGMENTS)}) at every shape (B, T,
    D) of BD-LRU block size m, print a row each and save them to `out` (JSON)."""
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    rows = []
    for B, T, D in shapes:
        N = D // m
        g = torch.randn(B, N, m, m + 1, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, N, m, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        tok = B * T * D
        fwd_bytes, fb_bytes = tok * (m + 3) * 2, tok * (3 * m + 8) * 2  # bench_scan.py's, per channel
        reference = None
        for mode, (segments_on, segments) in modes.items():
            setattr(scan_time_last, switch, segments_on)
            scan_time_last.M2_SEGMENTS = segments
            forward = scan_time_last._grid(B, N, T, g.device, order=m, blocked=True)[1]
            backward = scan_time_last._grid(B, N, T, g.device, backward=True, order=m, blocked=True)[1]
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
    with open(out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bd2_segments.json")
    run(2, "BD2_SEGMENTS", SHAPES, MODES, ap.parse_args().out)


if __name__ == "__main__":
    main()
