"""Probe (not the library's): H-LRU m = 2's time-last forward with the recurrence sequential inside each thread.

The library kernel (hf_lrnn/scan_time_last.py) scans 6-component companion maps with tl.associative_scan: 12
multiply-adds per combine, once in-thread and once more to apply the prefix, plus the cross-lane tree. Here each
thread's K consecutive steps (a [BT] tile reshaped to [BT / K, K] and split into K columns, which Triton keeps in
the thread) are composed sequentially, where one companion step costs 6 multiply-adds (the map's second row is the
first row of the step before); only the BT / K group aggregates go through tl.associative_scan; each group's start
window is the end window of the group before (tl.gather); the K states are then recomputed from it, 2
multiply-adds each. Softmax gates, no initial window or document starts: enough to time it against the library.

Usage on the GPU: python3 m2_sequential.py OUT_DIR; on a CPU: TRITON_INTERPRET=1 python3 m2_sequential.py --check
"""
import json
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _companion_combine(p_l, q_l, r_l, s_l, b1_l, b2_l, p_r, q_r, r_r, s_r, b1_r, b2_r):
    return (p_r * p_l + q_r * r_l, p_r * q_l + q_r * s_l, r_r * p_l + s_r * r_l, r_r * q_l + s_r * s_l,
            p_r * b1_l + q_r * b2_l + b1_r, r_r * b1_l + s_r * b2_l + b2_r)


@triton.jit
def _split8(x, G: tl.constexpr):
    """[G * 8] -> its 8 columns [G] (column k holds steps 8 g + k)."""
    x = tl.reshape(x, [G, 2, 2, 2])
    x0, x1 = tl.split(x)  # last index l
    x00, x01 = tl.split(x0)  # then j (of l = 0)
    x10, x11 = tl.split(x1)
    c0, c4 = tl.split(x00)  # then i: k = 4 i + 2 j + l
    c2, c6 = tl.split(x01)
    c1, c5 = tl.split(x10)
    c3, c7 = tl.split(x11)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _join8(c0, c1, c2, c3, c4, c5, c6, c7, G: tl.constexpr):
    x00 = tl.join(c0, c4)
    x01 = tl.join(c2, c6)
    x10 = tl.join(c1, c5)
    x11 = tl.join(c3, c7)
    x0 = tl.join(x00, x01)
    x1 = tl.join(x10, x11)
    return tl.reshape(tl.join(x0, x1), [G * 8])


@triton.jit
def _normalized(gates, row, t, mask, T):
    base = 3 * row * T
    z1 = tl.load(gates + base + t, mask=mask, other=0.0).to(tl.float32)
    z2 = tl.load(gates + base + T + t, mask=mask, other=0.0).to(tl.float32)
    zg = tl.load(gates + base + 2 * T + t, mask=mask, other=0.0).to(tl.float32)
    top = tl.maximum(tl.maximum(z1, z2), zg)
    e1, e2, eg = tl.exp(z1 - top), tl.exp(z2 - top), tl.exp(zg - top)
    inv = 1.0 / (e1 + e2 + eg)
    return e1 * inv, e2 * inv, eg * inv


@triton.jit
def _step_map(p, q, r, s, b1, b2, a1, a2, x):
    """(M, b) then one companion step [[a1, a2], [1, 0]], + (x, 0): 6 multiply-adds."""
    return a1 * p + a2 * r, a1 * q + a2 * s, p, q, a1 * b1 + a2 * b2 + x, b1


@triton.jit
def m2_sequential_fwd_kernel(gates, values, states, T, BT: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    G: tl.constexpr = BT // 8
    h1 = 0.0  # s_{t-1} before the tile
    h2 = 0.0
    g_index = tl.arange(0, G)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        mask = t < T
        a1, a2, g = _normalized(gates, row, t, mask, T)
        x = tl.load(values + row * T + t, mask=mask, other=0.0).to(tl.float32)
        a1 = tl.where(mask, a1, 1.0)  # past T: the identity map
        a2 = tl.where(mask, a2, 0.0)
        u = tl.where(mask, g * x, 0.0)
        a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = _split8(a1, G)
        a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7 = _split8(a2, G)
        u_0, u_1, u_2, u_3, u_4, u_5, u_6, u_7 = _split8(u, G)
        # each group's 8 steps composed in the thread: (M, b) starting from the identity
        one = tl.full([G], 1.0, tl.float32)
        zero = tl.zeros([G], tl.float32)
        p, q, r, s, b1, b2 = _step_map(one, zero, zero, one, zero, zero, a1_0, a2_0, u_0)
        p, q, r, s, b1, b2 = _step_map(p, q, r, s, b1, b2, a1_1, a2_1, u_1)
        p, q, r, s, b1, b2 = _step_map(p, q, r, s, b1, b2, a1_2, a2_2, u_2)
        p, q, r, s, b1, b2 = _step_map(p, q, r, s, b1, b2, a1_3, a2_3, u_3)
        p, q, r, s, b1, b2 = _step_map(p, q, r, s, b1, b2, a1_4, a2_4, u_4)
        p, q, r, s, b1, b2 = _step_map(p, q, r, s, b1, b2, a1_5, a2_5, u_5)
        p, q, r, s, b1, b2 = _step_map(p, q, r, s, b1, b2, a1_6, a2_6, u_6)
        p, q, r, s, b1, b2 = _step_map(p, q, r, s, b1, b2, a1_7, a2_7, u_7)
        # the groups' maps composed across threads; the window at each group's end
        p, q, r, s, b1, b2 = tl.associative_scan((p, q, r, s, b1, b2), 0, _companion_combine)
        end1 = p * h1 + q * h2 + b1
        end2 = r * h1 + s * h2 + b2
        # a group's start window is the end window of the group before (the tile's incoming window for the first)
        before = tl.maximum(g_index - 1, 0)
        w1 = tl.where(g_index == 0, h1, tl.gather(end1, before, 0))
        w2 = tl.where(g_index == 0, h2, tl.gather(end2, before, 0))
        # the 8 states of each group from its start window: 2 multiply-adds each
        s0 = a1_0 * w1 + a2_0 * w2 + u_0
        s1 = a1_1 * s0 + a2_1 * w1 + u_1
        s2 = a1_2 * s1 + a2_2 * s0 + u_2
        s3 = a1_3 * s2 + a2_3 * s1 + u_3
        s4 = a1_4 * s3 + a2_4 * s2 + u_4
        s5 = a1_5 * s4 + a2_5 * s3 + u_5
        s6 = a1_6 * s5 + a2_6 * s4 + u_6
        s7 = a1_7 * s6 + a2_7 * s5 + u_7
        out = _join8(s0, s1, s2, s3, s4, s5, s6, s7, G)
        tl.store(states + row * T + t, out.to(states.dtype.element_ty), mask=mask)
        last = g_index == G - 1
        h1 = tl.sum(tl.where(last, end1, 0.0), axis=0)
        h2 = tl.sum(tl.where(last, end2, 0.0), axis=0)


def m2_sequential_forward(gates, values, BT=1024, num_warps=4):
    """gates [B, N, 3, T], values [B, N, T] -> states [B, N, T] (softmax gates, zero initial window)."""
    B, N, _, T = gates.shape
    states = torch.empty_like(values)
    m2_sequential_fwd_kernel[(B * N,)](gates, values, states, T, BT=min(BT, max(16, triton.next_power_of_2(T))),
                                       num_warps=num_warps)
    return states


def reference(gates, values):
    B, N, _, T = gates.shape
    c = torch.softmax(gates.double(), dim=2)
    s1 = torch.zeros(B, N, dtype=torch.float64, device=gates.device)
    s2 = torch.zeros_like(s1)
    out = torch.empty(B, N, T, dtype=torch.float64, device=gates.device)
    for t in range(T):
        s = c[:, :, 0, t] * s1 + c[:, :, 1, t] * s2 + c[:, :, 2, t] * values[:, :, t].double()
        s1, s2 = s, s1
        out[:, :, t] = s
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        for T, BT in ((50, 16), (16, 16), (37, 32), (100, 64)):
            g = torch.randn(2, 3, 3, T, dtype=torch.float32) * 2
            v = torch.randn(2, 3, T, dtype=torch.float32)
            got = m2_sequential_forward(g, v, BT=BT, num_warps=1)
            err = (got.double() - reference(g, v)).abs().max().item()
            print(f"T={T} BT={BT}: max |err| {err:.2e}")
            assert err < 1e-5
        sys.exit(0)
    from triton.testing import do_bench, do_bench_cudagraph

    import hf_lrnn.scan_time_last as lib

    out = sys.argv[1]
    x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    copy_tbps = 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=10, rep=50) * 1e-3) / 1e12
    del x, y
    lines, rows = [f"copy {copy_tbps:.2f} TB/s; m = 2 time-last forward, GPU us (CUDA graph), % of copy"], []
    for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (8, 2048, 768)):
        N = D // 2
        g = torch.randn(B, N, 3, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        ref = reference(g[:1, :4].float(), v[:1, :4].float())
        err = (m2_sequential_forward(g, v)[:1, :4].double() - ref).abs().max().item()
        nbytes = 2 * B * T * N * 5
        row = dict(B=B, T=T, D=D, max_abs_err_bf16_out=err)
        with torch.no_grad():
            row["library_us"] = 1e3 * do_bench_cudagraph(lambda: lib.time_last_forward(g, v, None, "softmax", False),
                                                         rep=60)
            for bt, w in ((1024, 4), (2048, 8), (1024, 2), (512, 2)):
                row[f"sequential_{bt}_{w}_us"] = 1e3 * do_bench_cudagraph(
                    lambda: m2_sequential_forward(g, v, bt, w), rep=60)
        pct = {k: 100 * nbytes / (v_ * 1e-6) / 1e12 / copy_tbps for k, v_ in row.items() if k.endswith("_us")}
        row.update({k.replace("_us", "_pct"): p for k, p in pct.items()})
        rows.append(row)
        line = f"B{B} T{T} D{D}: " + ", ".join(f"{k.removesuffix('_us')} {p:.1f} %" for k, p in pct.items()) + f"; err {err:.1e}"
        lines.append(line)
        print(line, flush=True)
    open(f"{out}/m2_sequential.txt", "w").write("\n".join(lines) + "\n")
    json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/m2_sequential.json", "w"), indent=1)
