"""Blocking of decode_triton's kernels at the benchmark models' shapes (d = 768, bf16, rows 1 and 8): norm_project and
project_rows for TILE x MAX_CHUNK_K x NUM_WARPS (4096-16384, 1024-2048, 4-8), against the previous norm_project (169da3c: 16 features per program,
128-wide steps) and cuBLAS (nn.Linear). Each time is one call inside a CUDA graph of 50 calls (as in a captured decode
step). python decode_kernels.py OUT.json"""
import itertools
import json
import sys

import torch
from torch import nn

import decode_triton_169da3c as old
from hf_lrnn import decode_triton

device = torch.device("cuda")
torch.manual_seed(0)
K = 768
norm = nn.LayerNorm(K).to(device, torch.bfloat16)
shapes = {  # name: (w_a, w_b, bias_b, swiglu) or (weight,) for a plain projection
    "hlru2 value+coef": (384, 1152, True, False),
    "bdlru4 value+coef": (768, 3840, True, False),
    "swiglu gate+up": (2048, 2048, False, True),
    "out 768->768": (768, 768),
    "down 2048->768": (2048, 768),
}


def weight(n, k):
    return (torch.randn(n, k, device=device) * 0.04).to(torch.bfloat16)


def graph_us(fn, calls=50):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return sorted(times)[2]


rows_out = []
with torch.no_grad():
    for rows in (1, 8):
        x = torch.randn(rows, K, device=device, dtype=torch.bfloat16)
        delta = torch.randn(rows, K, device=device, dtype=torch.bfloat16)
        calls = {}
        for name, shape in shapes.items():
            if len(shape) == 4:
                n_a, n_b, has_bias, swiglu = shape
                w_a, w_b = weight(n_a, K), weight(n_b, K)
                bias_b = torch.zeros(n_b, device=device, dtype=torch.bfloat16) if has_bias else None
                args = (x, delta, norm.weight, norm.bias, 1e-5, False, w_a, w_b, bias_b, swiglu)
                calls[name] = (lambda args=args: decode_triton.norm_project_tensors(*args),
                               lambda args=args: old.norm_project_tensors(*args),
                               (n_a + n_b) * K * 2)
            else:
                k_in, n_out = shape
                w = weight(n_out, k_in)
                xin = torch.randn(rows, k_in, device=device, dtype=torch.bfloat16)
                calls[name] = (lambda w=w, xin=xin: decode_triton.project_rows_tensors(xin, w),
                               lambda w=w, xin=xin: torch.nn.functional.linear(xin, w),
                               n_out * k_in * 2)
        for name, (new, reference, nbytes) in calls.items():
            ref_us = graph_us(reference)
            results = []
            for tile, cap, warps in itertools.product((4096, 8192, 16384), (1024, 2048), (4, 8)):
                decode_triton.TILE, decode_triton.MAX_CHUNK_K, decode_triton.NUM_WARPS = tile, cap, warps
                try:
                    results.append((graph_us(new), tile, cap, warps))
                except Exception as error:  # e.g. out of resources
                    results.append((float("inf"), tile, cap, warps))
                    print(f"  {name} tile {tile} cap {cap} warps {warps}: {type(error).__name__}")
            results.sort()
            best = results[0]
            reference_name = "previous kernel" if "coef" in name or "swiglu" in name else "cuBLAS"
            print(f"rows {rows} {name:20s} {reference_name} {ref_us:6.2f} us; best {best[0]:6.2f} us "
                  f"(TILE {best[1]}, MAX_CHUNK_K {best[2]}, warps {best[3]}; {nbytes / best[0] / 1e6:.2f} TB/s); "
                  f"next: " + ", ".join(f"{t:.2f} ({a},{b},{c})" for t, a, b, c in results[1:5]), flush=True)
            rows_out.append(dict(rows=rows, shape=name, reference=reference_name, reference_us=ref_us,
                                 bytes=nbytes, results=results))
json.dump(rows_out, open(sys.argv[1], "w"), indent=1)
