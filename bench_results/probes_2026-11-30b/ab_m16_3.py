# BD-LRU m = 8 / 16 at B8 T4096 D1024: this tree's scan_triton against f23d132's and ef93183's (.prof/), same
# run, auto chunk; per-kernel times. Usage: python3 .prof/ab_m16.py
import importlib.util, sys, torch
sys.path.insert(0, ".")
import hf_lrnn  # noqa
from triton.testing import do_bench
from torch.profiler import profile, ProfilerActivity
from hf_lrnn import scan_triton as new
def load(name, path):
    spec = importlib.util.spec_from_file_location(f"hf_lrnn.{name}", path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod
variants = (("f23d132", load("st_f23d132", ".prof/scan_triton_f23d132.py")),
            ("ef93183", load("st_ef93183", ".prof/scan_triton_ef93183.py")), ("tree", new))
for m in (8, 16):
    B, T, D = 8, 4096, 1024
    N = D // m
    g = torch.randn(B, T, N, m, m + 1, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, N, m, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    for rnd in range(2):
        for name, mod in variants:
            fn = mod.bdlru_scan_triton
            with torch.no_grad():
                f = do_bench(lambda: fn(g, v, None, "softmax", False, None), warmup=3, rep=20)
            def fb():
                o, _ = fn(g, v, None, "softmax", False, None)
                o.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v], warmup=3, rep=20)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                with torch.no_grad():
                    fn(g, v, None, "softmax", False, None)
                torch.cuda.synchronize()
            kern = "; ".join(f"{e.key[:40]} {e.device_time_total:.0f}" for e in prof.key_averages() if e.device_time_total > 0)
            print(f"m={m} round {rnd} {name:8s} fwd {f:.3f} ms  fwd+bwd {fbt:.3f} ms  | {kern}", flush=True)
    del g, v, do
    torch.cuda.empty_cache()
