"""H-LRU m = 4 time-last forward on small grids: rows in chunks of one tile joined by the look-back (the library's
default below M4_CHUNKED_BELOW programs per SM) against whole rows whose tiles are M4_SEGMENTS runs of M4_TILE's 256
steps, a warp each (2, 4, 8), and plain whole rows; bf16, CUDA-graph timing, bench_scan.py's byte model, each mode's
outputs and gradients against the first's. Written in the fifteenth session, run in the sixteenth
(m4_segments.txt), after which M4_SEGMENTS was removed.

    PYTHONPATH=. python3 bench_results/probes_2026-12-02b/probe_m4_segments.py --out OUT/m4_segments.json
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
from hf_lrnn.ops import hlru_scan_time_last  # noqa: E402

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024), (4, 4096, 1024)]
# mode: (M4_SEGMENTS, M4_CHUNKED_BELOW)
MODES = {"chunks": (None, 3), "segments-2": (2, 3), "segments-4": (4, 3), "segments-8": (8, 3), "rows": (None, 0)}


def _outputs_and_gradients(g, v, do):
    """States and the gradients of g and v, nothing of the autograd graph left alive (a live graph breaks the
    captured backwards)."""
    out, _ = hlru_scan_time_last(g, v, backend="triton")
    return (out.detach(),) + torch.autograd.grad(out, (g, v), do)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="m4_segments.json")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    m, rows = 4, []
    for B, T, D in SHAPES:
        N = D // m
        g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        tok = B * T * N
        fwd_bytes, fb_bytes = tok * (m + 3) * 2, tok * (3 * m + 8) * 2
        reference = None
        for mode, (segments, chunked_below) in MODES.items():
            scan_time_last.M4_SEGMENTS, scan_time_last.M4_CHUNKED_BELOW = segments, chunked_below
            got = [x.float() for x in _outputs_and_gradients(g, v, do)]
            if reference is None:
                reference, error = got, 0.0
            else:
                error = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference))
            with torch.no_grad():
                fwd = bench_scan.bench(lambda: hlru_scan_time_last(g, v, backend="triton"))

            def fb():
                hlru_scan_time_last(g, v, backend="triton")[0].backward(do)
            fbt = bench_scan.bench(fb, grad_to_none=[g, v])
            row = dict(B=B, T=T, D=D, m=m, mode=mode, programs_per_sm=B * N / 2 / 132, fwd_ms=fwd, fwdbwd_ms=fbt,
                       max_rel_difference_to_chunks=error, timing_fallbacks=list(bench_scan.TIMING_FALLBACKS),
                       fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                       fwdbwd_pct_copy=100 * fb_bytes / (fbt * 1e-3) / 1e12 / copy)
            bench_scan.TIMING_FALLBACKS.clear()
            rows.append(row)
            print(f"B{B:<3} T{T:<6} D{D:<5} {mode:11} fwd {fwd:7.4f} ms {row['fwd_pct_copy']:5.1f} %  "
                  f"f+b {fbt:7.4f} ms {row['fwdbwd_pct_copy']:5.1f} %  diff {error:.1e}", flush=True)
        g = v = do = reference = got = None
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
