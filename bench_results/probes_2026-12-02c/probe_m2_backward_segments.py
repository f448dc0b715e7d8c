"""H-LRU m = 2 time-last on small grids: the backward in segments of a row (`_segment_carries`, the library's
default where `_m2_segments` gives 2 runs or more) against the tile scan's backward (M2_BACKWARD_SEGMENTS off), and
both directions with 2, 4 and 8 runs fixed (M2_SEGMENTS); bf16, CUDA-graph timing, bench_scan.py's byte model, each
mode's outputs and gradients against the first's.

    PYTHONPATH=. python3 bench_results/probes_2026-12-02c/probe_m2_backward_segments.py --out OUT/m2_bwd_segments.json
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

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024), (1, 16384, 2048), (3, 4096, 512)]
# --rule: the backward's warps-per-SM rule against the tile scan, on small grids of 512 to 2048 rows
RULE_SHAPES = [(1, 16384, 1024), (3, 4096, 512), (2, 8192, 1024), (3, 4096, 1056), (4, 4096, 1024), (1, 65536, 1024)]
RULE_MODES = ("tile-scan bwd", "segments")
# mode: (M2_SEGMENTS, M2_BACKWARD_SEGMENTS, the one-wave register cap of `_backward_register_cap`)
MODES = {"tile-scan bwd": (None, False, True), "segments": (None, True, True), "segments nocap": (None, True, False),
         "segments-2": (2, True, True), "segments-4": (4, True, True), "segments-8": (8, True, True)}


def _outputs_and_gradients(g, v, do):
    """States and the gradients of g and v, nothing of the autograd graph left alive (a live graph breaks the
    captured backwards)."""
    out, _ = hlru_scan_time_last(g, v, backend="triton")
    return (out.detach(),) + torch.autograd.grad(out, (g, v), do)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="m2_bwd_segments.json")
    ap.add_argument("--rule", action="store_true")
    args = ap.parse_args()
    shapes, modes = (RULE_SHAPES, {k: MODES[k] for k in RULE_MODES}) if args.rule else (SHAPES, MODES)
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    m, rows = 2, []
    register_cap = scan_time_last._backward_register_cap
    for B, T, D in shapes:
        N = D // m
        g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        tok = B * T * N
        fwd_bytes, fb_bytes = tok * (m + 3) * 2, tok * (3 * m + 8) * 2
        reference = None
        for mode, (segments, backward_segments, capped) in modes.items():
            scan_time_last.M2_SEGMENTS, scan_time_last.M2_BACKWARD_SEGMENTS = segments, backward_segments
            scan_time_last._backward_register_cap = register_cap if capped else lambda *a, **k: None
            options = scan_time_last._grid(B, N, T, g.device, backward=True, order=2)[1]
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
            row = dict(B=B, T=T, D=D, m=m, mode=mode, backward_segments=options["SEGMENTS"],
                       backward_maxnreg=options.get("maxnreg"),
                       programs_per_sm=B * N / 132, fwd_ms=fwd, fwdbwd_ms=fbt,
                       max_rel_difference_to_first=error, timing_fallbacks=list(bench_scan.TIMING_FALLBACKS),
                       fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                       fwdbwd_pct_copy=100 * fb_bytes / (fbt * 1e-3) / 1e12 / copy)
            bench_scan.TIMING_FALLBACKS.clear()
            rows.append(row)
            print(f"B{B:<3} T{T:<6} D{D:<5} {mode:14} (bwd S {options['SEGMENTS']} maxnreg {options.get('maxnreg')}) fwd {fwd:7.4f} ms "
                  f"{row['fwd_pct_copy']:5.1f} %  f+b {fbt:7.4f} ms {row['fwdbwd_pct_copy']:5.1f} %  "
                  f"diff {error:.1e}", flush=True)
        g = v = do = reference = got = None
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
