"""Compile the time-last probe kernels for an H200 (sm_90) with Triton's real compiler, without a GPU (as
scripts/compile_check.py does for hf_lrnn's kernels).
    env -u TRITON_INTERPRET python bench_results/probes_2026-11-30g/time_last/compile_time_last.py"""
import importlib.util
import os
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
spec = importlib.util.spec_from_file_location("compile_check", os.path.join(ROOT, "scripts", "compile_check.py"))
compile_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compile_check)
driver.set_active(compile_check._CompileOnlyDriver(GPUTarget("cuda", 90, 32)))
compiled, run = [], JITFunction.run


def compile_only(self, *a, grid, warmup, **kw):
    kernel = run(self, *a, grid=grid, warmup=True, **kw)
    compiled.append(self.__name__)
    return kernel


JITFunction.run = compile_only
sys.path.insert(0, HERE)
import time_last_scan as tl_scan  # noqa: E402

B, N, T = 2, 8, 4096
g2, g3 = torch.randn(B, N, 2, T, dtype=torch.bfloat16), torch.randn(B, N, 3, T, dtype=torch.bfloat16)
x = torch.randn(B, N, T, dtype=torch.bfloat16)
for h0 in (None, torch.randn(B, N)):
    s, _ = tl_scan.time_last_forward(g2, x, h0, want_final=True)
    tl_scan.time_last_backward(g2, x, s, x, h0, torch.randn(B, N))
for h0 in (None, torch.randn(B, N, 2)):
    s = tl_scan.time_last_forward_m2(g3, x, h0)
    tl_scan.time_last_backward_m2(g3, x, s, x, h0)
print(f"Triton {triton.__version__}, sm_90: compiled {sorted(set(compiled))} ({len(compiled)} launches)")
