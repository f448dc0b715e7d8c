"""Host cost of a scan's forward+backward in eager: the kernels called directly, through a torch.autograd.Function,
and through the torch.library custom op (what ops.py does), wall per call back to back against the GPU time.
Usage: python3 host_overhead.py OUT_DIR"""
import sys
import time

import torch

from hf_lrnn.ops import hlru_scan, hlru_scan_time_last
from hf_lrnn.scan_time_last import time_last_backward, time_last_forward
from hf_lrnn.scan_triton import _ACT_ID, scan_backward, scan_forward

out = sys.argv[1]


class TimeLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, v):
        s, _ = time_last_forward(g, v, None, "softmax", False, None)
        ctx.save_for_backward(g, v, s)
        return s

    @staticmethod
    def backward(ctx, ds):
        g, v, s = ctx.saved_tensors
        dg, dv, _ = time_last_backward(g, v, s, None, ds, None, "softmax", None)
        return dg, dv


class TimeFirst(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, v):
        s, _, _ = scan_forward(False, g, v, None, _ACT_ID["softmax"], False, None, None)
        ctx.save_for_backward(g, v, s)
        return s

    @staticmethod
    def backward(ctx, ds):
        g, v, s = ctx.saved_tensors
        dg, dv, _ = scan_backward(False, g, v, s, None, ds, None, _ACT_ID["softmax"], None, None)
        return dg, dv


def wall_us(fn, n=100):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def gpu_us(fn, n=20):
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        fn()
    return wall_us(g.replay, n)


lines = []
B, T, N = 8, 2048, 768
gl = torch.randn(B, N, 2, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
vl = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
gf = torch.randn(B, T, N, 2, device="cuda", dtype=torch.bfloat16, requires_grad=True)
vf = torch.randn(B, T, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
ds = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
dsf = torch.randn(B, T, N, device="cuda", dtype=torch.bfloat16)


def direct_last():
    s, _ = time_last_forward(gl.detach(), vl.detach(), None, "softmax", False, None)
    time_last_backward(gl.detach(), vl.detach(), s, None, ds, None, "softmax", None)


def direct_first():
    s, _, _ = scan_forward(False, gf.detach(), vf.detach(), None, _ACT_ID["softmax"], False, None, None)
    scan_backward(False, gf.detach(), vf.detach(), s, None, dsf, None, _ACT_ID["softmax"], None, None)


cases = {
    "time-last direct (no autograd)": direct_last,
    "time-last autograd.Function": lambda: TimeLast.apply(gl, vl).backward(ds),
    "time-last custom op (ops.py)": lambda: hlru_scan_time_last(gl, vl, backend="triton")[0].backward(ds),
    "time-last fwd only, custom op, no_grad": lambda: hlru_scan_time_last(gl.detach(), vl.detach(), backend="triton"),
    "time-first direct (no autograd)": direct_first,
    "time-first autograd.Function": lambda: TimeFirst.apply(gf, vf).backward(dsf),
    "time-first ops.hlru_scan (eager: its Function)": lambda: hlru_scan(gf, vf, backend="triton")[0].backward(dsf),
}
lines.append(f"B{B} T{T} N{N} m=1 bf16, forward+backward: wall per call (100 back to back) and GPU time (CUDA graph)")
for name, fn in cases.items():
    w = wall_us(fn)
    gl.grad = vl.grad = gf.grad = vf.grad = None
    try:
        g = gpu_us(fn) if "direct" in name else float("nan")
    except Exception as err:
        g = float("nan")
        print(name, "graph failed", err)
    lines.append(f"  {name:<42} wall {w:7.1f} us   GPU {g:7.1f} us")
    gl.grad = vl.grad = gf.grad = vf.grad = None
text = "\n".join(lines)
print(text)
open(f"{out}/host_overhead.txt", "w").write(text + "\n")
