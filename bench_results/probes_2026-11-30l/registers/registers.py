"""Registers and spills of the time-last kernels for sm_90a, on a machine without a GPU: Triton compiles them as
scripts/compile_check.py does, and the PTX goes through `ptxas -v` (the one Triton ships). The H-LRU m = 4 probe of
probes_2026-11-30k/m4_in_threads/ too. An H200 SM has 65536 registers: a kernel of R registers per thread keeps at
most 65536 / (32 R) warps resident. Usage (Triton 3.6, TRITON_INTERPRET unset): [MAXNREG=R] python3 registers.py
(MAXNREG: launch the library's kernels with that register cap)."""
import importlib.util
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, ROOT)

import compile_check  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
PTX = "/tmp/registers_kernel.ptx"
driver.set_active(compile_check._CompileOnlyDriver(GPUTarget("cuda", 90, 32)))
kernels = []
run = JITFunction.run


def compile_only(self, *args, grid, warmup, **kwargs):
    kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
    kernels.append((self.__name__, kernel))
    return kernel


def report(tag):
    for name, kernel in kernels:
        with open(PTX, "w") as f:
            f.write(kernel.asm["ptx"])
        out = subprocess.run([PTXAS, "-v", "-arch=sm_90a", PTX, "-o", PTX + ".cubin"], capture_output=True, text=True)
        lines = [line.split("info    : ")[-1] for line in out.stderr.splitlines() if "Used" in line or "spill" in line]
        print(f"{tag} {name}: " + " | ".join(lines), flush=True)
    kernels.clear()


JITFunction.run = compile_only
scan, _, _, _, time_last = compile_check._load_scan_modules()
scan._num_sms = lambda device: 132
time_last.SMALL_GRID_BELOW = 0  # m = 2 in threads, as on the grids that are not small
grid = time_last._grid


def capped(*args, **kwargs):
    g, options = grid(*args, **kwargs)
    return g, dict(options, maxnreg=int(os.environ["MAXNREG"]))


if os.environ.get("MAXNREG"):  # a register cap on every launch (a launch option of Triton's CUDA backend)
    time_last._grid = capped
for m, extras in ((1, False), (2, False), (2, True), (4, False), (4, True)):
    gates, values = torch.randn(2, 3, m + 1, 3000, dtype=torch.bfloat16), torch.randn(2, 3, 3000, dtype=torch.bfloat16)
    h0 = torch.randn(2, 3, m) if extras else None
    starts = (torch.rand(2, 3000) < 0.01) if extras else None
    bias = torch.randn(3, m + 1) if extras else None
    states, final = time_last.time_last_forward(gates, values, h0, "softmax", True, starts, bias, extras)
    time_last.time_last_backward(gates, values, states, h0, torch.randn_like(states), final, "softmax", starts, bias,
                                 extras)
    report(f"m={m}{' h0+starts+bias+window' if extras else ''}")
sys.modules["hf_lrnn.scan_time_last"] = time_last
spec = importlib.util.spec_from_file_location(
    "probe", os.path.join(ROOT, "bench_results", "probes_2026-11-30k", "m4_in_threads", "probe.py"))
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)
gates, values = torch.randn(2, 3, 5, 3000, dtype=torch.bfloat16), torch.randn(2, 3, 3000, dtype=torch.bfloat16)
states = probe.forward(gates, values, 2, 256, 2)
probe.backward(gates, values, states, torch.randn_like(states), 2, 256, 2)
report("probe m=4 (2/256/2)")
