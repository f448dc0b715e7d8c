"""The time-last backwards' tile loops software-pipelined (`tl.range(..., num_stages=S)`, BACKWARD_STAGES) as the
forwards' have been since the eighteenth session: each backward alone (CUDA-graph timing) with S = 1 (the loops as
they were), 2 and 3 stages, at the table's shapes and two more; forward+backward % of copy from the default forward
plus that backward, under bench_scan.py's byte model; every gradient against S = 1's (the same arithmetic: expect
0). bf16, softmax gates, no initial state. Twentieth session.

It needs the probe's form of the kernels, in which every backward takes BACKWARD_STAGES (the library kept it for
BD-LRU block size 2 only, as BD2_BACKWARD_STAGES): on f8d71be,

    git apply bench_results/probes_2026-12-03c/backward_stages.patch
    PYTHONPATH=. python3 bench_results/probes_2026-12-03c/probe_backward_stages.py --out OUT/stages.json
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
OPS = ["hlru1", "hlru2", "bdlru2", "hlru4", "bdlru4"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="stages.json")
    ap.add_argument("--stages", default="1,2,3")
    ap.add_argument("--ops", default=",".join(OPS))
    args = ap.parse_args()
    if not hasattr(scan_time_last, "BACKWARD_STAGES"):  # else every "stages" row would time the library's defaults
        sys.exit("probe_backward_stages.py needs backward_stages.patch applied on f8d71be (see its docstring)")
    stages_tried = [int(s) for s in args.stages.split(",")]
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    rows = []
    for B, T, D in SHAPES:
        for op in args.ops.split(","):
            m = int(op[-1])
            blocked = op.startswith("bd")
            N = D // m
            g = torch.randn(*((B, N, m, m + 1, T) if blocked else (B, N, m + 1, T)), device="cuda",
                            dtype=torch.bfloat16)
            v = torch.randn(*((B, N, m, T) if blocked else (B, N, T)), device="cuda", dtype=torch.bfloat16)
            tok = B * T * (D if blocked else N)
            fb_bytes = tok * (3 * m + 8) * 2
            with torch.no_grad():
                states, _ = scan_time_last.time_last_forward(g, v, None, "softmax", False)
                fwd = bench_scan.bench(lambda: scan_time_last.time_last_forward(g, v, None, "softmax", False))
            dy = torch.randn_like(states)
            reference = None
            for stages in stages_tried:
                scan_time_last.BACKWARD_STAGES = stages
                run = lambda: scan_time_last.time_last_backward(g, v, states, None, dy, None, "softmax")  # noqa: E731
                try:
                    d_gates, d_values, _, _ = run()
                    bwd = bench_scan.bench(run)
                except Exception as error:  # e.g. a launch past the shared memory: reported, not fatal
                    print(f"B{B:<3} T{T:<6} D{D:<5} {op:7} stages {stages} failed: {str(error)[:200]}", flush=True)
                    rows.append(dict(B=B, T=T, D=D, op=op, stages=stages, error=str(error)[:500]))
                    continue
                finally:
                    scan_time_last.BACKWARD_STAGES = 1
                grads = torch.cat([d_gates.float().flatten(), d_values.float().flatten()])
                if reference is None:
                    reference = grads
                difference = (grads - reference).abs().max().item()
                row = dict(B=B, T=T, D=D, op=op, stages=stages, fwd_ms=fwd, bwd_ms=bwd,
                           fwdbwd_pct_copy=100 * fb_bytes / ((fwd + bwd) * 1e-3) / 1e12 / copy,
                           max_abs_difference_to_stages_1=difference,
                           timing_fallbacks=list(bench_scan.TIMING_FALLBACKS))
                bench_scan.TIMING_FALLBACKS.clear()
                rows.append(row)
                print(f"B{B:<3} T{T:<6} D{D:<5} {op:7} stages {stages}  fwd {fwd:.4f}  bwd {bwd:.4f} ms  "
                      f"f+b {row['fwdbwd_pct_copy']:5.1f} % of copy  diff {difference:.1e}", flush=True)
            g = v = states = dy = reference = grads = d_gates = d_values = None
            torch.cuda.empty_cache()
            with open(args.out, "w") as f:  # after every op: a run cut short keeps what it measured
                json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
