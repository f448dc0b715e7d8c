# Host (Python) time of one scan forward+backward without a GPU: Triton 3.6 with a fake driver, JITFunction.run
# forced to warmup (binder, cache lookup; no launch). Usage: .venv-t36/bin/python .prof/host_probe.py FILE [m] [blocked]
import cProfile, pstats, sys, time, torch
exec(open(".prof/compile_check.py").read().split("from hf_lrnn import")[0].split("import importlib.util, types")[0])
import importlib.util, types
pkg = types.ModuleType("hf_lrnn"); pkg.__path__ = ["hf_lrnn"]; sys.modules["hf_lrnn"] = pkg
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); sys.modules[name] = mod; spec.loader.exec_module(mod)
    return mod
load("hf_lrnn.scan_torch", "hf_lrnn/scan_torch.py")
st = load("hf_lrnn.scan_triton", sys.argv[1])
st._num_sms = lambda device: 132
m = int(sys.argv[2]) if len(sys.argv) > 2 else 2
blocked = len(sys.argv) > 3 and sys.argv[3] == "1"
B, T, N = 1, 512, 64
shape = (B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)
vshape = (B, T, N, m) if blocked else (B, T, N)
g = torch.randn(shape, dtype=torch.bfloat16, requires_grad=True); v = torch.randn(vshape, dtype=torch.bfloat16, requires_grad=True)
fn = st.bdlru_scan_triton if blocked else st.hlru_scan_triton
do = torch.randn(vshape, dtype=torch.bfloat16)
def fb():
    o, _ = fn(g, v, None, "softmax", False, None)
    o.backward(do)
for _ in range(3): fb()
n = 200
t0 = time.perf_counter()
for _ in range(n): fb()
dt = (time.perf_counter() - t0) / n
k0 = len(compiled); fb(); launches = len(compiled) - k0
print(f"{sys.argv[1]} m={m} blocked={blocked}: {dt*1e6:.0f} us host per fwd+bwd, {launches} launches")
if "-p" in sys.argv:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(50): fb()
    pr.disable(); pstats.Stats(pr).sort_stats(sys.argv[-1] if sys.argv[-1] in ("cumtime","tottime") else "tottime").print_stats(40)
