"""Probe, not library code: H-LRU m = 4 forward on time-last tensors composed in threads, as the library's m = 2
(scan_time_last._m2_tile_in_threads): each thread composes its 8 consecutive steps' 4 x 4 companion maps one after
another (16 multiply-adds a step: the new first row is a . M, the other rows shift down), only the 32 groups' maps
(20 components) go through tl.associative_scan across the warp, each group's start window is the end window of the
group before (tl.gather), and the states follow at 4 multiply-adds each. Softmax over the 5 logits; no initial
window, no document starts. The backward likewise on v = (lam, mu1, mu2, mu3) in the observer form (maps of step
t + 1 only), then the softmax backward. Checked against a float64 loop and its autograd; on a GPU also timed
(CUDA-graph replays) against the library's [B, T, N] m = 4, % of copy under bench_scan.py's byte model (7 elements
per step forward, 20 forward+backward).
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
def _load5(gates, rows, t, mask, T):
    """The 5 logits at steps t [BT] of rows [BC] (lags 1-4, input gate), float32."""
    base = (5 * rows)[:, None] * T + t[None, :]
    z1 = tl.load(gates + base, mask=mask, other=0.0).to(tl.float32)
    z2 = tl.load(gates + base + T, mask=mask, other=0.0).to(tl.float32)
    z3 = tl.load(gates + base + 2 * T, mask=mask, other=0.0).to(tl.float32)
    z4 = tl.load(gates + base + 3 * T, mask=mask, other=0.0).to(tl.float32)
    zg = tl.load(gates + base + 4 * T, mask=mask, other=0.0).to(tl.float32)
    return z1, z2, z3, z4, zg


@triton.jit
def _softmax5(z1, z2, z3, z4, zg):
    top = tl.maximum(tl.maximum(tl.maximum(z1, z2), tl.maximum(z3, z4)), zg)
    e1, e2, e3, e4, eg = tl.exp(z1 - top), tl.exp(z2 - top), tl.exp(z3 - top), tl.exp(z4 - top), tl.exp(zg - top)
    inv = 1.0 / (e1 + e2 + e3 + e4 + eg)
    return e1 * inv, e2 * inv, e3 * inv, e4 * inv, eg * inv


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
        z1, z2, z3, z4, zg = _load5(gates, rows, t, mask, T)
        x = tl.load(values + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)
        c1, c2, c3, c4, cg = _softmax5(z1, z2, z3, z4, zg)
        a1 = tl.where(mask, c1, 1.0)  # steps past T: s_t = s_{t-1}
        a2 = tl.where(mask, c2, 0.0)
        a3 = tl.where(mask, c3, 0.0)
        a4 = tl.where(mask, c4, 0.0)
        u = tl.where(mask, cg * x, 0.0)
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


@triton.jit
def _adjoint_step4(p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
                   a1, a2, a3, a4, d):
    """One step back after (P, q): v_t = A_{t+1} v_{t+1} + (d_t, 0, 0, 0) on v = (lam, mu1, mu2, mu3), A = [[a1, 1, 0,
    0], [a2, 0, 1, 0], [a3, 0, 0, 1], [a4, 0, 0, 0]] with the logits of step t + 1 (the observer form of the adjoint
    lam_t = d_t + sum_k a_k,t+k lam_t+k, whose maps need one step ahead only)."""
    return (a1 * p00 + p10, a1 * p01 + p11, a1 * p02 + p12, a1 * p03 + p13,
            a2 * p00 + p20, a2 * p01 + p21, a2 * p02 + p22, a2 * p03 + p23,
            a3 * p00 + p30, a3 * p01 + p31, a3 * p02 + p32, a3 * p03 + p33,
            a4 * p00, a4 * p01, a4 * p02, a4 * p03,
            a1 * q0 + q1 + d, a2 * q0 + q2, a3 * q0 + q3, a4 * q0)


@triton.jit
def _m4_bwd_kernel(gates, values, states, d_states, d_gates, d_values, T, N, BC: tl.constexpr, BT: tl.constexpr):
    """The m = 4 backward composed in threads: v = (lam, mu1, mu2, mu3) scanned from the end as in
    scan_time_last._m2_adjoint_tile_in_threads, then the logit and value gradients (softmax backward)."""
    b, rows, mc = _tile_offsets(T, N, BC)
    G: tl.constexpr = BT // 8
    c0 = tl.zeros([BC], dtype=tl.float32)  # v after the tile
    c1 = tl.zeros([BC], dtype=tl.float32)
    c2 = tl.zeros([BC], dtype=tl.float32)
    c3 = tl.zeros([BC], dtype=tl.float32)
    num_tiles = tl.cdiv(T, BT)
    for r in range(0, num_tiles):
        t0 = (num_tiles - 1 - r) * BT
        t = t0 + tl.arange(0, BT)
        mask = mc[:, None] & (t < T)[None, :]
        mask1 = mc[:, None] & (t + 1 < T)[None, :]
        y1, y2, y3, y4, yg = _load5(gates, rows, t + 1, mask1, T)
        n1, n2, n3, n4, _ = _softmax5(y1, y2, y3, y4, yg)
        n1 = tl.where(mask1, n1, 0.0)  # a_{t+1}; 0 past the last step
        n2 = tl.where(mask1, n2, 0.0)
        n3 = tl.where(mask1, n3, 0.0)
        n4 = tl.where(mask1, n4, 0.0)
        dy = tl.load(d_states + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)
        e0, e1, e2, e3, e4, e5, e6, e7 = _split_steps(n1, BC, G)
        f0, f1, f2, f3, f4, f5, f6, f7 = _split_steps(n2, BC, G)
        h0, h1, h2, h3, h4, h5, h6, h7 = _split_steps(n3, BC, G)
        k0, k1, k2, k3, k4, k5, k6, k7 = _split_steps(n4, BC, G)
        d0, d1, d2, d3, d4, d5, d6, d7 = _split_steps(dy, BC, G)
        one = tl.full([BC, G], 1.0, tl.float32)
        zero = tl.zeros([BC, G], tl.float32)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            one, zero, zero, zero, zero, one, zero, zero, zero, zero, one, zero, zero, zero, zero, one,
            zero, zero, zero, zero, e7, f7, h7, k7, d7)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
            e6, f6, h6, k6, d6)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
            e5, f5, h5, k5, d5)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
            e4, f4, h4, k4, d4)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
            e3, f3, h3, k3, d3)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
            e2, f2, h2, k2, d2)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
            e1, f1, h1, k1, d1)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = _adjoint_step4(
            p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3,
            e0, f0, h0, k0, d0)
        (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3) = tl.associative_scan(
            (p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33, q0, q1, q2, q3),
            1, _combine4, reverse=True)
        # v at each group's first step
        w0 = p00 * c0[:, None] + p01 * c1[:, None] + p02 * c2[:, None] + p03 * c3[:, None] + q0
        w1 = p10 * c0[:, None] + p11 * c1[:, None] + p12 * c2[:, None] + p13 * c3[:, None] + q1
        w2 = p20 * c0[:, None] + p21 * c1[:, None] + p22 * c2[:, None] + p23 * c3[:, None] + q2
        w3 = p30 * c0[:, None] + p31 * c1[:, None] + p32 * c2[:, None] + p33 * c3[:, None] + q3
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        after = tl.minimum(group + 1, G - 1)
        L = tl.where(group == G - 1, c0[:, None], tl.gather(w0, after, 1))  # v after each group
        M1 = tl.where(group == G - 1, c1[:, None], tl.gather(w1, after, 1))
        M2 = tl.where(group == G - 1, c2[:, None], tl.gather(w2, after, 1))
        M3 = tl.where(group == G - 1, c3[:, None], tl.gather(w3, after, 1))
        l7 = d7 + e7 * L + M1
        L, M1, M2, M3 = l7, f7 * L + M2, h7 * L + M3, k7 * L
        l6 = d6 + e6 * L + M1
        L, M1, M2, M3 = l6, f6 * L + M2, h6 * L + M3, k6 * L
        l5 = d5 + e5 * L + M1
        L, M1, M2, M3 = l5, f5 * L + M2, h5 * L + M3, k5 * L
        l4 = d4 + e4 * L + M1
        L, M1, M2, M3 = l4, f4 * L + M2, h4 * L + M3, k4 * L
        l3 = d3 + e3 * L + M1
        L, M1, M2, M3 = l3, f3 * L + M2, h3 * L + M3, k3 * L
        l2 = d2 + e2 * L + M1
        L, M1, M2, M3 = l2, f2 * L + M2, h2 * L + M3, k2 * L
        l1 = d1 + e1 * L + M1
        L, M1, M2, M3 = l1, f1 * L + M2, h1 * L + M3, k1 * L
        l0 = d0 + e0 * L + M1
        L, M1, M2, M3 = l0, f0 * L + M2, h0 * L + M3, k0 * L
        lam = _join_steps(l0, l1, l2, l3, l4, l5, l6, l7, BC, G)
        head = group == 0
        c0 = tl.sum(tl.where(head, w0, 0.0), axis=1)
        c1 = tl.sum(tl.where(head, w1, 0.0), axis=1)
        c2 = tl.sum(tl.where(head, w2, 0.0), axis=1)
        c3 = tl.sum(tl.where(head, w3, 0.0), axis=1)
        z1, z2, z3, z4, zg = _load5(gates, rows, t, mask, T)
        a1, a2, a3, a4, g = _softmax5(z1, z2, z3, z4, zg)
        x = tl.load(values + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)
        s1 = tl.load(states + rows[:, None] * T + t[None, :] - 1, mask=mask & (t >= 1)[None, :], other=0.0).to(tl.float32)
        s2 = tl.load(states + rows[:, None] * T + t[None, :] - 2, mask=mask & (t >= 2)[None, :], other=0.0).to(tl.float32)
        s3 = tl.load(states + rows[:, None] * T + t[None, :] - 3, mask=mask & (t >= 3)[None, :], other=0.0).to(tl.float32)
        s4 = tl.load(states + rows[:, None] * T + t[None, :] - 4, mask=mask & (t >= 4)[None, :], other=0.0).to(tl.float32)
        da1, da2, da3, da4, dg = lam * s1, lam * s2, lam * s3, lam * s4, lam * x
        dot = a1 * da1 + a2 * da2 + a3 * da3 + a4 * da4 + g * dg
        base = (5 * rows)[:, None] * T + t[None, :]
        tl.store(d_gates + base, (a1 * (da1 - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + base + T, (a2 * (da2 - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + base + 2 * T, (a3 * (da3 - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + base + 3 * T, (a4 * (da4 - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + base + 4 * T, (g * (dg - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_values + rows[:, None] * T + t[None, :], (lam * g).to(d_values.dtype.element_ty), mask=mask)


def backward(gates, values, states, d_states, BC, BT, num_warps):
    B, N, _, T = gates.shape
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    _m4_bwd_kernel[(B * triton.cdiv(N, BC),)](gates, values, states, d_states, d_gates, d_values, T, N, BC=BC, BT=BT,
                                              num_warps=num_warps)
    return d_gates, d_values


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
        d_states = torch.randn(B, N, T, generator=g).to(device)
        tile = (2, 16, 1) if INTERPRET else (1, 256, 1)
        got = forward(gates, values, *tile)
        gates64, values64 = gates.double().requires_grad_(), values.double().requires_grad_()
        want = reference(gates64, values64)
        want_grads = torch.autograd.grad((want * d_states.double()).sum(), (gates64, values64))
        got_grads = backward(gates, values, want.detach().float(), d_states, *tile)
        diff = (got.double() - want).abs().max().item()
        grad_diff = max((a.double() - b).abs().max().item() for a, b in zip(got_grads, want_grads))
        lines.append(f"check B{B} N{N} T{T}: max |diff| against the float64 loop {diff:.2e}, gradients {grad_diff:.2e}")
        print(lines[-1], flush=True)
        assert diff < 1e-5 and grad_diff < 1e-4, (diff, grad_diff)
    if INTERPRET:
        return
    from triton.testing import do_bench, do_bench_cudagraph

    from hf_lrnn import hlru_scan

    out = sys.argv[1]
    x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    copy_tbps = 2 * x.numel() / (do_bench(lambda: y.copy_(x), warmup=10, rep=50) * 1e-3) / 1e12
    lines.append(f"copy {copy_tbps:.2f} TB/s; H-LRU m = 4, % of copy (forward 7 elements per step, forward+backward "
                 "20, as bench_scan.py), GPU time of CUDA-graph replays")
    for B, T, D in ((8, 4096, 1024), (32, 2048, 2048), (1, 16384, 1024), (8, 2048, 768)):
        N = D // 4
        gates = torch.randn(B, N, 5, T, device="cuda", dtype=torch.bfloat16)
        values = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
        d_states = torch.randn_like(values)
        first = gates.permute(0, 3, 1, 2).contiguous().requires_grad_()  # [B, T, N, 5] for the [B, T, N] kernels
        values_first = values.transpose(1, 2).contiguous().requires_grad_()
        d_first = d_states.transpose(1, 2).contiguous()
        fwd_bytes, fb_bytes = 2 * B * T * N * 7, 2 * B * T * N * 20
        row = dict(B=B, T=T, D=D)
        for bc, bt, w in ((1, 256, 1), (2, 256, 2), (1, 512, 1)):
            states = forward(gates, values, bc, bt, w)
            ms = do_bench_cudagraph(lambda: forward(gates, values, bc, bt, w), rep=50)
            row[f"in_threads_{bc}_{bt}_{w}_fwd_pct"] = 100 * fwd_bytes / (ms * 1e-3) / 1e12 / copy_tbps

            def forward_backward():
                s = forward(gates, values, bc, bt, w)
                backward(gates, values, s, d_states, bc, bt, w)

            ms = do_bench_cudagraph(forward_backward, rep=50)
            row[f"in_threads_{bc}_{bt}_{w}_fwdbwd_pct"] = 100 * fb_bytes / (ms * 1e-3) / 1e12 / copy_tbps
        del states
        with torch.no_grad():
            ms = do_bench_cudagraph(lambda: hlru_scan(first, values_first, backend="triton"), rep=50)
        row["library_time_first_fwd_pct"] = 100 * fwd_bytes / (ms * 1e-3) / 1e12 / copy_tbps
        ms = do_bench_cudagraph(lambda: hlru_scan(first, values_first, backend="triton")[0].backward(d_first), rep=50)
        row["library_time_first_fwdbwd_pct"] = 100 * fb_bytes / (ms * 1e-3) / 1e12 / copy_tbps
        rows.append(row)
        lines.append(f"B{B} T{T} D{D}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith("pct")))
        print(lines[-1], flush=True)
    open(f"{out}/m4_probe.txt", "w").write("\n".join(lines) + "\n")
    json.dump(dict(copy_tbps=copy_tbps, rows=rows), open(f"{out}/m4_probe.json", "w"), indent=1)


if __name__ == "__main__":
    main()
