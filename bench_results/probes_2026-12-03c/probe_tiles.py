"""Two tile probes. (1) H-LRU m = 4's tiles with 16 steps a thread (512-step tiles: two groups of 8 composed in each
thread before the scan across the warp, so the 32-lane scan of the 20-component maps serves twice the steps) against
the library's 256, now that the forwards are software-pipelined: forward and backward alone (CUDA-graph timing), %
of copy under bench_scan.py's byte model, the windows and gradients against the default tile's. (2) H-LRU m = 2's
forward on small grids (segments of a row) with runs of 512 and 1024 steps a warp (16 / 32 steps a thread: the runs'
join across the warps once per 2 / 4 times the steps) against the library's 256, at the rule's number of runs and
with 2 and 8 forced. bf16, softmax gates. Twentieth session.

    PYTHONPATH=. python3 bench_results/probes_2026-12-03c/probe_tiles.py --out OUT/tiles.json
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

SHAPES = [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048), (2, 8192, 1024), (8, 2048, 768)]
TILES = [("BT256 BC2", {"BC": 2, "BT": 256, "num_warps": 2}), ("BT512 BC2", {"BC": 2, "BT": 512, "num_warps": 2}),
         ("BT512 BC1", {"BC": 1, "BT": 512, "num_warps": 1})]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tiles.json")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    rows, default = [], dict(scan_time_last.M4_TILE)
    for B, T, D in SHAPES:
        N = D // 4
        g = torch.randn(B, N, 5, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        tok = B * T * N
        reference = None
        for label, tile in TILES:
            scan_time_last.M4_TILE = tile
            try:
                with torch.no_grad():
                    forward = lambda: scan_time_last.time_last_forward(g, v, None, "softmax", False)  # noqa: E731
                    states = forward()[0]
                    fwd = bench_scan.bench(forward)
                    seed = torch.Generator("cuda").manual_seed(0)  # the same gradient for every tile
                    dy = torch.randn(states.shape, device="cuda", generator=seed).to(states.dtype)
                    backward = lambda: scan_time_last.time_last_backward(g, v, states, None, dy, None,  # noqa: E731
                                                                         "softmax")
                    d_gates, d_values, _, _ = backward()
                    bwd = bench_scan.bench(backward)
            except Exception as error:  # reported, not fatal
                print(f"B{B:<3} T{T:<6} D{D:<5} {label} failed: {str(error)[:300]}", flush=True)
                rows.append(dict(B=B, T=T, D=D, tile=label, error=str(error)[:500]))
                continue
            finally:
                scan_time_last.M4_TILE = default
            got = (states.float(), d_gates.float(), d_values.float())
            if reference is None:
                reference = got
            difference = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference))
            row = dict(B=B, T=T, D=D, tile=label, fwd_ms=fwd, bwd_ms=bwd,
                       fwd_pct_copy=100 * tok * 7 * 2 / (fwd * 1e-3) / 1e12 / copy,
                       fwdbwd_pct_copy=100 * tok * 20 * 2 / ((fwd + bwd) * 1e-3) / 1e12 / copy,
                       max_rel_difference_to_default=difference)
            rows.append(row)
            print(f"B{B:<3} T{T:<6} D{D:<5} {label}  fwd {fwd:.4f} ms {row['fwd_pct_copy']:5.1f} %  bwd {bwd:.4f} ms  "
                  f"f+b {row['fwdbwd_pct_copy']:5.1f} %  diff {difference:.1e}", flush=True)
        g = v = states = dy = reference = got = d_gates = d_values = None
        torch.cuda.empty_cache()
        with open(args.out, "w") as f:
            json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)
    m2_small_grids(copy, rows, args.out)


def m2_small_grids(copy, rows, out):
    default = dict(scan_time_last.IN_THREADS_TILE)
    for B, T, D in ((1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024)):
        N = D // 2
        g = torch.randn(B, N, 3, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        reference = None
        for steps in (256, 512, 1024):
            for runs in (None, 2, 8):
                scan_time_last.IN_THREADS_TILE = dict(default, BT=steps)
                scan_time_last.M2_SEGMENTS = runs
                label = f"m2 runs of {steps} steps, {runs or 'rule'} runs"
                try:
                    with torch.no_grad():
                        options = scan_time_last._grid(B, N, T, g.device, order=2, itemsize=2)[1]
                        forward = lambda: scan_time_last.time_last_forward(g, v, None, "softmax", False)  # noqa
                        states = forward()[0].float()
                        fwd = bench_scan.bench(forward)
                except Exception as error:  # reported, not fatal
                    print(f"B{B:<3} T{T:<6} D{D:<5} {label} failed: {str(error)[:300]}", flush=True)
                    rows.append(dict(B=B, T=T, D=D, tile=label, error=str(error)[:500]))
                    continue
                finally:
                    scan_time_last.IN_THREADS_TILE, scan_time_last.M2_SEGMENTS = default, None
                if reference is None:
                    reference = states
                difference = ((states - reference).abs().max() / reference.abs().max()).item()
                row = dict(B=B, T=T, D=D, tile=label, fwd_ms=fwd, segments=options.get("SEGMENTS"),
                           stages=options.get("STAGES"), fwd_pct_copy=100 * B * T * N * 5 * 2 / (fwd * 1e-3) / 1e12 / copy,
                           max_rel_difference_to_default=difference)
                rows.append(row)
                print(f"B{B:<3} T{T:<6} D{D:<5} {label:32} fwd {fwd:.4f} ms {row['fwd_pct_copy']:5.1f} %  SEGMENTS "
                      f"{options.get('SEGMENTS')} STAGES {options.get('STAGES')}  diff {difference:.1e}", flush=True)
        g = v = states = reference = None
        torch.cuda.empty_cache()
        with open(out, "w") as f:
            json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
