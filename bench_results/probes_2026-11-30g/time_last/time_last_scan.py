"""Probe (not part of hf_lrnn): an m = 1 H-LRU scan in a time-last layout, the layout accelerated-scan uses.

Why: the landed m = 1 kernels read [B, T, N] tensors, so Triton spreads a tile's time axis over lanes and warps and
the scan crosses them (docs/kernels.md, bench_results/NOTES_scan.md). With time contiguous in memory, a thread holds
consecutive time steps and `tl.associative_scan` runs mostly inside threads. The model could produce and consume this
layout without copies: the coefficient and value projections as `torch.bmm(W, x^T)` write [B, rows, T], and the
output projection reads states [B, N, T] as a transposed operand.

Layout: gate logits [B, N, 2, T] (channel n's lag logit row, then its input-gate logit row), values and states
[B, N, T], initial / final state [B, N] float32. Softmax gates only: a_t = sigmoid(z0 - z1), g_t = 1 - a_t;
s_t = a_t s_{t-1} + g_t x_t. One program per (sequence, channel), walking time in tiles of BT steps with the state
carried in a register; the backward walks the tiles from the end with the adjoint carried.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _affine_combine(a_left, b_left, a_right, b_right):
    """(a_left, b_left) then (a_right, b_right): s -> a_right (a_left s + b_left) + b_right."""
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def _time_last_fwd_kernel(gates, values, initial_state, states, final_state, T, BT: tl.constexpr,
                          HAS_H0: tl.constexpr, WRITE_FINAL: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # b * N + n
    z0_row = gates + row * 2 * T
    z1_row = z0_row + T
    x_row = values + row * T
    s_row = states + row * T
    h = tl.zeros([], dtype=tl.float32)
    if HAS_H0:
        h = tl.load(initial_state + row)
    for t0 in range(0, T, BT):
        offs = t0 + tl.arange(0, BT)
        mask = offs < T
        z0 = tl.load(z0_row + offs, mask=mask, other=0.0).to(tl.float32)
        z1 = tl.load(z1_row + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        a = tl.sigmoid(z0 - z1)
        a = tl.where(mask, a, 1.0)
        b = tl.where(mask, (1.0 - a) * x, 0.0)
        a_cum, b_cum = tl.associative_scan((a, b), axis=0, combine_fn=_affine_combine)
        s = a_cum * h + b_cum
        tl.store(s_row + offs, s.to(states.dtype.element_ty), mask=mask)
        h = tl.sum(tl.where(offs == tl.minimum(t0 + BT, T) - 1, s, 0.0), axis=0)
    if WRITE_FINAL:
        tl.store(final_state + row, h)


@triton.jit
def _time_last_bwd_kernel(gates, values, states, initial_state, d_states, d_final, d_gates, d_values, d_initial_state,
                          T, BT: tl.constexpr, HAS_H0: tl.constexpr, HAS_DFINAL: tl.constexpr):
    """lam_t = dy_t + a_{t+1} lam_{t+1} (lam_{T-1} = dy_{T-1} + d_final), scanned from the end; then
    d x_t = lam_t g_t, d a_t = lam_t s_{t-1}, d g_t = lam_t x_t, d z0 = a g (d a - d g) = -d z1."""
    row = tl.program_id(0).to(tl.int64)
    z0_row = gates + row * 2 * T
    z1_row = z0_row + T
    x_row = values + row * T
    s_row = states + row * T
    dy_row = d_states + row * T
    dz0_row = d_gates + row * 2 * T
    dz1_row = dz0_row + T
    dx_row = d_values + row * T
    carry = tl.zeros([], dtype=tl.float32)  # lam of the step after the tile
    if HAS_DFINAL:
        carry = tl.load(d_final + row)
    h0 = tl.zeros([], dtype=tl.float32)
    if HAS_H0:
        h0 = tl.load(initial_state + row)
    num_tiles = tl.cdiv(T, BT)
    for r in range(0, num_tiles):
        t0 = (num_tiles - 1 - r) * BT
        offs = t0 + tl.arange(0, BT)
        mask = offs < T
        nxt = offs + 1
        nmask = nxt < T
        # the coefficient of the next step (1 past the end: d_final enters as lam_T with a_T = 1)
        a_next = tl.sigmoid(tl.load(z0_row + nxt, mask=nmask, other=0.0).to(tl.float32)
                            - tl.load(z1_row + nxt, mask=nmask, other=0.0).to(tl.float32))
        a_next = tl.where(nmask, a_next, 1.0)
        dy = tl.load(dy_row + offs, mask=mask, other=0.0).to(tl.float32)
        c = tl.where(mask, a_next, 1.0)
        d = tl.where(mask, dy, 0.0)
        c_cum, d_cum = tl.associative_scan((c, d), axis=0, combine_fn=_affine_combine, reverse=True)
        lam = c_cum * carry + d_cum
        z0 = tl.load(z0_row + offs, mask=mask, other=0.0).to(tl.float32)
        z1 = tl.load(z1_row + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        prev = offs - 1
        s_prev = tl.load(s_row + prev, mask=mask & (prev >= 0), other=0.0).to(tl.float32)
        s_prev = tl.where(prev >= 0, s_prev, h0)
        a = tl.sigmoid(z0 - z1)
        g = 1.0 - a
        d_a = lam * s_prev
        d_g = lam * x
        d_z0 = a * g * (d_a - d_g)
        tl.store(dz0_row + offs, d_z0.to(d_gates.dtype.element_ty), mask=mask)
        tl.store(dz1_row + offs, (-d_z0).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(dx_row + offs, (lam * g).to(d_values.dtype.element_ty), mask=mask)
        carry = tl.sum(tl.where(offs == t0, lam, 0.0), axis=0)
        if HAS_H0:
            a_first = tl.sum(tl.where(offs == t0, a, 0.0), axis=0)
            if t0 == 0:
                tl.store(d_initial_state + row, a_first * carry)


def time_last_forward(gates, values, initial_state=None, want_final=False, block_t=2048, num_warps=4):
    """gates [B, N, 2, T], values [B, N, T] -> (states [B, N, T] in values' dtype, final [B, N] float32 or None)."""
    B, N, two, T = gates.shape
    assert two == 2 and values.shape == (B, N, T) and gates.is_contiguous() and values.is_contiguous()
    states = torch.empty_like(values)
    final = torch.empty(B, N, device=values.device, dtype=torch.float32) if want_final else None
    block_t = min(block_t, triton.next_power_of_2(T))
    _time_last_fwd_kernel[(B * N,)](
        gates=gates, values=values, initial_state=initial_state, states=states, final_state=final, T=T, BT=block_t,
        HAS_H0=initial_state is not None, WRITE_FINAL=want_final, num_warps=num_warps)
    return states, final


def time_last_backward(gates, values, states, d_states, initial_state=None, d_final=None, block_t=2048,
                       num_warps=4):
    """(d gates [B, N, 2, T], d values [B, N, T], d initial state [B, N] float32 or None)."""
    B, N, _, T = gates.shape
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    d_h0 = torch.empty(B, N, device=values.device, dtype=torch.float32) if initial_state is not None else None
    block_t = min(block_t, triton.next_power_of_2(T))
    _time_last_bwd_kernel[(B * N,)](
        gates=gates, values=values, states=states, initial_state=initial_state, d_states=d_states.contiguous(),
        d_final=d_final, d_gates=d_gates, d_values=d_values, d_initial_state=d_h0, T=T, BT=block_t,
        HAS_H0=initial_state is not None, HAS_DFINAL=d_final is not None, num_warps=num_warps)
    return d_gates, d_values, d_h0


# ---------------------------------------------------------------------------------------------------------------
# H-LRU m = 2, forward only: s_t = a1 s_{t-1} + a2 s_{t-2} + g x_t, i.e. u_t = (s_t, s_{t-1}) = M_t u_{t-1} + (g x_t, 0)
# with the companion matrix M_t = [[a1, a2], [1, 0]]; the scan composes (M, b) pairs.
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _companion_combine(p_l, q_l, r_l, s_l, b1_l, b2_l, p_r, q_r, r_r, s_r, b1_r, b2_r):
    """(M_l, b_l) then (M_r, b_r): u -> M_r (M_l u + b_l) + b_r, M = [[p, q], [r, s]]."""
    return (p_r * p_l + q_r * r_l, p_r * q_l + q_r * s_l, r_r * p_l + s_r * r_l, r_r * q_l + s_r * s_l,
            p_r * b1_l + q_r * b2_l + b1_r, r_r * b1_l + s_r * b2_l + b2_r)


@triton.jit
def _time_last_m2_fwd_kernel(gates, values, initial_state, states, T, BT: tl.constexpr, HAS_H0: tl.constexpr):
    """gates [B, N, 3, T] (lag 1, lag 2, input gate), softmax-normalised; initial_state [B, N, 2] float32 (s_0, s_-1)."""
    row = tl.program_id(0).to(tl.int64)
    z_row = gates + row * 3 * T
    x_row = values + row * T
    out_row = states + row * T
    h1 = tl.zeros([], dtype=tl.float32)  # s_{t-1}
    h2 = tl.zeros([], dtype=tl.float32)  # s_{t-2}
    if HAS_H0:
        h1 = tl.load(initial_state + row * 2)
        h2 = tl.load(initial_state + row * 2 + 1)
    for t0 in range(0, T, BT):
        offs = t0 + tl.arange(0, BT)
        mask = offs < T
        z1 = tl.load(z_row + offs, mask=mask, other=0.0).to(tl.float32)
        z2 = tl.load(z_row + T + offs, mask=mask, other=0.0).to(tl.float32)
        zg = tl.load(z_row + 2 * T + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        top = tl.maximum(tl.maximum(z1, z2), zg)
        e1, e2, eg = tl.exp(z1 - top), tl.exp(z2 - top), tl.exp(zg - top)
        inv = 1.0 / (e1 + e2 + eg)
        one = tl.full([BT], 1.0, tl.float32)
        zero = tl.zeros([BT], dtype=tl.float32)
        p = tl.where(mask, e1 * inv, one)
        q = tl.where(mask, e2 * inv, zero)
        r = tl.where(mask, one, zero)
        s = tl.where(mask, zero, one)
        b1 = tl.where(mask, eg * inv * x, zero)
        p, q, r, s, b1, b2 = tl.associative_scan((p, q, r, s, b1, zero), axis=0, combine_fn=_companion_combine)
        new1 = p * h1 + q * h2 + b1
        new2 = r * h1 + s * h2 + b2
        tl.store(out_row + offs, new1.to(states.dtype.element_ty), mask=mask)
        last = offs == tl.minimum(t0 + BT, T) - 1
        h1, h2 = tl.sum(tl.where(last, new1, 0.0), axis=0), tl.sum(tl.where(last, new2, 0.0), axis=0)


def time_last_forward_m2(gates, values, initial_state=None, block_t=2048, num_warps=4):
    """gates [B, N, 3, T], values [B, N, T], initial_state [B, N, 2] float32 (s_0, s_-1) -> states [B, N, T]."""
    B, N, three, T = gates.shape
    assert three == 3 and values.shape == (B, N, T) and gates.is_contiguous() and values.is_contiguous()
    states = torch.empty_like(values)
    block_t = min(block_t, triton.next_power_of_2(T))
    _time_last_m2_fwd_kernel[(B * N,)](gates=gates, values=values, initial_state=initial_state, states=states, T=T,
                                        BT=block_t, HAS_H0=initial_state is not None, num_warps=num_warps)
    return states


# ---------------------------------------------------------------------------------------------------------------
# H-LRU m = 2, backward (added in the sixth session of 2026-11-30). The adjoint lam_t = dL/ds_t obeys
#     lam_t = dy_t + a1_{t+1} lam_{t+1} + a2_{t+2} lam_{t+2},
# i.e. v_t = (lam_t, lam_{t+1}) = N_t v_{t+1} + (dy_t, 0) with N_t = [[a1_{t+1}, a2_{t+2}], [1, 0]]: the forward's
# companion scan, in reverse time. Then, with (a1, a2, g) = softmax(z1, z2, zg):
#     d x_t = lam_t g_t;  d(a1, a2, g)_t = lam_t (s_{t-1}, s_{t-2}, x_t);  d z = p (dp - <p, dp>)
#     d s_{-1} = a1_0 lam_0 + a2_1 lam_1;  d s_{-2} = a2_0 lam_0   (the initial state (s_0, s_-1) of the forward)
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _softmax3(z_row, T, offs, mask):
    z1 = tl.load(z_row + offs, mask=mask, other=0.0).to(tl.float32)
    z2 = tl.load(z_row + T + offs, mask=mask, other=0.0).to(tl.float32)
    zg = tl.load(z_row + 2 * T + offs, mask=mask, other=0.0).to(tl.float32)
    top = tl.maximum(tl.maximum(z1, z2), zg)
    e1, e2, eg = tl.exp(z1 - top), tl.exp(z2 - top), tl.exp(zg - top)
    inv = 1.0 / (e1 + e2 + eg)
    return e1 * inv, e2 * inv, eg * inv


@triton.jit
def _time_last_m2_bwd_kernel(gates, values, states, initial_state, d_states, d_gates, d_values, d_initial_state, T,
                             BT: tl.constexpr, HAS_H0: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    z_row = gates + row * 3 * T
    dz_row = d_gates + row * 3 * T
    x_row = values + row * T
    s_row = states + row * T
    dy_row = d_states + row * T
    dx_row = d_values + row * T
    c1 = tl.zeros([], dtype=tl.float32)  # lam at the step after the tile
    c2 = tl.zeros([], dtype=tl.float32)  # lam two steps after the tile's end
    h1 = tl.zeros([], dtype=tl.float32)  # s_{-1}
    h2 = tl.zeros([], dtype=tl.float32)  # s_{-2}
    if HAS_H0:
        h1 = tl.load(initial_state + row * 2)
        h2 = tl.load(initial_state + row * 2 + 1)
    num_tiles = tl.cdiv(T, BT)
    for r in range(0, num_tiles):
        t0 = (num_tiles - 1 - r) * BT
        offs = t0 + tl.arange(0, BT)
        mask = offs < T
        n1 = offs + 1
        n2 = offs + 2
        a1_next, _, _ = _softmax3(z_row, T, n1, n1 < T)  # a1_{t+1}
        _, a2_next2, _ = _softmax3(z_row, T, n2, n2 < T)  # a2_{t+2}
        one = tl.full([BT], 1.0, tl.float32)
        zero = tl.zeros([BT], dtype=tl.float32)
        # steps past T: the identity, so the carry passes through; lam of steps >= T is 0, so a_{>= T} is unused
        p = tl.where(mask, tl.where(n1 < T, a1_next, 0.0), one)
        q = tl.where(mask, tl.where(n2 < T, a2_next2, 0.0), zero)
        rr = tl.where(mask, one, zero)
        ss = tl.where(mask, zero, one)
        b1 = tl.where(mask, tl.load(dy_row + offs, mask=mask, other=0.0).to(tl.float32), zero)
        p, q, rr, ss, b1, b2 = tl.associative_scan((p, q, rr, ss, b1, zero), axis=0, combine_fn=_companion_combine,
                                                   reverse=True)
        lam = p * c1 + q * c2 + b1  # lam_t
        lam_next = rr * c1 + ss * c2 + b2  # lam_{t+1}
        a1, a2, g = _softmax3(z_row, T, offs, mask)
        x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        p1 = offs - 1
        p2 = offs - 2
        s1 = tl.load(s_row + p1, mask=mask & (p1 >= 0), other=0.0).to(tl.float32)
        s1 = tl.where(p1 >= 0, s1, tl.where(p1 == -1, h1, h2))
        s2 = tl.load(s_row + p2, mask=mask & (p2 >= 0), other=0.0).to(tl.float32)
        s2 = tl.where(p2 >= 0, s2, tl.where(p2 == -1, h1, h2))
        d_a1 = lam * s1
        d_a2 = lam * s2
        d_g = lam * x
        dot = a1 * d_a1 + a2 * d_a2 + g * d_g
        tl.store(dz_row + offs, (a1 * (d_a1 - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(dz_row + T + offs, (a2 * (d_a2 - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(dz_row + 2 * T + offs, (g * (d_g - dot)).to(d_gates.dtype.element_ty), mask=mask)
        tl.store(dx_row + offs, (lam * g).to(d_values.dtype.element_ty), mask=mask)
        first = offs == t0
        c1 = tl.sum(tl.where(first, lam, 0.0), axis=0)
        c2 = tl.sum(tl.where(first, lam_next, 0.0), axis=0)
        if HAS_H0:
            if t0 == 0:
                a1_0 = tl.sum(tl.where(first, a1, 0.0), axis=0)
                a2_0 = tl.sum(tl.where(first, a2, 0.0), axis=0)
                a2_1 = tl.sum(tl.where(offs == 1, a2, 0.0), axis=0)
                tl.store(d_initial_state + row * 2, a1_0 * c1 + a2_1 * c2)
                tl.store(d_initial_state + row * 2 + 1, a2_0 * c1)


def time_last_backward_m2(gates, values, states, d_states, initial_state=None, block_t=2048, num_warps=4):
    """(d gates [B, N, 3, T], d values [B, N, T], d initial state [B, N, 2] float32 or None) for the forward of
    `time_last_forward_m2`, given d states [B, N, T]."""
    B, N, _, T = gates.shape
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    d_h0 = torch.empty(B, N, 2, device=values.device, dtype=torch.float32) if initial_state is not None else None
    block_t = min(block_t, triton.next_power_of_2(T))
    _time_last_m2_bwd_kernel[(B * N,)](
        gates=gates, values=values, states=states, initial_state=initial_state, d_states=d_states.contiguous(),
        d_gates=d_gates, d_values=d_values, d_initial_state=d_h0, T=T, BT=block_t,
        HAS_H0=initial_state is not None, num_warps=num_warps)
    return d_gates, d_values, d_h0
