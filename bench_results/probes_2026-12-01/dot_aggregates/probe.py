"""BD-LRU m = 16 on the [B, T, N] tile kernels: the chunked mode's aggregate phase with tl.dot (tf32x3 / ieee)
against the broadcast product (None), per chunk length, and the sequential kernel; accuracy against float64.
Usage: python probe.py OUT"""
import json
import sys

import torch

from hf_lrnn import scan_triton as st
from hf_lrnn.scan_torch import bdlru_scan_torch

out_dir = sys.argv[1]
rows, lines = [], []


def say(line):
    print(line, flush=True)
    lines.append(line)


def timed(fn, reps=5):
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


x = torch.empty(256 * 2**20, dtype=torch.float32, device="cuda")
y = torch.empty_like(x)
copy_ms = timed(lambda: y.copy_(x))
copy_tbps = 2 * x.numel() * 4 / copy_ms / 1e9

say(f"copy {copy_tbps:.2f} TB/s")

# accuracy, float32 inputs, forced chunks of 128 (the GPU test's case)
m = 16
torch.manual_seed(0)
g = (torch.randn(2, 600, 16, m, m + 1, device="cuda") * 2).requires_grad_()
v = torch.randn(2, 600, 16, m, device="cuda").requires_grad_()
h0 = torch.randn(2, 16, m, device="cuda").requires_grad_()
do = torch.randn(v.shape, device="cuda", dtype=torch.float64)
rg, rv, rh = (t.detach().double().requires_grad_() for t in (g, v, h0))
rout, rfin = bdlru_scan_torch(rg, rv, rh, "softmax")
rgrads = torch.autograd.grad((rout * do).sum() + rfin.sum(), [rg, rv, rh])
rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
for prec in (None, "tf32x3", "ieee", "tf32"):
    st._AGGREGATE_DOT_PRECISION = prec
    o, f = st.bdlru_scan_triton(g, v, h0, "softmax", True, None, 128)
    grads = torch.autograd.grad((o.double() * do).sum() + f.double().sum(), [g, v, h0])
    errs = [rel(o, rout), rel(f, rfin)] + [rel(a, b) for a, b in zip(grads, rgrads)]
    say(f"accuracy {prec}: states {errs[0]:.1e} final {errs[1]:.1e} d gates {errs[2]:.1e} d values {errs[3]:.1e} "
        f"d h0 {errs[4]:.1e}")
    rows.append(dict(kind="accuracy", precision=prec, errors=errs))

for B, T, D in ((8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)):
    N = D // m
    g = torch.randn(B, T, N, m, m + 1, device="cuda").mul(2).to(torch.bfloat16).requires_grad_()
    v = torch.randn(B, T, N, m, device="cuda").to(torch.bfloat16).requires_grad_()
    bytes_fwd = B * T * N * (m * (m + 1) + 2 * m) * 2
    bytes_fb = bytes_fwd + B * T * N * (m * (m + 1) + 3 * m) * 2 + B * T * N * m * 2
    cases = [("seq", None, 0), ("auto (old)", None, None)] + [("chunk", None, 64)] + \
        [("chunk", p, c) for p in ("tf32x3", "ieee") for c in (32, 64, 128, 256)]
    for label, prec, chunk in cases:
        st._AGGREGATE_DOT_PRECISION = prec
        fwd = lambda: st.bdlru_scan_triton(g, v, None, "softmax", False, None, chunk)  # noqa: E731

        def fb():
            o, _ = st.bdlru_scan_triton(g, v, None, "softmax", False, None, chunk)
            torch.autograd.grad(o.float().sum(), [g, v])
        with torch.no_grad():
            f_ms = timed(fwd)
        fb_ms = timed(fb, reps=3)
        row = dict(kind="time", B=B, T=T, D=D, m=m, label=label, precision=prec, chunk=chunk, fwd_ms=f_ms,
                   fwdbwd_ms=fb_ms, fwd_pct_copy=100 * bytes_fwd / f_ms / 1e9 / copy_tbps,
                   fwdbwd_pct_copy=100 * bytes_fb / fb_ms / 1e9 / copy_tbps)
        rows.append(row)
        say(f"B{B} T{T} D{D} m{m} {label:10s} {str(prec):7s} chunk {str(chunk):5s}: fwd {f_ms:8.3f} ms "
            f"({row['fwd_pct_copy']:5.1f} %), fwd+bwd {fb_ms:8.3f} ms ({row['fwdbwd_pct_copy']:5.1f} %)")

    torch.cuda.empty_cache()

with open(f"{out_dir}/dot_aggregates.json", "w") as fh:
    json.dump(dict(copy_tbps=copy_tbps, rows=rows), fh, indent=1)
with open(f"{out_dir}/dot_aggregates.txt", "w") as fh:
    fh.write("\n".join(lines) + "\n")
