"""The time-last forwards with their tile loop as `tl.range(..., num_stages=S)` (Triton's software pipeliner: the
loads of the next S - 1 tiles go out asynchronously through shared memory while this tile is scanned) instead of the
library's register prefetch of one tile (m = 1 on small grids, H-LRU m = 2 always, BD-LRU block size 2) or none
(m = 1 on large grids, H-LRU m = 4, BD-LRU block size 4). Each variant is the library's module with one kernel's
loop rewritten (and `_grid`'s PREFETCH off), written next to it as hf_lrnn/_probe_pipe_<variant>.py and imported;
bf16, softmax gates, no initial state, CUDA-graph timing, bench_scan.py's byte model, states against the library's.
probe_m2_prefetch.py (the same session) found S = 3 ahead of the register prefetch at H-LRU m = 2. Eighteenth session;
the variants edit the loops as they were before the pipeline was adopted (probe_m2_prefetch.py's note), so against
today's tree only --library-only runs.

    PYTHONPATH=. python3 bench_results/probes_2026-12-03/probe_pipelined_forwards.py --out OUT/pipelined.json
    PYTHONPATH=. python3 bench_results/probes_2026-12-03/probe_pipelined_forwards.py --library-only \
        --out OUT/pipelined_library.json  # after the change: the library's forwards alone
"""

import argparse
import importlib
import json
import os
import re
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import bench_scan  # noqa: E402
from probe_m2_prefetch import PROLOGUE, EPILOGUE  # noqa: E402

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024), (8, 4096, 1024), (8, 2048, 768), (32, 2048, 2048)]
SOURCE = os.path.join(ROOT, "hf_lrnn", "scan_time_last.py")
# op: (kernel, stages to try); "hlru2" takes probe_m2_prefetch's edit (its register prefetch removed)
OPS = {"hlru1": ("_time_last_fwd_kernel", (3, 4)), "hlru2": ("_time_last_m2_fwd_kernel", (3, 4)),
       "bdlru2": ("_bd2_time_last_fwd_kernel", (3, 4)), "hlru4": ("_time_last_m4_fwd_kernel", (3,)),
       "bdlru4": ("_bd4_time_last_fwd_kernel", (3,))}


def _variant_module(op, stages):
    source = open(SOURCE).read()
    name = f"_probe_pipe_{op}_{stages}"
    if stages:
        kernel = OPS[op][0]
        start = source.index(f"def {kernel}(")
        end = source.index("@triton.jit", start)
        body = source[start:end]
        if op == "hlru2":
            body = body.replace(PROLOGUE, f'''        for t0 in tl.range(0, T, SPAN, num_stages={stages}):
            steps = t0 + lane
            mask = mc[:, None] & (steps < T)
            z1, z2, zg = _load_triple_at(gates, rows, steps, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
            x = _load_values_at(values, rows, steps, mask, T)
''').replace(EPILOGUE, '''        if WRITE_FINAL:
            h1, h2 = final1, final2''')
            assert "z1_next" not in body
        else:
            body, count = re.subn(r"for t0 in range\(([^,]+), ([^,]+), ([A-Z]+)\):",
                                  rf"for t0 in tl.range(\1, \2, \3, num_stages={stages}):", body, count=1)
            assert count == 1, (op, stages)
        source = source[:start] + body + source[end:]
    with open(os.path.join(ROOT, "hf_lrnn", name + ".py"), "w") as f:
        f.write(source)
    module = importlib.import_module("hf_lrnn." + name)
    if stages:  # the pipeliner instead of the register prefetch
        grid = module._grid

        def no_prefetch(*args, **kwargs):
            programs, options = grid(*args, **kwargs)
            if "PREFETCH" in options:
                options["PREFETCH"] = False
            return programs, options
        module._grid = no_prefetch
    return module


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="pipelined.json")
    ap.add_argument("--library-only", action="store_true", help="only the library's kernels (after the session's "
                    "change, which adopted the pipeline): the final forwards")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    variants = [(op, s, _variant_module(op, s)) for op, (_, stages) in OPS.items()
                for s in (0,) + (() if args.library_only else stages)]
    rows = []
    for B, T, D in SHAPES:
        for op in OPS:
            m = int(op[-1])
            N = D // m
            shape = (B, N, m, m + 1, T) if op.startswith("bd") else (B, N, m + 1, T)
            g = torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(*((B, N, m, T) if op.startswith("bd") else (B, N, T)), device="cuda", dtype=torch.bfloat16)
            fwd_bytes = B * T * (D if op.startswith("bd") else N) * (m + 3) * 2
            reference = None
            for variant_op, stages, module in variants:
                if variant_op != op:
                    continue
                states = module.time_last_forward(g, v, None, "softmax", False)[0].float()
                if reference is None:
                    reference, error = states, 0.0
                else:
                    error = ((states - reference).abs().max() / reference.abs().max()).item()
                fwd = bench_scan.bench(lambda: module.time_last_forward(g, v, None, "softmax", False))
                row = dict(B=B, T=T, D=D, op=op, stages=stages, fwd_ms=fwd, max_rel_difference_to_library=error,
                           fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                           timing_fallbacks=list(bench_scan.TIMING_FALLBACKS))
                bench_scan.TIMING_FALLBACKS.clear()
                rows.append(row)
                label = "library" if not stages else f"stages-{stages}"
                print(f"B{B:<3} T{T:<6} D{D:<5} {op:7} {label:9} fwd {fwd:7.4f} ms {row['fwd_pct_copy']:5.1f} %  "
                      f"diff {error:.1e}", flush=True)
            g = v = reference = states = None
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
