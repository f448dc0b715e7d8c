"""Registers and spills (ptxas, via cuobjdump --dump-resource-usage) of the time-last kernels a forward+backward
launches, compiled for sm_90 without a GPU (scripts/compile_check.py's compile-only driver), under register caps:

    env -u TRITON_INTERPRET python bench_results/probes_2026-12-02d/registers.py --kernel bd2 --caps 0,128,96,80,64
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import compile_check  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="bd2", choices=["bd2", "bd2-segments", "m1", "m2", "m2-segments", "m4",
                                                               "bd4", "bd4-rows"])
    ap.add_argument("--caps", default="0", help="comma-separated maxnreg (0: the compiler's)")
    ap.add_argument("--forward", action="store_true", help="cap the forward instead of the backward")
    ap.add_argument("--dump", default=None, help="a folder to write each kernel's TTGIR and PTX to")
    ap.add_argument("--extras", default="", help="comma-separated of h0, starts, bias: an initial state, document starts,"
                    " a gate bias")
    args = ap.parse_args()
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    driver.set_active(compile_check._CompileOnlyDriver(GPUTarget("cuda", 90, 32)))
    kernels = []
    run = JITFunction.run

    def compile_only(self, *a, grid, warmup, **kw):
        kernel = run(self, *a, grid=grid, warmup=True, **kw)
        kernels.append((self.__name__, kernel))
        return kernel

    JITFunction.run = compile_only
    _, _, _, _, tl_mod = compile_check._load_scan_modules()
    tl_mod._num_sms = lambda device: 132
    grid = tl_mod._grid
    blocked = args.kernel.startswith("bd")
    m = {"m1": 1, "m4": 4, "bd4": 4, "bd4-rows": 4}.get(args.kernel, 2)
    tl_mod.M4_CHUNKED_BELOW = 0  # H-LRU m = 4 in whole rows
    tl_mod.BD4_SEGMENTS = args.kernel == "bd4"
    if args.kernel in ("bd2", "m1", "m2", "m4", "bd4-rows"):
        tl_mod.BD2_SMALL_GRID_BELOW = tl_mod.SMALL_GRID_BELOW = tl_mod.M2_FORWARD_SMALL_GRID_BELOW = 0
    else:
        tl_mod.BD2_SMALL_GRID_BELOW = tl_mod.SMALL_GRID_BELOW = tl_mod.M2_FORWARD_SMALL_GRID_BELOW = 10**9
        tl_mod.M2_SEGMENTS = 4
    B, N, T = 2, 3, int(os.environ.get("STEPS", 640))  # T % 16 == 0 (Triton specialises it: wider loads)
    gates = torch.randn((B, N, m, m + 1, T) if blocked else (B, N, m + 1, T), dtype=torch.bfloat16)
    values = torch.randn((B, N, m, T) if blocked else (B, N, T), dtype=torch.bfloat16)
    for cap in [int(c) for c in args.caps.split(",")]:
        def capped(*a, **kw):
            g, options = grid(*a, **kw)
            if bool(kw.get("backward")) != args.forward:
                options.pop("maxnreg", None)
                if cap:
                    options["maxnreg"] = cap
                if os.environ.get("NUM_STAGES"):
                    options["num_stages"] = int(os.environ["NUM_STAGES"])
            return g, options

        tl_mod._grid = capped
        kernels.clear()
        h0 = torch.randn(B, N, m) if "h0" in args.extras else None
        starts = torch.rand(B, T) < 0.01 if "starts" in args.extras else None
        bias = torch.randn(gates.shape[1:-1]) if "bias" in args.extras else None
        states, final = tl_mod.time_last_forward(gates, values, h0, "softmax", True, starts, bias)
        tl_mod.time_last_backward(gates, values, states, h0, torch.randn_like(states), final, "softmax", starts, bias)
        for name, kernel in kernels:
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(kernel.asm["cubin"])
                f.flush()
                usage = subprocess.run([compile_check_cuobjdump(), "--dump-resource-usage", f.name],
                                       capture_output=True, text=True).stdout
            if args.dump:
                os.makedirs(args.dump, exist_ok=True)
                for ir in ("ttgir", "ptx"):
                    with open(os.path.join(args.dump, f"{name}.cap{cap}.{ir}"), "w") as f:
                        f.write(kernel.asm[ir])
            found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
            print(f"cap {cap or 'none':>4}  {name:34s} REG {found[1]:>3}  STACK {found[2]:>4}  LOCAL {found[4]:>4}"
                  f"  SHARED {found[3]}", flush=True)


def compile_check_cuobjdump():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


if __name__ == "__main__":
    main()
