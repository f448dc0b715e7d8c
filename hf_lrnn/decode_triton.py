"""A decode step's norm and the projections that read it, in one Triton kernel (a few rows, one token each); and its
output projections as one kernel over all SMs (`project_rows`).

Why: at batch 1 a decode step is ~120 small kernels, each bound by its launch and its latency rather than by the bytes
it moves, so a step's time is about its number of kernels. Each block reads its residual stream twice through a norm
into two projections: the mixer's value and coefficient projections, and the SwiGLU's gate and up projections
followed by silu(gate) * up. Eagerly that is 3 and 4 kernels (add + norm, one GEMV per projection, the activation).
Here it is one kernel each, 10 -> 5 kernels per block. Every program recomputes the row's norm: the row is one
hidden vector (a few KB, read from L2), and the weights dominate the bytes.

Same function as the unfused path of the Triton backend (`apply_add_norm`, then `nn.Linear`, then `silu_mul_triton`):
    total  = x + delta                        (HAS_DELTA; rounded to x's dtype, as add_norm_triton writes it)
    normed = norm(total)                      (LayerNorm or RMSNorm, float32 inside, rounded to the weights' dtype)
    a      = normed @ w_a^T                   (float32 sums, float64 for float64 weights; rounded to the weights' dtype)
    b      = normed @ w_b^T + bias_b          (HAS_B; bias_b optional)
    SWIGLU: out = silu(a) * b (a, b rounded first, as the unfused path stores them), else out_a = a, out_b = b
The dot products sum in another order than cuBLAS's, so results differ from the unfused path by float rounding.

The output projections (the mixer's and the MLP's, after the scan step and after silu(gate) * up) read a few MB of
weights for one row: cuBLAS runs them on a dozen SMs at a tenth of the bandwidth, `project_rows` on all of them.

Used only where it pays and where it computes exactly that function (`can_fuse`, `can_project`): inference (no
autograd), one token per row, at most `MAX_ROWS` rows, one dtype for activations and weights, no autocast, plain
`nn.Linear` projections (an adapter or a quantised layer keeps the unfused path).
"""

import os
from typing import Optional, Tuple

import torch
from torch import nn

from .norm_triton import _rows

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl

    from .norm_triton import _row_statistics
    from .scan_triton import _device_guard
except ImportError:  # the models use the unfused path
    triton = None

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MAX_ROWS = 8  # beyond a few rows the weights are re-read per row: cuBLAS's GEMMs are faster there
# A decode step's projections are bound by the latency of their weight loads, not by their bytes (a few MB: ~1 us at
# the H200's bandwidth): each program loads its whole tile of weights at once, and the tiles are small enough that
# every SM holds several programs, so that all of a projection's weights are in flight together. Tiles of weight
# elements per program and projection (BLOCK_N output features x CHUNK_K input features), as measured on the H200
# (bench_results/probes_2026-11-30i): norm_project of one row 3.1-4.2 us with 8192 (4.3-6.3 us with the 16 x 128
# steps it had before); with several rows each program also recomputes its row's norm, and 16 x 128 steps stay faster
# there. project_rows: 1.9-2.1 us with 4096 for one row (cuBLAS 4.0-7.2 us), 3.4-5.1 us for eight (cuBLAS 3.9-6.4).
NORM_PROJECT_TILE = 8192
PROJECT_TILE = 4096
MAX_CHUNK_K = 2048  # input features per step of a program's loop (wider inputs take several steps)
SEVERAL_ROWS_BLOCKS = (16, 128)  # norm_project's (BLOCK_N, CHUNK_K) for more than one row
NUM_WARPS = 4


def _blocks(K: int, tile: int) -> Tuple[int, int]:
    """(BLOCK_N, CHUNK_K) for K input features: the whole input in one step where it fits in MAX_CHUNK_K, and as many
    output features as fill `tile` (1 to 16)."""
    chunk_k = min(triton.next_power_of_2(K), MAX_CHUNK_K)
    return max(1, min(16, tile // chunk_k)), chunk_k

if triton is not None:

    @triton.jit
    def _normed_chunk(x_row_ptr, delta_row_ptr, norm_weight, norm_bias, ks, k_mask, mean, rstd,
                      IS_RMS: tl.constexpr, HAS_NORM_BIAS: tl.constexpr, HAS_DELTA: tl.constexpr,
                      TOTAL_DTYPE: tl.constexpr, OUT_DTYPE: tl.constexpr):
        """The norm's output at input features ks (computed in float32), in OUT_DTYPE."""
        x = tl.load(x_row_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
        if HAS_DELTA:
            x += tl.load(delta_row_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
            x = x.to(TOTAL_DTYPE).to(tl.float32)
        if IS_RMS:
            centered = x
        else:
            centered = x - mean
        out = centered * rstd * tl.load(norm_weight + ks, mask=k_mask, other=0.0).to(tl.float32)
        if HAS_NORM_BIAS:
            out += tl.load(norm_bias + ks, mask=k_mask, other=0.0).to(tl.float32)
        return tl.where(k_mask, out.to(OUT_DTYPE), 0.0)

    @triton.jit
    def _project_block(x_row_ptr, delta_row_ptr, norm_weight, norm_bias, mean, rstd, w, n_start, N, K,
                       IS_RMS: tl.constexpr, HAS_NORM_BIAS: tl.constexpr, HAS_DELTA: tl.constexpr,
                       TOTAL_DTYPE: tl.constexpr, OUT_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr,
                       CHUNK_K: tl.constexpr):
        """normed @ w[n_start : n_start + BLOCK_N]^T ([BLOCK_N]; w is [N, K] with unit column stride), accumulated in
        float32 (float64 for float64 weights)."""
        ACC_DTYPE = tl.float64 if OUT_DTYPE == tl.float64 else tl.float32
        ns = n_start + tl.arange(0, BLOCK_N)
        n_mask = ns < N
        acc = tl.zeros([BLOCK_N], dtype=ACC_DTYPE)
        for k_start in range(0, K, CHUNK_K):
            ks = k_start + tl.arange(0, CHUNK_K)
            k_mask = ks < K
            w_mask = n_mask[:, None] & k_mask[None, :]
            w_tile = tl.load(w + ns.to(tl.int64)[:, None] * K + ks[None, :], mask=w_mask, other=0.0)
            normed = _normed_chunk(x_row_ptr, delta_row_ptr, norm_weight, norm_bias, ks, k_mask, mean, rstd,
                                   IS_RMS, HAS_NORM_BIAS, HAS_DELTA, TOTAL_DTYPE, OUT_DTYPE)
            acc += tl.sum(w_tile.to(ACC_DTYPE) * normed.to(ACC_DTYPE)[None, :], axis=1)
        return acc

    # flags passed by the launches, not by `triton.heuristics` (a heuristic costs Python per launch)
    @triton.jit
    def _norm_project_kernel(x, delta, total, norm_weight, norm_bias, w_a, w_b, bias_b, out_a, out_b,
                             K, N_A, N_B, stride_x, stride_delta, eps,
                             IS_RMS: tl.constexpr, HAS_NORM_BIAS: tl.constexpr, HAS_DELTA: tl.constexpr,
                             HAS_B: tl.constexpr, HAS_BIAS_B: tl.constexpr, SWIGLU: tl.constexpr,
                             BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK_K: tl.constexpr):
        """Program (p, row): the norm's statistics of the row (total = x + delta with HAS_DELTA, written by p = 0),
        then BLOCK_N output features: SWIGLU, silu(a) * b at features p * BLOCK_N + [0, BLOCK_N); otherwise the first
        cdiv(N_A, BLOCK_N) programs write a, the rest b."""
        p = tl.program_id(0)
        row = tl.program_id(1).to(tl.int64)
        x_row_ptr = x + row * stride_x
        delta_row_ptr = x_row_ptr  # read only with HAS_DELTA (delta may be None)
        if HAS_DELTA:
            delta_row_ptr = delta + row * stride_delta
        TOTAL_DTYPE = x.dtype.element_ty
        OUT_DTYPE = w_a.dtype.element_ty
        # the statistics over the whole row, held in registers (one hidden vector)
        cols = tl.arange(0, BLOCK_K)
        col_mask = cols < K
        x_full = tl.load(x_row_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        if HAS_DELTA:
            x_full += tl.load(delta_row_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
            x_full = x_full.to(TOTAL_DTYPE)
            if p == 0:
                tl.store(total + row * K + cols, x_full, mask=col_mask)
            x_full = x_full.to(tl.float32)
        mean, rstd, _ = _row_statistics(x_full, col_mask, K, eps, IS_RMS)

        if SWIGLU:
            n_start = p * BLOCK_N
            a = _project_block(x_row_ptr, delta_row_ptr, norm_weight, norm_bias, mean, rstd, w_a, n_start, N_A, K,
                               IS_RMS, HAS_NORM_BIAS, HAS_DELTA, TOTAL_DTYPE, OUT_DTYPE, BLOCK_N, CHUNK_K)
            b = _project_block(x_row_ptr, delta_row_ptr, norm_weight, norm_bias, mean, rstd, w_b, n_start, N_A, K,
                               IS_RMS, HAS_NORM_BIAS, HAS_DELTA, TOTAL_DTYPE, OUT_DTYPE, BLOCK_N, CHUNK_K)
            a = a.to(OUT_DTYPE).to(tl.float32)  # the unfused path stores gate and up in the weights' dtype, and
            b = b.to(OUT_DTYPE).to(tl.float32)  # silu_mul_triton computes in float32
            ns = n_start + tl.arange(0, BLOCK_N)
            silu = a / (1.0 + tl.exp(-a))
            tl.store(out_a + row * N_A + ns, (silu * b).to(OUT_DTYPE), mask=ns < N_A)
        else:
            blocks_a = tl.cdiv(N_A, BLOCK_N)
            if p < blocks_a:
                n_start = p * BLOCK_N
                a = _project_block(x_row_ptr, delta_row_ptr, norm_weight, norm_bias, mean, rstd, w_a, n_start, N_A,
                                   K, IS_RMS, HAS_NORM_BIAS, HAS_DELTA, TOTAL_DTYPE, OUT_DTYPE, BLOCK_N, CHUNK_K)
                ns = n_start + tl.arange(0, BLOCK_N)
                tl.store(out_a + row * N_A + ns, a.to(OUT_DTYPE), mask=ns < N_A)
            elif HAS_B:
                n_start = (p - blocks_a) * BLOCK_N
                b = _project_block(x_row_ptr, delta_row_ptr, norm_weight, norm_bias, mean, rstd, w_b, n_start, N_B,
                                   K, IS_RMS, HAS_NORM_BIAS, HAS_DELTA, TOTAL_DTYPE, OUT_DTYPE, BLOCK_N, CHUNK_K)
                ns = n_start + tl.arange(0, BLOCK_N)
                if HAS_BIAS_B:
                    b += tl.load(bias_b + ns, mask=ns < N_B, other=0.0).to(b.dtype)
                tl.store(out_b + row * N_B + ns, b.to(OUT_DTYPE), mask=ns < N_B)

    @triton.jit
    def _project_rows_kernel(x, w, out, K, N, stride_x, BLOCK_N: tl.constexpr, CHUNK_K: tl.constexpr):
        """Program (p, row): out[row, p * BLOCK_N + [0, BLOCK_N)] = x[row] @ w[those features]^T, w [N, K] with unit
        column stride, summed in float32 (float64 for float64 weights), written in the weights' dtype."""
        p = tl.program_id(0)
        row = tl.program_id(1).to(tl.int64)
        OUT_DTYPE = w.dtype.element_ty
        ACC_DTYPE = tl.float64 if OUT_DTYPE == tl.float64 else tl.float32
        ns = p * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = ns < N
        acc = tl.zeros([BLOCK_N], dtype=ACC_DTYPE)
        for k_start in range(0, K, CHUNK_K):
            ks = k_start + tl.arange(0, CHUNK_K)
            k_mask = ks < K
            w_tile = tl.load(w + ns.to(tl.int64)[:, None] * K + ks[None, :], mask=n_mask[:, None] & k_mask[None, :],
                             other=0.0)
            x_chunk = tl.load(x + row * stride_x + ks, mask=k_mask, other=0.0)
            acc += tl.sum(w_tile.to(ACC_DTYPE) * x_chunk.to(ACC_DTYPE)[None, :], axis=1)
        tl.store(out + row * N + ns, acc.to(OUT_DTYPE), mask=n_mask)


def _inference_decode_rows(x: torch.Tensor, in_compile: bool) -> bool:
    """What both fusions ask of their input first: one token per row ([B, 1, K]), 1 to MAX_ROWS rows, Triton able to
    run on x's device, no autograd, no autocast; in_compile: whether they may run inside torch.compile."""
    # the shape first: every training forward asks, twice per block, and this answers it
    if x.dim() != 3 or x.shape[1] != 1 or not 0 < x.shape[0] <= MAX_ROWS:
        return False
    if triton is None or not (x.is_cuda or _INTERPRET):
        return False
    if torch.compiler.is_compiling() and not in_compile:
        return False
    return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def _plain_linear(module) -> bool:
    return type(module) is nn.Linear  # not a subclass: an adapter or a quantised layer computes something else


def can_fuse(hidden_states: torch.Tensor, delta: Optional[torch.Tensor], norm: nn.Module,
             proj_a: nn.Module, proj_b: Optional[nn.Module], is_rms: bool) -> bool:
    """Whether `norm_project` computes exactly what the unfused path would for these inputs, and is likely to pay:
    Triton can run (CUDA tensors, or the interpreter on CPU; under torch.compile through the custom op), no
    autograd, no autocast, at most MAX_ROWS rows of one token, one dtype throughout, plain nn.Linear projections
    (proj_a without a bias), an affine norm."""
    if not _inference_decode_rows(hidden_states, in_compile=norm_project_op is not None):
        return False
    if not _plain_linear(proj_a) or proj_a.bias is not None or (proj_b is not None and not _plain_linear(proj_b)):
        return False
    if getattr(norm, "weight", None) is None or (not is_rms and type(norm) is not nn.LayerNorm):
        return False
    dtype = hidden_states.dtype
    tensors = [norm.weight, getattr(norm, "bias", None), proj_a.weight, delta]
    if proj_b is not None:
        tensors += [proj_b.weight, proj_b.bias]
    return all(t is None or (t.dtype == dtype and t.device == hidden_states.device) for t in tensors)


def norm_project_tensors(x: torch.Tensor, delta: Optional[torch.Tensor], norm_weight: torch.Tensor,
                         norm_bias: Optional[torch.Tensor], eps: float, is_rms: bool, w_a: torch.Tensor,
                         w_b: Optional[torch.Tensor], bias_b: Optional[torch.Tensor], swiglu: bool
                         ) -> Tuple[Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
    """`norm_project` on tensors: x and delta [B, K] (delta None: no add), the norm's weight and bias [K], w_a [N_A, K],
    w_b [N_B, K] and bias_b [N_B] (or None). Returns (total [B, K] or None without delta, a [B, N_A], b [B, N_B] or
    None)."""
    B, K = x.shape
    x = _rows(x, K)
    delta = _rows(delta, K) if delta is not None else None
    total = torch.empty((B, K), device=x.device, dtype=x.dtype) if delta is not None else None  # rows of K
    w_a = _rows(w_a, K)
    w_b = _rows(w_b, K) if w_b is not None else None
    N_A = w_a.shape[0]
    N_B = w_b.shape[0] if w_b is not None else 0
    if swiglu and (w_b is None or N_B != N_A):
        raise ValueError(f"norm_project(swiglu=True) needs proj_b with proj_a's {N_A} output features, got "
                         f"{None if w_b is None else N_B}")
    out_a = torch.empty(B, N_A, device=x.device, dtype=x.dtype)
    out_b = torch.empty(B, N_B, device=x.device, dtype=x.dtype) if w_b is not None and not swiglu else None
    block_n, chunk_k = _blocks(K, NORM_PROJECT_TILE) if B == 1 else SEVERAL_ROWS_BLOCKS
    programs = triton.cdiv(N_A, block_n) + (0 if swiglu else triton.cdiv(N_B, block_n))
    if B > 0:
        with _device_guard(x.device):
            _norm_project_kernel[(programs, B)](
                x=x, delta=delta, total=total, norm_weight=norm_weight, norm_bias=norm_bias, w_a=w_a, w_b=w_b,
                bias_b=bias_b, out_a=out_a, out_b=out_b, K=K, N_A=N_A, N_B=N_B, stride_x=x.stride(0),
                stride_delta=delta.stride(0) if delta is not None else 0, eps=float(eps), IS_RMS=bool(is_rms),
                HAS_NORM_BIAS=norm_bias is not None, HAS_DELTA=delta is not None, HAS_B=w_b is not None,
                HAS_BIAS_B=bias_b is not None, SWIGLU=bool(swiglu), BLOCK_K=triton.next_power_of_2(K),
                BLOCK_N=block_n, CHUNK_K=chunk_k, num_warps=NUM_WARPS)
    return total, out_a, out_b


def can_project(x: torch.Tensor, linear: nn.Module) -> bool:
    """Whether `project_rows` computes linear(x) for this input and is likely to pay: a decode step's input [B, 1, K]
    of at most MAX_ROWS rows, a plain nn.Linear without bias of x's dtype and device, Triton able to run, no autograd,
    no autocast, not inside torch.compile (which keeps its own GEMM there)."""
    if not _inference_decode_rows(x, in_compile=False):
        return False
    return _plain_linear(linear) and linear.bias is None and linear.weight.dtype == x.dtype \
        and linear.weight.device == x.device


def project_rows_tensors(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [B, K] @ weight [N, K]^T -> [B, N] in weight's dtype, one Triton kernel for a few rows (`project_rows`)."""
    B, K = x.shape
    x = _rows(x, K)
    weight = _rows(weight, K)
    N = weight.shape[0]
    out = torch.empty(B, N, device=x.device, dtype=weight.dtype)
    block_n, chunk_k = _blocks(K, PROJECT_TILE)
    if B > 0:
        with _device_guard(x.device):
            _project_rows_kernel[(triton.cdiv(N, block_n), B)](
                x=x, w=weight, out=out, K=K, N=N, stride_x=x.stride(0), BLOCK_N=block_n, CHUNK_K=chunk_k,
                num_warps=NUM_WARPS)
    return out


def project_rows(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """linear(x) for a decode step's input x [B, 1, K] (callers check `can_project` first): cuBLAS's GEMM for one row
    runs on a dozen SMs at about a tenth of the bandwidth, this kernel on all of them. The sums run in another order
    than cuBLAS's, so results differ from linear(x) by float rounding."""
    B, T, K = x.shape
    return project_rows_tensors(x.reshape(B * T, K), linear.weight).view(B, T, -1)


# Set by ops.py: the custom op `<namespace>::norm_project` over `norm_project_tensors`, which torch.compile (and
# torch.export) trace as one opaque op. Eager calls go to the function itself (no dispatch cost).
norm_project_op = None


def norm_project(hidden_states: torch.Tensor, delta: Optional[torch.Tensor], norm: nn.Module, is_rms: bool,
                 proj_a: nn.Linear, proj_b: Optional[nn.Linear], swiglu: bool
                 ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(total, a, b) for hidden_states [B, 1, d] (and delta of the same shape, or None): total = hidden_states +
    delta (hidden_states itself without delta), then normed = norm(total) and a = proj_a(normed), b = proj_b(normed)
    ([B, 1, out features]). swiglu: a = silu(proj_a(normed)) * proj_b(normed) and b None. Inference only (no
    autograd); callers check `can_fuse` first."""
    B, T, K = hidden_states.shape
    arguments = (hidden_states.reshape(B * T, K), delta.reshape(B * T, K) if delta is not None else None, norm.weight,
                 getattr(norm, "bias", None), float(norm.eps), bool(is_rms), proj_a.weight,
                 proj_b.weight if proj_b is not None else None, proj_b.bias if proj_b is not None else None,
                 bool(swiglu))
    if torch.compiler.is_compiling():
        total, a, b = norm_project_op(*arguments)
        total = total if delta is not None else None  # the op returns [0] placeholders for what is not there
        b = b if proj_b is not None and not swiglu else None
    else:
        total, a, b = norm_project_tensors(*arguments)
    total = total.view(B, T, K) if total is not None else hidden_states
    return total, a.view(B, T, -1), b.view(B, T, -1) if b is not None else None


__all__ = ["MAX_ROWS", "can_fuse", "can_project", "norm_project", "norm_project_tensors", "project_rows",
           "project_rows_tensors"]
