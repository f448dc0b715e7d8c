"""H-LRU scans of order 1 and 2 in a time-last layout: Triton kernels, host functions (m = 1 is also BD-LRU m = 1).

Why a second layout: the [B, T, N] kernels of scan_triton.py hold a tile's channels across lanes, so their in-tile
scan over time crosses lanes and warps, and their time parallelism costs a look-back per chunk; they reach 35-43 % of
the H200's copy bandwidth at m = 1. With time contiguous in memory ([B, N, T]), each thread holds consecutive steps
of one channel and `tl.associative_scan` runs mostly inside threads, as in accelerated-scan: these kernels run at
82-92 % of copy forward and 62-70 % forward+backward at m = 1, 48-83 % / 38-69 % at m = 2
(bench_results/bench_scan_h200.txt). A model can produce and consume this layout without copies: a batched GEMM with
the weight broadcast over the batch writes [B, rows, T], and an output projection reads [B, N, T] states as a
transposed operand.

Layout: gate logits [B, N, m+1, T] (channel n's row of lag-1 logits, then lag 2's, then its input-gate logits: what
a coefficient projection with rows ordered (n, j) writes time-last), values and states [B, N, T], initial and final
window [B, N, m] float32 (as `hlru_scan`'s). Every gate activation of `hlru_scan`; packed documents as a [B, T] mask
of their starts; an optional logit bias [N, m+1] added in registers (its gradient summed by each program); and at
m = 2 optionally the read-out window [B, N, 2, T] = (s_t, s_{t-1}) as output instead of the states (WINDOW), which a
model's output projection reads directly.

    m = 1: s_t = a_t s_{t-1} + g_t v_t, an affine scan;
           lam_t = dy_t + a_{t+1} lam_{t+1} backward, d v_t = lam_t g_t, d (a, g)_t = lam_t (s_{t-1}, v_t).
    m = 2: u_t = (s_t, s_{t-1}) = [[a1, a2], [1, 0]]_t u_{t-1} + (g_t v_t, 0), a scan of 2 x 2 companion maps;
           backward on (lam_t, mu_t = a2_{t+1} lam_{t+1}) = [[a1, 1], [a2, 0]]_{t+1} (lam, mu)_{t+1} + (dy_t, 0)
           in reverse time, whose maps need the logits of step t + 1 only.

One program per (row, block of BC channels) walks the whole sequence in tiles of BT steps with the state (or adjoint)
in registers, so a row needs no look-back. Grids with few programs per SM (B1 T16384 D1024: 1024 programs, 8 per SM)
cannot hide the loads' latency by switching programs; there the forwards load the next tile before scanning this one
(PREFETCH; `_grid`). m = 2 on the other grids composes each thread's 8 consecutive steps sequentially and scans only
the groups' maps across a warp (IN_THREADS; one warp per channel, 256-step tiles). The backward reads the saved
states (in values' dtype) for s_{t-1} and s_{t-2}, as the [B, T, N] kernels do. All arithmetic is float32; float64
inputs are computed in float32.
"""

import os
from typing import Optional, Tuple

import torch

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl

    from .scan_triton import (_ACT_ID, _affine_combine, _device_guard, _normalize, _normalize_bwd, _normalize_pair,
                              _normalize_pair_bwd, _num_sms, _tracks_gradients)
except ImportError:  # ops.py then offers the torch backend only
    triton = None

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# (BC channels, BT steps) per program tile, and warps: the probe's best on the H200 (1024-step tiles, 4 warps, one
# channel per program); the interpreter takes small tiles so that tests cover several of each.
TILE = {"BC": 1, "BT": 1024, "num_warps": 4}
INTERPRETER_TILE = {"BC": 2, "BT": 16, "num_warps": 1}
# Programs (of one channel each) per SM under which a grid is small (`_grid`): its forwards prefetch, and m = 2 keeps
# the tile scan of TILE, whose 4 warps per program hide more latency than the in-thread path's one (B1 T16384 D1024:
# 25 % of copy forward in threads with prefetch, 48 % with TILE's scan).
SMALL_GRID_BELOW = 16
# m = 2's forward and backward with the recurrence composed 8 steps at a time in each thread (`_m2_tile_in_threads`,
# `_m2_adjoint_tile_in_threads`) on grids that are not small, in tiles of one warp per channel: 32 lanes x 8 steps,
# so that the scan over the 32 groups and the gather of each group's start stay inside the warp. On the H200 at
# B8-B64 that took the forward from 50-59 to 59-78 % of copy and the backward from 44-49 to 51-68 %; 512 or 1024
# steps per warp ran 20-50 % slower; 2 or 4 channels per program (a warp each) were within 2.5 points forward and
# 10 points slower to 7 faster backward (bench_results/probes_2026-11-30k/sweep_in_threads.txt).
M2_IN_THREADS = True
IN_THREADS_TILE = {"BC": 1, "BT": 256, "num_warps": 1}

if triton is not None:

    @triton.jit
    def _tile_offsets(T, N, BC: tl.constexpr):
        """(batch row b, row offsets [BC] into [B*N] rows, channel mask [BC]) of this program's channel block."""
        blocks = tl.cdiv(N, BC)
        b = tl.program_id(0) // blocks
        n = (tl.program_id(0) % blocks) * BC + tl.arange(0, BC)
        return b.to(tl.int64), (b * N + n).to(tl.int64), n < N

    @triton.jit
    def _starts_at(starts, b, t, T, HAS_STARTS: tl.constexpr):
        """[1, BT] bool: a document starts at step t [BT] of batch row b (False outside [0, T), or without starts)."""
        if HAS_STARTS:
            start = tl.load(starts + b * T + t, mask=(t >= 0) & (t < T), other=0) != 0
        else:
            start = t != t
        return start[None, :]

    @triton.jit
    def _load_bias(gate_bias, rows, b, N, j, M1: tl.constexpr, mc, HAS_BIAS: tl.constexpr):
        """[BC] float32: the logit bias of gate j of rows' channels (row b*N + n: gate_bias[n, j]), 0 without one."""
        if HAS_BIAS:
            return tl.load(gate_bias + (rows - b * N) * M1 + j, mask=mc, other=0.0).to(tl.float32)
        return tl.zeros(rows.shape, dtype=tl.float32)

    @triton.jit
    def _store_bias_gradient(d_bias_rows, rows, j, M1: tl.constexpr, mc, sums):
        """This program's sum over its steps of gate j's logit gradients, for the host to sum over the batch rows."""
        tl.store(d_bias_rows + rows * M1 + j, sums, mask=mc)

    @triton.jit
    def _load_pair(gates, rows, t, mask, T, bias_coef, bias_gate, HAS_BIAS: tl.constexpr):
        """The normalisation's inputs at steps t [BT] of rows [BC]: coefficient and input-gate logits (plus their bias
        [BC]), float32."""
        coefficient_rows = (2 * rows)[:, None] * T + t[None, :]
        z_coef = tl.load(gates + coefficient_rows, mask=mask, other=0.0).to(tl.float32)
        z_gate = tl.load(gates + coefficient_rows + T, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z_coef += bias_coef[:, None]
            z_gate += bias_gate[:, None]
        return z_coef, z_gate

    @triton.jit
    def _load_values(values, rows, t, mask, T):
        """values (or states, or their gradients) at steps t [BT] of rows [BC], float32."""
        return tl.load(values + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)

    @triton.jit
    def _time_last_fwd_kernel(gates, gate_bias, values, initial_state, starts, states, final_state, T, N,
                              ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, PREFETCH: tl.constexpr,
                              HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, WRITE_FINAL: tl.constexpr,
                              HAS_STARTS: tl.constexpr):
        """states[row, t] = a_t s_{t-1} + g_t v_t for BC rows, tiles of BT steps scanned in registers. PREFETCH: each
        tile's loads go out before the tile before it is scanned, so that they are in flight while it computes (for
        grids with few programs per SM, which cannot hide the loads' latency by switching programs; `_grid`)."""
        b, rows, mc = _tile_offsets(T, N, BC)
        bias_coef = _load_bias(gate_bias, rows, b, N, 0, 2, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 1, 2, mc, HAS_BIAS)
        h = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h = tl.load(initial_state + rows, mask=mc, other=0.0)
        if PREFETCH:
            t = tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            z_coef, z_gate = _load_pair(gates, rows, t, mask, T, bias_coef, bias_gate, HAS_BIAS)
            x = _load_values(values, rows, t, mask, T)
        for t0 in range(0, T, BT):
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            if PREFETCH:
                mask_next = mc[:, None] & (t + BT < T)[None, :]  # all False past the last tile: no memory traffic
                z_coef_next, z_gate_next = _load_pair(gates, rows, t + BT, mask_next, T, bias_coef, bias_gate,
                                                      HAS_BIAS)
                x_next = _load_values(values, rows, t + BT, mask_next, T)
            else:
                z_coef, z_gate = _load_pair(gates, rows, t, mask, T, bias_coef, bias_gate, HAS_BIAS)
                x = _load_values(values, rows, t, mask, T)
            a, g = _normalize_pair(z_coef, z_gate, ACT)
            a = tl.where(_starts_at(starts, b, t, T, HAS_STARTS), 0.0, a)  # a document starts from a zero state
            a = tl.where(mask, a, 1.0)  # steps past T: the identity
            u = tl.where(mask, g * x, 0.0)
            decay, local = tl.associative_scan((a, u), 1, _affine_combine)
            s = local + decay * h[:, None]
            tl.store(states + rows[:, None] * T + t[None, :], s.to(states.dtype.element_ty), mask=mask)
            h = tl.sum(tl.where((t == BT - 1 + t0)[None, :], s, 0.0), axis=1)  # identity past T: s at BT-1 = s_last
            if PREFETCH:
                z_coef, z_gate, x = z_coef_next, z_gate_next, x_next
        if WRITE_FINAL:
            tl.store(final_state + rows, h, mask=mc)

    @triton.jit
    def _time_last_bwd_kernel(gates, gate_bias, values, states, initial_state, starts, d_states, d_final, d_gates,
                              d_values, d_initial_state, d_bias_rows, T, N, ACT: tl.constexpr, BC: tl.constexpr,
                              BT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                              HAS_D_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr):
        """The adjoint lam scanned from the end in tiles of BT steps; gate, value and initial-state gradients. The
        step's own inputs are loaded after the scan, not with its coefficients: on the H200, loading all seven before
        it was 2-7 % slower, and prefetching the tile before, 10-20 % (bench_results/probes_2026-11-30j)."""
        b, rows, mc = _tile_offsets(T, N, BC)
        bias_coef = _load_bias(gate_bias, rows, b, N, 0, 2, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 1, 2, mc, HAS_BIAS)
        # HAS_BIAS: the logit gradients summed over the steps. It makes the backward 14-31 % slower at m = 1 and
        # 50-58 % at m = 2 at the models' shape on the H200, less than the separate bias pass and reduction it
        # replaces; summing element-wise over the tiles instead cost about the same
        # (bench_results/probes_2026-11-30k/bias_in_scan/)
        d_bias_coef = tl.zeros([BC], dtype=tl.float32)
        d_bias_gate = tl.zeros([BC], dtype=tl.float32)
        carry = tl.zeros([BC], dtype=tl.float32)  # lam of the step after the tile (d_final after the last step)
        if HAS_D_FINAL:
            carry = tl.load(d_final + rows, mask=mc, other=0.0)
        h0 = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h0 = tl.load(initial_state + rows, mask=mc, other=0.0)
        num_tiles = tl.cdiv(T, BT)
        for r in range(0, num_tiles):
            t0 = (num_tiles - 1 - r) * BT
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            next_mask = mc[:, None] & (t + 1 < T)[None, :]
            z_coef_next, z_gate_next = _load_pair(gates, rows, t + 1, next_mask, T, bias_coef, bias_gate, HAS_BIAS)
            a_next, _ = _normalize_pair(z_coef_next, z_gate_next, ACT)
            a_next = tl.where(next_mask, a_next, 1.0)  # past the last step: d_final enters with a_T = 1
            a_next = tl.where(_starts_at(starts, b, t + 1, T, HAS_STARTS), 0.0, a_next)  # no flow across a start
            dy = _load_values(d_states, rows, t, mask, T)
            c = tl.where(mask, a_next, 1.0)
            d = tl.where(mask, dy, 0.0)
            c_cum, d_cum = tl.associative_scan((c, d), 1, _affine_combine, reverse=True)
            lam = d_cum + c_cum * carry[:, None]
            z_coef, z_gate = _load_pair(gates, rows, t, mask, T, bias_coef, bias_gate, HAS_BIAS)
            a, g = _normalize_pair(z_coef, z_gate, ACT)
            x = _load_values(values, rows, t, mask, T)
            s_previous = _load_values(states, rows, t - 1, mask & (t >= 1)[None, :], T)
            s_previous = tl.where((t >= 1)[None, :], s_previous, h0[:, None])
            start = _starts_at(starts, b, t, T, HAS_STARTS)
            s_previous = tl.where(start, 0.0, s_previous)
            dz_coef, dz_gate = _normalize_pair_bwd(z_coef, z_gate, lam * s_previous, lam * x, ACT)
            gate_rows = (2 * rows)[:, None] * T + t[None, :]
            tl.store(d_gates + gate_rows, dz_coef.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + T, dz_gate.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_values + rows[:, None] * T + t[None, :], (lam * g).to(d_values.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                d_bias_coef += tl.sum(tl.where(mask, dz_coef, 0.0), axis=1)
                d_bias_gate += tl.sum(tl.where(mask, dz_gate, 0.0), axis=1)
            first = (t == t0)[None, :]
            carry = tl.sum(tl.where(first, lam, 0.0), axis=1)
            if HAS_H0:
                if t0 == 0:
                    decay = tl.sum(tl.where(first & ~start, a, 0.0), axis=1)  # 0 if a document starts at step 0
                    tl.store(d_initial_state + rows, decay * carry, mask=mc)
        if HAS_BIAS:
            _store_bias_gradient(d_bias_rows, rows, 0, 2, mc, d_bias_coef)
            _store_bias_gradient(d_bias_rows, rows, 1, 2, mc, d_bias_gate)

    # ---- order 2: s_t = a1_t s_{t-1} + a2_t s_{t-2} + g_t v_t, i.e. the window u_t = (s_t, s_{t-1}) follows
    # u_t = M_t u_{t-1} + (g_t v_t, 0) with the companion matrix M_t = [[a1, a2], [1, 0]]; the scan composes (M, b).

    @triton.jit
    def _companion_combine(p_l, q_l, r_l, s_l, b1_l, b2_l, p_r, q_r, r_r, s_r, b1_r, b2_r):
        """(M_l, b_l) then (M_r, b_r): u -> M_r (M_l u + b_l) + b_r, M = [[p, q], [r, s]]."""
        return (p_r * p_l + q_r * r_l, p_r * q_l + q_r * s_l, r_r * p_l + s_r * r_l, r_r * q_l + s_r * s_l,
                p_r * b1_l + q_r * b2_l + b1_r, r_r * b1_l + s_r * b2_l + b2_r)

    @triton.jit
    def _load_triple(gates, rows, t, mask, T, bias1, bias2, bias_gate, HAS_BIAS: tl.constexpr):
        """The logits at steps t [BT] of rows [BC]: lag 1, lag 2, input gate (plus their bias [BC]), float32."""
        base = (3 * rows)[:, None] * T + t[None, :]
        z1 = tl.load(gates + base, mask=mask, other=0.0).to(tl.float32)
        z2 = tl.load(gates + base + T, mask=mask, other=0.0).to(tl.float32)
        zg = tl.load(gates + base + 2 * T, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z1 += bias1[:, None]
            z2 += bias2[:, None]
            zg += bias_gate[:, None]
        return z1, z2, zg

    @triton.jit
    def _normalize_triple(z1, z2, zg, ACT: tl.constexpr):
        """(a1, a2, g): the group's normalisation. Softmax written out on the three tiles (as the measured probe
        computes it); the other activations through scan_triton's `_normalize` on the lags joined along a new axis."""
        if ACT == 0:
            top = tl.maximum(tl.maximum(z1, z2), zg)
            e1, e2, eg = tl.exp(z1 - top), tl.exp(z2 - top), tl.exp(zg - top)
            inv = 1.0 / (e1 + e2 + eg)  # >= 1 term is exp(0): finite
            a1, a2, g = e1 * inv, e2 * inv, eg * inv
        else:
            zc = tl.join(z1, z2)  # [BC, BT, 2]
            c, g = _normalize(zc, zg, tl.full(zc.shape, 1, tl.int1), 2, ACT, 2)
            a1, a2 = tl.split(c)
        return a1, a2, g

    @triton.jit
    def _normalize_triple_bwd(z1, z2, zg, d_a1, d_a2, d_g, ACT: tl.constexpr):
        """Gradient of the three logits from (d a1, d a2, d g); softmax: dz = c (dc - <c, dc>)."""
        if ACT == 0:
            a1, a2, g = _normalize_triple(z1, z2, zg, ACT)
            dot = a1 * d_a1 + a2 * d_a2 + g * d_g
            dz1, dz2, dzg = a1 * (d_a1 - dot), a2 * (d_a2 - dot), g * (d_g - dot)
        else:
            zc = tl.join(z1, z2)
            dzc, dzg = _normalize_bwd(zc, zg, tl.full(zc.shape, 1, tl.int1), tl.join(d_a1, d_a2), d_g, 2, ACT, 2)
            dz1, dz2 = tl.split(dzc)
        return dz1, dz2, dzg

    @triton.jit
    def _split_steps(x, BC: tl.constexpr, G: tl.constexpr):
        """[BC, 8 G] -> its 8 columns [BC, G], column k holding steps 8 g + k: each thread's 8 consecutive steps
        (with 8 or more elements per thread, the split moves no data)."""
        x = tl.reshape(x, [BC, G, 2, 2, 2])
        x0, x1 = tl.split(x)  # k = 4 i + 2 j + l: l first
        x00, x01 = tl.split(x0)
        x10, x11 = tl.split(x1)
        c0, c4 = tl.split(x00)
        c2, c6 = tl.split(x01)
        c1, c5 = tl.split(x10)
        c3, c7 = tl.split(x11)
        return c0, c1, c2, c3, c4, c5, c6, c7

    @triton.jit
    def _join_steps(c0, c1, c2, c3, c4, c5, c6, c7, BC: tl.constexpr, G: tl.constexpr):
        """The inverse of `_split_steps`."""
        x0 = tl.join(tl.join(c0, c4), tl.join(c2, c6))
        x1 = tl.join(tl.join(c1, c5), tl.join(c3, c7))
        return tl.reshape(tl.join(x0, x1), [BC, G * 8])

    @triton.jit
    def _companion_step(p, q, r, s, b1, b2, a1, a2, u, keep, HAS_STARTS: tl.constexpr):
        """(M, b) followed by one step u_t = [[a1, a2], [keep, 0]] u_{t-1} + (u, 0): 6 multiply-adds, the map's
        second row being the first row before (keep = 0 at a document's start, whose window restarts at zero)."""
        if HAS_STARTS:
            return a1 * p + a2 * r, a1 * q + a2 * s, keep * p, keep * q, a1 * b1 + a2 * b2 + u, keep * b1
        return a1 * p + a2 * r, a1 * q + a2 * s, p, q, a1 * b1 + a2 * b2 + u, b1

    @triton.jit
    def _m2_tile_in_threads(a1, a2, u, start, start_before, h1, h2, BC: tl.constexpr, BT: tl.constexpr,
                            HAS_STARTS: tl.constexpr):
        """The states [BC, BT] of a tile from its incoming window (h1, h2) [BC], the states one step before them (the
        window's second entry, not yet zeroed at document starts), and the window after its last step: each thread
        composes its 8 consecutive steps' companion maps one after another, only the BT / 8 group maps go through
        tl.associative_scan, each group's start window is the end window of the group before (tl.gather), and its 8
        states follow from it at 2 multiply-adds each. a1 and a2 are zero at a start, a2 also after one
        (`start_before`), for the states; steps past T must have a1 = 1, a2 = 0 (the window after them is then (s, s):
        the caller takes the final window from the states)."""
        G: tl.constexpr = BT // 8
        a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = _split_steps(a1, BC, G)
        u_0, u_1, u_2, u_3, u_4, u_5, u_6, u_7 = _split_steps(u, BC, G)
        # the maps use a2 at a start's next step: the window's second entry is already 0 there (keep = 0)
        a2_map = tl.where(start, 0.0, a2)
        m_0, m_1, m_2, m_3, m_4, m_5, m_6, m_7 = _split_steps(a2_map, BC, G)
        k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7 = _split_steps(tl.where(start, 0.0, 1.0), BC, G)
        one = tl.full([BC, G], 1.0, tl.float32)
        zero = tl.zeros([BC, G], tl.float32)
        p, q, r, s, b1, b2 = _companion_step(one, zero, zero, one, zero, zero, a1_0, m_0, u_0, k_0, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_1, m_1, u_1, k_1, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_2, m_2, u_2, k_2, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_3, m_3, u_3, k_3, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_4, m_4, u_4, k_4, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_5, m_5, u_5, k_5, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_6, m_6, u_6, k_6, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_7, m_7, u_7, k_7, HAS_STARTS)
        p, q, r, s, b1, b2 = tl.associative_scan((p, q, r, s, b1, b2), 1, _companion_combine)
        end1 = p * h1[:, None] + q * h2[:, None] + b1  # the window after each group
        end2 = r * h1[:, None] + s * h2[:, None] + b2
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        before = tl.maximum(group - 1, 0)
        w1 = tl.where(group == 0, h1[:, None], tl.gather(end1, before, 1))  # the window before each group
        w2 = tl.where(group == 0, h2[:, None], tl.gather(end2, before, 1))
        # the states: a2 is 0 at a start and at the step after one (that step's lag 2 is before the start)
        a2_states = tl.where(start | start_before, 0.0, a2)
        c_0, c_1, c_2, c_3, c_4, c_5, c_6, c_7 = _split_steps(a2_states, BC, G)
        s_0 = a1_0 * w1 + c_0 * w2 + u_0
        s_1 = a1_1 * s_0 + c_1 * w1 + u_1
        s_2 = a1_2 * s_1 + c_2 * s_0 + u_2
        s_3 = a1_3 * s_2 + c_3 * s_1 + u_3
        s_4 = a1_4 * s_3 + c_4 * s_2 + u_4
        s_5 = a1_5 * s_4 + c_5 * s_3 + u_5
        s_6 = a1_6 * s_5 + c_6 * s_4 + u_6
        s_7 = a1_7 * s_6 + c_7 * s_5 + u_7
        states = _join_steps(s_0, s_1, s_2, s_3, s_4, s_5, s_6, s_7, BC, G)
        previous = _join_steps(w1, s_0, s_1, s_2, s_3, s_4, s_5, s_6, BC, G)  # s_{t-1}, before a start's reset
        last = group == G - 1
        return states, previous, tl.sum(tl.where(last, end1, 0.0), axis=1), tl.sum(tl.where(last, end2, 0.0), axis=1)

    @triton.jit
    def _adjoint_step(p, q, r, s, b1, b2, a1, a2, dy):
        """One step back in time after (M, b): (lam, mu)_t = [[a1, 1], [a2, 0]]_{t+1} (lam, mu)_{t+1} + (dy_t, 0)
        applied after the map from the carry to (lam, mu)_{t+1}."""
        return a1 * p + r, a1 * q + s, a2 * p, a2 * q, a1 * b1 + b2 + dy, a2 * b1

    @triton.jit
    def _m2_adjoint_tile_in_threads(a1, a2, dy, c1, c2, BC: tl.constexpr, BT: tl.constexpr):
        """The backward's `_m2_tile_in_threads`: lam [BC, BT] of a tile from the pair (lam, mu) after its last step
        (c1, c2) [BC], and the pair at its first step. a1 = a1_{t+1}, a2 = a2_{t+1} and dy as the maps use them (0
        past T, where the carry into the last tile is 0 and stays 0). Each thread composes its 8 steps from the last
        one back, the group maps go through tl.associative_scan in reverse, each group's carry is the pair at the
        first step of the group after it (tl.gather), and the 8 adjoints follow from it at 3 operations each."""
        G: tl.constexpr = BT // 8
        a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = _split_steps(a1, BC, G)
        a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7 = _split_steps(a2, BC, G)
        d_0, d_1, d_2, d_3, d_4, d_5, d_6, d_7 = _split_steps(dy, BC, G)
        one = tl.full([BC, G], 1.0, tl.float32)
        zero = tl.zeros([BC, G], tl.float32)
        p, q, r, s, b1, b2 = _adjoint_step(one, zero, zero, one, zero, zero, a1_7, a2_7, d_7)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_6, a2_6, d_6)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_5, a2_5, d_5)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_4, a2_4, d_4)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_3, a2_3, d_3)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_2, a2_2, d_2)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_1, a2_1, d_1)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_0, a2_0, d_0)
        p, q, r, s, b1, b2 = tl.associative_scan((p, q, r, s, b1, b2), 1, _companion_combine, reverse=True)
        first1 = p * c1[:, None] + q * c2[:, None] + b1  # (lam, mu) at each group's first step
        first2 = r * c1[:, None] + s * c2[:, None] + b2
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        after = tl.minimum(group + 1, G - 1)
        lam_after = tl.where(group == G - 1, c1[:, None], tl.gather(first1, after, 1))  # the pair after each group
        mu_after = tl.where(group == G - 1, c2[:, None], tl.gather(first2, after, 1))
        l_7 = a1_7 * lam_after + mu_after + d_7
        l_6 = a1_6 * l_7 + a2_7 * lam_after + d_6
        l_5 = a1_5 * l_6 + a2_6 * l_7 + d_5
        l_4 = a1_4 * l_5 + a2_5 * l_6 + d_4
        l_3 = a1_3 * l_4 + a2_4 * l_5 + d_3
        l_2 = a1_2 * l_3 + a2_3 * l_4 + d_2
        l_1 = a1_1 * l_2 + a2_2 * l_3 + d_1
        l_0 = a1_0 * l_1 + a2_1 * l_2 + d_0
        lam = _join_steps(l_0, l_1, l_2, l_3, l_4, l_5, l_6, l_7, BC, G)
        head = group == 0
        mu_0 = a2_0 * l_1
        return lam, tl.sum(tl.where(head, l_0, 0.0), axis=1), tl.sum(tl.where(head, mu_0, 0.0), axis=1)

    @triton.jit
    def _time_last_m2_fwd_kernel(gates, gate_bias, values, initial_state, starts, states, final_state, T, N,
                                 ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, PREFETCH: tl.constexpr,
                                 IN_THREADS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                                 WRITE_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr, WINDOW: tl.constexpr):
        """states[row, t] = a1 s_{t-1} + a2 s_{t-2} + g v for BC rows; initial / final window (s, s_previous).
        PREFETCH as at m = 1. IN_THREADS: the tile's recurrence composed 8 steps at a time inside each thread
        (`_m2_tile_in_threads`) instead of tl.associative_scan over all its steps. WINDOW: states is [B, N, 2, T],
        the window (s_t, s_{t-1}) at every step (s_{t-1} = 0 where a document starts), what the read-out is."""
        b, rows, mc = _tile_offsets(T, N, BC)
        bias1 = _load_bias(gate_bias, rows, b, N, 0, 3, mc, HAS_BIAS)
        bias2 = _load_bias(gate_bias, rows, b, N, 1, 3, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 2, 3, mc, HAS_BIAS)
        h1 = tl.zeros([BC], dtype=tl.float32)  # s_{t-1}
        h2 = tl.zeros([BC], dtype=tl.float32)  # s_{t-2}
        if HAS_H0:
            h1 = tl.load(initial_state + 2 * rows, mask=mc, other=0.0)
            h2 = tl.load(initial_state + 2 * rows + 1, mask=mc, other=0.0)
        final1 = tl.zeros([BC], dtype=tl.float32)  # IN_THREADS: the final window, from the last tile's states
        final2 = tl.zeros([BC], dtype=tl.float32)
        if PREFETCH:
            t = tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            z1, z2, zg = _load_triple(gates, rows, t, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
            x = _load_values(values, rows, t, mask, T)
        for t0 in range(0, T, BT):
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            if PREFETCH:
                mask_next = mc[:, None] & (t + BT < T)[None, :]
                z1_next, z2_next, zg_next = _load_triple(gates, rows, t + BT, mask_next, T, bias1, bias2, bias_gate,
                                                         HAS_BIAS)
                x_next = _load_values(values, rows, t + BT, mask_next, T)
            else:
                z1, z2, zg = _load_triple(gates, rows, t, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
                x = _load_values(values, rows, t, mask, T)
            a1, a2, g = _normalize_triple(z1, z2, zg, ACT)
            if IN_THREADS:
                start = tl.broadcast_to(_starts_at(starts, b, t, T, HAS_STARTS), [BC, BT])
                start_before = tl.broadcast_to(_starts_at(starts, b, t - 1, T, HAS_STARTS), [BC, BT])
                a1 = tl.where(mask, tl.where(start, 0.0, a1), 1.0)  # steps past T: a1 = 1, a2 = 0
                a2 = tl.where(mask, a2, 0.0)
                new1, new2, h1_next, h2_next = _m2_tile_in_threads(a1, a2, tl.where(mask, g * x, 0.0), start,
                                                                   start_before, h1, h2, BC, BT, HAS_STARTS)
                new2 = tl.where(start, 0.0, new2)  # the window's second entry
                if t0 + BT >= T:  # the last tile: the final window (s_{T-1}, s_{T-2}) is the window at step T - 1
                    final1 = tl.sum(tl.where((t == T - 1)[None, :], new1, 0.0), axis=1)
                    final2 = tl.sum(tl.where((t == T - 1)[None, :], new2, 0.0), axis=1)
                h1, h2 = h1_next, h2_next
            else:
                zero = tl.zeros([BC, BT], dtype=tl.float32)
                inside = mask & ~_starts_at(starts, b, t, T, HAS_STARTS)  # a document start: the zero window first
                p = tl.where(mask, tl.where(inside, a1, 0.0), 1.0)  # steps past T: the identity
                q = tl.where(inside, a2, 0.0)
                r = tl.where(inside, 1.0, 0.0)
                s_ = tl.where(mask, 0.0, 1.0)
                b1 = tl.where(mask, g * x, 0.0)
                p, q, r, s_, b1, b2 = tl.associative_scan((p, q, r, s_, b1, zero), 1, _companion_combine)
                new1 = p * h1[:, None] + q * h2[:, None] + b1  # s_t
                new2 = r * h1[:, None] + s_ * h2[:, None] + b2  # s_{t-1}
                last = (t == BT - 1 + t0)[None, :]
                h1 = tl.sum(tl.where(last, new1, 0.0), axis=1)
                h2 = tl.sum(tl.where(last, new2, 0.0), axis=1)
            if WINDOW:
                tl.store(states + (2 * rows)[:, None] * T + t[None, :], new1.to(states.dtype.element_ty), mask=mask)
                tl.store(states + (2 * rows + 1)[:, None] * T + t[None, :], new2.to(states.dtype.element_ty),
                         mask=mask)
            else:
                tl.store(states + rows[:, None] * T + t[None, :], new1.to(states.dtype.element_ty), mask=mask)
            if PREFETCH:
                z1, z2, zg, x = z1_next, z2_next, zg_next, x_next
        if WRITE_FINAL:
            if IN_THREADS:
                h1, h2 = final1, final2
            tl.store(final_state + 2 * rows, h1, mask=mc)
            tl.store(final_state + 2 * rows + 1, h2, mask=mc)

    @triton.jit
    def _time_last_m2_bwd_kernel(gates, gate_bias, values, states, initial_state, starts, d_states, d_final, d_gates,
                                 d_values, d_initial_state, d_bias_rows, T, N, ACT: tl.constexpr, BC: tl.constexpr,
                                 BT: tl.constexpr, IN_THREADS: tl.constexpr, HAS_BIAS: tl.constexpr,
                                 HAS_H0: tl.constexpr, HAS_D_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr,
                                 WINDOW: tl.constexpr):
        """The adjoint lam_t = dy_t + a1_{t+1} lam_{t+1} + a2_{t+2} lam_{t+2}, scanned in reverse time as the pair
        (lam_t, mu_t) with mu_t = a2_{t+1} lam_{t+1}: (lam, mu)_t = [[a1, 1], [a2, 0]]_{t+1} (lam, mu)_{t+1} + (dy_t,
        0), whose maps need the logits of step t + 1 only (the companion form [[a1_{t+1}, a2_{t+2}], [1, 0]] on
        (lam_t, lam_{t+1}) needs those of t + 2 as well). The final window's gradient enters as extra dy at steps
        T-1 and T-2 (at T = 1 the second goes to the initial window). IN_THREADS: the tile's adjoints composed 8
        steps at a time inside each thread (`_m2_adjoint_tile_in_threads`) instead of tl.associative_scan over all
        its steps. WINDOW: states and d_states are [B, N, 2, T] windows (s_t, s_{t-1}); the gradient of s_{t-1} at
        step t + 1 joins s_t's (unless a document starts at t + 1), at step 0 the initial window's."""
        b, rows, mc = _tile_offsets(T, N, BC)
        state_rows = rows  # s_t's row in states and d_states
        if WINDOW:
            state_rows = 2 * rows
        bias1 = _load_bias(gate_bias, rows, b, N, 0, 3, mc, HAS_BIAS)
        bias2 = _load_bias(gate_bias, rows, b, N, 1, 3, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 2, 3, mc, HAS_BIAS)
        d_bias1 = tl.zeros([BC], dtype=tl.float32)  # HAS_BIAS: the logit gradients summed over the steps
        d_bias2 = tl.zeros([BC], dtype=tl.float32)
        d_bias_gate = tl.zeros([BC], dtype=tl.float32)
        c1 = tl.zeros([BC], dtype=tl.float32)  # lam at the step after the tile
        c2 = tl.zeros([BC], dtype=tl.float32)  # mu there
        h1 = tl.zeros([BC], dtype=tl.float32)
        h2 = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h1 = tl.load(initial_state + 2 * rows, mask=mc, other=0.0)
            h2 = tl.load(initial_state + 2 * rows + 1, mask=mc, other=0.0)
        df1 = tl.zeros([BC], dtype=tl.float32)
        df2 = tl.zeros([BC], dtype=tl.float32)
        if HAS_D_FINAL:
            df1 = tl.load(d_final + 2 * rows, mask=mc, other=0.0)
            df2 = tl.load(d_final + 2 * rows + 1, mask=mc, other=0.0)
        num_tiles = tl.cdiv(T, BT)
        for r in range(0, num_tiles):
            t0 = (num_tiles - 1 - r) * BT
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            mask1 = mc[:, None] & (t + 1 < T)[None, :]
            y1, y2, yg = _load_triple(gates, rows, t + 1, mask1, T, bias1, bias2, bias_gate, HAS_BIAS)
            a1_next, a2_next, _ = _normalize_triple(y1, y2, yg, ACT)  # a1_{t+1}, a2_{t+1}
            dy = _load_values(d_states, state_rows, t, mask, T)
            start = _starts_at(starts, b, t, T, HAS_STARTS)
            start_next = _starts_at(starts, b, t + 1, T, HAS_STARTS)  # no flow back across a document start
            if WINDOW:  # s_t is also the window's second entry at step t + 1
                dy += tl.where(start_next, 0.0, _load_values(d_states, state_rows + 1, t + 1, mask1, T))
            # the final window (s_{T-1}, s_{T-2}); its second entry is 0 if a document starts at the last step
            dy += tl.where((t == T - 1)[None, :], df1[:, None], 0.0)
            dy += tl.where((t == T - 2)[None, :] & ~start_next, df2[:, None], 0.0)
            # step t+1 reads s_t (lag 1) unless a document starts at t+1, s_{t-1} (lag 2) unless one starts at t+1 or t
            rr = tl.where(mask1 & ~start_next & ~start, a2_next, 0.0)
            if IN_THREADS:
                lam, c1_next, c2_next = _m2_adjoint_tile_in_threads(
                    tl.where(mask1 & ~start_next, a1_next, 0.0), rr, tl.where(mask, dy, 0.0), c1, c2, BC, BT)
            else:
                zero = tl.zeros([BC, BT], dtype=tl.float32)
                p = tl.where(mask, tl.where(mask1 & ~start_next, a1_next, 0.0), 1.0)  # steps past T: the identity
                q = tl.where(mask, 1.0, 0.0)
                ss = tl.where(mask, 0.0, 1.0)
                b1 = tl.where(mask, dy, 0.0)
                p, q, rr, ss, b1, b2 = tl.associative_scan((p, q, rr, ss, b1, zero), 1, _companion_combine,
                                                           reverse=True)
                lam = p * c1[:, None] + q * c2[:, None] + b1  # lam_t
                mu = rr * c1[:, None] + ss * c2[:, None] + b2  # mu_t = a2_{t+1} lam_{t+1}
            # the step's own inputs after the scan (fewer registers live across it, as at m = 1)
            z1, z2, zg = _load_triple(gates, rows, t, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
            a1, a2, g = _normalize_triple(z1, z2, zg, ACT)
            x = _load_values(values, rows, t, mask, T)
            s1 = _load_values(states, state_rows, t - 1, mask & (t >= 1)[None, :], T)
            s2 = _load_values(states, state_rows, t - 2, mask & (t >= 2)[None, :], T)
            s1 = tl.where((t >= 1)[None, :], s1, h1[:, None])  # s_{t-1}; s_{-1} is the window's first entry
            s2 = tl.where((t >= 2)[None, :], s2, tl.where((t == 1)[None, :], h1[:, None], h2[:, None]))
            start_before = start | _starts_at(starts, b, t - 1, T, HAS_STARTS)
            s1 = tl.where(start, 0.0, s1)  # a document's window starts at zero
            s2 = tl.where(start_before, 0.0, s2)
            dz1, dz2, dzg = _normalize_triple_bwd(z1, z2, zg, lam * s1, lam * s2, lam * x, ACT)
            gate_rows = (3 * rows)[:, None] * T + t[None, :]
            tl.store(d_gates + gate_rows, dz1.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + T, dz2.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 2 * T, dzg.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_values + rows[:, None] * T + t[None, :], (lam * g).to(d_values.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                d_bias1 += tl.sum(tl.where(mask, dz1, 0.0), axis=1)
                d_bias2 += tl.sum(tl.where(mask, dz2, 0.0), axis=1)
                d_bias_gate += tl.sum(tl.where(mask, dzg, 0.0), axis=1)
            first = (t == t0)[None, :]
            if IN_THREADS:
                c1, c2 = c1_next, c2_next
            else:
                c1 = tl.sum(tl.where(first, lam, 0.0), axis=1)
                c2 = tl.sum(tl.where(first, mu, 0.0), axis=1)
            if HAS_H0:
                if t0 == 0:
                    # s_0 = a1_0 h1 + a2_0 h2 + ..., s_1 = ... + a2_1 h1: d h1 = a1_0 lam_0 + mu_0, d h2 = a2_0 lam_0
                    a1_0 = tl.sum(tl.where(first & ~start, a1, 0.0), axis=1)  # 0 where a document starts at 0
                    a2_0 = tl.sum(tl.where(first & ~start, a2, 0.0), axis=1)
                    d_first = a1_0 * c1 + c2
                    reset = tl.sum(tl.where(first & start, 1.0, 0.0), axis=1) > 0  # a document starts at step 0
                    if WINDOW:  # the window's second entry at step 0 is the initial window's first
                        d_window_0 = tl.load(d_states + (state_rows + 1) * T, mask=mc, other=0.0).to(tl.float32)
                        d_first += tl.where(reset, 0.0, d_window_0)
                    if T == 1:  # the final window's second entry is the initial window's first (unless reset)
                        d_first += tl.where(reset, 0.0, df2)
                    tl.store(d_initial_state + 2 * rows, d_first, mask=mc)
                    tl.store(d_initial_state + 2 * rows + 1, a2_0 * c1, mask=mc)
        if HAS_BIAS:
            _store_bias_gradient(d_bias_rows, rows, 0, 3, mc, d_bias1)
            _store_bias_gradient(d_bias_rows, rows, 1, 3, mc, d_bias2)
            _store_bias_gradient(d_bias_rows, rows, 2, 3, mc, d_bias_gate)


def _contiguous(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t.contiguous() if t is not None else None


def _tile():
    return INTERPRETER_TILE if _INTERPRET else TILE


def _grid(B: int, N: int, T: int, device=None, backward: bool = False, order: int = 1):
    """(grid, launch options): one program per (row, block of BC channels). A grid of fewer than SMALL_GRID_BELOW
    programs per SM (B1 T16384 D1024: 1024 programs at m = 1, 8 per SM) cannot hide the loads' latency by switching
    programs; there the forwards load the next tile before scanning this one (PREFETCH: 69 -> 82 % of copy at m = 1
    on the H200, while at B8-B32 it cost 0-2 points at m = 1 and 4-8 at m = 2's tile scan;
    bench_results/probes_2026-11-30j/compare_prefetch.txt). m = 2 elsewhere composes its steps in threads if
    M2_IN_THREADS (IN_THREADS_TILE on a GPU), whose one-warp programs also prefetch: 58 -> 64 % at B8 T2048 D768,
    no change at B32 (bench_results/probes_2026-11-30k/prefetch_in_threads.txt)."""
    tile = _tile()
    small = B * triton.cdiv(N, tile["BC"]) < SMALL_GRID_BELOW * _num_sms(device if device is not None else "cpu")
    in_threads = order == 2 and M2_IN_THREADS and not small
    options = dict(BC=tile["BC"], BT=tile["BT"], num_warps=tile["num_warps"])
    if in_threads and not _INTERPRET:
        options.update(IN_THREADS_TILE)
    if order == 2:
        options["IN_THREADS"] = in_threads
    if not backward:
        options["PREFETCH"] = small or in_threads
    options["BT"] = min(options["BT"], max(16, triton.next_power_of_2(max(T, 1))))
    return (B * triton.cdiv(N, options["BC"]),), options


def time_last_forward(gates: torch.Tensor, values: torch.Tensor, initial_state: Optional[torch.Tensor],
                      gate_activation: str, want_final: bool, starts: Optional[torch.Tensor] = None,
                      gate_bias: Optional[torch.Tensor] = None, window: bool = False
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """gates [B, N, m+1, T] (m = 1 or 2), values [B, N, T], initial_state [B, N, m] or None, starts [B, T] bool or
    None (the window restarts from zero before every step where it is True), gate_bias [N, m+1] or None (added to
    every step's logits) -> (states [B, N, T] in values' dtype, or with `window` the window [B, N, m, T] = (s_t, ...,
    s_{t-m+1}) at every step; final window [B, N, m] float32 or None)."""
    B, N, m1, T = gates.shape
    gates, values = gates.contiguous(), values.contiguous()
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    states = values.new_empty(B, N, m1 - 1, T) if window else torch.empty_like(values)
    final = torch.empty(B, N, m1 - 1, device=values.device, dtype=torch.float32) if want_final else None
    if B * N == 0:
        return states, (final.zero_() if final is not None else None)
    if T == 0:  # no step: the final state is the initial one
        return states, ((h0.clone() if h0 is not None else final.zero_()) if want_final else None)
    grid, blocks = _grid(B, N, T, values.device, order=m1 - 1)
    kernel = _time_last_fwd_kernel if m1 == 2 else _time_last_m2_fwd_kernel
    if m1 == 3:  # at m = 1 the window is the states
        blocks["WINDOW"] = window
    with _device_guard(values.device):
        kernel[grid](
            gates=gates, gate_bias=_contiguous(gate_bias), values=values, initial_state=h0, starts=_contiguous(starts),
            states=states, final_state=final, T=T, N=N, ACT=_ACT_ID[gate_activation], HAS_BIAS=gate_bias is not None,
            HAS_H0=h0 is not None, WRITE_FINAL=want_final, HAS_STARTS=starts is not None, **blocks)
    return states, final


def time_last_backward(gates: torch.Tensor, values: torch.Tensor, states: torch.Tensor,
                       initial_state: Optional[torch.Tensor], d_states: torch.Tensor, d_final: Optional[torch.Tensor],
                       gate_activation: str, starts: Optional[torch.Tensor] = None,
                       gate_bias: Optional[torch.Tensor] = None, window: bool = False
                       ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(d gates [B, N, m+1, T] in gates' dtype, d values [B, N, T] in values' dtype, d initial state [B, N, m] float32
    or None without an initial state, d gate_bias [N, m+1] float32 or None without a bias) for the forward of
    `time_last_forward` (with `window`: states and d_states are windows [B, N, m, T]). The bias gradient is the
    logits' summed over the steps by each program, then over the batch here (deterministic, unlike atomics)."""
    B, N, m1, T = gates.shape
    gates, values, states, d_states = gates.contiguous(), values.contiguous(), states.contiguous(), d_states.contiguous()
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    d_final = d_final.to(torch.float32).contiguous() if d_final is not None else None
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    d_h0 = torch.empty(B, N, m1 - 1, device=values.device, dtype=torch.float32) if h0 is not None else None
    d_bias_rows = torch.empty(B, N, m1, device=values.device, dtype=torch.float32) if gate_bias is not None else None
    if B * N == 0 or T == 0:
        if d_h0 is not None:  # no step: the final state was the initial one
            d_h0.copy_(d_final if d_final is not None and T == 0 else torch.zeros_like(d_h0))
        return d_gates, d_values, d_h0, (d_bias_rows.zero_().sum(0) if d_bias_rows is not None else None)
    grid, blocks = _grid(B, N, T, values.device, backward=True, order=m1 - 1)
    kernel = _time_last_bwd_kernel if m1 == 2 else _time_last_m2_bwd_kernel
    if m1 == 3:
        blocks["WINDOW"] = window
    with _device_guard(values.device):
        kernel[grid](
            gates=gates, gate_bias=_contiguous(gate_bias), values=values, states=states, initial_state=h0,
            starts=_contiguous(starts), d_states=d_states, d_final=d_final, d_gates=d_gates, d_values=d_values,
            d_initial_state=d_h0, d_bias_rows=d_bias_rows, T=T, N=N, ACT=_ACT_ID[gate_activation],
            HAS_BIAS=gate_bias is not None, HAS_H0=h0 is not None, HAS_D_FINAL=d_final is not None,
            HAS_STARTS=starts is not None, **blocks)
    return d_gates, d_values, d_h0, (d_bias_rows.sum(0) if d_bias_rows is not None else None)


class _TimeLastFunction(torch.autograd.Function):
    """The eager autograd path (ops.py traces the custom op under torch.compile instead), as `hlru_scan`'s: the same
    kernels without the op's dispatch layers. Those are a small part of an eager call's host time: a forward+backward
    at B8 T2048 D768 took 405 us of wall this way and 417 us through the op on the H200's host, against 133 us for
    the kernels called directly; the rest is the autograd engine's ~0.3 ms per backward()
    (bench_results/probes_2026-11-30j/host_overhead.txt)."""

    @staticmethod
    def forward(ctx, gates, values, initial_state, gate_activation, want_final, starts, gate_bias, window):
        states, final = time_last_forward(gates, values, initial_state, gate_activation, want_final, starts, gate_bias,
                                          window)
        ctx.save_for_backward(gates, values, states, initial_state, starts, gate_bias)
        ctx.gate_activation, ctx.window = gate_activation, window
        ctx.set_materialize_grads(False)
        return states, final

    @staticmethod
    def backward(ctx, d_states, d_final):
        gates, values, states, initial_state, starts, gate_bias = ctx.saved_tensors
        if d_states is None and d_final is None:
            return None, None, None, None, None, None, None, None
        if d_states is None:
            d_states = torch.zeros_like(states)
        d_gates, d_values, d_h0, d_bias = time_last_backward(gates, values, states, initial_state, d_states, d_final,
                                                             ctx.gate_activation, starts, gate_bias, ctx.window)
        needs = ctx.needs_input_grad
        return (d_gates if needs[0] else None, d_values if needs[1] else None,
                d_h0.to(initial_state.dtype) if needs[2] else None, None, None, None,
                d_bias.to(gate_bias.dtype) if needs[6] else None, None)


def time_last_scan(gates: torch.Tensor, values: torch.Tensor, initial_state: Optional[torch.Tensor],
                   gate_activation: str, want_final: bool, starts: Optional[torch.Tensor] = None,
                   gate_bias: Optional[torch.Tensor] = None, window: bool = False
                   ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`time_last_forward` with its gradient in eager mode (arguments unchecked: ops.hlru_scan_time_last checks
    them); without gradients to track, the forward kernel alone."""
    if not _tracks_gradients(gates, values, initial_state, gate_bias):
        return time_last_forward(gates, values, initial_state, gate_activation, want_final, starts, gate_bias, window)
    return _TimeLastFunction.apply(gates, values, initial_state, gate_activation, want_final, starts, gate_bias,
                                   window)


__all__ = ["TILE", "time_last_backward", "time_last_forward", "time_last_scan"]
