"""m = 1 tiled kernels on the GPU: correctness smoke test against the reference, then a chunk-size sweep.

    python scripts/diag_sweep.py            # prints OK/FAIL and a table of ms per chunk size (0 = sequential)
Exit status 1 if the kernels disagree with the reference (scripts/run_h200.sh then benchmarks without them).
"""

import sys

import torch
from triton.testing import do_bench

from hf_lrnn.scan_torch import bdlru_scan_torch, hlru_scan_torch
from hf_lrnn.scan_triton import bdlru_scan_triton, hlru_scan_triton


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def smoke():
    ok = True
    for blocked, chunk in ((False, 0), (False, 64), (True, 0), (True, 100)):
        torch.manual_seed(0)
        shape = (2, 777, 96, 1, 2) if blocked else (2, 777, 96, 2)
        g = torch.randn(shape, device="cuda", requires_grad=True)
        v = torch.randn(shape[:-1], device="cuda", requires_grad=True)
        h0 = torch.randn(2, 96, 1, device="cuda", requires_grad=True)
        fn, ref = (bdlru_scan_triton, bdlru_scan_torch) if blocked else (hlru_scan_triton, hlru_scan_torch)
        out, fin = fn(g, v, h0, "softmax", True, None, chunk)
        grads = torch.autograd.grad(out.sum() + fin.sum(), [g, v, h0])
        rg, rv, rh = (x.detach().double().requires_grad_() for x in (g, v, h0))
        rout, rfin = ref(rg, rv, rh, "softmax")
        rgrads = torch.autograd.grad(rout.sum() + rfin.sum(), [rg, rv, rh])
        errs = [rel(out, rout), rel(fin, rfin)] + [rel(a, b) for a, b in zip(grads, rgrads)]
        good = max(errs) < 1e-4
        ok &= good
        print(f"smoke blocked={blocked} chunk={chunk}: {'OK' if good else 'FAIL'} max rel err {max(errs):.2e}")
    return ok


def sweep():
    print(f"{'B':>3} {'T':>6} {'D':>5} {'chunk':>6} {'fwd ms':>8} {'f+b ms':>8}")
    for B, T, D in ((8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)):
        g = torch.randn(B, T, D, 2, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        for chunk in (None, 0, 128, 256, 512, 1024):
            with torch.no_grad():
                fwd = do_bench(lambda: hlru_scan_triton(g, v, None, "softmax", False, None, chunk), warmup=10, rep=40)

            def fb():
                out, _ = hlru_scan_triton(g, v, None, "softmax", False, None, chunk)
                out.backward(do)

            fbt = do_bench(fb, warmup=10, rep=40, grad_to_none=[g, v])
            print(f"{B:>3} {T:>6} {D:>5} {str(chunk):>6} {fwd:8.3f} {fbt:8.3f}", flush=True)


if __name__ == "__main__":
    good = smoke()
    if good and "--smoke-only" not in sys.argv:
        sweep()
    sys.exit(0 if good else 1)
