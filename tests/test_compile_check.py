"""The scan kernels compile for an H200 (sm_90) through Triton's real compiler, on a machine without a GPU.

The other CPU tests run the kernels in Triton's interpreter, which accepts code the compiler refuses (a constexpr
name reassigned in a static loop passed the interpreter and failed on the H200): scripts/compile_check.py compiles
every kernel a forward+backward launches instead."""

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
