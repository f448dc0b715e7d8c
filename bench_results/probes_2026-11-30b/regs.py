# Registers / spills (ptxas -v, sm_90) of the kernels one scan_triton file launches for a given case, without a GPU.
# Usage: python .prof/regs.py FILE blocked m chunk  (e.g. .prof/scan_triton_f23d132.py 1 16 0)
import importlib.util, os, re, subprocess, sys, types
sys.path.insert(0, "scripts")
import compile_check as cc
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction
path, blocked, m, chunk = sys.argv[1], bool(int(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
driver.set_active(cc._CompileOnlyDriver(GPUTarget("cuda", 90, 32)))
run = JITFunction.run
ptxas = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas")
def compile_only(self, *a, grid, warmup, **kw):
    k = run(self, *a, grid=grid, warmup=True, **kw)
    open("/tmp/k.ptx", "w").write(k.asm["ptx"]); open(f"/tmp/{os.environ.get('TAG','x')}_{self.__name__}_{kw.get('BLOCK')}.ptx", "w").write(k.asm["ptx"])
    out = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", "/tmp/k.ptx", "-o", "/tmp/k.cubin"], capture_output=True, text=True).stderr
    info = " ".join(re.findall(r"Used \d+ registers|\d+ bytes spill stores|\d+ bytes spill loads|\d+ bytes stack frame", out))
    print(f"{self.__name__} num_warps={kw.get('num_warps')} BLOCK={kw.get('BLOCK')}: {info}", flush=True)
    return k
JITFunction.run = compile_only
package = types.ModuleType("hf_lrnn"); package.__path__ = [os.path.abspath("hf_lrnn")]; sys.modules["hf_lrnn"] = package
for name, p in (("scan_torch", "hf_lrnn/scan_torch.py"), ("scan_triton", path)):
    spec = importlib.util.spec_from_file_location(f"hf_lrnn.{name}", p)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
mod._num_sms = lambda device: 132
B, T, D = 1, 4096, 1024
N = D // m if blocked else D
backward = len(sys.argv) > 5 and sys.argv[5] == "1"
g = torch.randn((B, T, N, m, m + 1) if blocked else (B, T, N, m + 1), dtype=torch.bfloat16, requires_grad=backward)
v = torch.randn((B, T, N, m) if blocked else (B, T, N), dtype=torch.bfloat16, requires_grad=backward)
fn = mod.bdlru_scan_triton if blocked else mod.hlru_scan_triton
import time as _t
_t0 = _t.time()
out, _ = fn(g, v, None, "softmax", False, None, None if chunk < 0 else chunk)
if backward:
    out.float().sum().backward()
print(f"compiled in {_t.time() - _t0:.0f} s", flush=True)
