"""First-order scan (H-LRU m = 1, which BD-LRU m = 1 equals) in a time-last layout: Triton kernels, host functions.

Why a second layout: the [B, T, N] kernels of scan_triton.py hold a tile's channels across lanes, so their in-tile
scan over time crosses lanes and warps, and their time parallelism costs a look-back per chunk; they reach ~40 % of
the H200's copy bandwidth at m = 1 (bench_results/NOTES_scan.md). With time contiguous in memory ([B, N, T]), each
thread holds consecutive steps of one channel and `tl.associative_scan` runs mostly inside threads, as in
accelerated-scan: the probe of these kernels ran at 63-93 % of copy forward and 61-76 % forward+backward
(bench_results/probes_2026-11-30i/README.md, section 8). A model can produce and consume this layout without copies:
`torch.matmul(W, x.transpose(1, 2))` writes [B, rows, T], and an output projection reads [B, N, T] states as a
transposed operand.

Layout: gate logits [B, N, 2, T] (channel n's coefficient-logit row, then its input-gate-logit row: what a coefficient
projection with rows ordered (n, j) writes time-last), values and states [B, N, T], initial and final state
[B, N, 1] float32 (the [B, N, m] window of `hlru_scan` at m = 1). Every gate activation of `hlru_scan`. No packed
sequences (cu_seqlens): one sequence per row.

    s_t = a_t s_{t-1} + g_t v_t,   (a_t, g_t) = normalise(z_t)         forward, tiles of BT steps in time order
    lam_t = dy_t + a_{t+1} lam_{t+1},  lam_{T-1} = dy_{T-1} + d_final   backward, tiles in reverse order
    d v_t = lam_t g_t,  d (a, g)_t = lam_t (s_{t-1}, v_t),  d s_0 = a_0 lam_0

One program per (row, block of BC channels) walks the whole sequence with the state (or adjoint) in registers, so a
row needs no look-back; shapes with few rows and channels get fewer programs than SMs x occupancy (B1 T16384 D1024:
1024 programs, 63 % of copy in the probe). The backward reads the saved states (in values' dtype) for s_{t-1}, as the
[B, T, N] kernels do. All arithmetic is float32; float64 inputs are computed in float32.
"""

import os
from typing import Optional, Tuple

import torch

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl

    from .scan_triton import _ACT_ID, _affine_combine, _device_guard, _normalize_pair, _normalize_pair_bwd
except ImportError:  # ops.py then offers the torch backend only
    triton = None

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# (BC channels, BT steps) per program tile, and warps: the probe's best on the H200 (1024-step tiles, 4 warps, one
# channel per program); the interpreter takes small tiles so that tests cover several of each.
TILE = {"BC": 1, "BT": 1024, "num_warps": 4}
INTERPRETER_TILE = {"BC": 2, "BT": 16, "num_warps": 1}

if triton is not None:

    @triton.jit
    def _tile_offsets(T, N, BC: tl.constexpr):
        """(row offsets [BC] into [B*N] rows, channel mask [BC]) of this program's channel block."""
        blocks = tl.cdiv(N, BC)
        b = tl.program_id(0) // blocks
        n = (tl.program_id(0) % blocks) * BC + tl.arange(0, BC)
        return (b * N + n).to(tl.int64), n < N

    @triton.jit
    def _load_pair(gates, rows, t, mask, T):
        """The normalisation's inputs at steps t [BT] of rows [BC]: coefficient and input-gate logits, float32."""
        coefficient_rows = (2 * rows)[:, None] * T + t[None, :]
        z_coef = tl.load(gates + coefficient_rows, mask=mask, other=0.0).to(tl.float32)
        z_gate = tl.load(gates + coefficient_rows + T, mask=mask, other=0.0).to(tl.float32)
        return z_coef, z_gate

    @triton.jit
    def _time_last_fwd_kernel(gates, values, initial_state, states, final_state, T, N,
                              ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                              HAS_H0: tl.constexpr, WRITE_FINAL: tl.constexpr):
        """states[row, t] = a_t s_{t-1} + g_t v_t for BC rows, tiles of BT steps scanned in registers."""
        rows, mc = _tile_offsets(T, N, BC)
        h = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h = tl.load(initial_state + rows, mask=mc, other=0.0)
        for t0 in range(0, T, BT):
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            z_coef, z_gate = _load_pair(gates, rows, t, mask, T)
            x = tl.load(values + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)
            a, g = _normalize_pair(z_coef, z_gate, ACT)
            a = tl.where(mask, a, 1.0)  # steps past T: the identity
            u = tl.where(mask, g * x, 0.0)
            decay, local = tl.associative_scan((a, u), 1, _affine_combine)
            s = local + decay * h[:, None]
            tl.store(states + rows[:, None] * T + t[None, :], s.to(states.dtype.element_ty), mask=mask)
            h = tl.sum(tl.where((t == BT - 1 + t0)[None, :], s, 0.0), axis=1)  # identity past T: s at BT-1 = s_last
        if WRITE_FINAL:
            tl.store(final_state + rows, h, mask=mc)

    @triton.jit
    def _time_last_bwd_kernel(gates, values, states, initial_state, d_states, d_final, d_gates, d_values,
                              d_initial_state, T, N, ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                              HAS_H0: tl.constexpr, HAS_D_FINAL: tl.constexpr):
        """The adjoint lam scanned from the end in tiles of BT steps; gate, value and initial-state gradients."""
        rows, mc = _tile_offsets(T, N, BC)
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
            z_coef_next, z_gate_next = _load_pair(gates, rows, t + 1, next_mask, T)
            a_next, _ = _normalize_pair(z_coef_next, z_gate_next, ACT)
            a_next = tl.where(next_mask, a_next, 1.0)  # past the last step: d_final enters with a_T = 1
            dy = tl.load(d_states + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)
            c = tl.where(mask, a_next, 1.0)
            d = tl.where(mask, dy, 0.0)
            c_cum, d_cum = tl.associative_scan((c, d), 1, _affine_combine, reverse=True)
            lam = d_cum + c_cum * carry[:, None]
            z_coef, z_gate = _load_pair(gates, rows, t, mask, T)
            a, g = _normalize_pair(z_coef, z_gate, ACT)
            x = tl.load(values + rows[:, None] * T + t[None, :], mask=mask, other=0.0).to(tl.float32)
            previous = rows[:, None] * T + (t - 1)[None, :]
            s_previous = tl.load(states + previous, mask=mask & (t >= 1)[None, :], other=0.0).to(tl.float32)
            s_previous = tl.where((t >= 1)[None, :], s_previous, h0[:, None])
            dz_coef, dz_gate = _normalize_pair_bwd(z_coef, z_gate, lam * s_previous, lam * x, ACT)
            gate_rows = (2 * rows)[:, None] * T + t[None, :]
            tl.store(d_gates + gate_rows, dz_coef.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + T, dz_gate.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_values + rows[:, None] * T + t[None, :], (lam * g).to(d_values.dtype.element_ty), mask=mask)
            first = (t == t0)[None, :]
            carry = tl.sum(tl.where(first, lam, 0.0), axis=1)
            if HAS_H0:
                if t0 == 0:
                    tl.store(d_initial_state + rows, tl.sum(tl.where(first, a, 0.0), axis=1) * carry, mask=mc)


def _tile():
    return INTERPRETER_TILE if _INTERPRET else TILE


def _grid(B: int, N: int, T: int):
    tile = _tile()
    bt = min(tile["BT"], max(16, triton.next_power_of_2(max(T, 1))))
    return (B * triton.cdiv(N, tile["BC"]),), dict(BC=tile["BC"], BT=bt, num_warps=tile["num_warps"])


def time_last_forward(gates: torch.Tensor, values: torch.Tensor, initial_state: Optional[torch.Tensor],
                      gate_activation: str, want_final: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """gates [B, N, 2, T], values [B, N, T], initial_state [B, N, 1] or None -> (states [B, N, T] in values' dtype,
    final state [B, N, 1] float32 or None)."""
    B, N, _, T = gates.shape
    gates, values = gates.contiguous(), values.contiguous()
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    states = torch.empty_like(values)
    final = torch.empty(B, N, 1, device=values.device, dtype=torch.float32) if want_final else None
    if B * N == 0:
        return states, (final.zero_() if final is not None else None)
    if T == 0:  # no step: the final state is the initial one
        return states, ((h0.clone() if h0 is not None else final.zero_()) if want_final else None)
    grid, blocks = _grid(B, N, T)
    with _device_guard(values.device):
        _time_last_fwd_kernel[grid](
            gates=gates, values=values, initial_state=h0, states=states, final_state=final, T=T, N=N,
            ACT=_ACT_ID[gate_activation], HAS_H0=h0 is not None, WRITE_FINAL=want_final, **blocks)
    return states, final


def time_last_backward(gates: torch.Tensor, values: torch.Tensor, states: torch.Tensor,
                       initial_state: Optional[torch.Tensor], d_states: torch.Tensor, d_final: Optional[torch.Tensor],
                       gate_activation: str) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(d gates [B, N, 2, T] in gates' dtype, d values [B, N, T] in values' dtype, d initial state [B, N, 1] float32
    or None without an initial state) for the forward of `time_last_forward`."""
    B, N, _, T = gates.shape
    gates, values, states, d_states = gates.contiguous(), values.contiguous(), states.contiguous(), d_states.contiguous()
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    d_final = d_final.to(torch.float32).contiguous() if d_final is not None else None
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    d_h0 = torch.empty(B, N, 1, device=values.device, dtype=torch.float32) if h0 is not None else None
    if B * N == 0:
        return d_gates, d_values, d_h0
    if T == 0:  # the final state was the initial one
        if d_h0 is not None:
            d_h0.copy_(d_final if d_final is not None else torch.zeros_like(d_h0))
        return d_gates, d_values, d_h0
    grid, blocks = _grid(B, N, T)
    with _device_guard(values.device):
        _time_last_bwd_kernel[grid](
            gates=gates, values=values, states=states, initial_state=h0, d_states=d_states, d_final=d_final,
            d_gates=d_gates, d_values=d_values, d_initial_state=d_h0, T=T, N=N, ACT=_ACT_ID[gate_activation],
            HAS_H0=h0 is not None, HAS_D_FINAL=d_final is not None, **blocks)
    return d_gates, d_values, d_h0


__all__ = ["TILE", "time_last_backward", "time_last_forward"]
