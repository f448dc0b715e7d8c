"""Probe, not library code: H-LRU m = 4 forward on time-last tensors composed in threads, as the library's m = 2
(scan_time_last._m2_tile_in_threads): each thread composes its 8 consecutive steps' 4 x 4 companion maps one after
another (16 multiply-adds a step: the new first row is a . M, the other rows shift down), only the 32 groups' maps
(20 components) go through tl.associative_scan across the warp, each group's start window is the end window of the
group before (tl.gather), and the states follow at 4 multiply-adds each. Softmax over the 5 logits; no initial
window, no document starts. Checked against a float64 loop; on a GPU also timed (CUDA-graph replays) against the
library's [B, T, N] m = 4 forward, % of copy under 7 elements per step (5 logits, value, state).
Usage: python3 probe.py OUT_DIR (with TRITON_INTERPRET=1: the check on tiny shapes only)"""
import json
import os
import sys

import torch
import triton
import triton.language as tl

from hf_lrnn.scan_time_last import _join_steps, _split_steps, _tile_offsets

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _step4(m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
           a1, a2, a3, a4, u):
    """(M, b) followed by one step u_t = C_t u_{t-1} + (u, 0, 0, 0), C = [[a1, a2, a3, a4], [1, 0, 0, 0], [0, 1, 0, 0],
    [0, 0, 1, 0]]: the first row becomes a . M, the others shift down."""
    return (a1 * m00 + a2 * m10 + a3 * m20 + a4 * m30, a1 * m01 + a2 * m11 + a3 * m21 + a4 * m31,
            a1 * m02 + a2 * m12 + a3 * m22 + a4 * m32, a1 * m03 + a2 * m13 + a3 * m23 + a4 * m33,
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23,
            a1 * b0 + a2 * b1 + a3 * b2 + a4 * b3 + u, b0, b1, b2)


@triton.jit
def _combine4(m00_l, m01_l, m02_l, m03_l, m10_l, m11_l, m12_l, m13_l, m20_l, m21_l, m22_l, m23_l, m30_l, m31_l, m32_l, m33_l,
              b0_l, b1_l, b2_l, b3_l,
              m00_r, m01_r, m02_r, m03_r, m10_r, m11_r, m12_r, m13_r, m20_r, m21_r, m22_r, m23_r, m30_r, m31_r, m32_r, m33_r,
              b0_r, b1_r, b2_r, b3_r):
    """(M_l, b_l) then (M_r, b_r): u -> M_r (M_l u + b_l) + b_r, 4 x 4."""
    return (m00_r * m00_l + m01_r * m10_l + m02_r * m20_l + m03_r * m30_l,
            m00_r * m01_l + m01_r * m11_l + m02_r * m21_l + m03_r * m31_l,
            m00_r * m02_l + m01_r * m12_l + m02_r * m22_l + m03_r * m32_l,
            m00_r * m03_l + m01_r * m13_l + m02_r * m23_l + m03_r * m33_l,
            m10_r * m00_l + m11_r * m10_l + m12_r * m20_l + m13_r * m30_l,
            m10_r * m01_l + m11_r * m11_l + m12_r * m21_l + m13_r * m31_l,
            m10_r * m02_l + m11_r * m12_l + m12_r * m22_l + m13_r * m32_l,
            m10_r * m03_l + m11_r * m13_l + m12_r * m23_l + m13_r * m33_l,
            m20_r * m00_l + m21_r * m10_l + m22_r * m20_l + m23_r * m30_l,
            m20_r * m01_l + m21_r * m11_l + m22_r * m21_l + m23_r * m31_l,
            m20_r * m02_l + m21_r * m12_l + m22_r * m22_l + m23_r * m32_l,
            m20_r * m03_l + m21_r * m13_l + m22_r * m23_l + m23_r * m33_l,
            m30_r * m00_l + m31_r * m10_l + m32_r * m20_l + m33_r * m30_l,
            m30_r * m01_l + m31_r * m11_l + m32_r * m21_l + m33_r * m31_l,
            m30_r * m02_l + m31_r * m12_l + m32_r * m22_l + m33_r * m32_l,
            m30_r * m03_l + m31_r * m13_l + m32_r * m23_l + m33_r * m33_l,
            m00_r * b0_l + m01_r * b1_l + m02_r * b2_l + m03_r * b3_l + b0_r,
            m10_r * b0_l + m11_r * b1_l + m12_r * b2_l + m13_r * b3_l + b1_r,
            m20_r * b0_l + m21_r * b1_l + m22_r * b2_l + m23_r * b3_l + b2_r,
            m30_r * b0_l + m31_r * b1_l + m32_r * b2_l + m33_r * b3_l + b3_r)


@triton.jit
def _end(M0, M1, M2, M3, b, h0, h1, h2, h3):
    """Row of (M h + b) for h [BC] broadcast over the groups."""
    return M0 * h0[:, None] + M1 * h1[:, None] + M2 * h2[:, None] + M3 * h3[:, None] + b


@triton.jit
def _m4_fwd_kernel(gates, values, states, T, N, BC: tl.constexpr, BT: tl.constexpr):
    b, rows, mc = _tile_offsets(T, N, BC)
    G: tl.constexpr = BT // 8
    h0 = tl.zeros([BC], dtype=tl.float32)  # s_{t-1} before the tile, then s_{t-2}, s_{t-3}, s_{t-4}
    h1 = tl.zeros([BC], dtype=tl.float32)
    h2 = tl.zeros([BC], dtype=tl.float32)
    h3 = tl.zeros([BC], dtype=tl.float32)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        mask = mc[:, None] & (t < T)[None, :]
        base = (5 * rows)[:, None] * T + t[None, :]
        z1 = tl.load(gates + base, mask=mask, other=0.0).to(tl.float32)
        z2 = tl.load(gates + base + T, mask=mask, other=0.0).to(tl.float32)
        z3 = tl.load(gates + base + 2 * T, mask=mask, other=0.0).to(tl.float32)
        z4 = tl.load(gates + base + 3 * T, mask=mask, other=0.0).to(tl.float32)
        zg = tl.load(gates + base + 4 * T, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(values + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)
        top = tl.maximum(tl.maximum(tl.maximum(z1, z2), tl.maximum(z3, z4)), zg)
        e1, e2, e3, e4, eg = tl.exp(z1 - top), tl.exp(z2 - top), tl.exp(z3 - top), tl.exp(z4 - top), tl.exp(zg - top)
        inv = 1.0 / (e1 + e2 + e3 + e4 + eg)
        a1 = tl.where(mask, e1 * inv, 1.0)  # steps past T: s_t = s_{t-1}
        a2 = tl.where(mask, e2 * inv, 0.0)
        a3 = tl.where(mask, e3 * inv, 0.0)
        a4 = tl.where(mask, e4 * inv, 0.0)
        u = tl.where(mask, eg * inv * x, 0.0)
        p0, p1, p2, p3, p4, p5, p6, p7 = _split_steps(a1, BC, G)
        q0, q1, q2, q3, q4, q5, q6, q7 = _split_steps(a2, BC, G)
        r0, r1, r2, r3, r4, r5, r6, r7 = _split_steps(a3, BC, G)
        w0_, w1_, w2_, w3_, w4_, w5_, w6_, w7_ = _split_steps(a4, BC, G)
        u0, u1, u2, u3, u4, u5, u6, u7 = _split_steps(u, BC, G)
        one = tl.full([BC, G], 1.0, tl.float32)
        zero = tl.zeros([BC, G], tl.float32)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            one, zero, zero, zero, zero, one, zero, zero, zero, zero, one, zero, zero, zero, zero, one,
            zero, zero, zero, zero, p0, q0, r0, w0_, u0)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
            p1, q1, r1, w1_, u1)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
            p2, q2, r2, w2_, u2)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
            p3, q3, r3, w3_, u3)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
            p4, q4, r4, w4_, u4)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
            p5, q5, r5, w5_, u5)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
            p6, q6, r6, w6_, u6)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = _step4(
            m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3,
            p7, q7, r7, w7_, u7)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = \
            tl.associative_scan(
                (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3), 1, _combine4)
        e0 = _end(m00, m01, m02, m03, b0, h0, h1, h2, h3)  # the window after each group
        e1_ = _end(m10, m11, m12, m13, b1, h0, h1, h2, h3)
        e2_ = _end(m20, m21, m22, m23, b2, h0, h1, h2, h3)
        e3_ = _end(m30, m31, m32, m33, b3, h0, h1, h2, h3)
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        before = tl.maximum(group - 1, 0)
        v0 = tl.where(group == 0, h0[:, None], tl.gather(e0, before, 1))  # the window before each group
        v1 = tl.where(group == 0, h1[:, None], tl.gather(e1_, before, 1))
        v2 = tl.where(group == 0, h2[:, None], tl.gather(e2_, before, 1))
        v3 = tl.where(group == 0, h3[:, None], tl.gather(e3_, before, 1))
        s0 = p0 * v0 + q0 * v1 + r0 * v2 + w0_ * v3 + u0
        s1 = p1 * s0 + q1 * v0 + r1 * v1 + w1_ * v2 + u1
        s2 = p2 * s1 + q2 * s0 + r2 * v0 + w2_ * v1 + u2
        s3 = p3 * s2 + q3 * s1 + r3 * s0 + w3_ * v0 + u3
        s4 = p4 * s3 + q4 * s2 + r4 * s1 + w4_ * s0 + u4
        s5 = p5 * s4 + q5 * s3 + r5 * s2 + w5_ * s1 + u5
        s6 = p6 * s5 + q6 * s4 + r6 * s3 + w6_ * s2 + u6
        s7 = p7 * s6 + q7 * s5 + r7 * s4 + w7_ * s3 + u7
        s = _join_steps(s0, s1, s2, s3, s4, s5, s6, s7, BC, G)
        tl.store(states + rows[:, None] * T + t[None, :], s.to(states.dtype.element_ty), mask=mask)
        last = group == G - 1
        h0 = tl.sum(tl.where(last, e0, 0.0), axis=1)
        h1 = tl.sum(tl.where(last, e1_, 0.0), axis=1)
        h2 = tl.sum(tl.where(last, e2_, 0.0), axis=1)
        h3 = tl.sum(tl.where(last, e3_, 0.0), axis=1)


def forward(gates, values, BC, BT, num_warps):
    B, N, _, T = gates.shape
    states = torch.empty_like(values)
    _m4_fwd_kernel[(B * triton.cdiv(N, BC),)](gates, values, states, T, N, BC=BC, BT=BT, num_warps=num_warps)
    return states


def reference(gates, values):
    """The float64 loop: s_t = sum_k a_k,t s_{t-k} + g_t v_t, softmax over the 5 logits, zero initial window."""
    coefficients = torch.softmax(gates.double(), dim=2)  # [B, N, 5, T]
    B, N, _, T = gates.shape
    window = [torch.zeros(B, N, dtype=torch.float64, device=gates.device) for _ in range(4)]
    out = []
    for t in range(T):
        s = sum(coefficients[:, :, k, t] * window[k] for k in range(4)) \
            + coefficients[:, :, 4, t] * values[..., t].double()
        window = [s] + window[:3]
        out.append(s)
    return torch.stack(out, dim=-1)


def main():
    device = "cpu" if INTERPRET else "cuda"
    g = torch.Generator().manual_seed(0)
    lines, rows = [], []
    for B, N, T in ((2, 3, 50), (1, 2, 17)) if INTERPRET else ((2, 70, 3000),):
        gates = (torch.randn(B, N, 5, T, generator=g) * 2).to(device)
        values = torch.randn(B, N, T, generator=g).to(device)
        tile = (2, 16, 1) if INTERPRET else (1, 256, 1)
        got = forward(gates, values, *tile)
        want = reference(gates, values)
        diff = (got.double() - want).abs().max().item()
        lines.append(f"check B{B} N{N} T{T}: max |diff| against the float64 loop {diff:.2e}")
        print(lines[-1], flush=True)
        assert diff < 1e-5, diff
    if INTERPRET:
        return
    from triton.testing import do_bench, do_bench_cudagraph

    from hf_lrnn import hlru_scan

    out = sys.argv[1]
    x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    copy_tbps = 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=10, rep=50) * 1e-3) / 1e12
    lines.append(f"copy {copy_tbps:.2f} TB/s; H-LRU m = 4 forward, % of copy (7 elements per step), GPU time of "
                 "CUDA-graph replays")
    for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (8, 2048, 768)):
        N = D // 4
        gates = torch.randn(B, N, 5, T, device="cuda", dtype=torch.bfloat16)
        values = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        first = gates.permute(0, 3, 1, 2).contiguous()  # [B, T, N, 5] for the library's [B, T, N] kernels
        values_first = values.transpose(1, 2).contiguous()
        nbytes = 2 * B * T * N * 7
        row = dict(B=B, T=T, D=D)
        for bc, bt, w in ((1, 256, 1), (2, 256, 2), (1, 512, 1)):
            ms = do_bench_cudagraph(lambda: forward(gates, values, bc, bt, w), rep=50)
            row[f"in_threads_{bc}_{bt}_{w}_pct"] = 100 * nbytes / (ms * 1e-3) / 1e12 / copy_tbps
        ms = do_bench_cudagraph(lambda: hlru_scan(first, values_first, backend="triton"), rep=50)
        row["library_time_first_pct"] = 100 * nbytes / (ms * 1e-3) / 1e12 / copy_tbps
        rows.append(row)
        lines.append(f"B{B} T{T} D{D}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith("pct")))
        print(lines[-1], flush=True)
    open(f"{out}/m4_probe.txt", "w").write("\n".join(lines) + "\n")
    json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/m4_probe.json", "w"), indent=1)


if __name__ == "__main__":
    main()
