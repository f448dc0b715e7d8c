"""A probe, not the library: BD-LRU block size 4's time-last backward in two kernels, for the next GPU session to time
against `time_last_backward` (whose one kernel holds 255 registers, ptxas). No initial state, final-state gradient,
document starts or gate bias.
1. `bd4_adjoint_kernel`: lam_t = dy_t + A_{t+1}^T lam_{t+1} in reverse time, a tile at a time, composed in threads
   (`_bd4_tile_in_threads` with REVERSE), stored in float32 [B, N, 4, T] (16 bytes a block-step more to write and
   read back).
2. `bd4_gradients_kernel`: per step, from lam_t, the step's logits, values and h_{t-1}: the logit and value
   gradients. No dependence between steps, so its grid covers the tiles of every row too (time-parallel at B1)."""
import torch
import triton
import triton.language as tl

from hf_lrnn.scan_time_last import (_bd4_load_logits, _bd4_normalize, _bd4_row_gradients, _bd4_tile_in_threads,
                                    _load_values, _tile_offsets)


@triton.jit
def bd4_adjoint_kernel(gates, d_states, lam, T, N, ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr):
    b, blocks, mc = _tile_offsets(T, N, BC)
    bias = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    l0 = tl.zeros([BC], dtype=tl.float32)
    l1 = tl.zeros([BC], dtype=tl.float32)
    l2 = tl.zeros([BC], dtype=tl.float32)
    l3 = tl.zeros([BC], dtype=tl.float32)
    num_tiles = tl.cdiv(T, BT)
    for i in range(0, num_tiles):
        t = (num_tiles - 1 - i) * BT + tl.arange(0, BT)
        mask = mc[:, None] & (t < T)[None, :]
        coupled = mc[:, None] & (t + 1 < T)[None, :]
        n, _ = _bd4_normalize(_bd4_load_logits(gates, blocks, t + 1, coupled, T, bias, False), ACT)
        rows = (4 * blocks)[:, None] * T + t[None, :]
        maps = (tl.where(coupled, n[0], 0.0), tl.where(coupled, n[4], 0.0), tl.where(coupled, n[8], 0.0),
                tl.where(coupled, n[12], 0.0), tl.where(coupled, n[1], 0.0), tl.where(coupled, n[5], 0.0),
                tl.where(coupled, n[9], 0.0), tl.where(coupled, n[13], 0.0), tl.where(coupled, n[2], 0.0),
                tl.where(coupled, n[6], 0.0), tl.where(coupled, n[10], 0.0), tl.where(coupled, n[14], 0.0),
                tl.where(coupled, n[3], 0.0), tl.where(coupled, n[7], 0.0), tl.where(coupled, n[11], 0.0),
                tl.where(coupled, n[15], 0.0),
                tl.load(d_states + rows, mask=mask, other=0.0).to(tl.float32),
                tl.load(d_states + rows + T, mask=mask, other=0.0).to(tl.float32),
                tl.load(d_states + rows + 2 * T, mask=mask, other=0.0).to(tl.float32),
                tl.load(d_states + rows + 3 * T, mask=mask, other=0.0).to(tl.float32))
        lam0, lam1, lam2, lam3, l0, l1, l2, l3 = _bd4_tile_in_threads(maps, l0, l1, l2, l3, BC, BT, True)
        tl.store(lam + rows, lam0, mask=mask)
        tl.store(lam + rows + T, lam1, mask=mask)
        tl.store(lam + rows + 2 * T, lam2, mask=mask)
        tl.store(lam + rows + 3 * T, lam3, mask=mask)


@triton.jit
def bd4_gradients_kernel(gates, values, states, lam, d_gates, d_values, T, N, ACT: tl.constexpr, BC: tl.constexpr,
                         BT: tl.constexpr):
    blocks_per_row = tl.cdiv(N, BC)
    tiles = tl.cdiv(T, BT)
    row_program = tl.program_id(0) // tiles
    b = (row_program // blocks_per_row).to(tl.int64)
    n = (row_program % blocks_per_row) * BC + tl.arange(0, BC)
    blocks, mc = (b * N + n).to(tl.int64), n < N
    t = (tl.program_id(0) % tiles) * BT + tl.arange(0, BT)
    mask = mc[:, None] & (t < T)[None, :]
    bias = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    z = _bd4_load_logits(gates, blocks, t, mask, T, bias, False)
    _, g = _bd4_normalize(z, ACT)
    rows = (4 * blocks)[:, None] * T + t[None, :]
    before = mask & (t >= 1)[None, :]
    s0 = _load_values(states, 4 * blocks, t - 1, before, T)
    s1 = _load_values(states, 4 * blocks + 1, t - 1, before, T)
    s2 = _load_values(states, 4 * blocks + 2, t - 1, before, T)
    s3 = _load_values(states, 4 * blocks + 3, t - 1, before, T)
    gate_rows = (20 * blocks)[:, None] * T + t[None, :]
    for j in tl.static_range(4):
        lam_j = tl.load(lam + rows + j * T, mask=mask, other=0.0)
        x = _load_values(values, 4 * blocks + j, t, mask, T)
        _bd4_row_gradients(d_gates, gate_rows, T, z, j, lam_j, s0, s1, s2, s3, x, mask, ACT)
        tl.store(d_values + rows + j * T, (lam_j * g[j]).to(d_values.dtype.element_ty), mask=mask)


def bd4_backward_two_pass(gates, values, states, d_states, BT=128, BT_GRADIENTS=256, num_warps_gradients=4):
    """(d gates, d values) of BD-LRU block size 4 (softmax) from zero initial state, as `time_last_backward`."""
    B, N, _, _, T = gates.shape
    lam = torch.empty(B, N, 4, T, device=values.device, dtype=torch.float32)
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    bd4_adjoint_kernel[(B * N,)](gates, d_states, lam, T, N, ACT=0, BC=1, BT=BT, num_warps=1)
    bd4_gradients_kernel[(B * N * triton.cdiv(T, BT_GRADIENTS),)](gates, values, states, lam, d_gates, d_values, T, N,
                                                                 ACT=0, BC=1, BT=BT_GRADIENTS,
                                                                 num_warps=num_warps_gradients)
    return d_gates, d_values
