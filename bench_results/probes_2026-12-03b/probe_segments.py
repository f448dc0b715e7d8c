"""The small grids' segments of a row again, now that the forwards are software-pipelined (eighteenth session): the
rules that choose how many runs (a warp each) a row's tile splits into were fitted with the register prefetch (H-LRU
m = 2 and BD-LRU block size 2: M2_WARPS_PER_SM = 16 warps per SM) or with no prefetch (BD-LRU block size 4:
BD4_WARPS_PER_SM = 8), and H-LRU m = 4's choice between chunks joined by a look-back and whole rows
(M4_CHUNKED_BELOW = 3 programs per SM) with unpipelined rows; H-LRU m = 4's forward in runs (M4_SEGMENTS, back in
this session, pipelined now) against both. Each forward runs with the runs forced (M2_SEGMENTS,
which `_m2_segments` returns for every op) and H-LRU m = 4 with chunks and with rows; bf16, softmax gates, no initial
state, CUDA-graph timing, bench_scan.py's byte model, states against the library's default. Nineteenth session.

    PYTHONPATH=. python3 bench_results/probes_2026-12-03b/probe_segments.py --out OUT/segments.json
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

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (4, 4096, 1024)]
# op: the settings tried, each (label, {module constant: value}); "default" is the library's rule
SETTINGS = {
    "hlru2": [("default", {})] + [(f"runs-{s}", {"M2_SEGMENTS": s}) for s in (1, 2, 4, 8, 16)],
    "bdlru2": [("default", {})] + [(f"runs-{s}", {"M2_SEGMENTS": s}) for s in (1, 2, 4, 8, 16)],
    "bdlru4": [("default", {})] + [(f"runs-{s}", {"M2_SEGMENTS": s}) for s in (1, 2, 4, 8, 16)],
    "hlru4": [("default", {}), ("rows", {"M4_CHUNKED_BELOW": 0}), ("chunks", {"M4_CHUNKED_BELOW": 10 ** 6})]
    + [(f"runs-{s}", {"M4_SEGMENTS": True, "M2_SEGMENTS": s, "M4_CHUNKED_BELOW": 10 ** 6}) for s in (2, 4, 8, 16)],
}


def _forward(op, g, v, settings):
    saved = {name: getattr(scan_time_last, name) for name in settings}
    for name, value in settings.items():
        setattr(scan_time_last, name, value)
    try:
        _, options = scan_time_last._grid(g.shape[0], g.shape[1], g.shape[-1], g.device, order=int(op[-1]),
                                          blocked=op.startswith("bd"), itemsize=2)
        run = lambda: scan_time_last.time_last_forward(g, v, None, "softmax", False)  # noqa: E731
        states = run()[0].float()
        return states, bench_scan.bench(run), options
    finally:
        for name, value in saved.items():
            setattr(scan_time_last, name, value)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="segments.json")
    ap.add_argument("--defaults-only", action="store_true", help="only the library's rule (after adopting a setting)")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"copy {copy:.2f} TB/s, {sms} SMs", flush=True)
    rows = []
    for B, T, D in SHAPES:
        for op, settings in SETTINGS.items():
            m = int(op[-1])
            N = D // m
            blocked = op.startswith("bd")
            g = torch.randn(*((B, N, m, m + 1, T) if blocked else (B, N, m + 1, T)), device="cuda",
                            dtype=torch.bfloat16)
            v = torch.randn(*((B, N, m, T) if blocked else (B, N, T)), device="cuda", dtype=torch.bfloat16)
            fwd_bytes = B * T * D * (m + 3) * 2 if blocked else B * T * N * (m + 3) * 2
            reference = None
            for label, setting in settings[:1] if args.defaults_only else settings:
                try:
                    states, fwd, options = _forward(op, g, v, setting)
                except Exception as error:  # e.g. a launch past the shared memory: reported, not fatal
                    print(f"B{B:<3} T{T:<6} D{D:<5} {op:7} {label:9} failed: {str(error)[:200]}", flush=True)
                    rows.append(dict(B=B, T=T, D=D, op=op, setting=label, error=str(error)[:500]))
                    continue
                if reference is None:
                    reference, difference = states, 0.0
                else:
                    difference = ((states - reference).abs().max() / reference.abs().max()).item()
                row = dict(B=B, T=T, D=D, op=op, setting=label, fwd_ms=fwd, max_rel_difference_to_default=difference,
                           fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                           options={k: v for k, v in options.items() if isinstance(v, (int, bool, float))},
                           timing_fallbacks=list(bench_scan.TIMING_FALLBACKS))
                bench_scan.TIMING_FALLBACKS.clear()
                rows.append(row)
                print(f"B{B:<3} T{T:<6} D{D:<5} {op:7} {label:9} fwd {fwd:7.4f} ms {row['fwd_pct_copy']:5.1f} %  "
                      f"diff {difference:.1e}  SEGMENTS {options.get('SEGMENTS', '-')} STAGES "
                      f"{options.get('STAGES', '-')} num_warps {options['num_warps']} CHUNKED {options.get('CHUNKED', '-')}",
                      flush=True)
            g = v = reference = states = None
            torch.cuda.empty_cache()
            with open(args.out, "w") as f:  # after every op: a run cut short keeps what it measured
                json.dump(dict(copy_TBps=copy, sms=sms, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
