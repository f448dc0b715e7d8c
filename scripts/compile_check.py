"""Compile the scan kernels for an NVIDIA GPU without one: every kernel a forward+backward launches, for the H-LRU /
BD-LRU orders and modes chosen, through Triton's real front end and back end (ptxas), for `--arch` (90: H100 / H200).

The interpreter (TRITON_INTERPRET=1, what the CPU tests run) executes kernels as Python and accepts code that the
compiler refuses: Triton 3.6, the H200's, rejects a constexpr name assigned in each iteration of a static loop, which
3.9's interpreter runs. This script replaces Triton's driver with one that answers for `--arch` and makes each launch
compile without running (the outputs are garbage), so a run here catches such errors before a GPU is at hand. Run it
under the Triton of the target machine to check exactly what that machine will compile:

    python scripts/compile_check.py                   # every order and mode, bf16 and float32 (--quick: 330 s on 2 cores)
    python scripts/compile_check.py --quick           # m in {1, 2, 4, 8} (BD-LRU also 16), bf16, decode steps (tests)

It loads hf_lrnn's two scan modules by path, so a bare environment with torch and a pinned Triton suffices (no
transformers). Prints one line per configuration and exits 1 if any failed.
"""

import argparse
import importlib.util
import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _CompileOnlyDriver:
    """Just enough of Triton's active driver for JITFunction.run to compile for `target` (no CUDA, no device)."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_device_capability(self, device=None):
        return divmod(self.target.arch, 10)

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    def is_active(self):
        return True


def _load_scan_modules():
    """hf_lrnn.scan_torch, hf_lrnn.scan_triton, hf_lrnn.norm_triton, hf_lrnn.swiglu_triton, hf_lrnn.decode_triton and
    hf_lrnn.scan_time_last by path (hf_lrnn/__init__ imports transformers); returns the last five."""
    package = types.ModuleType("hf_lrnn")
    package.__path__ = [os.path.join(ROOT, "hf_lrnn")]
    sys.modules.setdefault("hf_lrnn", package)
    modules = []
    for name in ("scan_torch", "scan_triton", "norm_triton", "swiglu_triton", "decode_triton", "scan_time_last"):
        spec = importlib.util.spec_from_file_location(f"hf_lrnn.{name}", os.path.join(ROOT, "hf_lrnn", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[1], modules[2], modules[3], modules[4], modules[5]


_TRITON_RUN = None  # JITFunction.run as Triton defines it, before `compile_without_launching` replaced it


def compile_without_launching(arch: int = 90) -> list:
    """Make every Triton launch from here on compile for sm_`arch` (no GPU, no launch: the outputs stay garbage);
    returns the list to which each launch appends (kernel name, compiled kernel, launch keywords), whose kernels
    carry their PTX and cubin in `.asm`. `launch_again` undoes it."""
    global _TRITON_RUN
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    driver.set_active(_CompileOnlyDriver(GPUTarget("cuda", arch, 32)))
    _TRITON_RUN = _TRITON_RUN or JITFunction.run
    launches, run = [], _TRITON_RUN

    def compile_only(self, *args, grid, warmup, **kwargs):  # compile (and bind the arguments) but never launch
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        launches.append((self.__name__, kernel, kwargs))
        return kernel

    JITFunction.run = compile_only
    return launches


def launch_again():
    """Undo `compile_without_launching`'s replacement of Triton's launch."""
    from triton.runtime.jit import JITFunction

    if _TRITON_RUN is not None:
        JITFunction.run = _TRITON_RUN


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200; 80: A100)")
    ap.add_argument("--quick", action="store_true", help="m in {1, 2, 4, 8} (BD-LRU also 16: its tile kernels) and bf16 only")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("compile_check.py: TRITON_INTERPRET=1 is set; the interpreter compiles nothing, unset it")

    import torch
    import triton

    compiled = compile_without_launching(args.arch)
    scan, norm, swiglu, decode, time_last = _load_scan_modules()
    scan._num_sms = lambda device: 132  # the chunk policy asks the device; an H200 has 132 SMs

    # BD-LRU m = 16 runs the [m, m] tile kernels (m <= 8 runs one block per thread)
    orders = {False: (1, 2, 4, 8) if args.quick else (1, 2, 3, 4, 8)}
    orders[True] = orders[False] + (16,)
    dtypes = (torch.bfloat16,) if args.quick else (torch.bfloat16, torch.float32)
    print(f"Triton {triton.__version__}, target sm_{args.arch}", flush=True)
    start, outcomes = time.time(), []

    def check(name, run_configuration):
        """Compile what run_configuration() launches; print the kernels, or the error (and go on)."""
        first = len(compiled)
        try:
            run_configuration()
        except Exception as err:  # noqa: BLE001 (report every configuration, then fail)
            lines = str(err).strip().splitlines()
            print(f"FAIL {name}: {type(err).__name__}:\n    " + "\n    ".join(lines[-14:]), flush=True)
            outcomes.append(False)
            return
        print(f"ok   {name}: {', '.join(sorted(set(launch[0] for launch in compiled[first:])))}", flush=True)
        outcomes.append(True)

    for blocked in (False, True):
        for m in orders[blocked]:
            for chunk_size in (0, 64, None):  # sequential, chunked, the automatic choice (m = 1: the look-back)
                for with_initial_state in (False, True):
                    B, T, N = 2, 300, 64
                    gates = torch.randn((B, T, N, m, m + 1) if blocked else (B, T, N, m + 1), requires_grad=True)
                    values = torch.randn((B, T, N, m) if blocked else (B, T, N), requires_grad=True)
                    h0 = torch.randn(B, N, m, requires_grad=True) if with_initial_state else None
                    scan_fn = scan.bdlru_scan_triton if blocked else scan.hlru_scan_triton

                    def scan_forward_backward():
                        for dtype in dtypes:
                            states, final = scan_fn(gates.to(dtype), values.to(dtype), h0, "softmax", True, None,
                                                    chunk_size)
                            inputs = [gates, values] + ([h0] if h0 is not None else [])
                            torch.autograd.grad(states.float().sum() + final.float().sum(), inputs)

                    check(f"{'bdlru' if blocked else 'hlru'} m={m} chunk_size={chunk_size} initial_state={h0 is not None}",
                          scan_forward_backward)
    # decode steps written into the state (`scan_step_in_place`, what generate() runs per layer and token), H-LRU with
    # its read-out in bf16; the tile kernels (BD-LRU m = 16) have no such step
    for blocked in (False, True):
        for m in orders[blocked]:
            B, N = 2, 64
            gates = torch.randn((B, 1, N, m, m + 1) if blocked else (B, 1, N, m + 1), dtype=torch.bfloat16)
            values = torch.randn((B, 1, N, m) if blocked else (B, 1, N), dtype=torch.bfloat16)
            state = torch.randn(B, N, m)
            if not scan.can_step_in_place(blocked, gates, values, state):
                continue
            readout = None if blocked else torch.empty(B, 1, N * m, dtype=torch.bfloat16)
            check(f"{'bdlru' if blocked else 'hlru'} m={m} decode step in place",
                  lambda: scan.scan_step_in_place(blocked, gates, values, state, "softmax", readout))
    # the models' norms on the Triton backend: float32 residual stream in, autocast's bfloat16 out, d = 768
    for is_rms in (False, True):
        x = torch.randn(2, 5, 768, requires_grad=True)
        weight = torch.ones(768, requires_grad=True)
        bias = None if is_rms else torch.zeros(768, requires_grad=True)

        def norm_forward_backward():
            y = norm.norm_triton(x, weight, bias, 1e-5, is_rms, torch.bfloat16)
            torch.autograd.grad(y.float().sum(), [x, weight] + ([bias] if bias is not None else []))

        check(f"{'rms' if is_rms else 'layer'} norm", norm_forward_backward)

        def add_norm_forward_backward():  # the residual add before a block's second norm: bfloat16 delta
            delta = torch.randn(2, 5, 768, dtype=torch.bfloat16, requires_grad=True)
            total, y = norm.add_norm_triton(x, delta, weight, bias, 1e-5, is_rms, torch.bfloat16)
            torch.autograd.grad(total.sum() + y.float().sum(),
                                [x, delta, weight] + ([bias] if bias is not None else []))

        check(f"{'rms' if is_rms else 'layer'} add + norm", add_norm_forward_backward)
    # the SwiGLU's activation on the Triton backend: autocast's bfloat16 projections
    gate = torch.randn(2, 5, 2048, dtype=torch.bfloat16, requires_grad=True)
    up = torch.randn(2, 5, 2048, dtype=torch.bfloat16, requires_grad=True)
    check("silu * up", lambda: torch.autograd.grad(swiglu.silu_mul_triton(gate, up).float().sum(), [gate, up]))
    # a bfloat16 model's decode step: add + norm + the mixer's projections, add + norm + the SwiGLU's first half

    class _RMSNormStandIn(torch.nn.Module):  # what decode_triton reads of the models' RMSNorm: weight and eps
        def __init__(self, hidden_size):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(hidden_size))
            self.eps = 1e-5

    with torch.no_grad():
        for is_rms in (False, True):
            norm_module = _RMSNormStandIn(768) if is_rms else torch.nn.LayerNorm(768)
            norm_module = norm_module.to(torch.bfloat16)
            x, delta = (torch.randn(1, 1, 768, dtype=torch.bfloat16) for _ in range(2))
            value_proj = torch.nn.Linear(768, 768, bias=False).to(torch.bfloat16)
            coefficient_proj = torch.nn.Linear(768, 768 * 3, bias=True).to(torch.bfloat16)
            gate_proj, up_proj = (torch.nn.Linear(768, 2048, bias=False).to(torch.bfloat16) for _ in range(2))
            for with_delta in (False, True):
                check(f"{'rms' if is_rms else 'layer'} norm + projections{' after an add' if with_delta else ''}",
                      lambda: decode.norm_project(x, delta if with_delta else None, norm_module, is_rms, value_proj,
                                                  coefficient_proj, swiglu=False))
            check(f"{'rms' if is_rms else 'layer'} add + norm + SwiGLU projections",
                  lambda: decode.norm_project(x, delta, norm_module, is_rms, gate_proj, up_proj, swiglu=True))
        layer_norm = torch.nn.LayerNorm(768).to(torch.bfloat16)
        check("layer norm + one projection (non-selective mixer)",
              lambda: decode.norm_project(x, delta, layer_norm, False, value_proj, None, swiglu=False))
        rows, rows_delta = (torch.randn(3, 1, 768, dtype=torch.bfloat16) for _ in range(2))  # several rows' blocking
        check("3 rows: add + norm + projections",
              lambda: decode.norm_project(rows, rows_delta, layer_norm, False, value_proj, coefficient_proj,
                                          swiglu=False))
        check("3 rows: add + norm + SwiGLU projections",
              lambda: decode.norm_project(rows, rows_delta, layer_norm, False, gate_proj, up_proj, swiglu=True))
        # the decode step's output projections: the mixer's (768 -> 768) and the MLP's (2048 -> 768)
        down_proj = torch.nn.Linear(2048, 768, bias=False).to(torch.bfloat16)
        check("output projection 768 -> 768", lambda: decode.project_rows(x, value_proj))
        check("output projection 2048 -> 768",
              lambda: decode.project_rows(torch.randn(1, 1, 2048, dtype=torch.bfloat16), down_proj))
    # the order-1, 2 and 4 scans on time-last tensors: forward and backward, bfloat16, the activations' branches
    # (softmax and sigmoid: the one-exp pair at m = 1; relu / tanh: the generic normalisation), with and without
    # initial state, with and without document starts (those with a gate bias and the window as output too)
    def time_last_forward_backward(gates, values, h0, activation, starts, bias, window):
        states, final = time_last.time_last_forward(gates, values, h0, activation, True, starts, bias, window)
        time_last.time_last_backward(gates, values, states, h0, torch.randn_like(states), final, activation, starts,
                                     bias, window)

    for m, activation, with_initial_state, with_starts in (
            (1, "softmax", True, False), (1, "sigmoid", False, False), (1, "tanh", True, False),
            (2, "softmax", True, False), (2, "relu", False, False), (1, "softmax", False, True),
            (2, "softmax", True, True), (4, "softmax", True, False), (4, "tanh", False, False),
            (4, "softmax", True, True)):
        gates = torch.randn(2, 3, m + 1, 300, dtype=torch.bfloat16)
        values = torch.randn(2, 3, 300, dtype=torch.bfloat16)
        h0 = torch.randn(2, 3, m) if with_initial_state else None
        starts = torch.rand(2, 300) < 0.1 if with_starts else None
        bias = torch.randn(3, m + 1) if with_starts else None
        check(f"time-last order {m}, {activation}{', initial state' if with_initial_state else ''}"
              f"{', document starts, gate bias, window' if with_starts else ''}",
              lambda: time_last_forward_backward(gates, values, h0, activation, starts, bias, with_starts))
    # order 4 above ran on a small grid (M4_CHUNKED_BELOW): the forward in segments of a row (M4_SEGMENTS), the
    # backward in chunks of a tile; here in whole rows
    chunked_below, time_last.M4_CHUNKED_BELOW = time_last.M4_CHUNKED_BELOW, 0
    check("time-last order 4, softmax, whole rows, initial state, document starts, gate bias, window",
          lambda: time_last_forward_backward(gates, values, h0, "softmax", starts, bias, True))
    time_last.M4_CHUNKED_BELOW = chunked_below
    # the grids that are not small (the CPU counts as 132 SMs): m = 1's forward without a software pipeline (STAGES 1),
    # m = 2 a warp a row (IN_THREADS_TILE)
    small_grid_below, time_last.SMALL_GRID_BELOW = time_last.SMALL_GRID_BELOW, 0
    forward_small_grid_below, time_last.M2_FORWARD_SMALL_GRID_BELOW = time_last.M2_FORWARD_SMALL_GRID_BELOW, 0
    gates, values = torch.randn(2, 3, 2, 300, dtype=torch.bfloat16), torch.randn(2, 3, 300, dtype=torch.bfloat16)
    stages, time_last.FORWARD_STAGES = time_last.FORWARD_STAGES, 1
    check("time-last order 1, softmax, no software pipeline",
          lambda: time_last.time_last_forward(gates, values, torch.randn(2, 3, 1), "softmax", True, None))
    time_last.FORWARD_STAGES = stages
    for activation, with_starts in (("softmax", False), ("softmax", True), ("tanh", False), ("relu", False)):
        gates, values = torch.randn(2, 3, 3, 3000, dtype=torch.bfloat16), torch.randn(2, 3, 3000, dtype=torch.bfloat16)
        h0, starts = torch.randn(2, 3, 2), (torch.rand(2, 3000) < 0.01 if with_starts else None)
        bias = torch.randn(3, 3) if with_starts else None
        check(f"time-last order 2, {activation}, in threads"
              f"{', document starts, gate bias, window' if with_starts else ''}",
              lambda: time_last_forward_backward(gates, values, h0, activation, starts, bias, with_starts))
    # a one-wave register cap (this small grid never gets one: `_backward_register_cap` asks for 80 registers here)
    register_cap = time_last._backward_register_cap
    time_last._backward_register_cap = lambda programs, num_warps, device, most=None: 80
    check("time-last order 2, softmax, in threads, backward register cap 80, document starts, gate bias, window",
          lambda: time_last_forward_backward(gates, values, h0, "softmax", starts, bias, True))
    time_last._backward_register_cap = register_cap
    time_last.SMALL_GRID_BELOW = small_grid_below
    time_last.M2_FORWARD_SMALL_GRID_BELOW = forward_small_grid_below
    # H-LRU m = 2 on a small grid in segments of a row, a warp each (M2_SEGMENTS; the order-2 checks above ran 8)
    segments, time_last.M2_SEGMENTS = time_last.M2_SEGMENTS, 4
    gates, values = torch.randn(2, 3, 3, 3000, dtype=torch.bfloat16), torch.randn(2, 3, 3000, dtype=torch.bfloat16)
    h0, starts, bias = torch.randn(2, 3, 2), torch.rand(2, 3000) < 0.01, torch.randn(3, 3)
    check("time-last order 2, softmax, in 4 segments, initial state, document starts, gate bias, window",
          lambda: time_last_forward_backward(gates, values, h0, "softmax", starts, bias, True))
    time_last.M2_SEGMENTS = segments
    # H-LRU m = 4's forward on a small grid in chunks of a tile joined by a look-back (M4_SEGMENTS off), as its backward
    segments, time_last.M4_SEGMENTS = time_last.M4_SEGMENTS, False
    gates, values = torch.randn(2, 3, 5, 3000, dtype=torch.bfloat16), torch.randn(2, 3, 3000, dtype=torch.bfloat16)
    h0, bias = torch.randn(2, 3, 4), torch.randn(3, 5)
    check("time-last order 4, softmax, forward in chunks, initial state, document starts, gate bias, window",
          lambda: time_last_forward_backward(gates, values, h0, "softmax", starts, bias, True))
    time_last.M4_SEGMENTS = segments
    # BD-LRU on time-last tensors: forward (pipelined) and backward, with and without initial state, document starts
    # and a gate bias; block size 2 composed in threads (grids that are not small), then in segments of a row and as a
    # tile scan (small grids), then in threads with the register prefetch of large grids; block size 4 composed in
    # threads, a whole row a program
    def block_forward_backward(gates, values, h0, activation, starts, bias):
        states, final = time_last.time_last_forward(gates, values, h0, activation, True, starts, bias)
        time_last.time_last_backward(gates, values, states, h0, torch.randn_like(states), final, activation, starts,
                                     bias)

    bd2_small_grid_below, bd4_segments = time_last.BD2_SMALL_GRID_BELOW, time_last.BD4_SEGMENTS
    time_last.BD4_SEGMENTS = False
    for m, paths in ((2, ((0, True, ", in threads"), (10**9, True, ", in segments"), (10**9, False, ", tile scan"))),
                     (4, ((bd2_small_grid_below, True, ""),))):
        gates = torch.randn(2, 3, m, m + 1, 600, dtype=torch.bfloat16)
        values = torch.randn(2, 3, m, 600, dtype=torch.bfloat16)
        for small_grid_below_here, segments, path in paths:
            time_last.BD2_SMALL_GRID_BELOW, time_last.BD2_SEGMENTS = small_grid_below_here, segments
            for activation, h0, starts, bias in (("softmax", torch.randn(2, 3, m), None, None),
                                                 ("relu", None, None, None),
                                                 ("softmax", torch.randn(2, 3, m), torch.rand(2, 600) < 0.01,
                                                  torch.randn(3, m, m + 1))):
                check(f"time-last BD-LRU block size {m}{path}, {activation}"
                      f"{', initial state' if h0 is not None else ''}"
                      f"{', document starts, gate bias' if starts is not None else ''}",
                      lambda: block_forward_backward(gates, values, h0, activation, starts, bias))
    # block size 2 in threads with the register prefetch of large grids (BD2_REGISTER_PREFETCH_FROM)
    time_last.BD2_SMALL_GRID_BELOW = 0
    prefetch_from, time_last.BD2_REGISTER_PREFETCH_FROM = time_last.BD2_REGISTER_PREFETCH_FROM, 0
    gates2, values2 = torch.randn(2, 3, 2, 3, 600, dtype=torch.bfloat16), torch.randn(2, 3, 2, 600, dtype=torch.bfloat16)
    check("time-last BD-LRU block size 2, in threads, register prefetch, softmax, initial state, document starts, "
          "gate bias", lambda: block_forward_backward(gates2, values2, torch.randn(2, 3, 2), "softmax",
                                                      torch.rand(2, 600) < 0.01, torch.randn(3, 2, 3)))
    time_last.BD2_REGISTER_PREFETCH_FROM = prefetch_from
    time_last.BD2_SMALL_GRID_BELOW, time_last.BD2_SEGMENTS = bd2_small_grid_below, True
    # BD-LRU block size 4 in segments of a row (BD4_SEGMENTS; 8 runs on this grid)
    time_last.BD4_SEGMENTS = True
    for activation, h0, starts, bias in (("relu", None, None, None),
                                         ("softmax", torch.randn(2, 3, 4), torch.rand(2, 600) < 0.01,
                                          torch.randn(3, 4, 5))):
        check(f"time-last BD-LRU block size 4, in segments, {activation}"
              f"{', initial state, document starts, gate bias' if starts is not None else ''}",
              lambda: block_forward_backward(gates, values, h0, activation, starts, bias))
    time_last.BD4_SEGMENTS = bd4_segments
    launch_again()
    total, failed = len(outcomes), outcomes.count(False)
    print(f"{total - failed} of {total} configurations compiled ({len(compiled)} kernels) in {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
