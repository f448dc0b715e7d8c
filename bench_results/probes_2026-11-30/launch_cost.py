# Local (fake driver, .venv-t36) Python cost of one launch: a no-op kernel vs our _hlru_fwd_channel_per_thread_kernel
# launched as the forward does. Usage: .venv-t36/bin/python .prof/launch_cost.py
import sys, time, torch, triton, triton.language as tl
src = open(".prof/host_probe.py").read().split("m = int(sys.argv[2])")[0]
sys.argv = ["x", "hf_lrnn/scan_triton.py"]
exec(src)
@triton.jit
def _noop(a, b, c, d, e, f, g, h, n0, n1, n2, n3, X: tl.constexpr, Y: tl.constexpr):
    pass
_wrapped = triton.heuristics({"Y": lambda args: args["e"] is not None})(_noop)
t = torch.empty(16)
def plain(): _noop[(1,)](a=t, b=t, c=t, d=t, e=t, f=t, g=t, h=t, n0=1, n1=2, n2=3, n3=4, X=1, Y=True)
def wrapped(): _wrapped[(1,)](a=t, b=t, c=t, d=t, e=t, f=t, g=t, h=t, n0=1, n1=2, n2=3, n3=4, X=1)
B, T, N, m = 8, 2048, 384, 2
g = torch.randn(B, T, N, m + 1, dtype=torch.bfloat16); v = torch.randn(B, T, N, dtype=torch.bfloat16)
plan = st._make_plan(B, T, N, m, False, None, None, "cpu")
kernel, grid, kw = st._launch("fwd", False, m, N, 0, plan, "main")
states = torch.empty_like(v)
def ours(): kernel[grid](gates=g, values=v, stride_gates_b=g.stride(0), stride_gates_t=g.stride(1), T=T, N=N,
                         states=states, initial_state=None, final_state=None, aggregates=None, H0_PER_SEG=False, **kw)
def ours_launch_cfg(): st._launch("fwd", False, m, N, 0, plan, "main")
def ours_plan(): st._make_plan(B, T, N, m, False, None, None, "cpu")
for name, f in (("noop", plain), ("noop+heuristics", wrapped), ("ours", ours), ("_launch()", ours_launch_cfg), ("_make_plan()", ours_plan)):
    for _ in range(5): f()
    t0 = time.perf_counter()
    for _ in range(2000): f()
    print(f"{name}: {(time.perf_counter() - t0) / 2000 * 1e6:.1f} us", flush=True)
import cProfile, pstats
pr = cProfile.Profile(); pr.enable()
for _ in range(2000): ours()
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(15)
