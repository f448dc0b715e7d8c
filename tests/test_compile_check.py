"""The scan kernels compile for an H200 (sm_90) through Triton's real compiler, on a machine without a GPU.

The other CPU tests run the kernels in Triton's interpreter, which accepts code the compiler refuses (a constexpr
name reassigned in a static loop passed the interpreter and failed on the H200): scripts/compile_check.py compiles
every kernel a forward+backward launches instead."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_scan_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "compile_check.py"), "--quick"],
                            capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    done, total = summary.split(" configurations")[0].split(" of ")
    # 62 scans, two norms, two add + norms, the SwiGLU's product, nine decode-step norm + projections (seven of one
    # row, two of three rows), two decode-step output projections, ten time-last scans (m = 1, 2 and 4; m = 4's
    # forward in segments of a row, its backward in chunks) and m = 4 in whole rows, m = 1's forward without a software
    # pipeline, m = 2 a warp a row four ways and with a backward register cap, m = 2 in 4 segments of a row, m = 4's
    # forward in chunks, and BD-LRU's time-last scans (block size 2 in threads, in segments, as a tile scan and with
    # the register prefetch; block size 4 in whole rows and in segments)
    assert done == total and int(total) == 112, summary
    assert "FAIL" not in result.stdout
    # every kernel family was compiled, not only some
    for kernel in ("_hlru_fwd_channel_per_thread_kernel", "_bdlru_bwd_block_per_thread_kernel", "_bdlru_fwd_kernel",
                   "_first_order_bwd_kernel", "_carry_kernel", "_norm_fwd_kernel", "_norm_bwd_kernel", "_silu_mul_fwd_kernel",
                   "_silu_mul_bwd_kernel", "_norm_project_kernel", "_project_rows_kernel",
                   "_time_last_fwd_kernel", "_time_last_bwd_kernel", "_time_last_m2_fwd_kernel",
                   "_time_last_m2_bwd_kernel"):
        assert kernel in result.stdout, kernel


def test_compile_check_refuses_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "compile_check.py"), "--quick"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0 and "TRITON_INTERPRET=1 is set" in result.stderr


_PTX_PROBE = r"""
import json, os, sys
import torch
sys.path.insert(0, os.path.join(sys.argv[1], "scripts"))
import compile_check

launches = compile_check.compile_without_launching(90)
scan, _, _, _, time_last = compile_check._load_scan_modules()
scan._num_sms = time_last._num_sms = lambda device: 132
gates, values = torch.randn(2, 64, 3, 300, dtype=torch.bfloat16), torch.randn(2, 64, 300, dtype=torch.bfloat16)
states, _ = time_last.time_last_forward(gates, values, None, "softmax", False)
time_last.time_last_backward(gates, values, states, None, torch.randn_like(states), None, "softmax")
for m, blocked, shape in ((1, False, (2, 300, 64, 2)), (16, True, (2, 300, 4, 16, 17))):
    g = torch.randn(shape, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(shape[:-1] if blocked else shape[:-1][:3], dtype=torch.bfloat16, requires_grad=True)
    fn = scan.bdlru_scan_triton if blocked else scan.hlru_scan_triton
    fn(g, v, None, "softmax", False, None, 0 if blocked else None)[0].float().sum().backward()
ptx = {}
for name, kernel, _ in launches:
    ptx.setdefault(name, kernel.asm["ptx"])
print(json.dumps({name: {op: text.count(op) for op in ("ex2.approx.ftz.f32", "ex2.approx.f32", "rcp.approx.ftz.f32",
                                                       "div.full.f32", "div.rn.f32")} for name, text in ptx.items()}))
"""


def test_normalisations_compile_to_the_ftz_exp_and_reciprocal():
    """`_exp` / `_reciprocal` (scan_triton.py) issue ex2.approx.ftz / rcp.approx.ftz in the compiled kernels, not
    Triton's subnormal-keeping ex2.approx / div.full (3-5 more instructions each: the time-last forwards are
    issue-bound); the two kernels that pass FTZ=False down keep Triton's forms."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", _PTX_PROBE, ROOT], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("_time_last_m2_fwd_kernel", "_time_last_m2_bwd_kernel", "_first_order_fwd_kernel", "_bdlru_bwd_kernel"):
        c = counts[name]
        assert c["ex2.approx.ftz.f32"] > 0 and c["rcp.approx.ftz.f32"] > 0, (name, c)
        assert c["ex2.approx.f32"] == 0 and c["div.full.f32"] == 0 and c["div.rn.f32"] == 0, (name, c)
    for name in ("_first_order_bwd_kernel", "_bdlru_fwd_kernel"):  # FTZ=False: Triton's exp and 1 / x
        c = counts[name]
        assert c["ex2.approx.ftz.f32"] == 0 and c["rcp.approx.ftz.f32"] == 0, (name, c)
        assert c["ex2.approx.f32"] > 0 and c["div.full.f32"] > 0, (name, c)
