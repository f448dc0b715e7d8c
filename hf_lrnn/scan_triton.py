"""Fused Triton kernels for the H-LRU and BD-LRU scans (docs/spec.md in the hf_lrnn repository), forward and backward.

Public entry points (inputs are validated by ops.py):

    hlru_scan_triton(gates, values, initial_state, gate_activation, output_final_state, cu_seqlens, chunk_size=None)
    bdlru_scan_triton(gates, values, initial_state, gate_activation, output_final_state, cu_seqlens, chunk_size=None)

Both return (states in values.dtype, final state float32 [B or num_seqs, N, m] or None) and are
differentiable in gates, values and initial_state (grad outputs of the states AND of the final state are used).

Design
------
* Gate normalisation (softmax, sigmoid, relu, tanh, linear, none; the eps constants of scan_torch) is fused:
  the kernels read the logits and normalise each group of m+1 in registers; the backward recomputes the
  coefficients and applies the normalisation Jacobian in registers. Coefficients never touch memory.
  Every map is finite for any finite logits: softmax subtracts the group maximum; sigmoid is computed as
  softmax(logsigmoid(z)) (log space; the direct sigmoid quotient is 0/0 below about -104) and its Jacobian
  c (dc - <c, dc>) sigmoid(-z) uses only the stable c; relu / tanh / linear have denominators >= their eps.
* Kernels launch inside `torch.cuda.device(<device of the inputs>)` (`_device_guard`), so tensors on cuda:1
  (or a model split over devices) are scanned on their own device.
* All state and accumulation is float32. Inputs may be float32, bfloat16, float16 (gates and values may differ);
  float64 inputs are accepted and computed in float32 (loaded and cast in the kernel; outputs/grads are
  written back in the input dtypes).
* Sequential kernel: one program per (segment, tile of channels/blocks), looping over time with the state
  in registers and a 2-step-ahead register prefetch of the next steps' logits/values.
  H-LRU keeps its window of the last m states in a ROTATING register buffer: s_u lives in slot u mod m, and the
  logits are gathered in permuted order (column (u-1-slot) mod m) so that no register shift is needed.
  BD-LRU holds an [m, m] coefficient tile per block and does the mat-vec in registers; for m <= 8 it runs one
  block per thread instead (`_bdlru_*_block_per_thread_kernel`): the block's logits, state and carried vectors are
  tuples of [BLOCK] tensors, so the normalisation and the mat-vec need no reduction across lanes.
* Chunked (time-parallel) mode, used when batch x channel tiles cannot fill the GPU (or forced by chunk_size):
    1. per chunk, run the recurrence from the m basis vectors and from zero-with-input (m+1 vectors at once):
       gives the chunk's m x m transition and its local affine part (float32, [segments, N, m+1, m]);
    2. a short sequential carry over the chunks ([num_seqs, N] programs);
    3. re-run each chunk from its true carry, writing the outputs.
  The backward does the same on the adjoint (transposed) recurrence in reverse time. Everything is float32,
  so the chunked mode is as exact as the sequential one (it only reorders float32 roundings).
* m = 1 (both models reduce to s_t = a_t s_{t-1} + g_t v_t) with the automatic policy runs single-pass kernels
  instead (section "first order" below): one program per (row, 32-step chunk, 32 channels), contiguous gate loads,
  an in-tile associative scan and a decoupled look-back over the chunks before it; no host sync, so packed
  batches need no `cu_seqlens.tolist()`. A look-back composes whatever its predecessors have published by then,
  so results can differ between runs in the last float32 bits (about 1e-7 relative); `chunk_size=0` or an int,
  or `torch.use_deterministic_algorithms(True)`, selects the deterministic kernels below.
* Backward reads the saved output states (in values.dtype) for the previous states h_{t-1}.
* Memory: no [B, T, N, m, m] coefficient tensor and no float32 copy of the inputs is ever made; the largest
  temporaries are the gradients themselves (gate-logit sized) and the small per-chunk aggregates.
* H-LRU order <= 8 and BD-LRU block <= 16 are the tuned range; larger m works (register tiles grow) with a
  one-time warning.
"""

import contextlib
import math
import os
import warnings

import torch

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl
except ImportError:  # ops.py catches this and falls back to the torch backend
    raise

from .scan_torch import GATE_ACTIVATIONS, RELU_EPS, SIGNED_EPS

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


class _Heuristics(triton.runtime.autotuner.Heuristics):
    """`triton.heuristics` that gathers the launch arguments once per launch. Triton's own (3.6 through 3.9) rebuilds
    the dict of every argument once per heuristic: with five flags and ~30 arguments that was ~14 of the ~37 us of
    Python a launch costs, and a scan's forward+backward launches up to six kernels. Same semantics: each rule sees
    the arguments and the flags set before it."""

    def run(self, *args, **kwargs):
        named = dict(zip(self.arg_names, args), **kwargs)
        for name, rule in self.values.items():
            named[name] = kwargs[name] = rule(named)
        return self.fn.run(*args, **kwargs)


def _heuristics(values):
    """Decorator like `triton.heuristics(values)`, through `_Heuristics`."""
    return lambda fn: _Heuristics(fn, fn.arg_names, values)


_ACT_ID = {name: i for i, name in enumerate(GATE_ACTIVATIONS)}  # softmax 0 sigmoid 1 relu 2 tanh 3 linear 4 none 5
_RELU_EPS = tl.constexpr(RELU_EPS)
_SIGNED_EPS = tl.constexpr(SIGNED_EPS)
_WARNED = set()


# ----------------------------------------------------------------------------------------------------------------
# float32 exp and reciprocal without subnormal results, the normalisations' arithmetic
# ----------------------------------------------------------------------------------------------------------------
# Triton's exp is ex2.approx.f32 and its 1 / x div.full.f32, both keeping subnormal results, for which ptxas wraps
# each MUFU instruction in 3-5 more (a range test, a scaling before, one after): at 3 exps and a reciprocal a step,
# 15 of H-LRU m = 2's 78 instructions per element, and the time-last forwards are issue-bound (ncu, sm_90:
# bench_results/probes_2026-12-03d/). The .ftz forms are the MUFU instruction alone, as accurate (2 / 1 ulp), and
# flush results below 2^-126 to 0: exp(z - largest) under exp(-87), against a normaliser >= 1. The interpreter runs
# Triton's own (it executes no PTX). FTZ=False keeps Triton's: the kernels where ptxas then allocated more registers
# or scheduled the loop slower (the [B, T, N] first-order backward, the BD-LRU tile forward) pass it down.
_FAST_MATH = tl.constexpr(not _INTERPRET)


@triton.jit
def _exp(x, FTZ: tl.constexpr = True):
    """exp of a float32 tile (ex2.approx.ftz of x log2(e); tl.exp in the interpreter or with FTZ=False)."""
    if FTZ and _FAST_MATH:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x * 1.4426950408889634],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.exp(x)


@triton.jit
def _reciprocal(x, FTZ: tl.constexpr = True):
    """1 / x of a float32 tile (rcp.approx.ftz; 1.0 / x in the interpreter or with FTZ=False)."""
    if FTZ and _FAST_MATH:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        return 1.0 / x


@triton.jit
def _divide(x, y, FTZ: tl.constexpr = True):
    """x / y of float32 tiles: x `_reciprocal`(y), or Triton's x / y in the interpreter or with FTZ=False."""
    if FTZ and _FAST_MATH:
        return x * _reciprocal(y)
    else:
        return x / y


# ----------------------------------------------------------------------------------------------------------------
# gate normalisation helpers (coefficient tile zc with mask mc, input-gate logits zg; reduction over AXIS)
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _tanh(x, FTZ: tl.constexpr = True):
    ax = tl.abs(x)
    e = _exp(-2.0 * ax, FTZ)
    big = _divide(1.0 - e, 1.0 + e, FTZ)
    x2 = ax * ax
    small = ax * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * (-0.05396825396825397))))
    r = tl.where(ax < 0.25, small, big)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def _log1p(x):
    """log(1 + x) for x >= 0, accurate for tiny x without libdevice (works in the interpreter and on any Triton)."""
    u = 1.0 + x
    d = tl.where(u == 1.0, 1.0, u - 1.0)
    return tl.where(u == 1.0, x, tl.log(u) * (x / d))


@triton.jit
def _logsigmoid(z, FTZ: tl.constexpr = True):
    """log(sigmoid(z)) = min(z, 0) - log(1 + exp(-|z|)): finite for every finite z (no overflow, no log(0))."""
    return tl.minimum(z, 0.0) - _log1p(_exp(-tl.abs(z), FTZ))


@triton.jit
def _sigmoid_neg(z, FTZ: tl.constexpr = True):
    """sigmoid(-z) = 1 - sigmoid(z) = d logsigmoid(z) / dz, from exp(-|z|) only (no overflow)."""
    e = _exp(-tl.abs(z), FTZ)
    return _divide(tl.where(z > 0.0, e, 1.0), 1.0 + e, FTZ)


@triton.jit
def _softmax(zc, zg, mc, AXIS: tl.constexpr, FTZ: tl.constexpr = True):
    """Softmax over the group (coefficient tile + input gate), largest logit subtracted: finite for finite logits."""
    mx = tl.maximum(tl.max(tl.where(mc, zc, float("-inf")), axis=AXIS), zg)
    ec = _exp(tl.where(mc, zc - tl.expand_dims(mx, AXIS), float("-inf")), FTZ)  # masked lanes: exp(-inf) = 0
    eg = _exp(zg - mx, FTZ)
    inv = _reciprocal(tl.sum(ec, axis=AXIS) + eg, FTZ)  # the sum is >= 1 (the largest term is exp(0))
    return ec * tl.expand_dims(inv, AXIS), eg * inv


@triton.jit
def _phi(z, ACT: tl.constexpr, FTZ: tl.constexpr = True):
    if ACT == 2:
        p = tl.maximum(z, 0.0)
    elif ACT == 3:
        p = _tanh(z, FTZ)
    else:
        p = z
    return p


@triton.jit
def _denominator(pc, pg, M: tl.constexpr, ACT: tl.constexpr, AXIS: tl.constexpr):
    """relu: sum relu + (M+1) RELU_EPS (>= 2e-3); tanh / linear: sum |phi| + SIGNED_EPS (>= 1e-6)."""
    if ACT == 2:
        den = tl.sum(pc, axis=AXIS) + pg + (M + 1) * _RELU_EPS
    else:
        den = tl.sum(tl.abs(pc), axis=AXIS) + tl.abs(pg) + _SIGNED_EPS
    return den


@triton.jit
def _normalize(zc, zg, mc, M: tl.constexpr, ACT: tl.constexpr, AXIS: tl.constexpr, FTZ: tl.constexpr = True):
    if ACT == 0:
        cc, cg = _softmax(zc, zg, mc, AXIS, FTZ)
    elif ACT == 1:
        # sigmoid(z_i) / sum_j sigmoid(z_j) = softmax(logsigmoid(z))_i: stable for any finite logits (the direct
        # quotient is 0/0 once every sigmoid of the group underflows, below about -104)
        cc, cg = _softmax(_logsigmoid(zc, FTZ), _logsigmoid(zg, FTZ), mc, AXIS, FTZ)
    elif ACT == 5:
        cc = tl.where(mc, zc, 0.0)
        cg = zg
    else:
        pc = tl.where(mc, _phi(zc, ACT, FTZ), 0.0)
        pg = _phi(zg, ACT, FTZ)
        inv = _reciprocal(_denominator(pc, pg, M, ACT, AXIS), FTZ)
        cc = pc * tl.expand_dims(inv, AXIS)
        cg = pg * inv
    return cc, cg


@triton.jit
def _normalize_bwd(zc, zg, mc, dcc, dcg, M: tl.constexpr, ACT: tl.constexpr, AXIS: tl.constexpr,
                   FTZ: tl.constexpr = True):
    """Gradient of the logits from the gradient of the coefficients (normalisation Jacobian, in registers)."""
    if ACT <= 1:
        # softmax: dz = c (dc - <c, dc>). sigmoid = softmax(l), l = logsigmoid(z), dl/dz = sigmoid(-z):
        # dz = c (dc - <c, dc>) sigmoid(-z), which only uses the stable c and a factor in [0, 1].
        cc, cg = _normalize(zc, zg, mc, M, ACT, AXIS, FTZ)
        dot = tl.sum(cc * dcc, axis=AXIS) + cg * dcg
        dzc = cc * (dcc - tl.expand_dims(dot, AXIS))
        dzg = cg * (dcg - dot)
        if ACT == 1:
            dzc = dzc * _sigmoid_neg(zc, FTZ)
            dzg = dzg * _sigmoid_neg(zg, FTZ)
        dzc = tl.where(mc, dzc, 0.0)
    elif ACT == 5:
        dzc = tl.where(mc, dcc, 0.0)
        dzg = dcg
    else:
        pc = tl.where(mc, _phi(zc, ACT, FTZ), 0.0)
        pg = _phi(zg, ACT, FTZ)
        inv = _reciprocal(_denominator(pc, pg, M, ACT, AXIS), FTZ)
        inv_c = tl.expand_dims(inv, AXIS)
        cc = pc * inv_c
        cg = pg * inv
        dot = tl.sum(cc * dcc, axis=AXIS) + cg * dcg
        if ACT == 2:
            dpc = (dcc - tl.expand_dims(dot, AXIS)) * inv_c
            dpg = (dcg - dot) * inv
        else:
            sc = tl.where(pc > 0.0, 1.0, tl.where(pc < 0.0, -1.0, 0.0))
            sg = tl.where(pg > 0.0, 1.0, tl.where(pg < 0.0, -1.0, 0.0))
            dpc = (dcc - tl.expand_dims(dot, AXIS) * sc) * inv_c
            dpg = (dcg - dot * sg) * inv
        if ACT == 2:
            dzc = tl.where(zc > 0.0, dpc, 0.0)
            dzg = tl.where(zg > 0.0, dpg, 0.0)
        elif ACT == 3:
            dzc = dpc * (1.0 - pc * pc)
            dzg = dpg * (1.0 - pg * pg)
        else:
            dzc = dpc
            dzg = dpg
        dzc = tl.where(mc, dzc, 0.0)
    return dzc, dzg


@triton.jit
def mask_if(mask, cond):
    """`mask & cond` for a scalar condition (Triton 3.9's interpreter mistypes tensor & scalar comparisons)."""
    return tl.where(cond, mask, False)


@triton.jit
def _segment(pid_s, cu_seqlens, segment_table, T, num_chunks, IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr):
    """Map a segment id to (sequence, chunk index, sequence start, sequence end, batch row)."""
    if IS_VARLEN:
        if USE_TAB:
            seq = tl.load(segment_table + 2 * pid_s)
            c = tl.load(segment_table + 2 * pid_s + 1)
        else:
            seq = pid_s
            c = pid_s * 0
        seq_bos = tl.load(cu_seqlens + seq)
        seq_eos = tl.load(cu_seqlens + seq + 1)
        b = seq * 0
    else:
        seq = pid_s // num_chunks
        c = pid_s % num_chunks
        seq_bos = seq * 0
        seq_eos = seq * 0 + T
        b = seq
    return seq, c, seq_bos, seq_eos, b


@triton.jit
def _walk_bounds(cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK: tl.constexpr,
                 IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr):
    """The preamble of every sequential / chunked walk: this program's segment (`_segment`: sequence, chunk index,
    the sequence's bounds), the chunk's first step bos, end eos and length L, the batch row as int64, and the BLOCK
    channels (or blocks) n of this program with their mask."""
    pid_s = tl.program_id(0)
    pid_n = tl.program_id(1)
    seq, c, seq_bos, seq_eos, b = _segment(pid_s, cu_seqlens, segment_table, T, num_chunks, IS_VARLEN, USE_TAB)
    bos = seq_bos + c * chunk_size
    eos = tl.minimum(bos + chunk_size, seq_eos)
    n = pid_n * BLOCK + tl.arange(0, BLOCK)
    return pid_s, seq, c, seq_bos, seq_eos, bos, eos, eos - bos, b.to(tl.int64), n, n < N


# The sequential / chunked kernels of both ops take their optional tensors as None: these flags follow from them.
_WALK_FWD_HEURISTICS = {
    "HAS_H0": lambda args: args["initial_state"] is not None,
    "WRITE_FINAL": lambda args: args["final_state"] is not None,
    "WRITE_OUT": lambda args: args["states"] is not None,  # None in the aggregate phase
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
    "USE_TAB": lambda args: args["segment_table"] is not None,
}
WORD_LOADS = True  # tests and probes: False loads every logit of the BD-LRU per-thread kernels alone


def _words(args: dict) -> bool:
    """BD-LRU's per-thread kernels load a block's M (M + 1) bf16 logits as 8-byte words, a quarter of the load
    instructions (their chunked aggregate phase stalled on the load queue: `lg_throttle` in its ncu profile), where the
    words are whole and aligned: M (M + 1) a multiple of 4 (m = 4, 8), the strides of 4, the data 8-byte aligned."""
    gates = args["gates"]
    return (WORD_LOADS and gates.dtype == torch.bfloat16 and args["M"] * (args["M"] + 1) % 4 == 0
            and gates.data_ptr() % 8 == 0 and args["stride_gates_b"] % 4 == 0 and args["stride_gates_t"] % 4 == 0)


_WALK_BWD_HEURISTICS = {
    "HAS_INIT": lambda args: args["initial_state"] is not None,
    "HAS_DHT": lambda args: args["d_final"] is not None,
    "WRITE_DH0": lambda args: args["d_initial_state"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
    "USE_TAB": lambda args: args["segment_table"] is not None,
}


# ----------------------------------------------------------------------------------------------------------------
# H-LRU
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _hlru_load(gbase, vbase, bos, i, L, u0, stride_gates_t, N, n, mn, p, M: tl.constexpr):
    ok = i < L
    t = (bos + i).to(tl.int64)
    col = ((u0 + i) % M - p + M) % M  # coefficient index held by each rotating slot
    rowp = gbase + t * stride_gates_t + n * (M + 1)
    zc = tl.load(rowp[:, None] + col[None, :], mask=mask_if(mn[:, None] & (p[None, :] < M), ok), other=0.0).to(tl.float32)
    zg = tl.load(rowp + M, mask=mask_if(mn, ok), other=0.0).to(tl.float32)
    v = tl.load(vbase + t * N + n, mask=mask_if(mn, ok), other=0.0).to(tl.float32)
    return zc, zg, v


@_heuristics(_WALK_FWD_HEURISTICS)
@triton.jit
def _hlru_fwd_kernel(
    gates, values, states, initial_state, final_state, aggregates, cu_seqlens, segment_table,
    stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, MP: tl.constexpr, NVP: tl.constexpr, AFF: tl.constexpr, BLOCK: tl.constexpr,
    ACT: tl.constexpr, H0_PER_SEG: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_H0: tl.constexpr, WRITE_OUT: tl.constexpr,
    WRITE_FINAL: tl.constexpr,
):
    """H-LRU over one segment (a sequence, or a chunk of one) of BLOCK channels, walking time with the window of the
    last M states in registers. Main phase (NVP = 1): writes `states` (and `final_state`) from `initial_state` (per
    sequence, or per segment with H0_PER_SEG: the chunked mode's carries). Aggregate phase (NVP = next_pow2(M + 1),
    `states` None): runs the M basis windows and the zero-start affine window (row AFF) at once and writes them to
    `aggregates` [segments, N, M + 1, M]: the segment's transition and offset."""
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)
    u0 = c * chunk_size
    p = tl.arange(0, MP)
    vv = tl.arange(0, NVP)
    mn2 = mn[:, None] & (p[None, :] < M)
    p3 = p[None, None, :]
    v3 = vv[None, :, None]
    mn3 = mn[:, None, None] & (p3 < M)

    kk0 = (u0 % M - p + M) % M  # canonical window index held by slot p at the segment start
    if NVP == 1:
        if HAS_H0:
            if H0_PER_SEG:
                hidx = pid_s.to(tl.int64)
            else:
                hidx = seq.to(tl.int64)
            w0 = tl.load(initial_state + (hidx * N + n[:, None]) * M + kk0[None, :], mask=mn2, other=0.0).to(tl.float32)
            W = w0[:, None, :]
        else:
            W = tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)
    else:
        W = tl.where((kk0[None, None, :] == v3) & mn3, 1.0, 0.0) + tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)

    gbase = gates + b64 * stride_gates_b
    vbase = values + b64 * T * N
    zc0, zg0, x0 = _hlru_load(gbase, vbase, bos, 0, L, u0, stride_gates_t, N, n, mn, p, M)
    zc1, zg1, x1 = _hlru_load(gbase, vbase, bos, 1, L, u0, stride_gates_t, N, n, mn, p, M)
    for i in range(0, L):
        zc2, zg2, x2 = _hlru_load(gbase, vbase, bos, i + 2, L, u0, stride_gates_t, N, n, mn, p, M)
        cc, cg = _normalize(zc0, zg0, mn2, M, ACT, 1)
        s = tl.sum(cc[:, None, :] * W, axis=2) + tl.where(vv[None, :] == AFF, (cg * x0)[:, None], 0.0)
        q = (u0 + i + 1) % M
        W = tl.where(p3 == q, s[:, :, None], W)
        if WRITE_OUT:
            t = (bos + i).to(tl.int64)
            tl.store(states + (b64 * T + t) * N + n, tl.sum(s, axis=1).to(states.dtype.element_ty), mask=mn)
        zc0, zg0, x0 = zc1, zg1, x1
        zc1, zg1, x1 = zc2, zg2, x2

    kke = ((u0 + L) % M - p + M) % M
    if NVP == 1:
        if WRITE_FINAL:
            is_last = eos == seq_eos
            tl.store(final_state + (seq.to(tl.int64) * N + n[:, None]) * M + kke[None, :], tl.sum(W, axis=1),
                     mask=mask_if(mn2, is_last))
    else:
        ptr = aggregates + ((pid_s.to(tl.int64) * N + n[:, None, None]) * (M + 1) + v3) * M + kke[None, None, :]
        tl.store(ptr, W, mask=mn3 & (v3 <= M))


@triton.jit
def _hlru_bwd_load(gbase, vbase, dobase, obase, initial_state, seq, seq_bos, bos, i, u0, stride_gates_t, N, n, mn, p,
                   M: tl.constexpr, GRADS: tl.constexpr, HAS_INIT: tl.constexpr):
    ok = i >= 0
    t = (bos + i).to(tl.int64)
    col = ((u0 + i + M) % M - p + M) % M
    rowp = gbase + t * stride_gates_t + n * (M + 1)
    zc = tl.load(rowp[:, None] + col[None, :], mask=mask_if(mn[:, None] & (p[None, :] < M), ok), other=0.0).to(tl.float32)
    zg = tl.load(rowp + M, mask=mask_if(mn, ok), other=0.0).to(tl.float32)
    do = tl.load(dobase + t * N + n, mask=mask_if(mn, ok), other=0.0).to(tl.float32)
    if GRADS:
        v = tl.load(vbase + t * N + n, mask=mask_if(mn, ok), other=0.0).to(tl.float32)
        # s_{t-M} (1-based t = u0+i+1): output position seq_bos + u0 + i - M, or the initial window
        back = u0 + i - M
        in_seq = back >= 0
        sold = tl.load(obase + (seq_bos + back).to(tl.int64) * N + n, mask=mask_if(mn, ok & in_seq), other=0.0).to(tl.float32)
        if HAS_INIT:
            si = tl.load(initial_state + (seq.to(tl.int64) * N + n) * M + (M - 1 - u0 - i),
                         mask=mask_if(mn, ok & (back < 0)), other=0.0)
            sold = tl.where(in_seq, sold, si)
    else:
        v = do
        sold = do
    return zc, zg, do, v, sold


@_heuristics(_WALK_BWD_HEURISTICS)
@triton.jit
def _hlru_bwd_kernel(
    gates, values, states, d_states, initial_state, d_final, d_gates, d_values, d_initial_state, aggregates,
    cu_seqlens, segment_table, stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, MP: tl.constexpr, NVP: tl.constexpr, AFF: tl.constexpr, BLOCK: tl.constexpr,
    ACT: tl.constexpr, DHT_PER_SEG: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DHT: tl.constexpr,
    WRITE_DH0: tl.constexpr,
):
    """Reverse-time walk of the H-LRU adjoint over one segment of BLOCK channels. Main phase (NVP = 1): writes
    `d_gates` (through the normalisation's Jacobian), `d_values` and `d_initial_state`, starting from `d_final` (per
    sequence, or per segment with DHT_PER_SEG: the chunked mode's carries). Aggregate phase (NVP > 1, `d_gates` and
    `d_values` None): the segment's adjoint transition and offset, into `aggregates`."""
    GRADS: tl.constexpr = NVP == 1
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)
    u0 = c * chunk_size
    uend = u0 + L
    seq64 = seq.to(tl.int64)
    p = tl.arange(0, MP)
    vv = tl.arange(0, NVP)
    mn2 = mn[:, None] & (p[None, :] < M)
    p3 = p[None, None, :]
    v3 = vv[None, :, None]
    mn3 = mn[:, None, None] & (p3 < M)

    kke = (uend % M - p + M) % M
    if GRADS:
        if HAS_DHT:
            if DHT_PER_SEG:
                hidx = pid_s.to(tl.int64)
            else:
                hidx = seq64
            l0 = tl.load(d_final + (hidx * N + n[:, None]) * M + kke[None, :], mask=mn2, other=0.0).to(tl.float32)
            lam = l0[:, None, :]
        else:
            lam = tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)
        # window of states at the segment end: slot p holds s_{uend - kke[p]}
        tw = uend - kke
        in_seq = tw >= 1
        Wb = tl.load(states + (b64 * T + seq_bos + tw[None, :] - 1) * N + n[:, None], mask=mn2 & in_seq[None, :],
                     other=0.0).to(tl.float32)
        if HAS_INIT:
            wi = tl.load(initial_state + (seq64 * N + n[:, None]) * M + (kke - uend)[None, :], mask=mn2 & (tw < 1)[None, :],
                         other=0.0)
            Wb = tl.where(in_seq[None, :], Wb, wi)
    else:
        lam = tl.where((kke[None, None, :] == v3) & mn3, 1.0, 0.0) + tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)

    gbase = gates + b64 * stride_gates_b
    vbase = values + b64 * T * N
    dobase = d_states + b64 * T * N
    obase = states + b64 * T * N
    zc0, zg0, do0, x0, so0 = _hlru_bwd_load(gbase, vbase, dobase, obase, initial_state, seq, seq_bos, bos, L - 1, u0,
                                            stride_gates_t, N, n, mn, p, M, GRADS, HAS_INIT)
    zc1, zg1, do1, x1, so1 = _hlru_bwd_load(gbase, vbase, dobase, obase, initial_state, seq, seq_bos, bos, L - 2, u0,
                                            stride_gates_t, N, n, mn, p, M, GRADS, HAS_INIT)
    for j in range(0, L):
        i = L - 1 - j
        zc2, zg2, do2, x2, so2 = _hlru_bwd_load(gbase, vbase, dobase, obase, initial_state, seq, seq_bos, bos, i - 2, u0,
                                                stride_gates_t, N, n, mn, p, M, GRADS, HAS_INIT)
        q = (u0 + i + 1) % M
        qm = p3 == q
        lam = lam + tl.where(qm & (v3 == AFF), do0[:, None, None], 0.0)
        ell = tl.sum(tl.where(qm, lam, 0.0), axis=2)  # adjoint of s_t, [BLOCK, NVP]
        lam = tl.where(qm, 0.0, lam)
        cc, cg = _normalize(zc0, zg0, mn2, M, ACT, 1)
        lam = lam + cc[:, None, :] * ell[:, :, None]
        if GRADS:
            l1 = tl.sum(ell, axis=1)
            Wb = tl.where(p[None, :] == q, so0[:, None], Wb)  # window before step t
            dcc = l1[:, None] * Wb
            dcg = l1 * x0
            dzc, dzg = _normalize_bwd(zc0, zg0, mn2, dcc, dcg, M, ACT, 1)
            t = (bos + i).to(tl.int64)
            col = ((u0 + i) % M - p + M) % M
            rowp = d_gates + ((b64 * T + t) * N + n) * (M + 1)
            tl.store(rowp[:, None] + col[None, :], dzc.to(d_gates.dtype.element_ty), mask=mn2)
            tl.store(rowp + M, dzg.to(d_gates.dtype.element_ty), mask=mn)
            tl.store(d_values + (b64 * T + t) * N + n, (l1 * cg).to(d_values.dtype.element_ty), mask=mn)
        zc0, zg0, do0, x0, so0 = zc1, zg1, do1, x1, so1
        zc1, zg1, do1, x1, so1 = zc2, zg2, do2, x2, so2

    kk0 = (u0 % M - p + M) % M
    if GRADS:
        if WRITE_DH0:
            tl.store(d_initial_state + (seq64 * N + n[:, None]) * M + kk0[None, :], tl.sum(lam, axis=1),
                     mask=mask_if(mn2, c == 0))
    else:
        ptr = aggregates + ((pid_s.to(tl.int64) * N + n[:, None, None]) * (M + 1) + v3) * M + kk0[None, None, :]
        tl.store(ptr, lam, mask=mn3 & (v3 <= M))


# ----------------------------------------------------------------------------------------------------------------
# BD-LRU
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _bdlru_load(gbase, vbase, bos, i, L, stride_gates_t, N, n, mn, jr, kc, M: tl.constexpr):
    ok = i < L
    ok = ok & (i >= 0)
    t = (bos + i).to(tl.int64)
    rowp = gbase + t * stride_gates_t + n * (M * (M + 1))  # [BLOCK]
    mrow = mask_if(mn[:, None] & (jr[None, :] < M), ok)  # [BLOCK, MP]
    rp2 = rowp[:, None] + jr[None, :] * (M + 1)  # [BLOCK, MP]
    zc = tl.load(rp2[:, :, None] + kc[None, None, :], mask=mrow[:, :, None] & (kc[None, None, :] < M),
                 other=0.0).to(tl.float32)
    zg = tl.load(rp2 + M, mask=mrow, other=0.0).to(tl.float32)
    v = tl.load(vbase + (t * N + n[:, None]) * M + jr[None, :], mask=mrow, other=0.0).to(tl.float32)
    return zc, zg, v


@_heuristics(_WALK_FWD_HEURISTICS)
@triton.jit
def _bdlru_fwd_kernel(
    gates, values, states, initial_state, final_state, aggregates, cu_seqlens, segment_table,
    stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, MP: tl.constexpr, NVP: tl.constexpr, AFF: tl.constexpr, BLOCK: tl.constexpr,
    ACT: tl.constexpr, H0_PER_SEG: tl.constexpr, DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_H0: tl.constexpr, WRITE_OUT: tl.constexpr,
    WRITE_FINAL: tl.constexpr,
):
    """BD-LRU over one segment (a sequence, or a chunk of one) of BLOCK blocks, walking time with each block's state
    and [M, M] coefficient tile in registers. Phases as in `_hlru_fwd_kernel` (the basis vectors are the block's M
    state coordinates). DOT: the aggregate phase's product of the NVP carried vectors with each step's tile is one
    tl.dot (`_AGGREGATE_DOT_PRECISION`) instead of a broadcast product summed over lanes."""
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)
    jr = tl.arange(0, MP)
    kc = tl.arange(0, MP)
    vv = tl.arange(0, NVP)
    mn2 = mn[:, None] & (jr[None, :] < M)
    mc3 = mn2[:, :, None] & (kc[None, None, :] < M)
    v3 = vv[None, :, None]
    k3 = kc[None, None, :]
    mn3 = mn[:, None, None] & (k3 < M)

    if NVP == 1:
        if HAS_H0:
            if H0_PER_SEG:
                hidx = pid_s.to(tl.int64)
            else:
                hidx = seq.to(tl.int64)
            h0 = tl.load(initial_state + (hidx * N + n[:, None]) * M + kc[None, :], mask=mn2, other=0.0).to(tl.float32)
            H = h0[:, None, :]
        else:
            H = tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)
    else:
        H = tl.where((k3 == v3) & mn3, 1.0, 0.0) + tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)

    gbase = gates + b64 * stride_gates_b
    vbase = values + b64 * T * N * M
    # The row's offset is added once here, not in the store: the PTX is otherwise the same, but ptxas schedules the
    # loop 1.5x faster at m = 16 (5.3 against 8.1 ms at B8 T4096 D1024 on the H200 with Triton 3.6,
    # bench_results/probes_2026-11-30b/ab_m16_3.txt). It made m = 8 slower (6.3 against 5.5 ms), but m <= 8 runs one
    # block per thread now; m = 9..15 were not measured either way.
    if WRITE_OUT:
        sbase = states + b64 * T * N * M
    zc0, zg0, x0 = _bdlru_load(gbase, vbase, bos, 0, L, stride_gates_t, N, n, mn, jr, kc, M)
    zc1, zg1, x1 = _bdlru_load(gbase, vbase, bos, 1, L, stride_gates_t, N, n, mn, jr, kc, M)
    for i in range(0, L):
        zc2, zg2, x2 = _bdlru_load(gbase, vbase, bos, i + 2, L, stride_gates_t, N, n, mn, jr, kc, M)
        # Triton's exp and reciprocal (FTZ=False): with the .ftz forms ptxas gives this loop 80 registers instead of 96
        # and runs it slower (m = 16, B32 T2048 D2048: 7.68 -> 9.21 ms; bench_results/probes_2026-12-03d/)
        A, cg = _normalize(zc0, zg0, mc3, M, ACT, 2, False)  # [BLOCK, MP(j), MP(k)], [BLOCK, MP(j)]
        if DOT:
            hn = tl.dot(H, tl.trans(A, 0, 2, 1), input_precision=DOT_PRECISION)  # [BLOCK, NVP, MP(j)]
        else:
            hn = tl.sum(A[:, None, :, :] * H[:, :, None, :], axis=3)  # [BLOCK, NVP, MP(j)]
        hn = hn + tl.where(v3 == AFF, (cg * x0)[:, None, :], 0.0)
        if WRITE_OUT:
            t = (bos + i).to(tl.int64)
            tl.store(sbase + (t * N + n[:, None]) * M + jr[None, :],
                     tl.sum(hn, axis=1).to(states.dtype.element_ty), mask=mn2)
        H = hn
        zc0, zg0, x0 = zc1, zg1, x1
        zc1, zg1, x1 = zc2, zg2, x2

    if NVP == 1:
        if WRITE_FINAL:
            is_last = eos == seq_eos
            tl.store(final_state + (seq.to(tl.int64) * N + n[:, None]) * M + kc[None, :], tl.sum(H, axis=1),
                     mask=mask_if(mn2, is_last))
    else:
        ptr = aggregates + ((pid_s.to(tl.int64) * N + n[:, None, None]) * (M + 1) + v3) * M + k3
        tl.store(ptr, H, mask=mn3 & (v3 <= M))


@_heuristics(_WALK_BWD_HEURISTICS)
@triton.jit
def _bdlru_bwd_kernel(
    gates, values, states, d_states, initial_state, d_final, d_gates, d_values, d_initial_state, aggregates,
    cu_seqlens, segment_table, stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, MP: tl.constexpr, NVP: tl.constexpr, AFF: tl.constexpr, BLOCK: tl.constexpr,
    ACT: tl.constexpr, DHT_PER_SEG: tl.constexpr, DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DHT: tl.constexpr,
    WRITE_DH0: tl.constexpr,
):
    """Reverse-time walk of the BD-LRU adjoint (A_t transposed) over one segment of BLOCK blocks; phases as in
    `_hlru_bwd_kernel`; DOT as in `_bdlru_fwd_kernel`."""
    GRADS: tl.constexpr = NVP == 1
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)
    seq64 = seq.to(tl.int64)
    jr = tl.arange(0, MP)
    kc = tl.arange(0, MP)
    vv = tl.arange(0, NVP)
    mn2 = mn[:, None] & (jr[None, :] < M)
    mc3 = mn2[:, :, None] & (kc[None, None, :] < M)
    v3 = vv[None, :, None]
    k3 = kc[None, None, :]
    mn3 = mn[:, None, None] & (k3 < M)

    if GRADS:
        if HAS_DHT:
            if DHT_PER_SEG:
                hidx = pid_s.to(tl.int64)
            else:
                hidx = seq64
            l0 = tl.load(d_final + (hidx * N + n[:, None]) * M + kc[None, :], mask=mn2, other=0.0).to(tl.float32)
            mu = l0[:, None, :]
        else:
            mu = tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)
    else:
        mu = tl.where((k3 == v3) & mn3, 1.0, 0.0) + tl.zeros([BLOCK, NVP, MP], dtype=tl.float32)

    gbase = gates + b64 * stride_gates_b
    vbase = values + b64 * T * N * M
    dobase = d_states + b64 * T * N * M
    obase = states + b64 * T * N * M
    zc0, zg0, x0 = _bdlru_load(gbase, vbase, bos, L - 1, L, stride_gates_t, N, n, mn, jr, kc, M)
    zc1, zg1, x1 = _bdlru_load(gbase, vbase, bos, L - 2, L, stride_gates_t, N, n, mn, jr, kc, M)
    do0 = tl.load(dobase + ((bos + L - 1).to(tl.int64) * N + n[:, None]) * M + jr[None, :], mask=mask_if(mn2, L >= 1),
                  other=0.0).to(tl.float32)
    for j in range(0, L):
        i = L - 1 - j
        t = (bos + i).to(tl.int64)
        zc2, zg2, x2 = _bdlru_load(gbase, vbase, bos, i - 2, L, stride_gates_t, N, n, mn, jr, kc, M)
        do1 = tl.load(dobase + ((t - 1) * N + n[:, None]) * M + jr[None, :], mask=mask_if(mn2, i >= 1), other=0.0)
        lam = mu + tl.where(v3 == AFF, do0[:, None, :], 0.0)  # [BLOCK, NVP, MP(j)]
        A, cg = _normalize(zc0, zg0, mc3, M, ACT, 2)
        if DOT:
            mu = tl.dot(lam, A, input_precision=DOT_PRECISION)  # A^T lam: [BLOCK, NVP, MP(k)]
        else:
            mu = tl.sum(A[:, None, :, :] * lam[:, :, :, None], axis=2)  # A^T lam: [BLOCK, NVP, MP(k)]
        if GRADS:
            # h_{t-1}: saved output at t-1, or the sequence's initial state
            prev_in = (t - 1) >= seq_bos
            hp = tl.load(obase + ((t - 1) * N + n[:, None]) * M + kc[None, :], mask=mask_if(mn2, prev_in),
                         other=0.0).to(tl.float32)
            if HAS_INIT:
                hi = tl.load(initial_state + (seq64 * N + n[:, None]) * M + kc[None, :], mask=mask_if(mn2, prev_in == 0),
                             other=0.0)
                hp = tl.where(prev_in, hp, hi)
            l1 = tl.sum(lam, axis=1)  # [BLOCK, MP(j)]
            dcc = l1[:, :, None] * hp[:, None, :]
            dcg = l1 * x0
            dzc, dzg = _normalize_bwd(zc0, zg0, mc3, dcc, dcg, M, ACT, 2)
            rp2 = d_gates + ((b64 * T + t) * N + n[:, None]) * (M * (M + 1)) + jr[None, :] * (M + 1)
            tl.store(rp2[:, :, None] + kc[None, None, :], dzc.to(d_gates.dtype.element_ty), mask=mc3)
            tl.store(rp2 + M, dzg.to(d_gates.dtype.element_ty), mask=mn2)
            tl.store(d_values + ((b64 * T + t) * N + n[:, None]) * M + jr[None, :], (l1 * cg).to(d_values.dtype.element_ty),
                     mask=mn2)
        zc0, zg0, x0 = zc1, zg1, x1
        zc1, zg1, x1 = zc2, zg2, x2
        do0 = do1.to(tl.float32)

    if GRADS:
        if WRITE_DH0:
            tl.store(d_initial_state + (seq64 * N + n[:, None]) * M + kc[None, :], tl.sum(mu, axis=1),
                     mask=mask_if(mn2, c == 0))
    else:
        ptr = aggregates + ((pid_s.to(tl.int64) * N + n[:, None, None]) * (M + 1) + v3) * M + k3
        tl.store(ptr, mu, mask=mn3 & (v3 <= M))


# ----------------------------------------------------------------------------------------------------------------
# BD-LRU with one block per thread (m <= _BLOCK_PER_THREAD_MAX_M): the block's m x (m+1) logits, its state and its
# carried vectors are tuples of [BLOCK] tensors, so the normalisation and the mat-vec run inside each thread, with no
# reduction across lanes (the tile kernels above reduce over the block's rows and columns across lanes, and those
# shuffles are each step's dependent chain). The m (m+1) logits of a block are loaded one component at a time;
# a warp's loads of one component are strided, but together they read every byte of the warp's blocks once.
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _phi_group(z, M: tl.constexpr, ACT: tl.constexpr):
    """relu / tanh / linear of one group held as a tuple: (phi of each logit, 1 / `_denominator`)."""
    p = ()
    den = tl.zeros_like(z[0])
    for k in tl.static_range(M + 1):
        pk = _phi(z[k], ACT)
        p = p + (pk,)
        if ACT == 2:
            den += pk
        else:
            den += tl.abs(pk)
    if ACT == 2:
        den += (M + 1) * _RELU_EPS
    else:
        den += _SIGNED_EPS
    return p, _reciprocal(den)


@triton.jit
def _normalize_group(z, M: tl.constexpr, ACT: tl.constexpr):
    """`_normalize` of one group of M + 1 logits held as a tuple of tensors (M coefficients, then the input gate):
    the group's sums run elementwise, inside each thread. Returns the tuple of the M + 1 normalised values."""
    if ACT <= 1:
        if ACT == 1:  # sigmoid(z_i) / sum_j sigmoid(z_j) = softmax(logsigmoid(z))_i (see `_normalize`)
            logits = ()
            for k in tl.static_range(M + 1):
                logits = logits + (_logsigmoid(z[k]),)
        else:
            logits = z
        largest = logits[0]
        for k in tl.static_range(1, M + 1):
            largest = tl.maximum(largest, logits[k])
        exps = ()
        total = tl.zeros_like(largest)
        for k in tl.static_range(M + 1):
            e = _exp(logits[k] - largest)
            exps = exps + (e,)
            total += e
        inv = _reciprocal(total)  # total >= 1: the largest term is exp(0)
        c = ()
        for k in tl.static_range(M + 1):
            c = c + (exps[k] * inv,)
    elif ACT == 5:
        c = z
    else:
        p, inv = _phi_group(z, M, ACT)
        c = ()
        for k in tl.static_range(M + 1):
            c = c + (p[k] * inv,)
    return c


@triton.jit
def _normalize_group_bwd(z, dc, M: tl.constexpr, ACT: tl.constexpr):
    """`_normalize_bwd` of one group held as tuples: the gradient of the M + 1 logits from that of the normalised
    values."""
    if ACT <= 1:
        c = _normalize_group(z, M, ACT)
        dot = c[0] * dc[0]
        for k in tl.static_range(1, M + 1):
            dot += c[k] * dc[k]
        dz = ()
        for k in tl.static_range(M + 1):
            g = c[k] * (dc[k] - dot)
            if ACT == 1:
                g = g * _sigmoid_neg(z[k])
            dz = dz + (g,)
    elif ACT == 5:
        dz = dc
    else:
        p, inv = _phi_group(z, M, ACT)
        dot = p[0] * inv * dc[0]
        for k in tl.static_range(1, M + 1):
            dot += p[k] * inv * dc[k]
        dz = ()
        for k in tl.static_range(M + 1):
            if ACT == 2:
                g = tl.where(z[k] > 0.0, (dc[k] - dot) * inv, 0.0)
            else:
                sign = tl.where(p[k] > 0.0, 1.0, tl.where(p[k] < 0.0, -1.0, 0.0))
                g = (dc[k] - dot * sign) * inv
                if ACT == 3:
                    g = g * (1.0 - p[k] * p[k])
            dz = dz + (g,)
    return dz


@triton.jit
def _group(z, j, M: tl.constexpr):
    """Row j's group of M + 1 logits out of a block's flat tuple of M (M + 1)."""
    row = ()
    for k in tl.static_range(M + 1):
        row = row + (z[j * (M + 1) + k],)
    return row


@triton.jit
def _gates_base(gates, b64, stride_gates_b, WORDS: tl.constexpr):
    """Batch row b64's logits: a bf16 pointer, or with WORDS the same bytes as 8-byte words."""
    if WORDS:
        base = gates.to(tl.pointer_type(tl.int64), bitcast=True) + b64 * (stride_gates_b // 4)
    else:
        base = gates + b64 * stride_gates_b
    return base


@triton.jit
def _bdlru_load_step(gbase, vbase, bos, i, L, stride_gates_t, N, n, mn, M: tl.constexpr, LOAD_VALUES: tl.constexpr,
                     WORDS: tl.constexpr):
    """Step i of a segment (zeros outside [0, L)): the logits of each block as a flat tuple (row j, column k at
    j (M + 1) + k; column M is the input gate) and its values as a tuple of M, all float32 [BLOCK]. WORDS (`_words`):
    gbase points at the bf16 logits as 8-byte words, each loaded once and split into its four logits (a bf16 is the
    top half of its float32)."""
    mask = mask_if(mn, (i < L) & (i >= 0))
    t = (bos + i).to(tl.int64)
    z = ()
    if WORDS:
        row = gbase + t * (stride_gates_t // 4) + n.to(tl.int64) * (M * (M + 1) // 4)  # [BLOCK] words
        for w in tl.static_range(M * (M + 1) // 4):
            word = tl.load(row + w, mask=mask, other=0)
            low, high = word.to(tl.int32), (word >> 32).to(tl.int32)  # little-endian: logits 4w, 4w+1 | 4w+2, 4w+3
            z = z + ((low << 16).to(tl.float32, bitcast=True), (low & -65536).to(tl.float32, bitcast=True),
                     (high << 16).to(tl.float32, bitcast=True), (high & -65536).to(tl.float32, bitcast=True))
    else:
        row = gbase + t * stride_gates_t + n.to(tl.int64) * (M * (M + 1))  # [BLOCK]
        for q in tl.static_range(M * (M + 1)):
            z = z + (tl.load(row + q, mask=mask, other=0.0).to(tl.float32),)
    x = ()
    if LOAD_VALUES:
        for j in tl.static_range(M):
            x = x + (tl.load(vbase + (t * N + n) * M + j, mask=mask, other=0.0).to(tl.float32),)
    return z, x


@triton.jit
def _store_contiguous(ptr, parts, mask, BLOCK: tl.constexpr, COUNT: tl.constexpr, WIDTH: tl.constexpr,
                      LOG2_WIDTH: tl.constexpr):
    """Store the tuple `parts` of COUNT [BLOCK] tensors at ptr + q (q < COUNT) as one [BLOCK, WIDTH] tile (WIDTH =
    2^LOG2_WIDTH >= COUNT): each thread's values are contiguous, so a warp writes whole sectors. Storing each part
    alone is a strided store per part, and such partial-sector writes are what bounds these kernels otherwise."""
    level = ()
    for q in tl.static_range(WIDTH):
        if q < COUNT:
            level = level + (parts[q],)
        else:
            level = level + (tl.zeros_like(parts[0]),)
    # Level d joins entry q with entry q + WIDTH / 2^(d+1) along a new last axis and folds it into the columns
    # ([BLOCK, 2^d, 2] -> [BLOCK, 2^(d+1)], so no tensor has more than three axes): column c of the last entry then
    # holds part c.
    # (The half width stays an inline expression: Triton 3.6 refuses a constexpr name assigned in each iteration.)
    for depth in tl.static_range(LOG2_WIDTH):
        joined = ()
        for q in tl.static_range(WIDTH >> (depth + 1)):
            joined = joined + (tl.reshape(tl.join(level[q], level[q + (WIDTH >> (depth + 1))]), [BLOCK, 2 << depth]),)
        level = joined
    tile = level[0]
    column = tl.arange(0, WIDTH)
    tl.store(ptr[:, None] + column[None, :], tile.to(ptr.dtype.element_ty), mask=mask[:, None] & (column[None, :] < COUNT))


@triton.jit
def _load_coordinates(ptr, mask, M: tl.constexpr):
    """The M coordinates at ptr, ptr + 1, ... as a tuple of float32 tensors."""
    x = ()
    for j in tl.static_range(M):
        x = x + (tl.load(ptr + j, mask=mask, other=0.0).to(tl.float32),)
    return x


@triton.jit
def _start_vectors(start, pid_s, seq, N, n, mn, M: tl.constexpr, NV: tl.constexpr, BLOCK: tl.constexpr,
                   HAS_START: tl.constexpr, PER_SEGMENT: tl.constexpr):
    """The carried vectors a block-per-thread walk starts from, as the tuple V[k NV + v]: with NV = 1 the sequence's
    (or with PER_SEGMENT the segment's) row of `start` [.., N, M], or zeros without one; with NV = M + 1 (aggregate
    phase) the M basis vectors, then the zero affine vector."""
    V = ()
    if NV == 1:
        if HAS_START:
            if PER_SEGMENT:
                row = pid_s.to(tl.int64)
            else:
                row = seq.to(tl.int64)
            V = _load_coordinates(start + (row * N + n) * M, mn, M)
        else:
            for k in tl.static_range(M):
                V = V + (tl.zeros([BLOCK], dtype=tl.float32),)
    else:
        for k in tl.static_range(M):
            for v in tl.static_range(NV):
                if k == v:
                    V = V + (tl.full([BLOCK], 1.0, dtype=tl.float32),)
                else:
                    V = V + (tl.zeros([BLOCK], dtype=tl.float32),)
    return V


@triton.jit
def _store_aggregates(aggregates, pid_s, N, n, mn, V, M: tl.constexpr, NV: tl.constexpr):
    """A segment's end vectors V[k NV + v] into `aggregates` [segments, N, M + 1, M] (row v, column k)."""
    base = aggregates + (pid_s.to(tl.int64) * N + n) * ((M + 1) * M)
    for v in tl.static_range(NV):
        for k in tl.static_range(M):
            tl.store(base + v * M + k, V[k * NV + v], mask=mn)


@triton.jit
def _store_end_vectors(end, seq, end_mask, aggregates, pid_s, N, n, mn, V, M: tl.constexpr, NV: tl.constexpr,
                       WRITE_END: tl.constexpr):
    """Where a block-per-thread walk's end vectors go (`_start_vectors` is where they come from): with NV = 1 the
    sequence's row of `end` [.., N, M] (the final state forward, the initial state's gradient backward) under
    end_mask, if WRITE_END; with NV = M + 1 (aggregate phase) the segment's row of `aggregates`."""
    if NV == 1:
        if WRITE_END:
            for k in tl.static_range(M):
                tl.store(end + (seq.to(tl.int64) * N + n) * M + k, V[k], mask=end_mask)
    else:
        _store_aggregates(aggregates, pid_s, N, n, mn, V, M, NV)


@_heuristics(dict(_WALK_FWD_HEURISTICS, WORDS=_words))
@triton.jit
def _bdlru_fwd_block_per_thread_kernel(
    gates, values, states, initial_state, final_state, aggregates, cu_seqlens, segment_table,
    stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, MP: tl.constexpr, LOG2_MP: tl.constexpr, NV: tl.constexpr, AFF: tl.constexpr,
    BLOCK: tl.constexpr, ACT: tl.constexpr, H0_PER_SEG: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_H0: tl.constexpr, WRITE_OUT: tl.constexpr,
    WRITE_FINAL: tl.constexpr, AHEAD: tl.constexpr, WORDS: tl.constexpr,
):
    """`_bdlru_fwd_kernel` with one block per thread: NV carried vectors (1 in the main phase, M + 1 in the aggregate
    phase: the basis vectors and the affine part AFF), held as the tuple H[k NV + v] (coordinate k of vector v)."""
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)

    H = _start_vectors(initial_state, pid_s, seq, N, n, mn, M, NV, BLOCK, HAS_H0, H0_PER_SEG)

    gbase = _gates_base(gates, b64, stride_gates_b, WORDS)
    vbase = values + b64 * T * N * M
    z0, x0 = _bdlru_load_step(gbase, vbase, bos, 0, L, stride_gates_t, N, n, mn, M, True, WORDS)
    if AHEAD == 2:
        z1, x1 = _bdlru_load_step(gbase, vbase, bos, 1, L, stride_gates_t, N, n, mn, M, True, WORDS)
    for i in range(0, L):
        if AHEAD == 2:
            z2, x2 = _bdlru_load_step(gbase, vbase, bos, i + 2, L, stride_gates_t, N, n, mn, M, True, WORDS)
        else:
            z1, x1 = _bdlru_load_step(gbase, vbase, bos, i + 1, L, stride_gates_t, N, n, mn, M, True, WORDS)
        new = ()
        for j in tl.static_range(M):
            coef = _normalize_group(_group(z0, j, M), M, ACT)  # A_t[j, 0..M-1], then the input gate g_t[j]
            for v in tl.static_range(NV):
                acc = coef[0] * H[v]
                for k in tl.static_range(1, M):
                    acc += coef[k] * H[k * NV + v]
                if v == AFF:
                    acc += coef[M] * x0[j]
                new = new + (acc,)
        H = new
        if WRITE_OUT:
            _store_contiguous(states + ((b64 * T + bos + i) * N + n) * M, H, mn, BLOCK, M, MP, LOG2_MP)
        z0, x0 = z1, x1
        if AHEAD == 2:
            z1, x1 = z2, x2

    _store_end_vectors(final_state, seq, mask_if(mn, eos == seq_eos), aggregates, pid_s, N, n, mn, H, M, NV,
                       WRITE_FINAL)


@_heuristics(dict(_WALK_BWD_HEURISTICS, WORDS=_words))
@triton.jit
def _bdlru_bwd_block_per_thread_kernel(
    gates, values, states, d_states, initial_state, d_final, d_gates, d_values, d_initial_state, aggregates,
    cu_seqlens, segment_table, stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, MP: tl.constexpr, LOG2_MP: tl.constexpr, GP: tl.constexpr, LOG2_GP: tl.constexpr,
    NV: tl.constexpr, AFF: tl.constexpr, BLOCK: tl.constexpr, ACT: tl.constexpr, DHT_PER_SEG: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DHT: tl.constexpr,
    WRITE_DH0: tl.constexpr, AHEAD: tl.constexpr, WORDS: tl.constexpr,
):
    """`_bdlru_bwd_kernel` with one block per thread: the adjoint vectors are the tuple mu[j NV + v]."""
    GRADS: tl.constexpr = NV == 1
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)
    seq64 = seq.to(tl.int64)

    mu = _start_vectors(d_final, pid_s, seq, N, n, mn, M, NV, BLOCK, HAS_DHT, DHT_PER_SEG)

    gbase = _gates_base(gates, b64, stride_gates_b, WORDS)
    vbase = values + b64 * T * N * M
    dobase = d_states + b64 * T * N * M
    obase = states + b64 * T * N * M
    z0, x0 = _bdlru_load_step(gbase, vbase, bos, L - 1, L, stride_gates_t, N, n, mn, M, GRADS, WORDS)
    if AHEAD == 2:
        z1, x1 = _bdlru_load_step(gbase, vbase, bos, L - 2, L, stride_gates_t, N, n, mn, M, GRADS, WORDS)
    do0 = _load_coordinates(dobase + ((bos + L - 1).to(tl.int64) * N + n) * M, mask_if(mn, L >= 1), M)
    for r in range(0, L):
        i = L - 1 - r
        t = (bos + i).to(tl.int64)
        if AHEAD == 2:
            z2, x2 = _bdlru_load_step(gbase, vbase, bos, i - 2, L, stride_gates_t, N, n, mn, M, GRADS, WORDS)
        else:
            z1, x1 = _bdlru_load_step(gbase, vbase, bos, i - 1, L, stride_gates_t, N, n, mn, M, GRADS, WORDS)
        do1 = _load_coordinates(dobase + ((t - 1) * N + n) * M, mask_if(mn, i >= 1), M)
        lam = ()  # lam[j NV + v] = mu + the output's gradient (on the affine vector only)
        for j in tl.static_range(M):
            for v in tl.static_range(NV):
                if v == AFF:
                    lam = lam + (mu[j * NV + v] + do0[j],)
                else:
                    lam = lam + (mu[j * NV + v],)
        coef = ()  # flat like the logits: A_t[j, k] at j (M + 1) + k, g_t[j] at j (M + 1) + M
        for j in tl.static_range(M):
            coef = coef + _normalize_group(_group(z0, j, M), M, ACT)
        mu = ()  # A_t^T lam
        for k in tl.static_range(M):
            for v in tl.static_range(NV):
                acc = coef[k] * lam[v]
                for j in tl.static_range(1, M):
                    acc += coef[j * (M + 1) + k] * lam[j * NV + v]
                mu = mu + (acc,)
        if GRADS:
            # h_{t-1}: the saved output at t-1, or the sequence's initial state
            prev_in = (t - 1) >= seq_bos
            h_prev = _load_coordinates(obase + ((t - 1) * N + n) * M, mask_if(mn, prev_in), M)
            if HAS_INIT:
                h_init = _load_coordinates(initial_state + (seq64 * N + n) * M, mask_if(mn, prev_in == 0), M)
                held = ()
                for k in tl.static_range(M):
                    held = held + (tl.where(prev_in, h_prev[k], h_init[k]),)
                h_prev = held
            d_logits = ()  # flat like the logits
            d_vals = ()
            for j in tl.static_range(M):
                d_coef = ()
                for k in tl.static_range(M):
                    d_coef = d_coef + (lam[j] * h_prev[k],)
                d_coef = d_coef + (lam[j] * x0[j],)
                d_logits = d_logits + _normalize_group_bwd(_group(z0, j, M), d_coef, M, ACT)
                d_vals = d_vals + (lam[j] * coef[j * (M + 1) + M],)
            _store_contiguous(d_gates + ((b64 * T + t) * N + n) * (M * (M + 1)), d_logits, mn, BLOCK, M * (M + 1), GP,
                              LOG2_GP)
            _store_contiguous(d_values + ((b64 * T + t) * N + n) * M, d_vals, mn, BLOCK, M, MP, LOG2_MP)
        z0, x0 = z1, x1
        if AHEAD == 2:
            z1, x1 = z2, x2
        do0 = do1

    _store_end_vectors(d_initial_state, seq, mask_if(mn, c == 0), aggregates, pid_s, N, n, mn, mu, M, NV, WRITE_DH0)


# ----------------------------------------------------------------------------------------------------------------
# H-LRU with one channel per thread (m <= _CHANNEL_PER_THREAD_MAX_M): the channel's window of the last m states and
# its m+1 logits are tuples of [BLOCK] tensors. The window is kept in canonical order (index k holds s_{t-k}):
# shifting it is a renaming of tuple entries, and the normalisation and the dot product run inside each thread.
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _hlru_load_step(gbase, vbase, bos, i, L, stride_gates_t, N, n, mn, M: tl.constexpr):
    """Step i of a segment (zeros outside [0, L)): the M + 1 logits of each channel as a tuple (lag k + 1 at k, the
    input gate at M) and its value, float32 [BLOCK]."""
    mask = mask_if(mn, (i < L) & (i >= 0))
    t = (bos + i).to(tl.int64)
    row = gbase + t * stride_gates_t + n.to(tl.int64) * (M + 1)
    z = ()
    for k in tl.static_range(M + 1):
        z = z + (tl.load(row + k, mask=mask, other=0.0).to(tl.float32),)
    x = tl.load(vbase + t * N + n, mask=mask, other=0.0).to(tl.float32)
    return z, x


@_heuristics({**_WALK_FWD_HEURISTICS, "WRITE_READOUT": lambda args: args["readout"] is not None})
@triton.jit
def _hlru_fwd_channel_per_thread_kernel(
    gates, values, states, initial_state, final_state, readout, aggregates, cu_seqlens, segment_table,
    stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, NV: tl.constexpr, AFF: tl.constexpr, BLOCK: tl.constexpr, ACT: tl.constexpr,
    H0_PER_SEG: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_H0: tl.constexpr, WRITE_OUT: tl.constexpr,
    WRITE_FINAL: tl.constexpr, WRITE_READOUT: tl.constexpr,
):
    """`_hlru_fwd_kernel` with one channel per thread: NV carried windows (1 in the main phase, M + 1 in the aggregate
    phase), held as the tuple W[k NV + v] (window index k of window v, canonical: k holds s_{t-k}). `readout`
    [S, N, M] (main phase, optional): the final window once more, in readout's dtype (a decode step's read-out)."""
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)

    W = _start_vectors(initial_state, pid_s, seq, N, n, mn, M, NV, BLOCK, HAS_H0, H0_PER_SEG)

    gbase = gates + b64 * stride_gates_b
    vbase = values + b64 * T * N
    z0, x0 = _hlru_load_step(gbase, vbase, bos, 0, L, stride_gates_t, N, n, mn, M)
    z1, x1 = _hlru_load_step(gbase, vbase, bos, 1, L, stride_gates_t, N, n, mn, M)
    for i in range(0, L):
        z2, x2 = _hlru_load_step(gbase, vbase, bos, i + 2, L, stride_gates_t, N, n, mn, M)
        coef = _normalize_group(z0, M, ACT)  # a_{t,1..M}, then the input gate g_t
        newest = ()
        for v in tl.static_range(NV):
            acc = coef[0] * W[v]
            for k in tl.static_range(1, M):
                acc += coef[k] * W[k * NV + v]
            if v == AFF:
                acc += coef[M] * x0
            newest = newest + (acc,)
        shifted = newest  # the new window: s_t, then the old window's first M - 1 entries
        for q in tl.static_range(NV * (M - 1)):
            shifted = shifted + (W[q],)
        W = shifted
        if WRITE_OUT:
            tl.store(states + (b64 * T + bos + i) * N + n, W[0].to(states.dtype.element_ty), mask=mn)
        z0, x0 = z1, x1
        z1, x1 = z2, x2

    _store_end_vectors(final_state, seq, mask_if(mn, eos == seq_eos), aggregates, pid_s, N, n, mn, W, M, NV,
                       WRITE_FINAL)
    if WRITE_READOUT:
        for k in tl.static_range(M):
            tl.store(readout + (seq.to(tl.int64) * N + n) * M + k, W[k].to(readout.dtype.element_ty),
                     mask=mask_if(mn, eos == seq_eos))


@triton.jit
def _hlru_state_before(states, initial_state, seq64, seq_bos, b64, T, N, n, mn, u, M: tl.constexpr,
                       HAS_INIT: tl.constexpr):
    """s_u of the sequence (1-based u; u <= 0 reads the initial window: index -u), float32 [BLOCK]."""
    in_seq = u >= 1
    s = tl.load(states + (b64 * T + seq_bos + u - 1) * N + n, mask=mask_if(mn, in_seq), other=0.0).to(tl.float32)
    if HAS_INIT:
        s0 = tl.load(initial_state + (seq64 * N + n) * M - u, mask=mask_if(mn, (u <= 0) & (u > -M)), other=0.0)
        s = tl.where(in_seq, s, s0)
    return s


@_heuristics(_WALK_BWD_HEURISTICS)
@triton.jit
def _hlru_bwd_channel_per_thread_kernel(
    gates, values, states, d_states, initial_state, d_final, d_gates, d_values, d_initial_state, aggregates,
    cu_seqlens, segment_table, stride_gates_b, stride_gates_t, T, N, chunk_size, num_chunks,
    M: tl.constexpr, GP: tl.constexpr, LOG2_GP: tl.constexpr, NV: tl.constexpr, AFF: tl.constexpr,
    BLOCK: tl.constexpr, ACT: tl.constexpr, DHT_PER_SEG: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_TAB: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DHT: tl.constexpr,
    WRITE_DH0: tl.constexpr,
):
    """`_hlru_bwd_kernel` with one channel per thread. The adjoint of the window is the tuple lam[k NV + v]
    (canonical index k); step t maps it to F_t^T (lam + e_0 dy_t), where F_t puts a_t . w into index 0 and shifts
    the rest down. The main phase keeps the window before each step (w_{t-1}), one state loaded per step."""
    GRADS: tl.constexpr = NV == 1
    pid_s, seq, c, seq_bos, seq_eos, bos, eos, L, b64, n, mn = _walk_bounds(
        cu_seqlens, segment_table, T, N, chunk_size, num_chunks, BLOCK, IS_VARLEN, USE_TAB)
    u0 = c * chunk_size  # steps of the sequence before this segment
    seq64 = seq.to(tl.int64)

    lam = _start_vectors(d_final, pid_s, seq, N, n, mn, M, NV, BLOCK, HAS_DHT, DHT_PER_SEG)
    if GRADS:
        window = ()  # w at the segment's end: index k holds s_{u0 + L - k}
        for k in tl.static_range(M):
            window = window + (_hlru_state_before(states, initial_state, seq64, seq_bos, b64, T, N, n, mn, u0 + L - k, M,
                                                        HAS_INIT),)

    gbase = gates + b64 * stride_gates_b
    vbase = values + b64 * T * N
    dobase = d_states + b64 * T * N
    z0, x0 = _hlru_load_step(gbase, vbase, bos, L - 1, L, stride_gates_t, N, n, mn, M)
    z1, x1 = _hlru_load_step(gbase, vbase, bos, L - 2, L, stride_gates_t, N, n, mn, M)
    for r in range(0, L):
        i = L - 1 - r
        t = (bos + i).to(tl.int64)
        z2, x2 = _hlru_load_step(gbase, vbase, bos, i - 2, L, stride_gates_t, N, n, mn, M)
        dy = tl.load(dobase + t * N + n, mask=mn, other=0.0).to(tl.float32)
        coef = _normalize_group(z0, M, ACT)
        ell = ()  # the adjoint of s_t (window index 0 after step t), per vector
        for v in tl.static_range(NV):
            if v == AFF:
                ell = ell + (lam[v] + dy,)
            else:
                ell = ell + (lam[v],)
        new = ()  # F_t^T: index j gets a_{t,j+1} ell + the adjoint of index j + 1
        for j in tl.static_range(M):
            for v in tl.static_range(NV):
                if j + 1 < M:
                    new = new + (coef[j] * ell[v] + lam[(j + 1) * NV + v],)
                else:
                    new = new + (coef[j] * ell[v],)
        lam = new
        if GRADS:
            u = u0 + i + 1  # 1-based step of the sequence
            before = ()  # w_{t-1}: the window after step t shifted up, and s_{t-M}
            for k in tl.static_range(1, M):
                before = before + (window[k],)
            before = before + (_hlru_state_before(states, initial_state, seq64, seq_bos, b64, T, N, n, mn, u - M, M,
                                                    HAS_INIT),)
            window = before
            d_coef = ()
            for k in tl.static_range(M):
                d_coef = d_coef + (ell[0] * window[k],)
            d_coef = d_coef + (ell[0] * x0,)
            d_logits = _normalize_group_bwd(z0, d_coef, M, ACT)
            _store_contiguous(d_gates + ((b64 * T + t) * N + n) * (M + 1), d_logits, mn, BLOCK, M + 1, GP, LOG2_GP)
            tl.store(d_values + (b64 * T + t) * N + n, (ell[0] * coef[M]).to(d_values.dtype.element_ty), mask=mn)
        z0, x0 = z1, x1
        z1, x1 = z2, x2

    _store_end_vectors(d_initial_state, seq, mask_if(mn, c == 0), aggregates, pid_s, N, n, mn, lam, M, NV,
                       WRITE_DH0)


# ----------------------------------------------------------------------------------------------------------------
# phase 2 of the chunked mode: carry over chunks, x <- P x + b (canonical coordinates, both ops)
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _walked_chunk(c0, c1, ii, REVERSE: tl.constexpr):
    """The id of the ii-th chunk the carry walks over chunks c0 .. c1 - 1 (from the last one in reverse), int64."""
    if REVERSE:
        return (c1 - 1 - ii).to(tl.int64)
    return (c0 + ii).to(tl.int64)


@triton.jit
def _load_chunk_map(aggregates, c0, c1, ii, count, N, n, kr, mn2, mP, M: tl.constexpr, REVERSE: tl.constexpr):
    """The map x -> P x + b of the ii-th chunk walked (zeros past the last): P transposed [BLOCK, MP, MP], b."""
    cid = _walked_chunk(c0, c1, ii, REVERSE)
    base = aggregates + (cid * N + n) * ((M + 1) * M)  # [BLOCK]
    Pt = tl.load(base[:, None, None] + kr[None, :, None] * M + kr[None, None, :], mask=mask_if(mP, ii < count), other=0.0)
    bb = tl.load(base[:, None] + M * M + kr[None, :], mask=mask_if(mn2, ii < count), other=0.0)
    return Pt, bb


@_heuristics({
    "HAS_X0": lambda args: args["initial_state"] is not None,
    "IS_VARLEN": lambda args: args["chunk_offsets"] is not None,
})
@triton.jit
def _carry_kernel(aggregates, initial_state, carries, chunk_offsets, N, num_chunks, M: tl.constexpr,
                  MP: tl.constexpr, BLOCK: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr,
                  HAS_X0: tl.constexpr):
    """The state entering every chunk of a sequence (reversed for the backward): x <- P x + b over its chunks'
    `aggregates` [chunks, N, M + 1, M], from the sequence's `initial_state` (zero if None), into `carries`."""
    seq = tl.program_id(0)
    pid_n = tl.program_id(1)
    if IS_VARLEN:
        c0 = tl.load(chunk_offsets + seq)
        c1 = tl.load(chunk_offsets + seq + 1)
    else:
        c0 = seq * num_chunks
        c1 = c0 + num_chunks
    n = pid_n * BLOCK + tl.arange(0, BLOCK)
    mn = n < N
    kr = tl.arange(0, MP)
    mn2 = mn[:, None] & (kr[None, :] < M)
    mP = mn2[:, :, None] & (kr[None, None, :] < M)
    if HAS_X0:
        x = tl.load(initial_state + (seq.to(tl.int64) * N + n[:, None]) * M + kr[None, :], mask=mn2, other=0.0).to(tl.float32)
    else:
        x = tl.zeros([BLOCK, MP], dtype=tl.float32)
    count = c1 - c0
    # the chunks' maps do not depend on the carry: each is loaded one chunk ahead, so the walk waits on its arithmetic
    # rather than on a memory round trip per chunk
    Pt, bb = _load_chunk_map(aggregates, c0, c1, 0, count, N, n, kr, mn2, mP, M, REVERSE)
    for ii in range(0, count):
        cid = _walked_chunk(c0, c1, ii, REVERSE)
        Pt_next, bb_next = _load_chunk_map(aggregates, c0, c1, ii + 1, count, N, n, kr, mn2, mP, M, REVERSE)
        tl.store(carries + (cid * N + n[:, None]) * M + kr[None, :], x, mask=mn2)
        x = tl.sum(Pt * x[:, :, None], axis=1) + bb
        Pt, bb = Pt_next, bb_next


# ----------------------------------------------------------------------------------------------------------------
# first order (H-LRU m = 1, BD-LRU m = 1): single pass, time-parallel, decoupled look-back
# ----------------------------------------------------------------------------------------------------------------
# Both models reduce to s_t = a_t s_{t-1} + g_t v_t per channel at m = 1. Each program owns one chunk of BT time
# steps of BN channels of one row: it loads its gate logits as one contiguous [BT, 2 BN] block, normalises them in
# registers, and scans the chunk with the carry set to zero (an associative scan over the affine maps
# x -> a x + b). It publishes that chunk's map (the "aggregate"), then looks back: the chunks before it publish
# their aggregate as soon as it is known and their true end state (the "prefix") once their own look-back is done,
# so a chunk composes aggregates until it reaches a prefix, and rarely waits. Inputs are read once.
# Chunk ids come from atomic counters, so every chunk a program waits for has already started (no deadlock).
# Sequence starts (t = 0, or cu_seqlens) enter the scan as maps with a = 0 that inject the initial state, so a
# packed batch is one row whose chunks may span several sequences.
# The forward publishes with no flag and no fence: each channel's aggregate is one 64-bit word (a, b) and its prefix
# one 32-bit word, written by one store into a workspace filled with _EMPTY (all bits set, a NaN that the kernels
# never write: they write NaN as the canonical 0x7FC00000), so a reader that sees a word other than _EMPTY sees all
# of it. A program's whole chain is then: counter, loads, look-back loads (each step reads a predecessor's prefix
# and aggregate at once), stores; its lifetime, not the bandwidth, is what bounds these kernels (NOTES_scan.md).
# The backward still stores its maps, then raises a per-chunk flag after a fence (_publish_flagged).
_EMPTY = tl.constexpr(-1)
_FLAG_AGGREGATE = tl.constexpr(1)
_FLAG_PREFIX = tl.constexpr(2)


@triton.jit
def _affine_combine(a_first, b_first, a_second, b_second):
    """The map x -> a_second (a_first x + b_first) + b_second: `first` applied first."""
    return a_first * a_second, a_second * b_first + b_second


@triton.jit
def _take_chunk(counters, rows, num_channel_blocks, num_chunks, REVERSE: tl.constexpr, COUNTERS_FROM: tl.constexpr):
    """(row, chunk, channel block) of this program. A stream (row, channel block) hands out its chunks in order
    from its own atomic counter (chunk 0 first; the last first in reverse), so the chunk a program looks back to was
    taken, hence started, before it. One counter per stream: a single counter would serialise every program."""
    stream = tl.program_id(0) % (rows * num_channel_blocks)
    order = tl.atomic_add(counters + stream, 1) - COUNTERS_FROM
    chunk = num_chunks - 1 - order if REVERSE else order
    return stream // num_channel_blocks, chunk, stream % num_channel_blocks


@triton.jit
def _softmax_pair(z_coef, z_gate, FTZ: tl.constexpr = True):
    """softmax of the pair (z_coef, z_gate) with one exp: a = 1 / (1 + exp(-d)), g = 1 - a, d = z_coef - z_gate,
    each computed from exp(-|d|) <= 1, so both are accurate (no 1 - a cancellation) and finite."""
    d = z_coef - z_gate
    e = _exp(-tl.abs(d), FTZ)
    r = _reciprocal(1.0 + e, FTZ)
    return tl.where(d >= 0.0, r, e * r), tl.where(d >= 0.0, e * r, r)


@triton.jit
def _normalize_pair(z_coef, z_gate, ACT: tl.constexpr, FTZ: tl.constexpr = True):
    """The m = 1 case of `_normalize`: the coefficient a and input gate g of each (z_coef, z_gate) pair."""
    if ACT == 0:
        a, g = _softmax_pair(z_coef, z_gate, FTZ)
    elif ACT == 1:
        a, g = _softmax_pair(_logsigmoid(z_coef, FTZ), _logsigmoid(z_gate, FTZ), FTZ)
    else:
        c, g = _normalize(z_coef[:, :, None], z_gate, tl.full(z_coef.shape, 1, tl.int1)[:, :, None], 1, ACT, 2,
                          FTZ)
        a = tl.sum(c, axis=2)
    return a, g


@triton.jit
def _normalize_pair_bwd(z_coef, z_gate, d_a, d_g, ACT: tl.constexpr, FTZ: tl.constexpr = True):
    """Gradient of the pair's logits from (d a, d g); softmax: d z_coef = a g (d a - d g) = -d z_gate."""
    if ACT <= 1:
        if ACT == 0:
            a, g = _softmax_pair(z_coef, z_gate, FTZ)
        else:
            a, g = _softmax_pair(_logsigmoid(z_coef, FTZ), _logsigmoid(z_gate, FTZ), FTZ)
        dz = a * g * (d_a - d_g)
        dz_coef, dz_gate = dz, -dz
        if ACT == 1:
            dz_coef = dz_coef * _sigmoid_neg(z_coef, FTZ)
            dz_gate = dz_gate * _sigmoid_neg(z_gate, FTZ)
    else:
        ones = tl.full(z_coef.shape, 1, tl.int1)[:, :, None]
        dz_c, dz_gate = _normalize_bwd(z_coef[:, :, None], z_gate, ones, d_a[:, :, None], d_g, 1, ACT, 2, FTZ)
        dz_coef = tl.sum(dz_c, axis=2)
    return dz_coef, dz_gate


@triton.jit
def _load_gate_pairs(gates, gate_rows, k, row_mask, N, BT: tl.constexpr, BN: tl.constexpr):
    """(coefficient logits, input-gate logits) [BT, BN] of BN channels at BT time steps: the pairs are 2 BN contiguous
    logits per step, loaded as one wide [BT, 2 BN] block and split in registers."""
    z = tl.load(gates + gate_rows[:, None] + k[None, :], mask=row_mask[:, None] & (k < 2 * N)[None, :], other=0.0)
    return tl.split(tl.reshape(z.to(tl.float32), (BT, BN, 2)))


@triton.jit
def _sequence_bounds(t, b, T, cu_seqlens, seq_index, IS_VARLEN: tl.constexpr):
    """Per time step t [BT] of batch row b: (sequence id, is its first step, is its last step)."""
    if IS_VARLEN:
        seq = tl.load(seq_index + t, mask=t < T, other=0)
        start = tl.load(cu_seqlens + seq, mask=t < T, other=-1)
        end = tl.load(cu_seqlens + seq + 1, mask=t < T, other=-1)
    else:
        seq = t * 0 + b
        start = t * 0
        end = t * 0 + T
    return seq, t == start, t == end - 1


@triton.jit
def _bits(x):
    """float32 -> its int32 bits, NaN made canonical so that no value ever has the bits of _EMPTY."""
    return tl.where(x == x, x, float("nan")).to(tl.int32, bitcast=True)


@triton.jit
def _publish_aggregate(aggregates, index, mask, value_a, value_b):
    """Store each channel's map (a, b) as one 64-bit word: a in the high half, b in the low half."""
    high = _bits(value_a).to(tl.int64) << 32
    low = _bits(value_b).to(tl.int64) & 0xFFFFFFFF
    tl.store(aggregates + index, high | low, mask=mask)


@triton.jit
def _publish_prefix(prefixes, index, mask, value):
    tl.store(prefixes + index, _bits(value), mask=mask)


@triton.jit
def _look_back(aggregates, prefixes, b, chunk, rows, n, mn, N, STEP: tl.constexpr, BN: tl.constexpr):
    """The true carry entering `chunk`, per channel: compose the published maps of chunk - STEP, chunk - 2 STEP, ...
    until one has published its prefix. Every step reads a predecessor's prefix and aggregate words at once and
    retries the channels that found neither yet (that chunk is still loading)."""
    acc_a = tl.full((BN,), 1.0, tl.float32)
    acc_b = tl.zeros((BN,), tl.float32)
    carry = tl.zeros((BN,), tl.float32)
    j = tl.full((BN,), 0, tl.int32) + chunk - STEP  # each channel's predecessor
    searching = mn & (j >= 0)
    while tl.max(searching.to(tl.int32), axis=0) > 0:
        index = (j * rows + b).to(tl.int64) * N + n
        prefix = tl.load(prefixes + index, mask=searching, other=_EMPTY, volatile=True)
        word = tl.load(aggregates + index, mask=searching, other=_EMPTY, volatile=True)
        found_prefix = searching & (prefix != _EMPTY)
        found_map = searching & (prefix == _EMPTY) & (word != _EMPTY)
        carry = tl.where(found_prefix, acc_a * prefix.to(tl.float32, bitcast=True) + acc_b, carry)
        map_a = (word >> 32).to(tl.int32).to(tl.float32, bitcast=True)
        map_b = word.to(tl.int32).to(tl.float32, bitcast=True)
        acc_b = tl.where(found_map, acc_a * map_b + acc_b, acc_b)  # acc after the map: nearer maps composed first
        acc_a = tl.where(found_map, acc_a * map_a, acc_a)
        j = tl.where(found_map, j - STEP, j)
        searching = searching & ~found_prefix
    return carry


@triton.jit
def _publish_flagged(flags, flag_index, state_a, state_b, index, mask, value_a, value_b, flag: tl.constexpr):
    """Backward: store a chunk's per-channel map (a, b) or prefix (b only), then raise its flag for the other programs."""
    if state_a is not None:
        tl.store(state_a + index, value_a, mask=mask)
    tl.store(state_b + index, value_b, mask=mask)
    tl.debug_barrier()  # every thread's stores are done before one thread releases the flag
    tl.atomic_xchg(flags + flag_index, flag, sem="release", scope="gpu")


@triton.jit
def _look_back_flagged(flags, aggregate_a, aggregate_b, prefix, b, chunk, rows, num_channel_blocks, channel_block, n,
                       mn, N, STEP: tl.constexpr, BN: tl.constexpr):
    """Backward: the true carry entering `chunk`: compose the published maps of chunk - STEP, chunk - 2 STEP, ...
    until one has published its prefix (spinning while a chunk has published nothing yet). The forward's flag-free
    `_look_back` was faster forward at every shape measured, but slower in the backward at B8 T4096 D1024
    (NOTES_scan.md), so the backward keeps this one for now."""
    acc_a = tl.full((BN,), 1.0, tl.float32)
    acc_b = tl.zeros((BN,), tl.float32)
    j = chunk - STEP
    searching = j >= 0
    while searching:
        flag_index = (j * rows + b) * num_channel_blocks + channel_block
        flag = tl.atomic_add(flags + flag_index, 0, sem="acquire", scope="gpu")
        while flag == 0:
            flag = tl.atomic_add(flags + flag_index, 0, sem="acquire", scope="gpu")
        index = (j * rows + b).to(tl.int64) * N + n
        is_prefix = flag == _FLAG_PREFIX
        if is_prefix:
            x_a = tl.zeros((BN,), tl.float32)
            x_b = tl.load(prefix + index, mask=mn, other=0.0, volatile=True)
        else:
            x_a = tl.load(aggregate_a + index, mask=mn, other=0.0, volatile=True)
            x_b = tl.load(aggregate_b + index, mask=mn, other=0.0, volatile=True)
        acc_b = acc_a * x_b + acc_b  # acc after x: the maps nearer the chunk were composed first
        acc_a = acc_a * x_a
        searching = flag != _FLAG_PREFIX
        j -= STEP
    return acc_b


@_heuristics({
    "HAS_H0": lambda args: args["initial_state"] is not None,
    "WRITE_FINAL": lambda args: args["final_state"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
})
@triton.jit
def _first_order_fwd_kernel(
    gates, values, initial_state, states, final_state, cu_seqlens, seq_index, counters, aggregates, prefixes,
    T, N, rows, num_chunks, num_channel_blocks, stride_gates_b, stride_gates_t,
    ACT: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr, PREFIX_EVERY: tl.constexpr,
    HAS_H0: tl.constexpr, WRITE_FINAL: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """states[b, t, n] = a s_{t-1} + g v (a, g: the normalised gate pair) for one [BT, BN] chunk; see above."""
    b, chunk, channel_block = _take_chunk(counters, rows, num_channel_blocks, num_chunks, REVERSE=False,
                                          COUNTERS_FROM=-1)  # the workspace's fill value
    t = chunk * BT + tl.arange(0, BT)
    n = channel_block * BN + tl.arange(0, BN)
    mt, mn = t < T, n < N
    mask = mt[:, None] & mn[None, :]
    row = b.to(tl.int64) * T + t  # [BT] flat (row, time) index
    k = channel_block * 2 * BN + tl.arange(0, 2 * BN)  # this block's logits within a time step
    gate_rows = b.to(tl.int64) * stride_gates_b + t.to(tl.int64) * stride_gates_t  # [BT]: stride 0 if expanded
    z_coef, z_gate = _load_gate_pairs(gates, gate_rows, k, mt, N, BT, BN)
    a, c_gate = _normalize_pair(z_coef, z_gate, ACT)
    v = tl.load(values + row[:, None] * N + n[None, :], mask=mask, other=0.0).to(tl.float32)
    seq, is_start, is_end = _sequence_bounds(t, b, T, cu_seqlens, seq_index, IS_VARLEN)
    step_b = c_gate * v
    if HAS_H0:  # a sequence's first step reads the initial state
        h0 = tl.load(initial_state + seq[:, None].to(tl.int64) * N + n[None, :], mask=is_start[:, None] & mask,
                     other=0.0)
        step_b += a * h0
    step_a = tl.where(is_start[:, None], 0.0, a)
    step_a = tl.where(mt[:, None], step_a, 1.0)  # steps past T: the identity
    step_b = tl.where(mt[:, None], step_b, 0.0)
    decay, local = tl.associative_scan((step_a, step_b), 0, _affine_combine)  # carry 0 into the chunk
    last = (tl.arange(0, BT) == BT - 1)[:, None]
    chunk_a = tl.sum(tl.where(last, decay, 0.0), axis=0)  # the chunk's map: s_end = chunk_a s_in + chunk_b
    chunk_b = tl.sum(tl.where(last, local, 0.0), axis=0)
    index = (chunk * rows + b).to(tl.int64) * N + n
    carry = tl.zeros((BN,), tl.float32)
    if chunk > 0:
        _publish_aggregate(aggregates, index, mn, chunk_a, chunk_b)
        carry = _look_back(aggregates, prefixes, b, chunk, rows, n, mn, N, STEP=1, BN=BN)
    if chunk % PREFIX_EVERY == 0:
        _publish_prefix(prefixes, index, mn, chunk_a * carry + chunk_b)
    s = local + decay * carry[None, :]
    tl.store(states + row[:, None] * N + n[None, :], s.to(states.dtype.element_ty), mask=mask)
    if WRITE_FINAL:
        tl.store(final_state + seq[:, None].to(tl.int64) * N + n[None, :], s, mask=is_end[:, None] & mask)


@_heuristics({
    "HAS_H0": lambda args: args["initial_state"] is not None,
    "HAS_D_FINAL": lambda args: args["d_final"] is not None,
    "WRITE_D_H0": lambda args: args["d_initial_state"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
})
@triton.jit
def _first_order_bwd_kernel(
    gates, values, initial_state, states, d_states, d_final, d_gates, d_values, d_initial_state,
    cu_seqlens, seq_index, flags, counters, aggregate_a, aggregate_b, prefix,
    T, N, rows, num_chunks, num_channel_blocks, stride_gates_b, stride_gates_t,
    ACT: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr, PREFIX_EVERY: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_D_FINAL: tl.constexpr, WRITE_D_H0: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """Reverse-time chunk of the adjoint l_t = dS_t + a_{t+1} l_{t+1} (l at a sequence's last step = dS + d_final),
    then d a_t = l_t s_{t-1}, d g_t = l_t v_t, d v_t = l_t g_t through the normalisation, d h0 = a_start l_start."""
    b, chunk, channel_block = _take_chunk(counters, rows, num_channel_blocks, num_chunks, REVERSE=True, COUNTERS_FROM=0)
    t = chunk * BT + tl.arange(0, BT)
    n = channel_block * BN + tl.arange(0, BN)
    mt, mn = t < T, n < N
    mask = mt[:, None] & mn[None, :]
    row = b.to(tl.int64) * T + t
    k = channel_block * 2 * BN + tl.arange(0, 2 * BN)
    mk = (k < 2 * N)[None, :]
    seq, is_start, is_end = _sequence_bounds(t, b, T, cu_seqlens, seq_index, IS_VARLEN)
    # the scan needs a_{t+1}: the logits one row on
    gate_rows = b.to(tl.int64) * stride_gates_b + t.to(tl.int64) * stride_gates_t  # [BT]: stride 0 if expanded
    zn_coef, zn_gate = _load_gate_pairs(gates, gate_rows + stride_gates_t, k, t + 1 < T, N, BT, BN)
    # Triton's exp and reciprocal (FTZ=False) in this kernel: with the .ftz forms ptxas gives it 126 registers instead
    # of 96 (B1 T16384 D1024 forward+backward 0.260 -> 0.276 ms; bench_results/probes_2026-12-03d/)
    a_next, _ = _normalize_pair(zn_coef, zn_gate, ACT, False)
    d_s = tl.load(d_states + row[:, None] * N + n[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_D_FINAL:
        d_s += tl.load(d_final + seq[:, None].to(tl.int64) * N + n[None, :], mask=is_end[:, None] & mask, other=0.0)
    step_a = tl.where(is_end[:, None] | (~mt)[:, None], 0.0, a_next)
    step_b = tl.where(mt[:, None], d_s, 0.0)
    decay, local = tl.associative_scan((step_a, step_b), 0, _affine_combine, reverse=True)  # carry 0 from the right
    first = (tl.arange(0, BT) == 0)[:, None]
    chunk_a = tl.sum(tl.where(first, decay, 0.0), axis=0)  # l_first = chunk_a l_in + chunk_b
    chunk_b = tl.sum(tl.where(first, local, 0.0), axis=0)
    index = (chunk * rows + b).to(tl.int64) * N + n
    flag_index = (chunk * rows + b) * num_channel_blocks + channel_block
    carry = tl.zeros((BN,), tl.float32)
    if chunk < num_chunks - 1:
        _publish_flagged(flags, flag_index, aggregate_a, aggregate_b, index, mn, chunk_a, chunk_b, _FLAG_AGGREGATE)
        carry = _look_back_flagged(flags, aggregate_a, aggregate_b, prefix, b, chunk, rows, num_channel_blocks,
                                   channel_block, n, mn, N, STEP=-1, BN=BN)
    if (num_chunks - 1 - chunk) % PREFIX_EVERY == 0:
        _publish_flagged(flags, flag_index, None, prefix, index, mn, chunk_a, chunk_a * carry + chunk_b, _FLAG_PREFIX)
    adjoint = local + decay * carry[None, :]
    # then the step's own logits (the block just read, shifted by a row: from the cache), s_{t-1} and v_t
    z_coef, z_gate = _load_gate_pairs(gates, gate_rows, k, mt, N, BT, BN)
    a, g = _normalize_pair(z_coef, z_gate, ACT, False)
    # s_{t-1}: the saved states one row back, or the initial state (0 without one) at a sequence's first step
    s_prev = tl.load(states + (row - 1)[:, None] * N + n[None, :], mask=(~is_start)[:, None] & mask,
                     other=0.0).to(tl.float32)
    if HAS_H0:
        s_prev += tl.load(initial_state + seq[:, None].to(tl.int64) * N + n[None, :], mask=is_start[:, None] & mask,
                          other=0.0)
    v = tl.load(values + row[:, None] * N + n[None, :], mask=mask, other=0.0).to(tl.float32)
    dz_coef, dz_gate = _normalize_pair_bwd(z_coef, z_gate, adjoint * s_prev, adjoint * v, ACT, False)
    dz = tl.reshape(tl.join(dz_coef, dz_gate), (BT, 2 * BN))
    tl.store(d_gates + row[:, None] * (2 * N) + k[None, :], dz.to(d_gates.dtype.element_ty), mask=mt[:, None] & mk)
    tl.store(d_values + row[:, None] * N + n[None, :], (adjoint * g).to(d_values.dtype.element_ty), mask=mask)
    if WRITE_D_H0:
        tl.store(d_initial_state + seq[:, None].to(tl.int64) * N + n[None, :], a * adjoint,
                 mask=is_start[:, None] & mask)


# ----------------------------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------------------------
def _next_pow2(x):
    return 1 << max(0, int(x) - 1).bit_length()


def _cdiv(a, b):
    return -(-a // b)


def _block(m, nvp, N):
    """Channels per program of the H-LRU tile kernels, so that a program holds ~2K float32 per register tile (BD-LRU's
    run one block per program, `_bdlru_tile_launch`)."""
    per_unit = nvp * _next_pow2(m)
    budget = 1024 if _INTERPRET else 2048
    blk = max(1, min(128, budget // per_unit))
    blk = min(blk, _next_pow2(max(N, 1)))
    return _next_pow2(blk) if blk & (blk - 1) else blk


def _num_warps(blk, m, nvp):
    """Warps of an H-LRU tile program of `blk` channels: one per 256 float32 of its register tile, 1 to 8."""
    return int(max(1, min(8, blk * nvp * _next_pow2(m) // 256)))


def _warn_large(op, m, limit):
    if m > limit and (op, m) not in _WARNED:
        _WARNED.add((op, m))
        warnings.warn(
            f"{op}: m={m} is above the tuned range (<= {limit}); the Triton kernel stays correct but holds larger "
            "register tiles and runs slower.",
            stacklevel=3,
        )


class _Plan:
    """How the time axis is split: segments (sequences or chunks) and their tables."""

    first_order = False

    def __init__(self, B, T, cu_seqlens, lens, chunk_size, device):
        """lens: the packed sequence lengths when cu_seqlens is given (read from the device once), else None."""
        varlen = cu_seqlens is not None
        if varlen:
            self.S = len(lens)
            self.cu = cu_seqlens.to(device=device, dtype=torch.int32)
        else:
            self.S = B
            self.cu = None
        max_len = max(lens) if varlen else T
        chunk_size = int(chunk_size or 0)
        if chunk_size <= 0 or chunk_size >= max_len:
            self.chunked = False
            self.CS = max(T, 1) + (1 if varlen else 0)
            self.NC = 1
            self.num_segs = self.S
            self.tab = None
            self.cuc = None
        else:
            self.chunked = True
            self.CS = chunk_size
            if varlen:
                ncs = [max(1, _cdiv(length, chunk_size)) for length in lens]
                tab = [(s, c) for s, k in enumerate(ncs) for c in range(k)]
                self.tab = torch.tensor(tab, dtype=torch.int32).to(device)
                cuc = [0]
                for k in ncs:
                    cuc.append(cuc[-1] + k)
                self.cuc = torch.tensor(cuc, dtype=torch.int32).to(device)
                self.NC = 1
                self.num_segs = len(tab)
            else:
                self.NC = _cdiv(T, chunk_size)
                self.num_segs = B * self.NC
                self.tab = None
                self.cuc = None


# Chunked-mode policy of the [m, m] tile kernels (BD-LRU m > _BLOCK_PER_THREAD_MAX_M), from H200 measurements at
# m = 16 with one block per program (`_bdlru_tile_launch`) and the aggregates by tl.dot
# (bench_results/probes_2026-12-01/dot_aggregates/): the sequential kernel costs about _TILE_STEP_US per time step
# (0.67 us at B8 T4096 D1024, 0.51 at B1 T16384) until bandwidth-bound (~0.7 TB/s: 7.9-8.3 ms at B32 T2048 D2048);
# the chunked mode costs about _CHUNK_NS_TILES ns per token-channel (0.26-0.28 at those three shapes), growing with m
# (it carries m + 1 vectors): 2.0 assumed beyond m = 16, where nothing was measured.
_TILE_STEP_US = 0.6
_CHUNK_NS_TILES = 0.27


def _chunk_length(max_len):
    """Phases 1 and 3 walk a chunk one step at a time and phase 2 walks the chunks, ~2 CS + T / CS dependent
    steps in all: smallest near CS = sqrt(T / 2), rounded to a power of two, at least 32."""
    cs = 1 << max(5, round(math.log2(math.sqrt(max_len / 2))))
    return 0 if cs >= max_len else cs


def _resident_threads_per_sm(blocked, m):
    """Threads an SM keeps resident in the per-thread kernels: THREADS_PER_SM, except where registers cap it. A
    BD-LRU thread holds m (m + 1) gate logits per step, so its registers grow as m^2 (ptxas, sm_90: 40 / ~110 / all
    255 at m = 2 / 4 / 8), and the 64K registers of an SM fit THREADS_PER_SM x 16 / m^2 threads from m = 4 on."""
    if blocked and m > 4:
        return THREADS_PER_SM * 16 // (m * m)
    return THREADS_PER_SM


def _block_per_thread_chunk(S, N, max_len, num_sms, threads_per_sm):
    """Chunk length of the per-thread kernels: the S x N x (T / CS) threads of a phase should give each SM the
    threads it keeps resident (`_resident_threads_per_sm`; fewer leave it waiting on memory, more only lengthen the
    carry over chunks), so CS is the power of two just below S N T / (SMs x threads), and never shorter than
    `_chunk_length`'s latency optimum."""
    fill = S * N * max_len / (num_sms * threads_per_sm)
    if fill >= max_len:
        return 0
    cs = max(1 << max(0, int(math.log2(max(fill, 1.0)))), _chunk_length(max_len))
    return 0 if cs >= max_len else cs


def _auto_chunk(S, N, m, blocked, max_len, num_sms=132):  # num_sms: `_num_sms` of the inputs' device
    """Chunk length for the time-parallel mode, or 0 (sequential) when that is faster."""
    if _block_per_thread(blocked, m) or (_channel_per_thread(blocked, m) and m > 1):
        threads_per_sm = _resident_threads_per_sm(blocked, m)
        return _block_per_thread_chunk(S, N, max_len, num_sms, threads_per_sm) if max_len >= 64 else 0
    if max_len < 512:
        return 0
    if not blocked:  # H-LRU tiles: m = 1 under deterministic algorithms, or m > 8
        # measured: chunking wins for m <= 2 at every shape, and for larger orders below ~4K channel chains
        return _chunk_length(max_len) if (m <= 2 or S * N < 4096) else 0
    channels = N * m
    seq_ms = max(max_len * _TILE_STEP_US * 1e-3, S * max_len * channels * (m + 3) * 2 / 0.7e9)
    k = _CHUNK_NS_TILES if m <= 16 else 2.0
    chunk_ms = S * max_len * channels * k * 1e-6
    return _chunk_length(max_len) if chunk_ms < 0.8 * seq_ms else 0


@torch.compiler.assume_constant_result
def _cuda_sm_count(index: int) -> int:
    """CUDA device `index`'s SM count; torch.compile calls it once while tracing and keeps the number (tracing
    into torch.cuda.get_device_properties would break the graph of a traced caller)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def _num_sms(device):
    """Streaming multiprocessors of `device` (132, an H200's, for the interpreter)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 132
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


class _FirstOrderPlan:
    """m = 1 with the automatic policy: the single-pass look-back kernels (they need no host sync to plan)."""

    first_order = True

    def __init__(self, cu_seqlens):
        self.cu = cu_seqlens


def _make_plan(B, T, N, m, blocked, cu_seqlens, chunk_size, device):
    # the look-back may round differently between runs: torch.use_deterministic_algorithms(True) keeps the old kernels.
    # One step (a decode step) has nothing to look back over: the sequential kernel runs it in one launch, without the
    # look-back's filled workspace and final-state copy (two more kernels per layer and token)
    if m == 1 and chunk_size is None and not torch.are_deterministic_algorithms_enabled() \
            and not (T == 1 and cu_seqlens is None):
        return _FirstOrderPlan(None if cu_seqlens is None else cu_seqlens.to(device))
    lens = None
    if cu_seqlens is not None:
        bounds = cu_seqlens.tolist()
        lens = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    if chunk_size is None and not _INTERPRET:
        S, max_len = (len(lens), max(lens)) if lens is not None else (B, T)
        chunk_size = _auto_chunk(S, N, m, blocked, max_len, _num_sms(device))
    return _Plan(B, T, cu_seqlens, lens, chunk_size, device)


def _prep_gates(gates, blocked):
    """gates with contiguous logits inside each time step (a copy only if they are not), and its batch and time
    strides: gates expanded over batch and time (a learned parameter, stride 0) are read in place."""
    inner = gates.shape[2:]
    ok = True
    expect = 1
    for size, stride in zip(reversed(inner), reversed(gates.stride()[2:])):
        if size != 1 and stride != expect:
            ok = False
            break
        expect *= size
    if not ok:
        gates = gates.contiguous()
    return gates, gates.stride(0), gates.stride(1)


# BD-LRU blocks of at most this size run one block per thread (`_bdlru_*_block_per_thread_kernel`: no reductions
# across lanes). On the H200 (CUDA kernel time, bf16) against the [m, m] tiles: at m = 4 the forward is 2.2-4.6x
# faster; at m = 8 the forward 4.9x / 6.5x / 5.0x and the backward 8.0x / 9.0x / 8.7x at B8 T4096 / B1 T16384 /
# B8 T2048 D768, and at B32 T2048 D2048 the backward 1.7x with the forward 3 % slower (4.25 against 4.14 ms;
# bench_results/probes_2026-11-30c/m8_probe.txt; the same 4.15 since chunks follow `_resident_threads_per_sm`).
# From m = 8 on the loads are issued one step ahead (`AHEAD`): a thread holds m (m + 1) logits per step, and two
# steps ahead spilled up to 284 bytes under ptxas. Larger blocks keep the tiles.
# Programs hold BLOCK_PER_THREAD_BLOCKS blocks (one warp per 32); the chunked mode aims at THREADS_PER_SM resident
# threads per SM, fewer where registers cap them (`_resident_threads_per_sm`).
_BLOCK_PER_THREAD_MAX_M = 8
_CHANNEL_PER_THREAD_MAX_M = 8  # H-LRU: m + 1 logits and m window entries per thread and step
BLOCK_PER_THREAD_BLOCKS = 16 if _INTERPRET else 64  # the interpreter: several programs in small tests
THREADS_PER_SM = 1024


def _block_per_thread(blocked, m):
    """BD-LRU blocks this small run one block per thread (`_bdlru_*_block_per_thread_kernel`)."""
    return blocked and m <= _BLOCK_PER_THREAD_MAX_M


def _channel_per_thread(blocked, m):
    """H-LRU orders this small run one channel per thread (`_hlru_*_channel_per_thread_kernel`)."""
    return not blocked and m <= _CHANNEL_PER_THREAD_MAX_M


def _store_widths(**counts):
    """Launch keywords of `_store_contiguous` tiles: NAME = the power of two >= max(2, count), LOG2_NAME its log."""
    widths = {name: max(2, _next_pow2(count)) for name, count in counts.items()}
    return {**widths, **{f"LOG2_{name}": width.bit_length() - 1 for name, width in widths.items()}}


# The BD-LRU [m, m] tile kernels (m > _BLOCK_PER_THREAD_MAX_M) run one block per program, the main phase in as many
# warps (1, 2 or 4) as leave about TILE_WARPS_PER_SM warps on each SM, the aggregate phase in 2. At m = 16 on the H200
# that took the sequential forward+backward from 18.7 to 7.3 ms at B8 T4096 D1024 (512 programs, 4 warps each; 8
# blocks in 8 warps before) and from 35.6 to 17.9 ms at B32 T2048 D2048 (4096 programs, 1 warp; 4 warps: 20.9); the
# chunked mode's aggregate phase ran 5 % faster in 2 warps than in 8, 40 % slower in 4
# (bench_results/probes_2026-12-01/dot_aggregates/blocks.txt).
TILE_WARPS_PER_SM = 16
# The [m, m] tile kernels' aggregate phase (BD-LRU m > 8) multiplies its m + 1 carried vectors by each step's tile with
# tl.dot at this input precision, or (None) as a broadcast product summed over lanes. At m = 16 on the H200, chunks
# of 128 (bench_results/probes_2026-12-01/dot_aggregates/dot_aggregates.txt), forward / forward+backward: "ieee"
# (float32 FMAs, as exact as the broadcast product) 9.3 / 20.2 ms against 19.9 / 109 ms at B8 T4096 D1024 and 4.8 /
# 10.4 against 10.1 / 55.4 at B1 T16384 D1024; "tf32x3" (three TF32 tensor-core products) was slower (12.0 / 29.0 at
# B8) and no more exact, "tf32" 1e-3 off the float64 reference.
_AGGREGATE_DOT_PRECISION = "ieee"


def _bdlru_tile_launch(phase, programs, device):
    """(BLOCK, num_warps) of a BD-LRU tile kernel's `phase` over `programs` blocks x segments on `device`."""
    if phase == "agg":
        return 1, 2
    per_sm = programs / _num_sms(device)
    return 1, 1 << min(2, int(math.log2(max(TILE_WARPS_PER_SM / per_sm, 1.0))))


def _launch(kind, blocked, m, N, act, plan, phase, device):
    """(kernel, grid, launch keywords) of the sequential / chunked kernels for `kind` "fwd" or "bwd" and phase "agg"
    (chunk aggregates) or "main", on the inputs' `device`."""
    if _channel_per_thread(blocked, m) or _block_per_thread(blocked, m):
        if blocked:
            kernel = _bdlru_fwd_block_per_thread_kernel if kind == "fwd" else _bdlru_bwd_block_per_thread_kernel
            widths = _store_widths(MP=m) if kind == "fwd" else _store_widths(MP=m, GP=m * (m + 1))
            # loads issued two steps ahead, or one from m = 8 on: m (m + 1) logits per step and thread
            widths["AHEAD"] = 1 if m >= 8 else 2
        else:
            kernel = _hlru_fwd_channel_per_thread_kernel if kind == "fwd" else _hlru_bwd_channel_per_thread_kernel
            # readout: the decode step's window in the values' dtype, which `_forward_launch` may ask for
            widths = dict(readout=None) if kind == "fwd" else _store_widths(GP=m + 1)
        block = min(BLOCK_PER_THREAD_BLOCKS, _next_pow2(N))
        shape = dict(NV=m + 1 if phase == "agg" else 1, num_warps=max(1, block // 32), **widths)
    else:
        if kind == "fwd":
            kernel = _bdlru_fwd_kernel if blocked else _hlru_fwd_kernel
        else:
            kernel = _bdlru_bwd_kernel if blocked else _hlru_bwd_kernel
        nvp = _next_pow2(m + 1) if phase == "agg" else 1
        if blocked:  # the aggregate phase by tl.dot, which takes no dimension under 16 (MP >= 16 from m = 9 on)
            block, warps = _bdlru_tile_launch(phase, plan.num_segs * N, device)
            dot = dict(DOT=_AGGREGATE_DOT_PRECISION is not None and nvp >= 16,
                       DOT_PRECISION=_AGGREGATE_DOT_PRECISION or "ieee")
        else:
            block = _block(m, nvp, N)
            warps, dot = _num_warps(block, m, nvp), {}
        shape = dict(MP=_next_pow2(m), NVP=nvp, num_warps=warps, **dot)
    grid = (plan.num_segs, _cdiv(N, block))
    return kernel, grid, dict(cu_seqlens=plan.cu, segment_table=plan.tab, chunk_size=plan.CS, num_chunks=plan.NC,
                              M=m, AFF=m if phase == "agg" else 0, BLOCK=block, ACT=act, **shape)


def _carry(aggregates, initial_state, plan, N, m, reverse):
    """Phase 2 of the chunked mode: the carried state entering every segment."""
    mp = _next_pow2(m)
    carries = torch.empty(plan.num_segs, N, m, device=aggregates.device, dtype=torch.float32)
    block = max(1, min(128, _next_pow2(N), 2048 // (mp * mp)))
    _carry_kernel[(plan.S, _cdiv(N, block))](
        aggregates=aggregates, initial_state=initial_state, carries=carries, chunk_offsets=plan.cuc, N=N,
        num_chunks=plan.NC, M=m, MP=mp, BLOCK=block, REVERSE=reverse, num_warps=4)
    return carries


def _device_guard(device):
    """Make `device` current while kernels are launched: Triton launches on the current CUDA device (and its
    stream), so a model on cuda:1, or split over devices, would otherwise run its scans on cuda:0. A no-op for CPU
    tensors (the interpreter). Every launch goes through `_forward` / `_backward`, which enter this guard."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _forward(blocked, gates, values, h0, act, want_final, plan):
    """Forward launches on the device of the inputs; returns (states, final state or None)."""
    with _device_guard(values.device):
        if plan.first_order:
            return _first_order_forward(gates, values, h0, act, want_final, plan.cu)
        return _forward_launch(blocked, gates, values, h0, act, want_final, plan)


def _backward(blocked, gates, values, states, h0, act, plan, d_states, d_final):
    """Backward launches on the device of the inputs; returns (d gates, d values, d initial state or None)."""
    with _device_guard(values.device):
        if plan.first_order:
            return _first_order_backward(gates, values, states, h0, act, plan.cu, d_states, d_final)
        return _backward_launch(blocked, gates, values, states, h0, act, plan, d_states, d_final)


# Tile of one first-order program: BT time steps x BN channels. 32 x 32 with 2 warps was the fastest of 15 tiles
# on the H200 at B8 T4096 D1024, B32 T2048 D2048 and B1 T16384 D1024 (`scripts/bench_scan.py --first_order_tiles`):
# larger tiles hold more registers per thread and lose occupancy, smaller ones pay more look-backs. The interpreter
# uses 16 x 16 so that tests cover several chunks and channel blocks.
FIRST_ORDER_TILE = {"BT": 32, "BN": 32, "num_warps": 2}
# Tests only: publish the prefix of every k-th chunk alone, so that look-backs must compose aggregates (the
# interpreter runs programs one after another, so otherwise every look-back finds a prefix at once).
_PREFIX_EVERY = 1


def _first_order_launch(kernel, B, T, N, cu_seqlens, device, **tensors):
    """Launch one first-order kernel over every (row, chunk, channel block), with its look-back workspace."""
    if _INTERPRET:
        bt, bn, num_warps = 16, 16, 1
    else:
        bt, bn, num_warps = FIRST_ORDER_TILE["BT"], FIRST_ORDER_TILE["BN"], FIRST_ORDER_TILE["num_warps"]
    bt, bn = min(bt, max(16, _next_pow2(T))), min(bn, max(16, _next_pow2(N)))
    num_chunks, num_channel_blocks = _cdiv(T, bt), _cdiv(N, bn)
    programs = B * num_chunks * num_channel_blocks
    if programs == 0:
        return
    streams = B * num_channel_blocks
    words = num_chunks * B * N
    if kernel is _first_order_fwd_kernel:
        # one fill for the whole workspace, every word _EMPTY (-1): aggregates (int64 per channel and chunk), prefixes
        # (int32), then the stream counters (int32, counting from -1)
        workspace = torch.full((3 * words + streams,), -1, dtype=torch.int32, device=device)
        look_back = dict(counters=workspace[3 * words:], aggregates=workspace[:2 * words].view(torch.int64),
                         prefixes=workspace[2 * words:3 * words])
    else:
        flags = torch.zeros(programs + streams, dtype=torch.int32, device=device)  # chunk flags, then stream counters
        maps = torch.empty(3, words, dtype=torch.float32, device=device)  # aggregate a, b; prefix
        look_back = dict(flags=flags, counters=flags[programs:], aggregate_a=maps[0], aggregate_b=maps[1],
                         prefix=maps[2])
    seq_index = None
    if cu_seqlens is not None:  # the sequence of every packed step, on the device (no host sync)
        steps = torch.arange(T, device=device, dtype=cu_seqlens.dtype)
        seq_index = (torch.searchsorted(cu_seqlens, steps, right=True) - 1).to(torch.int32)
    gates = tensors["gates"]
    kernel[(programs,)](
        **tensors, stride_gates_b=gates.stride(0), stride_gates_t=gates.stride(1),
        cu_seqlens=cu_seqlens, seq_index=seq_index, **look_back, T=T, N=N, rows=B, num_chunks=num_chunks,
        num_channel_blocks=num_channel_blocks, BT=bt, BN=bn, PREFIX_EVERY=_PREFIX_EVERY, num_warps=num_warps)


def _first_order_forward(gates, values, h0, act, want_final, cu_seqlens):
    """H-LRU / BD-LRU with m = 1: (states in values.dtype, final state [S, N, 1] float32 or None)."""
    B, T, N = values.shape[:3]
    S = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    z, _, _ = _prep_gates(gates, False)  # no copy for gates expanded over batch and time: the kernels take strides
    v = values.reshape(B, T, N).contiguous()
    states = torch.empty_like(v)
    h0 = h0.reshape(S, N).contiguous() if h0 is not None else None
    final = None
    if want_final:  # an empty packed sequence keeps its initial state; the kernel writes every other one
        final = h0.clone() if h0 is not None else torch.zeros(S, N, device=v.device, dtype=torch.float32)
    _first_order_launch(_first_order_fwd_kernel, B, T, N, cu_seqlens, v.device, gates=z, values=v,
                        initial_state=h0, states=states, final_state=final, ACT=act)
    return states.view(values.shape), None if final is None else final.view(S, N, 1)


def _first_order_backward(gates, values, states, h0, act, cu_seqlens, d_states, d_final):
    """(d gates in gates.dtype, d values in values.dtype, d initial state [S, N, 1] float32 or None)."""
    B, T, N = values.shape[:3]
    S = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    z, _, _ = _prep_gates(gates, False)  # no copy for gates expanded over batch and time: the kernels take strides
    v = values.reshape(B, T, N).contiguous()
    d_s = torch.zeros_like(v) if d_states is None else d_states.reshape(B, T, N).contiguous()
    d_fin = d_final.reshape(S, N).float().contiguous() if d_final is not None else None
    h0 = h0.reshape(S, N).contiguous() if h0 is not None else None
    d_h0 = None
    if h0 is not None:  # an empty packed sequence passes d_final straight to its initial state
        d_h0 = d_fin.clone() if d_fin is not None else torch.zeros(S, N, device=v.device, dtype=torch.float32)
    d_gates = torch.empty((B, T, 2 * N), device=v.device, dtype=gates.dtype)  # full size even for expanded gates
    d_values = torch.empty_like(v)
    _first_order_launch(_first_order_bwd_kernel, B, T, N, cu_seqlens, v.device, gates=z, values=v,
                        initial_state=h0, states=states.reshape(B, T, N).contiguous(), d_states=d_s, d_final=d_fin,
                        d_gates=d_gates, d_values=d_values, d_initial_state=d_h0, ACT=act)
    return (d_gates.view(gates.shape), d_values.view(values.shape),
            None if d_h0 is None else d_h0.view(S, N, 1))


def _forward_launch(blocked, gates, values, h0, act, want_final, plan, final=None, readout=None):
    """final: where the final state goes (`scan_step_in_place`: h0 itself), or None for a new tensor. readout: where the
    H-LRU per-thread kernel writes the final window in readout's dtype, or None."""
    T, N = values.shape[1:3]
    m = gates.shape[-1] - 1
    gates, stride_gates_b, stride_gates_t = _prep_gates(gates, blocked)
    values = values.contiguous()
    states = torch.empty_like(values)
    if final is None and want_final:
        final = torch.empty(plan.S, N, m, device=values.device, dtype=torch.float32)
    h0 = h0.contiguous() if h0 is not None else None
    inputs = dict(gates=gates, values=values, stride_gates_b=stride_gates_b, stride_gates_t=stride_gates_t, T=T, N=N)
    h0_per_segment = False
    if plan.chunked:  # phase 1: each chunk's transition; phase 2: the state entering each chunk
        kernel, grid, kw = _launch("fwd", blocked, m, N, act, plan, "agg", values.device)
        aggregates = torch.empty(plan.num_segs, N, m + 1, m, device=values.device, dtype=torch.float32)
        kernel[grid](**inputs, states=None, initial_state=None, final_state=None, aggregates=aggregates,
                     H0_PER_SEG=False, **kw)
        h0, h0_per_segment = _carry(aggregates, h0, plan, N, m, reverse=False), True
        del aggregates
    kernel, grid, kw = _launch("fwd", blocked, m, N, act, plan, "main", values.device)
    if readout is not None:
        if "readout" not in kw:
            raise ValueError(f"a read-out is written by the H-LRU per-thread kernel only, not {kernel.fn.__name__}")
        kw["readout"] = readout
    kernel[grid](**inputs, states=states, initial_state=h0, final_state=final, aggregates=None,
                 H0_PER_SEG=h0_per_segment, **kw)
    return states, final


def _backward_launch(blocked, gates, values, states, h0, act, plan, d_states, d_final):
    T, N = values.shape[1:3]
    m = gates.shape[-1] - 1
    gates_dtype = gates.dtype
    gates, stride_gates_b, stride_gates_t = _prep_gates(gates, blocked)
    values = values.contiguous()
    d_states = torch.zeros_like(values) if d_states is None else d_states.contiguous()
    d_final = d_final.float().contiguous() if d_final is not None else None
    h0 = h0.contiguous() if h0 is not None else None
    d_gates = torch.empty(gates.shape, device=values.device, dtype=gates_dtype)
    d_values = torch.empty_like(values)
    d_h0 = torch.empty(plan.S, N, m, device=values.device, dtype=torch.float32) if h0 is not None else None
    inputs = dict(gates=gates, values=values, states=states, d_states=d_states, initial_state=h0,
                  stride_gates_b=stride_gates_b, stride_gates_t=stride_gates_t, T=T, N=N)
    d_final_per_segment = False
    if plan.chunked:  # phase 1: each chunk's adjoint transition; phase 2: the adjoint entering each chunk
        kernel, grid, kw = _launch("bwd", blocked, m, N, act, plan, "agg", values.device)
        aggregates = torch.empty(plan.num_segs, N, m + 1, m, device=values.device, dtype=torch.float32)
        kernel[grid](**inputs, d_final=None, d_gates=None, d_values=None, d_initial_state=None, aggregates=aggregates,
                     DHT_PER_SEG=False, **kw)
        d_final, d_final_per_segment = _carry(aggregates, d_final, plan, N, m, reverse=True), True
        del aggregates
    kernel, grid, kw = _launch("bwd", blocked, m, N, act, plan, "main", values.device)
    kernel[grid](**inputs, d_final=d_final, d_gates=d_gates, d_values=d_values, d_initial_state=d_h0, aggregates=None,
                 DHT_PER_SEG=d_final_per_segment, **kw)
    return d_gates, d_values, d_h0


def scan_forward(blocked, gates, values, initial_state, act, want_final, cu_seqlens, chunk_size, plan=None):
    """The host side of a forward, shared by the autograd Function below and the custom ops of ops.py: plan the
    launch (unless given), run it on the inputs' device. Returns (states, final state or None, plan)."""
    m = gates.shape[-1] - 1
    _warn_large("bdlru_scan" if blocked else "hlru_scan", m, 16 if blocked else 8)
    if plan is None:
        B, T, N = values.shape[:3]
        plan = _make_plan(B, T, N, m, blocked, cu_seqlens, chunk_size, values.device)
    h0 = initial_state.float() if initial_state is not None else None
    states, final = _forward(blocked, gates, values, h0, act, want_final, plan)
    return states, final, plan


def scan_backward(blocked, gates, values, states, initial_state, d_states, d_final, act, cu_seqlens, chunk_size,
                  plan=None):
    """The host side of a backward (see `scan_forward`): (d gates shaped like gates, d values, d initial state in
    float32 or None)."""
    if plan is None:
        B, T, N = values.shape[:3]
        plan = _make_plan(B, T, N, gates.shape[-1] - 1, blocked, cu_seqlens, chunk_size, values.device)
    h0 = initial_state.float() if initial_state is not None else None
    d_gates, d_values, d_h0 = _backward(blocked, gates, values, states, h0, act, plan, d_states, d_final)
    return d_gates.reshape(gates.shape), d_values, d_h0


class _ScanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gates, values, initial_state, blocked, act, want_final, plan):
        states, final, _ = scan_forward(blocked, gates, values, initial_state, act, want_final, None, None, plan)
        ctx.save_for_backward(gates, values, states, initial_state)
        ctx.blocked, ctx.act, ctx.plan = blocked, act, plan
        ctx.set_materialize_grads(False)
        return states, final

    @staticmethod
    def backward(ctx, d_states, d_final):
        gates, values, states, initial_state = ctx.saved_tensors
        if d_states is None and d_final is None:
            return None, None, None, None, None, None, None
        dg, dv, dh0 = scan_backward(ctx.blocked, gates, values, states, initial_state, d_states, d_final, ctx.act,
                                    None, None, ctx.plan)
        dh0 = dh0.to(initial_state.dtype) if dh0 is not None else None
        return (dg if ctx.needs_input_grad[0] else None, dv if ctx.needs_input_grad[1] else None,
                dh0 if ctx.needs_input_grad[2] else None, None, None, None, None)


def _tracks_gradients(*tensors) -> bool:
    """Whether autograd would record an op on these inputs (None skipped): grad mode on and one requires a gradient.
    The scans' host functions call their kernels directly otherwise, without an autograd Function."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _scan(blocked, gates, values, initial_state, gate_activation, output_final_state, cu_seqlens, chunk_size):
    B, T, N = values.shape[:3]
    act = _ACT_ID[gate_activation]
    plan = _make_plan(B, T, N, gates.shape[-1] - 1, blocked, cu_seqlens, chunk_size, values.device)
    if not _tracks_gradients(gates, values, initial_state):  # inference / decode: no autograd bookkeeping
        states, final, _ = scan_forward(blocked, gates, values, initial_state, act, bool(output_final_state), None,
                                        None, plan)
        return states, final
    return _ScanFunction.apply(gates, values, initial_state, blocked, act, bool(output_final_state), plan)


def can_step_in_place(blocked, gates, values, state):
    """Whether `scan_step_in_place` can run this step (shapes, dtype and layout only: no values read)."""
    B, T, N = values.shape[:3]
    m = gates.shape[-1] - 1
    return T == 1 and (_channel_per_thread(blocked, m) or _block_per_thread(blocked, m)) \
        and state.dtype == torch.float32 and state.is_contiguous() and tuple(state.shape) == (B, N, m)


def scan_step_in_place(blocked, gates, values, state, gate_activation, readout=None):
    """One step (T = 1) from `state` [B, N, m] (float32, contiguous) that writes the new state back into `state`
    instead of a new final-state tensor; returns the states [B, 1, N(, m)], or None where the kernel cannot do that
    (`can_step_in_place`). H-LRU also writes the new window into `readout` (contiguous, B x N x m elements, any
    float dtype) if given: the read-out of the step, rounded once from float32 as `state.to(readout.dtype)` would.

    For a cache's state tensor in a decode step: the step then copies nothing per layer. Only the per-thread kernels
    qualify (H-LRU m <= 8, BD-LRU m <= 8), where each thread loads its entries of the state before the step and stores
    the same entries after it; the tile kernels spread a state over threads that are not ordered. No autograd."""
    if not can_step_in_place(blocked, gates, values, state):
        return None
    B, T, N = values.shape[:3]
    m = gates.shape[-1] - 1
    if readout is not None and (blocked or not readout.is_contiguous() or readout.numel() != B * N * m):
        raise ValueError(f"scan_step_in_place: readout must be a contiguous H-LRU window of {B * N * m} elements, got "
                         f"{'a BD-LRU step' if blocked else tuple(readout.shape)}")
    plan = _make_plan(B, T, N, m, blocked, None, 0, values.device)  # chunk 0: the sequential kernel
    act = gate_activation if isinstance(gate_activation, int) else _ACT_ID[gate_activation]
    with _device_guard(values.device):
        states, _ = _forward_launch(blocked, gates, values, state, act, True, plan, final=state, readout=readout)
    return states


def hlru_scan_triton(gates, values, initial_state=None, gate_activation="softmax", output_final_state=False,
                     cu_seqlens=None, chunk_size=None):
    """H-LRU scan on gate logits [B, T, N, m+1] and values [B, T, N]; see the module docstring.

    chunk_size: None chooses automatically (m = 1: the single-pass look-back kernels, unless
    torch.use_deterministic_algorithms(True) is on; otherwise the time-parallel chunked mode when batch x channel
    tiles would not fill the GPU), an int > 0 forces chunks of that length, 0 forces the sequential kernel.
    """
    return _scan(False, gates, values, initial_state, gate_activation, output_final_state, cu_seqlens, chunk_size)


def bdlru_scan_triton(gates, values, initial_state=None, gate_activation="softmax", output_final_state=False,
                      cu_seqlens=None, chunk_size=None):
    """BD-LRU scan on gate logits [B, T, N, m, m+1] and values [B, T, N, m]; see the module docstring."""
    return _scan(True, gates, values, initial_state, gate_activation, output_final_state, cu_seqlens, chunk_size)


__all__ = ["hlru_scan_triton", "bdlru_scan_triton"]
