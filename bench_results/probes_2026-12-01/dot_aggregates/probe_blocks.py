"""BD-LRU m = 16 on the [B, T, N] tile kernels: blocks per program (BLOCK) and warps of the main (NVP = 1) and
aggregate (NVP = 32, tl.dot "ieee") phases, sequential and chunks of 128. Usage: python probe_blocks.py OUT"""
import json
import sys

import torch

from hf_lrnn import scan_triton as st

out_dir = sys.argv[1]
rows, lines = [], []
m = 16
st._AGGREGATE_DOT_PRECISION = "ieee"


def say(line):
    print(line, flush=True)
    lines.append(line)


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def launch_shape(main, agg):
    """Patch `_block` / `_num_warps`: (BLOCK, warps) of the main phase and of the aggregate phase."""
    st._block = lambda blocked, m_, nvp, N: (main if nvp == 1 else agg)[0]
    st._num_warps = lambda blk, blocked, m_, nvp: (main if nvp == 1 else agg)[1]


seq_shapes = [(1, 1), (1, 2), (1, 4), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8)]
chunk_shapes = [(main, (1, w)) for main in ((1, 2), (1, 4), (8, 8)) for w in (2, 4, 8)]
for B, T, D in ((8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)):
    N = D // m
    g = torch.randn(B, T, N, m, m + 1, device="cuda").mul(2).to(torch.bfloat16).requires_grad_()
    v = torch.randn(B, T, N, m, device="cuda").to(torch.bfloat16).requires_grad_()
    cases = [(0, s, (1, 8)) for s in seq_shapes] + [(128, main, agg) for main, agg in chunk_shapes]
    for chunk, main, agg in cases:
        launch_shape(main, agg)

        def fb():
            o, _ = st.bdlru_scan_triton(g, v, None, "softmax", False, None, chunk)
            torch.autograd.grad(o.float().sum(), [g, v])
        with torch.no_grad():
            f_ms = timed(lambda: st.bdlru_scan_triton(g, v, None, "softmax", False, None, chunk))
        fb_ms = timed(fb)
        rows.append(dict(B=B, T=T, D=D, m=m, chunk=chunk, main=main, agg=agg, fwd_ms=f_ms, fwdbwd_ms=fb_ms))
        say(f"B{B} T{T} D{D} chunk {chunk:4d} main (BLOCK, warps) {main} agg {agg if chunk else '-'}: "
            f"fwd {f_ms:8.3f} ms, fwd+bwd {fb_ms:8.3f} ms")

with open(f"{out_dir}/blocks.json", "w") as fh:
    json.dump(rows, fh, indent=1)
with open(f"{out_dir}/blocks.txt", "w") as fh:
    fh.write("\n".join(lines) + "\n")
