"""Triton kernels for the diagonal case m = 1 (H-LRU order 1 = BD-LRU block 1): h_t = a_t h_{t-1} + g_t v_t.

Why a separate kernel: a loop of single time steps waits one memory latency per step. Here each program
loads a tile of TT time steps x BLOCK channels at once (all loads in flight together) and solves the tile
with `tl.associative_scan` over the pair (a, g v) -- (a1, b1) then (a2, b2) composes to (a1 a2, a2 b1 + b2) --
carrying the last state into the next tile. Everything is float32; the gate logits are normalised in
registers (same maps and eps as scan_torch) and never written.

The backward is the same scan run backwards in time on the adjoint, dh_t = do_t + a_{t+1} dh_{t+1}, then
d a_t = dh_t h_{t-1}, d g_t = dh_t v_t, d v_t = dh_t g_t, pulled back through the normalisation.

Both kernels also run in the chunked (time-parallel) mode of scan_triton.py: MODE=1 writes each chunk's
transition P (product of a) and local end state b (from a zero start) in its aggregate layout, so the
same carry kernel and plan serve m = 1 and m > 1.
"""

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl
except ImportError:
    raise

from .scan_torch import RELU_EPS, SIGNED_EPS

_RELU_EPS = tl.constexpr(RELU_EPS)
_SIGNED_EPS = tl.constexpr(SIGNED_EPS)


@triton.jit
def _phi1(z, ACT: tl.constexpr):
    if ACT == 1:
        p = tl.sigmoid(z)
    elif ACT == 2:
        p = tl.maximum(z, 0.0)
    elif ACT == 3:
        e = tl.exp(-2.0 * tl.abs(z))
        r = (1.0 - e) / (1.0 + e)
        p = tl.where(z < 0.0, -r, r)
    else:
        p = z
    return p


@triton.jit
def _norm2(z0, z1, ACT: tl.constexpr):
    """(recurrence coefficient a, input gate g) from the two logits of one channel."""
    if ACT == 0:  # softmax over two entries
        a = tl.sigmoid(z0 - z1)
        g = tl.sigmoid(z1 - z0)
    elif ACT == 5:
        a = z0
        g = z1
    else:
        p0 = _phi1(z0, ACT)
        p1 = _phi1(z1, ACT)
        if ACT <= 2:
            den = p0 + p1
            if ACT == 2:
                den = den + 2.0 * _RELU_EPS
        else:
            den = tl.abs(p0) + tl.abs(p1) + _SIGNED_EPS
        a = p0 / den
        g = p1 / den
    return a, g


@triton.jit
def _norm2_bwd(z0, z1, da, dg, ACT: tl.constexpr):
    """Logit gradients from the coefficient gradients (the normalisation Jacobian)."""
    if ACT == 0:
        a = tl.sigmoid(z0 - z1)
        g = tl.sigmoid(z1 - z0)
        dot = a * da + g * dg
        dz0 = a * (da - dot)
        dz1 = g * (dg - dot)
    elif ACT == 5:
        dz0 = da
        dz1 = dg
    else:
        p0 = _phi1(z0, ACT)
        p1 = _phi1(z1, ACT)
        if ACT <= 2:
            den = p0 + p1
            if ACT == 2:
                den = den + 2.0 * _RELU_EPS
        else:
            den = tl.abs(p0) + tl.abs(p1) + _SIGNED_EPS
        inv = 1.0 / den
        a = p0 * inv
        g = p1 * inv
        dot = a * da + g * dg
        if ACT <= 2:
            dp0 = (da - dot) * inv
            dp1 = (dg - dot) * inv
        else:
            dp0 = (da - dot * tl.where(p0 > 0.0, 1.0, tl.where(p0 < 0.0, -1.0, 0.0))) * inv
            dp1 = (dg - dot * tl.where(p1 > 0.0, 1.0, tl.where(p1 < 0.0, -1.0, 0.0))) * inv
        if ACT == 1:
            dz0 = dp0 * p0 * (1.0 - p0)
            dz1 = dp1 * p1 * (1.0 - p1)
        elif ACT == 2:
            dz0 = tl.where(z0 > 0.0, dp0, 0.0)
            dz1 = tl.where(z1 > 0.0, dp1, 0.0)
        elif ACT == 3:
            dz0 = dp0 * (1.0 - p0 * p0)
            dz1 = dp1 * (1.0 - p1 * p1)
        else:
            dz0 = dp0
            dz1 = dp1
    return dz0, dz1


@triton.jit
def mask_if(mask, cond):
    """`mask & cond` for a scalar condition (Triton 3.9's interpreter mistypes tensor & scalar comparisons)."""
    return tl.where(cond, mask, False)


@triton.jit
def _compose(a1, b1, a2, b2):
    # (a1, b1) earlier, (a2, b2) later: x -> a2 (a1 x + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _last_row(x, rows, TT: tl.constexpr):
    return tl.sum(tl.where(rows[:, None] == TT - 1, x, 0.0), axis=0)


@triton.jit
def segment_bounds(pid_s, CU, TAB, T, NC, IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr):
    """Map a segment id to (sequence, chunk index, sequence start, sequence end, batch row)."""
    if IS_VARLEN:
        if USE_TAB:
            seq = tl.load(TAB + 2 * pid_s)
            c = tl.load(TAB + 2 * pid_s + 1)
        else:
            seq = pid_s
            c = pid_s * 0
        seq_bos = tl.load(CU + seq)
        seq_eos = tl.load(CU + seq + 1)
        b = seq * 0
    else:
        seq = pid_s // NC
        c = pid_s % NC
        seq_bos = seq * 0
        seq_eos = seq * 0 + T
        b = seq
    return seq, c, seq_bos, seq_eos, b


@triton.jit
def diag_fwd_kernel(
    G, V, O, H0, HF, AGG, CU, TAB,
    sg_b, sg_t, T, N, CS, NC,
    BLOCK: tl.constexpr, TT: tl.constexpr, ACT: tl.constexpr, IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr,
    HAS_H0: tl.constexpr, H0_PER_SEG: tl.constexpr, MODE: tl.constexpr, WRITE_FINAL: tl.constexpr,
):
    """MODE 0: write the states (and the final state); MODE 1: write the chunk aggregate (P, b) only."""
    pid_s = tl.program_id(0)
    pid_n = tl.program_id(1)
    seq, c, seq_bos, seq_eos, b = segment_bounds(pid_s, CU, TAB, T, NC, IS_VARLEN, USE_TAB)
    bos = seq_bos + c * CS
    eos = tl.minimum(bos + CS, seq_eos)
    L = eos - bos
    b64 = b.to(tl.int64)
    n = pid_n * BLOCK + tl.arange(0, BLOCK)
    mn = n < N
    rows = tl.arange(0, TT)

    if HAS_H0:
        hidx = pid_s.to(tl.int64) if H0_PER_SEG else seq.to(tl.int64)
        h = tl.load(H0 + hidx * N + n, mask=mn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK], dtype=tl.float32)
    P = tl.full([BLOCK], 1.0, dtype=tl.float32)
    gbase = G + b64 * sg_b
    for i0 in range(0, L, TT):
        ok = (i0 + rows) < L
        t = (bos + i0 + rows).to(tl.int64)
        m2 = ok[:, None] & mn[None, :]
        gp = gbase + t[:, None] * sg_t + n[None, :] * 2
        z0 = tl.load(gp, mask=m2, other=0.0).to(tl.float32)
        z1 = tl.load(gp + 1, mask=m2, other=0.0).to(tl.float32)
        vp = V + (b64 * T + t[:, None]) * N + n[None, :]
        v = tl.load(vp, mask=m2, other=0.0).to(tl.float32)
        a, g = _norm2(z0, z1, ACT)
        a = tl.where(m2, a, 1.0)
        u = tl.where(m2, g * v, 0.0)
        A, Bc = tl.associative_scan((a, u), 0, _compose)
        hs = A * h[None, :] + Bc  # [TT, BLOCK]
        if MODE == 0:
            tl.store(O + (b64 * T + t[:, None]) * N + n[None, :], hs.to(O.dtype.element_ty), mask=m2)
        else:
            P = P * _last_row(A, rows, TT)
        h = _last_row(hs, rows, TT)

    if MODE == 0:
        if WRITE_FINAL:
            tl.store(HF + seq.to(tl.int64) * N + n, h, mask=mask_if(mn, eos == seq_eos))
    else:
        base = AGG + (pid_s.to(tl.int64) * N + n) * 2  # [.., N, m+1=2, m=1]: P^T then b
        tl.store(base, P, mask=mn)
        tl.store(base + 1, h, mask=mn)


@triton.jit
def diag_bwd_kernel(
    G, V, O, DO, INIT, DHT, DG, DV, DH0, AGG, CU, TAB,
    sg_b, sg_t, T, N, CS, NC,
    BLOCK: tl.constexpr, TT: tl.constexpr, ACT: tl.constexpr, IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_DHT: tl.constexpr, DHT_PER_SEG: tl.constexpr, WRITE_DH0: tl.constexpr,
    MODE: tl.constexpr,
):
    """Reverse-time adjoint scan. MODE 0: write dG, dV (and dh0); MODE 1: write the chunk aggregate only."""
    pid_s = tl.program_id(0)
    pid_n = tl.program_id(1)
    seq, c, seq_bos, seq_eos, b = segment_bounds(pid_s, CU, TAB, T, NC, IS_VARLEN, USE_TAB)
    bos = seq_bos + c * CS
    eos = tl.minimum(bos + CS, seq_eos)
    L = eos - bos
    b64 = b.to(tl.int64)
    seq64 = seq.to(tl.int64)
    n = pid_n * BLOCK + tl.arange(0, BLOCK)
    mn = n < N
    rows = tl.arange(0, TT)

    if HAS_DHT:
        hidx = pid_s.to(tl.int64) if DHT_PER_SEG else seq64
        x = tl.load(DHT + hidx * N + n, mask=mn, other=0.0).to(tl.float32)  # dh at eos (the carry from later)
    else:
        x = tl.zeros([BLOCK], dtype=tl.float32)
    P = tl.full([BLOCK], 1.0, dtype=tl.float32)
    gbase = G + b64 * sg_b
    for k0 in range(0, L, TT):
        i = L - 1 - k0 - rows  # positions in the segment, descending
        ok = i >= 0
        t = (bos + i).to(tl.int64)
        m2 = ok[:, None] & mn[None, :]
        # the multiplier of dh_{t+1} is a_{t+1}; past the sequence end it is 1 (dh_T is the final-state grad)
        has_next = (t + 1) < seq_eos
        mn2 = m2 & has_next[:, None]
        gpn = gbase + (t[:, None] + 1) * sg_t + n[None, :] * 2
        zn0 = tl.load(gpn, mask=mn2, other=0.0).to(tl.float32)
        zn1 = tl.load(gpn + 1, mask=mn2, other=0.0).to(tl.float32)
        an, _ = _norm2(zn0, zn1, ACT)
        A = tl.where(mn2, an, 1.0)
        do = tl.load(DO + (b64 * T + t[:, None]) * N + n[None, :], mask=m2, other=0.0).to(tl.float32)
        As, Bs = tl.associative_scan((A, do), 0, _compose)
        dh = As * x[None, :] + Bs  # dh_t, [TT, BLOCK]
        if MODE == 0:
            gp = gbase + t[:, None] * sg_t + n[None, :] * 2
            z0 = tl.load(gp, mask=m2, other=0.0).to(tl.float32)
            z1 = tl.load(gp + 1, mask=m2, other=0.0).to(tl.float32)
            v = tl.load(V + (b64 * T + t[:, None]) * N + n[None, :], mask=m2, other=0.0).to(tl.float32)
            in_seq = (t - 1) >= seq_bos
            hp = tl.load(O + (b64 * T + t[:, None] - 1) * N + n[None, :], mask=m2 & in_seq[:, None],
                         other=0.0).to(tl.float32)
            if HAS_INIT:
                hi = tl.load(INIT + seq64 * N + n, mask=mn, other=0.0).to(tl.float32)
                hp = tl.where(in_seq[:, None], hp, hi[None, :])
            a, g = _norm2(z0, z1, ACT)
            dz0, dz1 = _norm2_bwd(z0, z1, dh * hp, dh * v, ACT)
            dgp = DG + ((b64 * T + t[:, None]) * N + n[None, :]) * 2
            tl.store(dgp, dz0.to(DG.dtype.element_ty), mask=m2)
            tl.store(dgp + 1, dz1.to(DG.dtype.element_ty), mask=m2)
            tl.store(DV + (b64 * T + t[:, None]) * N + n[None, :], (dh * g).to(DV.dtype.element_ty), mask=m2)
        else:
            P = P * _last_row(As, rows, TT)
        x = _last_row(dh, rows, TT)  # dh at the earliest step of this tile (masked rows carry it unchanged)

    if MODE == 0:
        if WRITE_DH0:
            # h_0 enters the first step through a_{bos}: dh0 = a_{bos} dh_{bos}
            gp0 = gbase + bos.to(tl.int64) * sg_t + n * 2
            first = mask_if(mn, (c == 0) & (L > 0))
            a0, _ = _norm2(tl.load(gp0, mask=first, other=0.0).to(tl.float32),
                           tl.load(gp0 + 1, mask=first, other=0.0).to(tl.float32), ACT)
            tl.store(DH0 + seq64 * N + n, tl.where(L > 0, a0 * x, x), mask=mask_if(mn, c == 0))
    else:
        base = AGG + (pid_s.to(tl.int64) * N + n) * 2
        tl.store(base, P, mask=mn)
        tl.store(base + 1, x, mask=mn)


__all__ = ["diag_fwd_kernel", "diag_bwd_kernel", "segment_bounds", "mask_if"]
