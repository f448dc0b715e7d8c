"""The time-last backwards with a gate bias (what the models run), before and after the bias gradient was summed per
group of 8 steps in each thread (`_step_sums`) instead of across the warp each tile, and BD-LRU block size 2's
backward under register caps. Times the backward kernel alone (`time_last_backward` on saved states; CUDA-graph
timing), the gradients of each mode against the first's. `scan_time_last_before.py` is hf_lrnn/scan_time_last.py at
1ee4b0e, loaded as a second module; write it before carrying the tree to a GPU machine (it is not committed):

    git show 1ee4b0e:hf_lrnn/scan_time_last.py > bench_results/probes_2026-12-02d/scan_time_last_before.py
    PYTHONPATH=. python3 bench_results/probes_2026-12-02d/probe_bias_backward.py --out OUT/bias_backward.json
"""

import argparse
import importlib.util
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))

import bench_scan  # noqa: E402
from hf_lrnn import scan_time_last as after  # noqa: E402

BEFORE = os.path.join(HERE, "scan_time_last_before.py")
if not os.path.exists(BEFORE):
    raise SystemExit(f"{BEFORE} is missing: git show 1ee4b0e:hf_lrnn/scan_time_last.py > {BEFORE}")
spec = importlib.util.spec_from_file_location("hf_lrnn.scan_time_last_before", BEFORE)
before = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = before
spec.loader.exec_module(before)

SHAPES = [(8, 2048, 768), (8, 4096, 1024), (4, 4096, 1024), (16, 4096, 1024), (32, 2048, 2048)]


def wave_cap(programs, floor, registers):
    """The largest register cap (a multiple of 8) under which a grid of one-warp programs runs in the fewest waves
    any cap down to `floor` allows, or None where the compiler's `registers` already do."""
    per_sm = -(-programs // 132)

    def waves(r):
        return -(-per_sm // (65536 // (32 * r)))
    fewest = waves(floor)
    if waves(registers) == fewest:
        return None
    return 65536 // (32 * -(-per_sm // fewest)) // 8 * 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bias_backward.json")
    ap.add_argument("--ops", default="bdlru2,hlru2")
    ap.add_argument("--shapes", default=None, help="B,T,D;B,T,D... (default: SHAPES)")
    args = ap.parse_args()
    shapes = SHAPES if args.shapes is None else [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    rows = []
    for op in args.ops.split(","):
        for B, T, D in shapes:
            m = 2
            N = D // m
            if op == "bdlru2":
                gates = torch.randn(B, N, m, m + 1, T, device="cuda", dtype=torch.bfloat16)
                values = torch.randn(B, N, m, T, device="cuda", dtype=torch.bfloat16)
                bias = torch.randn(N, m, m + 1, device="cuda")
                window, programs = False, B * N
            else:
                N = D // m
                gates = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16)
                values = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
                bias = torch.randn(N, m + 1, device="cuda")
                window, programs = True, B * N
            # backward bytes (bench_scan.py's fwd+bwd model less its forward), per channel-step: m + 3 logits, value
            # and state read, the window's or state's gradient read, m + 1 + 1 gradients written
            modes = {"before, no bias": (before, False, None), "before, bias": (before, True, None),
                     "after, no bias": (after, False, None), "after, bias": (after, True, None)}
            if op == "bdlru2":
                modes.update({"after, no bias, cap 128": (after, False, 128),
                              "after, no bias, wave cap": (after, False, wave_cap(programs, 128, 144)),
                              "after, bias, cap 168": (after, True, 168),
                              "after, bias, wave cap": (after, True, wave_cap(programs, 168, 184))})
            reference = {}
            for mode, (module, with_bias, cap) in modes.items():
                grid = module._grid

                def capped(*a, **kw):
                    g, options = grid(*a, **kw)
                    if kw.get("backward") and cap is not None and options.get("SEGMENTS", 1) == 1:
                        options["maxnreg"] = cap
                    return g, options
                module._grid = capped
                b = bias if with_bias else None
                states, final = module.time_last_forward(gates, values, None, "softmax", False, None, b, window)
                torch.manual_seed(1)  # the same output gradients in every mode
                d_states = torch.randn_like(states)

                def backward():
                    return module.time_last_backward(gates, values, states, None, d_states, None, "softmax", None, b,
                                                      window)
                got = [x.float() for x in backward()[:2]] + ([backward()[3]] if with_bias else [])
                key = with_bias
                if key not in reference:
                    reference[key], error = got, 0.0
                else:
                    error = max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(got, reference[key]))
                ms = bench_scan.bench(backward)  # (the first run of the diff column compared other d_states)
                module._grid = grid
                row = dict(op=op, B=B, T=T, D=D, mode=mode, cap=cap, bwd_ms=ms, max_rel_difference=error,
                           timing_fallbacks=list(bench_scan.TIMING_FALLBACKS))
                bench_scan.TIMING_FALLBACKS.clear()
                rows.append(row)
                print(f"{op:6} B{B:<3} T{T:<5} D{D:<5} {programs / 132:5.1f}/SM {mode:26} cap {str(cap):>4} "
                      f"bwd {ms:7.4f} ms  diff {error:.1e}", flush=True)
                states = d_states = None
            gates = values = bias = None
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
