"""H-LRU m = 2's time-last forward (and backward) with deeper load pipelines: the library's kernel (the next tile's
logits and values loaded in registers while this one is scanned) against (a) two tiles ahead in registers, (b) no
register prefetch but the loop as `tl.range(..., num_stages=S)` (Triton's pipeliner, S = 2, 3), and the backward's
loop likewise with S = 3 (it prefetches nothing today). Each variant is the library's module with the m = 2 kernels'
loop rewritten, written next to it as hf_lrnn/_probe_m2_<variant>.py and imported; bf16, CUDA-graph timing,
bench_scan.py's byte model, outputs (and gradients) against the library's. Eighteenth session; the edits match the
library's loops before the pipeline was adopted (794e0a2 with H-LRU m = 2's tile scan removed, the same commit's
parent state), so against today's tree they no longer apply.

    PYTHONPATH=. python3 bench_results/probes_2026-12-03/probe_m2_prefetch.py --out OUT/m2_prefetch.json
"""

import argparse
import importlib
import json
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import bench_scan  # noqa: E402

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024), (8, 4096, 1024), (8, 2048, 768), (32, 2048, 2048)]
SOURCE = os.path.join(ROOT, "hf_lrnn", "scan_time_last.py")

PROLOGUE = '''        steps = lane
        mask = mc[:, None] & (steps < T)
        z1, z2, zg = _load_triple_at(gates, rows, steps, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
        x = _load_values_at(values, rows, steps, mask, T)
        for t0 in range(0, T, SPAN):
            steps = t0 + lane
            mask = mc[:, None] & (steps < T)
            mask_next = mc[:, None] & (steps + SPAN < T)
            z1_next, z2_next, zg_next = _load_triple_at(gates, rows, steps + SPAN, mask_next, T, bias1, bias2,
                                                        bias_gate, HAS_BIAS)
            x_next = _load_values_at(values, rows, steps + SPAN, mask_next, T)
'''
EPILOGUE = '''            z1, z2, zg, x = z1_next, z2_next, zg_next, x_next
        if WRITE_FINAL:
            h1, h2 = final1, final2'''
BACKWARD_LOOP = '''        num_tiles = tl.cdiv(T, SPAN)
        for r in range(0, num_tiles):
            t0 = (num_tiles - 1 - r) * SPAN'''


def _stages_forward(stages):
    return (PROLOGUE, f'''        for t0 in tl.range(0, T, SPAN, num_stages={stages}):
            steps = t0 + lane
            mask = mc[:, None] & (steps < T)
            z1, z2, zg = _load_triple_at(gates, rows, steps, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
            x = _load_values_at(values, rows, steps, mask, T)
'''), (EPILOGUE, '''        if WRITE_FINAL:
            h1, h2 = final1, final2''')


TWO_AHEAD = [(PROLOGUE, '''        steps = lane
        mask = mc[:, None] & (steps < T)
        z1, z2, zg = _load_triple_at(gates, rows, steps, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
        x = _load_values_at(values, rows, steps, mask, T)
        mask = mc[:, None] & (steps + SPAN < T)
        n1, n2, ng = _load_triple_at(gates, rows, steps + SPAN, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
        xn = _load_values_at(values, rows, steps + SPAN, mask, T)
        for t0 in range(0, T, SPAN):
            steps = t0 + lane
            mask = mc[:, None] & (steps < T)
            mask_next = mc[:, None] & (steps + 2 * SPAN < T)
            z1_next, z2_next, zg_next = _load_triple_at(gates, rows, steps + 2 * SPAN, mask_next, T, bias1, bias2,
                                                        bias_gate, HAS_BIAS)
            x_next = _load_values_at(values, rows, steps + 2 * SPAN, mask_next, T)
'''), (EPILOGUE, '''            z1, z2, zg, x = n1, n2, ng, xn
            n1, n2, ng, xn = z1_next, z2_next, zg_next, x_next
        if WRITE_FINAL:
            h1, h2 = final1, final2''')]

VARIANTS = {
    "library": [],
    "two-ahead": TWO_AHEAD,
    "stages-2": list(_stages_forward(2)),
    "stages-3": list(_stages_forward(3)),
    "bwd-stages-3": [(BACKWARD_LOOP, '''        num_tiles = tl.cdiv(T, SPAN)
        for r in tl.range(0, num_tiles, num_stages=3):
            t0 = (num_tiles - 1 - r) * SPAN''')],
}


def _variant_module(name, edits):
    source = open(SOURCE).read()
    start = source.index("def _time_last_m2_fwd_kernel")
    end = source.index("def _bd2_tile_maps") if "def _bd2_tile_maps" in source else len(source)
    head, body, tail = source[:start], source[start:end], source[end:]
    for old, new in edits:
        assert body.count(old) == 1, (name, old[:60], body.count(old))
        body = body.replace(old, new)
    module = "_probe_m2_" + name.replace("-", "_")
    with open(os.path.join(ROOT, "hf_lrnn", module + ".py"), "w") as f:
        f.write(head + body + tail)
    return importlib.import_module("hf_lrnn." + module)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="m2_prefetch.json")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    modules = {name: _variant_module(name, edits) for name, edits in VARIANTS.items()}
    m, rows = 2, []
    for B, T, D in SHAPES:
        N = D // m
        g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn_like(v)
        tok = B * T * N
        fwd_bytes, bwd_bytes = tok * (m + 3) * 2, tok * (2 * m + 5) * 2
        reference = None
        for name, module in modules.items():
            def forward():
                return module.time_last_forward(g, v, None, "softmax", False)

            def backward(states=forward()[0]):
                return module.time_last_backward(g, v, states, None, dy, None, "softmax")

            got = [forward()[0].float()] + [x.float() for x in backward()[:2]]
            if reference is None:
                reference, error = got, 0.0
            else:
                error = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference))
            fwd, bwd = bench_scan.bench(forward), bench_scan.bench(backward)
            row = dict(B=B, T=T, D=D, m=m, variant=name, programs_per_sm=B * N / 132, fwd_ms=fwd, bwd_ms=bwd,
                       max_rel_difference_to_library=error, timing_fallbacks=list(bench_scan.TIMING_FALLBACKS),
                       fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                       bwd_pct_copy=100 * bwd_bytes / (bwd * 1e-3) / 1e12 / copy)
            bench_scan.TIMING_FALLBACKS.clear()
            rows.append(row)
            print(f"B{B:<3} T{T:<6} D{D:<5} {name:13} fwd {fwd:7.4f} ms {row['fwd_pct_copy']:5.1f} %  "
                  f"bwd {bwd:7.4f} ms {row['bwd_pct_copy']:5.1f} %  diff {error:.1e}", flush=True)
        g = v = dy = reference = got = None
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
