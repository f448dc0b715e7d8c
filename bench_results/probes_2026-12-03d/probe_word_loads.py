"""Branch bd-word-loads: BD-LRU's per-thread [B, T, N] kernels (block sizes 4 and 8) loading the bf16 logits as
8-byte words against one logit a load (WORD_LOADS), in the same process, alternating rounds, at the table's shapes.
Forward and forward+backward, bf16, softmax gates, CUDA-graph timing, bench_scan.py's byte model; outputs and
gradients of the two compared (expect bit-equality). Prepared in the twenty-first session, not yet run.

    PYTHONPATH=. python3 bench_results/probes_2026-12-03d/probe_word_loads.py --out OUT/word_loads.json
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
from hf_lrnn import scan_triton  # noqa: E402

SHAPES = [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)]


def _randn(shape):
    return torch.randn(shape, generator=GENERATOR).to(device="cuda", dtype=torch.bfloat16)


GENERATOR = torch.Generator().manual_seed(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="word_loads.json")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--m", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 1, 32], help="the shapes' B (of SHAPES)")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    rows = []
    for m in args.m:
        for B, T, D in [shape for shape in SHAPES if shape[0] in args.batches]:
            # inputs from a CPU generator: a graph capture that fails (timed eagerly, printed) leaves the CUDA one
            # unusable ("Offset increment outside graph capture")
            g, v, channels = _randn((B, T, D // m, m, m + 1)), _randn((B, T, D // m, m)), D
            d_out = _randn(v.shape)
            fwd_bytes, fb_bytes = B * T * channels * (m + 3) * 2, B * T * channels * (3 * m + 8) * 2
            softmax = scan_triton._ACT_ID["softmax"]

            # the host functions themselves, no autograd: a captured backward() failed to capture after the first
            # (cudaErrorStreamCaptureInvalidated, 2026-12-03), and timed eagerly it is mostly the engine's host time
            def forward():
                return scan_triton.scan_forward(True, g, v, None, softmax, False, None, None)[0]

            def fb():
                scan_triton.scan_backward(True, g, v, forward(), None, d_out, None, softmax, None, None)

            times, outputs = {True: [], False: []}, {}
            for _ in range(args.rounds):
                for words in (True, False):
                    scan_triton.WORD_LOADS = words
                    fwd = bench_scan.bench(forward)
                    both = bench_scan.bench(fb)
                    times[words].append((fwd, both))
                    states = forward()
                    d_gates, d_values, _ = scan_triton.scan_backward(True, g, v, states, None, d_out, None, softmax,
                                                                     None, None)
                    outputs[words] = (states, d_gates, d_values)
            scan_triton.WORD_LOADS = True
            equal = max((a.float() - b.float()).abs().max().item() for a, b in zip(outputs[True], outputs[False]))
            for words in (True, False):
                fwd, both = min(t[0] for t in times[words]), min(t[1] for t in times[words])
                row = dict(op="bdlru", m=m, B=B, T=T, D=D, words=words, fwd_ms=fwd, fwdbwd_ms=both, largest_difference=equal,
                           fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                           fwdbwd_pct_copy=100 * fb_bytes / (both * 1e-3) / 1e12 / copy)
                rows.append(row)
                print(f"bdlru m{m} B{B:<2} T{T:<5} D{D:<4} {'words ' if words else 'logits'}  fwd {fwd:.4f} ms "
                      f"{row['fwd_pct_copy']:5.1f} %  fwd+bwd {both:.4f} ms {row['fwdbwd_pct_copy']:5.1f} %  "
                      f"largest difference {equal:.2e}", flush=True)
            for fallback in bench_scan.TIMING_FALLBACKS:
                print("timed eagerly:", fallback, flush=True)
            bench_scan.TIMING_FALLBACKS.clear()
            g = v = d_out = None
            torch.cuda.empty_cache()
            with open(args.out, "w") as f:
                json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
