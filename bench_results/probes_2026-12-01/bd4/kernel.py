"""A probe, not the library: BD-LRU block size 4 on time-last tensors, forward only, composed in threads as H-LRU
m = 4 is (`hf_lrnn.scan_time_last._m4_tile_in_threads`), each step a general 4 x 4 affine map (A_t, g_t v_t).
gates [B, N, 4, 5, T] (rows 5 (4 n + j) + k of [B N 20, T]), values and states [B, N, 4, T] (rows 4 n + j).
No initial state, document starts or gate bias. RELOAD: the tile's logits are loaded and normalised again after the
scan of the groups' maps (L1 / L2 hits; volatile loads, which the compiler may not merge with the first) instead
of being kept in registers across it."""
import triton
import triton.language as tl

from hf_lrnn.scan_time_last import (_apply4, _companion4_combine, _join_steps, _normalize_five, _split_steps,
                                    _tile_offsets)


@triton.jit
def _load_row(gates, values, row, t, mask, T, ACT: tl.constexpr, VOLATILE: tl.constexpr):
    """Row `row` [BC] of the blocks' [A | g] normalised (a_j0..a_j3, g_j) and its values, [BC, BT] each. VOLATILE:
    loads the compiler may not merge with earlier ones of the same addresses."""
    base = (5 * row)[:, None] * T + t[None, :]
    z0 = tl.load(gates + base, mask=mask, other=0.0, volatile=VOLATILE).to(tl.float32)
    z1 = tl.load(gates + base + T, mask=mask, other=0.0, volatile=VOLATILE).to(tl.float32)
    z2 = tl.load(gates + base + 2 * T, mask=mask, other=0.0, volatile=VOLATILE).to(tl.float32)
    z3 = tl.load(gates + base + 3 * T, mask=mask, other=0.0, volatile=VOLATILE).to(tl.float32)
    zg = tl.load(gates + base + 4 * T, mask=mask, other=0.0, volatile=VOLATILE).to(tl.float32)
    x = tl.load(values + row[:, None] * T + t[None, :], mask=mask, other=0.0, volatile=VOLATILE).to(tl.float32)
    a0, a1, a2, a3, g = _normalize_five(z0, z1, z2, z3, zg, ACT)
    return a0, a1, a2, a3, g, x


@triton.jit
def _bd4_rows(gates, values, blocks, t, mask, T, ACT: tl.constexpr, VOLATILE: tl.constexpr = False):
    """The 4 x 4 maps at steps t of blocks: A row-major (16) then u = g v (4), [BC, BT] each; the identity outside
    `mask`."""
    a00, a01, a02, a03, g0, x0 = _load_row(gates, values, 4 * blocks, t, mask, T, ACT, VOLATILE)
    a10, a11, a12, a13, g1, x1 = _load_row(gates, values, 4 * blocks + 1, t, mask, T, ACT, VOLATILE)
    a20, a21, a22, a23, g2, x2 = _load_row(gates, values, 4 * blocks + 2, t, mask, T, ACT, VOLATILE)
    a30, a31, a32, a33, g3, x3 = _load_row(gates, values, 4 * blocks + 3, t, mask, T, ACT, VOLATILE)
    return (tl.where(mask, a00, 1.0), tl.where(mask, a01, 0.0), tl.where(mask, a02, 0.0), tl.where(mask, a03, 0.0),
            tl.where(mask, a10, 0.0), tl.where(mask, a11, 1.0), tl.where(mask, a12, 0.0), tl.where(mask, a13, 0.0),
            tl.where(mask, a20, 0.0), tl.where(mask, a21, 0.0), tl.where(mask, a22, 1.0), tl.where(mask, a23, 0.0),
            tl.where(mask, a30, 0.0), tl.where(mask, a31, 0.0), tl.where(mask, a32, 0.0), tl.where(mask, a33, 1.0),
            tl.where(mask, g0 * x0, 0.0), tl.where(mask, g1 * x1, 0.0), tl.where(mask, g2 * x2, 0.0),
            tl.where(mask, g3 * x3, 0.0))


@triton.jit
def _split4(x, BC: tl.constexpr, G: tl.constexpr):
    """[BC, 4 G] -> its 4 columns [BC, G], column k holding steps 4 g + k."""
    x = tl.reshape(x, [BC, G, 2, 2])
    x0, x1 = tl.split(x)  # k = 2 i + j: j first
    c0, c2 = tl.split(x0)
    c1, c3 = tl.split(x1)
    return c0, c1, c2, c3


@triton.jit
def _join4(c0, c1, c2, c3, BC: tl.constexpr, G: tl.constexpr):
    """The inverse of `_split4`."""
    return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [BC, G * 4])


@triton.jit
def _bd4_split4(maps, BC: tl.constexpr, G: tl.constexpr):
    """`_bd4_split` for 4 steps a thread."""
    return (_split4(maps[0], BC, G), _split4(maps[1], BC, G), _split4(maps[2], BC, G), _split4(maps[3], BC, G),
            _split4(maps[4], BC, G), _split4(maps[5], BC, G), _split4(maps[6], BC, G), _split4(maps[7], BC, G),
            _split4(maps[8], BC, G), _split4(maps[9], BC, G), _split4(maps[10], BC, G), _split4(maps[11], BC, G),
            _split4(maps[12], BC, G), _split4(maps[13], BC, G), _split4(maps[14], BC, G), _split4(maps[15], BC, G),
            _split4(maps[16], BC, G), _split4(maps[17], BC, G), _split4(maps[18], BC, G), _split4(maps[19], BC, G))


@triton.jit
def _bd4_split(maps, BC: tl.constexpr, G: tl.constexpr):
    """The 20 components [BC, 8 G] -> 20 tuples of their 8 step columns [BC, G]."""
    return (_split_steps(maps[0], BC, G), _split_steps(maps[1], BC, G), _split_steps(maps[2], BC, G),
            _split_steps(maps[3], BC, G), _split_steps(maps[4], BC, G), _split_steps(maps[5], BC, G),
            _split_steps(maps[6], BC, G), _split_steps(maps[7], BC, G), _split_steps(maps[8], BC, G),
            _split_steps(maps[9], BC, G), _split_steps(maps[10], BC, G), _split_steps(maps[11], BC, G),
            _split_steps(maps[12], BC, G), _split_steps(maps[13], BC, G), _split_steps(maps[14], BC, G),
            _split_steps(maps[15], BC, G), _split_steps(maps[16], BC, G), _split_steps(maps[17], BC, G),
            _split_steps(maps[18], BC, G), _split_steps(maps[19], BC, G))


@triton.jit
def _bd4_step_map(s, i: tl.constexpr):
    """Step i's 20 components from `_bd4_split`'s tuples."""
    return (s[0][i], s[1][i], s[2][i], s[3][i], s[4][i], s[5][i], s[6][i], s[7][i], s[8][i], s[9][i], s[10][i],
            s[11][i], s[12][i], s[13][i], s[14][i], s[15][i], s[16][i], s[17][i], s[18][i], s[19][i])


@triton.jit
def _bd4_apply(h0, h1, h2, h3, m):
    """(h0..h3) -> A h + u for the map m (20 components)."""
    return (m[0] * h0 + m[1] * h1 + m[2] * h2 + m[3] * h3 + m[16],
            m[4] * h0 + m[5] * h1 + m[6] * h2 + m[7] * h3 + m[17],
            m[8] * h0 + m[9] * h1 + m[10] * h2 + m[11] * h3 + m[18],
            m[12] * h0 + m[13] * h1 + m[14] * h2 + m[15] * h3 + m[19])


@triton.jit
def bd4_time_last_fwd4_kernel(gates, values, states, T, N, ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                              RELOAD: tl.constexpr):
    """`bd4_time_last_fwd_kernel` with 4 steps a thread (half the registers of the steps' maps, twice the groups)."""
    b, blocks, mc = _tile_offsets(T, N, BC)
    G: tl.constexpr = BT // 4
    c0 = tl.zeros([BC], dtype=tl.float32)
    c1 = tl.zeros([BC], dtype=tl.float32)
    c2 = tl.zeros([BC], dtype=tl.float32)
    c3 = tl.zeros([BC], dtype=tl.float32)
    group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
    before = tl.maximum(group - 1, 0)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        mask = mc[:, None] & (t < T)[None, :]
        s = _bd4_split4(_bd4_rows(gates, values, blocks, t, mask, T, ACT), BC, G)
        maps = _bd4_step_map(s, 0)
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 1))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 2))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 3))
        m = tl.associative_scan(maps, 1, _companion4_combine)
        end0 = _apply4(m[0], m[1], m[2], m[3], m[16], c0, c1, c2, c3)
        end1 = _apply4(m[4], m[5], m[6], m[7], m[17], c0, c1, c2, c3)
        end2 = _apply4(m[8], m[9], m[10], m[11], m[18], c0, c1, c2, c3)
        end3 = _apply4(m[12], m[13], m[14], m[15], m[19], c0, c1, c2, c3)
        h0 = tl.where(group == 0, c0[:, None], tl.gather(end0, before, 1))
        h1 = tl.where(group == 0, c1[:, None], tl.gather(end1, before, 1))
        h2 = tl.where(group == 0, c2[:, None], tl.gather(end2, before, 1))
        h3 = tl.where(group == 0, c3[:, None], tl.gather(end3, before, 1))
        last = group == G - 1
        c0 = tl.sum(tl.where(last, end0, 0.0), axis=1)
        c1 = tl.sum(tl.where(last, end1, 0.0), axis=1)
        c2 = tl.sum(tl.where(last, end2, 0.0), axis=1)
        c3 = tl.sum(tl.where(last, end3, 0.0), axis=1)
        if RELOAD:
            s = _bd4_split4(_bd4_rows(gates, values, blocks, t, mask, T, ACT, True), BC, G)
        x0 = _bd4_apply(h0, h1, h2, h3, _bd4_step_map(s, 0))
        x1 = _bd4_apply(*x0, _bd4_step_map(s, 1))
        x2 = _bd4_apply(*x1, _bd4_step_map(s, 2))
        x3 = _bd4_apply(*x2, _bd4_step_map(s, 3))
        out = states + (4 * blocks)[:, None] * T + t[None, :]
        tl.store(out, _join4(x0[0], x1[0], x2[0], x3[0], BC, G).to(states.dtype.element_ty), mask=mask)
        tl.store(out + T, _join4(x0[1], x1[1], x2[1], x3[1], BC, G).to(states.dtype.element_ty), mask=mask)
        tl.store(out + 2 * T, _join4(x0[2], x1[2], x2[2], x3[2], BC, G).to(states.dtype.element_ty), mask=mask)
        tl.store(out + 3 * T, _join4(x0[3], x1[3], x2[3], x3[3], BC, G).to(states.dtype.element_ty), mask=mask)


@triton.jit
def bd4_time_last_fwd_kernel(gates, values, states, T, N, ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                             RELOAD: tl.constexpr):
    b, blocks, mc = _tile_offsets(T, N, BC)
    G: tl.constexpr = BT // 8
    c0 = tl.zeros([BC], dtype=tl.float32)
    c1 = tl.zeros([BC], dtype=tl.float32)
    c2 = tl.zeros([BC], dtype=tl.float32)
    c3 = tl.zeros([BC], dtype=tl.float32)
    group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
    before = tl.maximum(group - 1, 0)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        mask = mc[:, None] & (t < T)[None, :]
        s = _bd4_split(_bd4_rows(gates, values, blocks, t, mask, T, ACT), BC, G)
        maps = _bd4_step_map(s, 0)
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 1))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 2))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 3))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 4))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 5))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 6))
        maps = _companion4_combine(*maps, *_bd4_step_map(s, 7))
        m = tl.associative_scan(maps, 1, _companion4_combine)
        end0 = _apply4(m[0], m[1], m[2], m[3], m[16], c0, c1, c2, c3)  # the state after each group
        end1 = _apply4(m[4], m[5], m[6], m[7], m[17], c0, c1, c2, c3)
        end2 = _apply4(m[8], m[9], m[10], m[11], m[18], c0, c1, c2, c3)
        end3 = _apply4(m[12], m[13], m[14], m[15], m[19], c0, c1, c2, c3)
        h0 = tl.where(group == 0, c0[:, None], tl.gather(end0, before, 1))  # the state before each group
        h1 = tl.where(group == 0, c1[:, None], tl.gather(end1, before, 1))
        h2 = tl.where(group == 0, c2[:, None], tl.gather(end2, before, 1))
        h3 = tl.where(group == 0, c3[:, None], tl.gather(end3, before, 1))
        last = group == G - 1
        c0 = tl.sum(tl.where(last, end0, 0.0), axis=1)
        c1 = tl.sum(tl.where(last, end1, 0.0), axis=1)
        c2 = tl.sum(tl.where(last, end2, 0.0), axis=1)
        c3 = tl.sum(tl.where(last, end3, 0.0), axis=1)
        if RELOAD:
            s = _bd4_split(_bd4_rows(gates, values, blocks, t, mask, T, ACT, True), BC, G)
        x0 = _bd4_apply(h0, h1, h2, h3, _bd4_step_map(s, 0))
        x1 = _bd4_apply(*x0, _bd4_step_map(s, 1))
        x2 = _bd4_apply(*x1, _bd4_step_map(s, 2))
        x3 = _bd4_apply(*x2, _bd4_step_map(s, 3))
        x4 = _bd4_apply(*x3, _bd4_step_map(s, 4))
        x5 = _bd4_apply(*x4, _bd4_step_map(s, 5))
        x6 = _bd4_apply(*x5, _bd4_step_map(s, 6))
        x7 = _bd4_apply(*x6, _bd4_step_map(s, 7))
        rows = 4 * blocks
        out = states + rows[:, None] * T + t[None, :]
        tl.store(out, _join_steps(x0[0], x1[0], x2[0], x3[0], x4[0], x5[0], x6[0], x7[0], BC, G)
                 .to(states.dtype.element_ty), mask=mask)
        tl.store(out + T, _join_steps(x0[1], x1[1], x2[1], x3[1], x4[1], x5[1], x6[1], x7[1], BC, G)
                 .to(states.dtype.element_ty), mask=mask)
        tl.store(out + 2 * T, _join_steps(x0[2], x1[2], x2[2], x3[2], x4[2], x5[2], x6[2], x7[2], BC, G)
                 .to(states.dtype.element_ty), mask=mask)
        tl.store(out + 3 * T, _join_steps(x0[3], x1[3], x2[3], x3[3], x4[3], x5[3], x6[3], x7[3], BC, G)
                 .to(states.dtype.element_ty), mask=mask)


def bd4_time_last_forward(gates, values, BC=1, BT=256, num_warps=1, reload=True, steps=8):
    """states [B, N, 4, T] of gates [B, N, 4, 5, T] (softmax) and values [B, N, 4, T]; `steps` a thread (4 or 8;
    BT = 32 x steps x num_warps / BC fills the warps)."""
    import torch

    B, N, _, _, T = gates.shape
    states = torch.empty_like(values)
    kernel = bd4_time_last_fwd_kernel if steps == 8 else bd4_time_last_fwd4_kernel
    kernel[(B * triton.cdiv(N, BC),)](gates, values, states, T, N, ACT=0, BC=BC, BT=BT, RELOAD=reload,
                                      num_warps=num_warps)
    return states
