"""H200 probe: the time-last m = 1 kernels (time_last_scan.py; and H-LRU m = 2's forward and backward) against the
landed kernels (time-major) and accelerated-scan's Triton scan (time-last, no normalisation), bf16, CUDA kernel time
(triton.testing.do_bench).
    PYTHONPATH=.:/tmp/site python3 bench_results/probes_2026-11-30g/time_last/bench_time_last.py OUT.json
% of copy: bytes (forward: 2 logits + value + state per channel and step; forward+backward: forward + 2 logits, value,
state, d state read, d logits 2, d value written = 12; m = 2 forward: 5, forward+backward: 15) over a same-run torch
copy's bandwidth."""

import json
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from time_last_scan import (time_last_backward, time_last_backward_m2, time_last_forward,  # noqa: E402
                            time_last_forward_m2)

from hf_lrnn.scan_triton import hlru_scan_triton  # noqa: E402

try:
    from accelerated_scan.scalar import scan as accelerated_scan
except ImportError:
    accelerated_scan = None

out_path = sys.argv[1] if len(sys.argv) > 1 else "time_last.json"
big = torch.empty(2 ** 28, dtype=torch.bfloat16, device="cuda")
copy_ms = do_bench(lambda: big.clone())
copy_bw = 2 * big.numel() * 2 / (copy_ms * 1e-3)
print(f"copy {copy_bw / 1e12:.2f} TB/s")
rows = []
for B, T, D in [(8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (1, 65536, 1024), (8, 2048, 768)]:
    g = torch.randn(B, D, 2, T, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, D, T, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn(B, D, T, device="cuda", dtype=torch.bfloat16)
    elems = B * T * D
    row = dict(B=B, T=T, D=D)
    best = None
    for block_t in (512, 1024, 2048, 4096):
        for warps in (4, 8):
            if block_t // (32 * warps) < 2:
                continue
            fwd = do_bench(lambda: time_last_forward(g, v, block_t=block_t, num_warps=warps))
            s, _ = time_last_forward(g, v, block_t=block_t, num_warps=warps)

            def fb():
                s, _ = time_last_forward(g, v, block_t=block_t, num_warps=warps)
                time_last_backward(g, v, s, dy, block_t=block_t, num_warps=warps)
            fwdbwd = do_bench(fb)
            key = f"time_last_bt{block_t}_w{warps}"
            row[key] = dict(fwd_ms=fwd, fwdbwd_ms=fwdbwd)
            if best is None or fwd + fwdbwd < best[1]["fwd_ms"] + best[1]["fwdbwd_ms"]:
                best = (key, row[key])
    row["time_last_best"] = best[0]
    row["time_last_fwd_pct_copy"] = 100 * 4 * 2 * elems / (best[1]["fwd_ms"] * 1e-3) / copy_bw
    row["time_last_fwdbwd_pct_copy"] = 100 * 12 * 2 * elems / (best[1]["fwdbwd_ms"] * 1e-3) / copy_bw
    # the landed kernels, time-major inputs of the same sizes
    gm = torch.randn(B, T, D, 2, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    vm = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dym = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        row["landed_fwd_ms"] = do_bench(lambda: hlru_scan_triton(gm, vm, None, "softmax", False, None, None))

    def landed_fb():
        out, _ = hlru_scan_triton(gm, vm, None, "softmax", False, None, None)
        out.backward(dym)
    row["landed_fwdbwd_ms"] = do_bench(landed_fb, grad_to_none=[gm, vm])
    if accelerated_scan is not None:
        ga = torch.rand(B, D, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        xa = torch.randn(B, D, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        with torch.no_grad():
            row["accelerated_scan_fwd_ms"] = do_bench(lambda: accelerated_scan(ga, xa))

        def acc_fb():
            accelerated_scan(ga, xa).backward(dy)
        row["accelerated_scan_fwdbwd_ms"] = do_bench(acc_fb, grad_to_none=[ga, xa])
    # H-LRU m = 2, forward only: the time-last companion scan against the landed kernels (m + 3 = 5 elements)
    g3 = torch.randn(B, D, 3, T, device="cuda", dtype=torch.bfloat16)
    m2 = {bt: do_bench(lambda: time_last_forward_m2(g3, v, block_t=bt)) for bt in (512, 1024, 2048)}
    row["time_last_m2_fwd_ms"] = min(m2.values())
    row["time_last_m2_fwd_block_t"] = min(m2, key=m2.get)
    row["time_last_m2_fwd_pct_copy"] = 100 * 5 * 2 * elems / (row["time_last_m2_fwd_ms"] * 1e-3) / copy_bw
    g3m = torch.randn(B, T, D, 3, device="cuda", dtype=torch.bfloat16)
    row["landed_m2_fwd_ms"] = do_bench(lambda: hlru_scan_triton(g3m, vm.detach(), None, "softmax", False, None, None))
    # m = 2 forward + backward (15 elements: forward 5; backward reads 3 logits, the value, the states and d states,
    # writes 3 logit gradients and the value gradient)
    bt2 = row["time_last_m2_fwd_block_t"]

    def m2_fb():
        s2 = time_last_forward_m2(g3, v, block_t=bt2)
        time_last_backward_m2(g3, v, s2, dy, block_t=bt2)
    row["time_last_m2_fwdbwd_ms"] = do_bench(m2_fb)
    row["time_last_m2_fwdbwd_pct_copy"] = 100 * 15 * 2 * elems / (row["time_last_m2_fwdbwd_ms"] * 1e-3) / copy_bw
    g3m.requires_grad_()

    def landed_m2_fb():
        out, _ = hlru_scan_triton(g3m, vm, None, "softmax", False, None, None)
        out.backward(dym)
    row["landed_m2_fwdbwd_ms"] = do_bench(landed_m2_fb, grad_to_none=[g3m, vm])
    rows.append(row)
    b = best[1]
    print(f"B{B} T{T} D{D}: time-last {best[0]} fwd {b['fwd_ms'] * 1e3:.0f} us ({row['time_last_fwd_pct_copy']:.0f} % "
          f"copy), f+b {b['fwdbwd_ms'] * 1e3:.0f} us ({row['time_last_fwdbwd_pct_copy']:.0f} %); landed fwd "
          f"{row['landed_fwd_ms'] * 1e3:.0f} us, f+b {row['landed_fwdbwd_ms'] * 1e3:.0f} us; accelerated-scan fwd "
          f"{row.get('accelerated_scan_fwd_ms', float('nan')) * 1e3:.0f} us, f+b "
          f"{row.get('accelerated_scan_fwdbwd_ms', float('nan')) * 1e3:.0f} us", flush=True)
    print(f"  m = 2 forward: time-last {row['time_last_m2_fwd_ms'] * 1e3:.0f} us "
          f"({row['time_last_m2_fwd_pct_copy']:.0f} % copy, tiles {row['time_last_m2_fwd_block_t']}), landed "
          f"{row['landed_m2_fwd_ms'] * 1e3:.0f} us; f+b time-last {row['time_last_m2_fwdbwd_ms'] * 1e3:.0f} us "
          f"({row['time_last_m2_fwdbwd_pct_copy']:.0f} % copy), landed {row['landed_m2_fwdbwd_ms'] * 1e3:.0f} us",
          flush=True)
json.dump(dict(copy_tb_s=copy_bw / 1e12, rows=rows), open(out_path, "w"), indent=1)
