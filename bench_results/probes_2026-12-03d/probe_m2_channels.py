"""Branch m2-segment-channels: H-LRU m = 2's forward on small grids with 1, 2 or 4 channels a program in segments of
a row (M2_SEGMENT_CHANNELS: each warp a run of every channel, so that a warp's fixed costs a step serve more bytes, as
BD-LRU block size 2's do), at the rule's runs and with 1 / 2 / 4 / 8 forced; states against the library's default
(the same arithmetic: expect 0). bf16, softmax gates, CUDA-graph timing, bench_scan.py's byte model. Prepared in the
twentieth session, not yet run.

    PYTHONPATH=. python3 bench_results/probes_2026-12-03c/probe_m2_channels.py --out OUT/m2_channels.json
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

SHAPES = [(1, 16384, 1024), (1, 65536, 1024), (1, 16384, 512), (3, 4096, 512)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="m2_channels.json")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    rows = []
    for B, T, D in SHAPES:
        N = D // 2
        g = torch.randn(B, N, 3, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        reference = None
        for channels in (1, 2, 4):
            for runs in (None, 1, 2, 4, 8):
                scan_time_last.M2_SEGMENT_CHANNELS, scan_time_last.M2_SEGMENTS = channels, runs
                label = f"{channels} channels, {runs or 'rule'} runs"
                try:
                    options = scan_time_last._grid(B, N, T, g.device, order=2, itemsize=2)[1]
                    forward = lambda: scan_time_last.time_last_forward(g, v, None, "softmax", False)  # noqa: E731
                    states = forward()[0].float()
                    fwd = bench_scan.bench(forward)
                except Exception as error:  # reported, not fatal
                    print(f"B{B:<3} T{T:<6} D{D:<5} {label} failed: {str(error)[:300]}", flush=True)
                    rows.append(dict(B=B, T=T, D=D, setting=label, error=str(error)[:500]))
                    continue
                finally:
                    scan_time_last.M2_SEGMENT_CHANNELS, scan_time_last.M2_SEGMENTS = 1, None
                if reference is None:
                    reference = states
                difference = ((states - reference).abs().max() / reference.abs().max()).item()
                row = dict(B=B, T=T, D=D, setting=label, fwd_ms=fwd, max_rel_difference_to_default=difference,
                           fwd_pct_copy=100 * B * T * N * 5 * 2 / (fwd * 1e-3) / 1e12 / copy,
                           options={k: o for k, o in options.items() if isinstance(o, (int, bool, float))})
                rows.append(row)
                print(f"B{B:<3} T{T:<6} D{D:<5} {label:22} fwd {fwd:.4f} ms {row['fwd_pct_copy']:5.1f} %  BC "
                      f"{options['BC']} SEGMENTS {options['SEGMENTS']} STAGES {options['STAGES']}  diff "
                      f"{difference:.1e}", flush=True)
        g = v = states = reference = None
        torch.cuda.empty_cache()
        with open(args.out, "w") as f:
            json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
