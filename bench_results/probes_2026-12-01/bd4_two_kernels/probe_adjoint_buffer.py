"""Where BD-LRU block size 4's time-last backward keeps its adjoints, and its gradient tiles: in the value gradients'
buffer (the library at 88ac231: bfloat16 here, no memory more) against a float32 buffer of their own (+4 bytes a
channel-step), with 256- and 512-step gradient tiles; the same kernels (`_bd4_adjoint_kernel`,
`_bd4_gradients_kernel`) launched as `_bd4_backward` launches them. With --split-dtype, also a bfloat16 buffer of
their own (+2 bytes), which tells the shared buffer's cost from the dtype's. Usage: python probe_adjoint_buffer.py
OUT [--split-dtype]"""
import json
import sys

import torch
import triton

from hf_lrnn import scan_time_last as stl

out_dir = sys.argv[1]
rows, lines = [], []


def say(line):
    print(line, flush=True)
    lines.append(line)


def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def backward(gates, values, states, d_states, own_buffer, BT, num_warps):
    """own_buffer: False (the value gradients' buffer), True (float32) or a dtype."""
    B, N, T = gates.shape[0], gates.shape[1], gates.shape[-1]
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    own_dtype = own_buffer if isinstance(own_buffer, torch.dtype) else torch.float32
    adjoints = torch.empty_like(values, dtype=own_dtype) if own_buffer is not False else d_values
    grid, scan_tile = stl._grid(B, N, T, values.device, backward=True, order=4, blocked=True)
    flags = dict(ACT=0, HAS_BIAS=False, HAS_STARTS=False)
    stl._bd4_adjoint_kernel[grid](gates=gates, gate_bias=None, starts=None, d_states=d_states, d_final=None,
                                  adjoints=adjoints, T=T, N=N, HAS_D_FINAL=False, **flags, **scan_tile)
    tiles = triton.cdiv(T, BT)
    stl._bd4_gradients_kernel[(B * N * tiles,)](
        gates=gates, gate_bias=None, values=values, states=states, initial_state=None, starts=None, adjoints=adjoints,
        d_gates=d_gates, d_values=d_values, d_initial_state=None, d_bias_parts=None, T=T, N=N, HAS_H0=False, **flags,
        BC=1, BT=BT, num_warps=num_warps)
    return d_gates, d_values


for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (8, 2048, 768)):
    N = D // 4
    gates = (torch.randn(B, N, 4, 5, T, device="cuda") * 2).to(torch.bfloat16)
    values = torch.randn(B, N, 4, T, device="cuda").to(torch.bfloat16)
    states, _ = stl.time_last_forward(gates, values, None, "softmax", False)
    d_states = torch.randn_like(states)
    library = timed(lambda: stl.time_last_backward(gates, values, states, None, d_states, None, "softmax"))
    say(f"B{B} T{T} D{D}: library backward (time_last_backward) {library:.3f} ms")
    rows.append(dict(B=B, T=T, D=D, variant="library", ms=library))
    owns = (False, True, torch.bfloat16) if "--split-dtype" in sys.argv else (False, True)
    for own in owns:
        for bt, warps in ((256, 4), (512, 4), (512, 8)):
            ms = timed(lambda: backward(gates, values, states, d_states, own, bt, warps))
            where = {False: "in d_values", True: "float32 buffer"}.get(own, "bfloat16 buffer")
            name = f"adjoints {where}, gradient tiles {bt} / {warps} warps"
            say(f"B{B} T{T} D{D}: {name} {ms:.3f} ms ({library / ms:.2f}x the library)")
            rows.append(dict(B=B, T=T, D=D, variant=name, adjoints=where, BT=bt, num_warps=warps, ms=ms))

with open(f"{out_dir}/adjoint_buffer.json", "w") as fh:
    json.dump(rows, fh, indent=1)
with open(f"{out_dir}/adjoint_buffer.txt", "w") as fh:
    fh.write("\n".join(lines) + "\n")
