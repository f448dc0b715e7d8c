"""One case of the ncu profile (twenty-first session): a scan's forward and its backward, once to compile, then once
between cudaProfilerStart / Stop, so that `ncu --profile-from-start off` sees only the measured launches. bf16 inputs,
softmax gates, the table's shapes; the [B, T, N] ops for m = 8 and 16, the time-last ones otherwise.

    ncu --profile-from-start off ... python3 profile_case.py LAYOUT OP B T D M
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from hf_lrnn.ops import bdlru_scan_time_last, hlru_scan_time_last  # noqa: E402
from hf_lrnn.scan_triton import bdlru_scan_triton, hlru_scan_triton  # noqa: E402


def main():
    layout, op = sys.argv[1], sys.argv[2]
    B, T, D, m = (int(a) for a in sys.argv[3:7])
    N = D // m
    if layout == "time_last":
        shape, values_shape = dict(hlru=((B, N, m + 1, T), (B, N, T)), bdlru=((B, N, m, m + 1, T), (B, N, m, T)))[op]
    else:
        shape, values_shape = dict(hlru=((B, T, N, m + 1), (B, T, N)), bdlru=((B, T, N, m, m + 1), (B, T, N, m)))[op]
    g = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(values_shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    if layout == "time_last":
        scan = hlru_scan_time_last if op == "hlru" else bdlru_scan_time_last
        run = lambda: scan(g, v, backend="triton")[0]  # noqa: E731
    else:
        scan = hlru_scan_triton if op == "hlru" else bdlru_scan_triton
        run = lambda: scan(g, v, None, "softmax", False, None)[0]  # noqa: E731
    d_out = torch.randn(values_shape, device="cuda", dtype=torch.bfloat16)
    for _ in range(2):  # compile, warm
        run().backward(d_out)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    run().backward(d_out)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
