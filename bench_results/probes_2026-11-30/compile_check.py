# Compile every scan kernel configuration for sm_90 with the local Triton (meant for .venv-t36: Triton 3.6, the H200's)
# without a GPU: a fake driver, and JITFunction.run forced to warmup (compile, no launch). CPU tensors; outputs are
# garbage. Catches front-end (ast_to_ttir) and back-end (ptxas) errors before spending device time.
# Usage: /work/.venv-t36/bin/python .prof/compile_check.py [quick]
import sys, time, torch, triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction
sys.path.insert(0, ".")

class FakeDriver:
    def get_current_device(self): return 0
    def get_current_stream(self, device=None): return 0
    def get_current_target(self): return GPUTarget("cuda", 90, 32)
    def get_active_torch_device(self): return torch.device("cpu")
    def get_device_capability(self, device=None): return (9, 0)
    def is_active(self): return True
    def get_benchmarker(self): return lambda fn, **kw: [1.0]
    def get_empty_cache_for_benchmark(self): return torch.empty(1)
    def clear_cache(self, cache): pass
    def map_python_to_cpp_type(self, ty): return ty

driver.set_active(FakeDriver())
compiled = []
_run = JITFunction.run
def run(self, *args, grid, warmup, **kwargs):
    k = _run(self, *args, grid=grid, warmup=True, **kwargs)
    md = k.metadata
    compiled.append((self.__name__, md.num_warps, md.shared))
    return k
JITFunction.run = run

import importlib.util, types
pkg = types.ModuleType("hf_lrnn"); pkg.__path__ = ["hf_lrnn"]; sys.modules["hf_lrnn"] = pkg  # skip __init__ (transformers)
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); sys.modules[name] = mod; spec.loader.exec_module(mod)
    return mod
load("hf_lrnn.scan_torch", "hf_lrnn/scan_torch.py")
st = load("hf_lrnn.scan_triton", sys.argv[2] if len(sys.argv) > 2 else "hf_lrnn/scan_triton.py")
st._num_sms = lambda device: 132
quick = len(sys.argv) > 1
t0 = time.time()
cases = []
for blocked in (False, True):
    for m in ((1, 2, 4) if quick else (1, 2, 3, 4, 8)):
        for chunk in (0, 64, None):
            for init in (False, True):
                cases.append((blocked, m, chunk, init))
fails = 0
for blocked, m, chunk, init in cases:
    B, T, N = 2, 300, 64
    shape = (B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)
    vshape = (B, T, N, m) if blocked else (B, T, N)
    g = torch.randn(shape, requires_grad=True); v = torch.randn(vshape, requires_grad=True)
    h0 = torch.randn(B, N, m, requires_grad=True) if init else None
    fn = st.bdlru_scan_triton if blocked else st.hlru_scan_triton
    n0 = len(compiled)
    try:
        for dtype in ((torch.bfloat16,) if quick else (torch.bfloat16, torch.float32)):
            o, f = fn(g.to(dtype), v.to(dtype), h0, "softmax", True, None, chunk)
            torch.autograd.grad(o.float().sum() + f.float().sum(), [g, v] + ([h0] if init else []))
        print(f"ok   {'bdlru' if blocked else 'hlru ':5s} m={m} chunk={chunk} init={init}: "
              + ", ".join(sorted({c[0] for c in compiled[n0:]})), flush=True)
    except Exception as e:
        fails += 1
        msg = str(e).strip().splitlines()
        print(f"FAIL {'bdlru' if blocked else 'hlru'} m={m} chunk={chunk} init={init}: {type(e).__name__}: "
              + "\n    ".join(msg[-14:]), flush=True)
print(f"{len(cases) - fails} of {len(cases)} configurations compiled ({len(compiled)} kernels) in {time.time() - t0:.0f} s")
