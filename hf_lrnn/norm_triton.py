"""LayerNorm and RMSNorm in Triton, for the models' norms on the Triton backend.

Why: in a training step under autocast, torch's LayerNorm reads the float32 residual stream and writes a float32
output that autocast then casts to bfloat16 for the projections, and its backward computes the input gradient and the
weight and bias gradients in two kernels, the second a column reduction that is slow at these shapes (1.9 ms of a
47 ms BD-LRU m = 4 step on the H200, bench_results/probes_2026-11-29c/model_prof_after.txt in the hf_lrnn repository).
Here the forward writes its output directly in the dtype the projections read, and the backward runs one pass over
the rows that writes the input gradient and accumulates each program's weight (and bias) gradient in registers; the
host sums those partial rows (one small reduction).

Same function as `torch.nn.LayerNorm` / the models' `RMSNorm` (modeling_lrnn.py), float32 inside:
    LayerNorm: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias      (biased variance, over the last dim)
    RMSNorm:   y = x / sqrt(mean(x^2) + eps) * weight
The statistics are computed in two passes over a row held in registers, so results differ from torch's (Welford)
by float32 rounding.
"""

import contextlib
import os
from typing import Optional

import torch

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl

    from .scan_triton import _num_sms
except ImportError:  # the models use their torch norms
    triton = None

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

if triton is not None:

    @triton.jit
    def _row_statistics(x_row, col_mask, N, eps, IS_RMS: tl.constexpr):
        """(mean, 1 / sqrt(var + eps), x - mean) of one float32 row; RMSNorm: mean 0 and mean(x^2) for var."""
        if IS_RMS:
            mean = tl.full([], 0.0, tl.float32)
            centered = x_row
        else:
            mean = tl.sum(x_row, axis=0) / N
            centered = tl.where(col_mask, x_row - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / N + eps)
        return mean, rstd, centered

    # HAS_BIAS is passed by the launches, not set by `triton.heuristics`: a heuristic costs several microseconds of
    # Python per launch, and a training step launches these kernels 100 times (the steps are host-bound on some hosts)
    @triton.jit
    def _norm_fwd_kernel(x, weight, bias, y, means, rstds, M, N, stride_x, stride_y, eps,
                         IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                         ROWS: tl.constexpr):
        """ROWS rows per program: y = (x - mean) * rstd * weight (+ bias), written in y's dtype; mean and rstd
        (float32, per row) are saved for the backward."""
        cols = tl.arange(0, BLOCK_N)
        col_mask = cols < N
        w = tl.load(weight + cols, mask=col_mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            b = tl.load(bias + cols, mask=col_mask, other=0.0).to(tl.float32)
        for i in tl.static_range(ROWS):
            row = tl.program_id(0) * ROWS + i
            row_ok = row < M
            row64 = row.to(tl.int64)
            mask = tl.where(row_ok, col_mask, False)  # not `&`: the interpreter mistypes tensor & scalar
            x_row = tl.load(x + row64 * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            mean, rstd, centered = _row_statistics(x_row, col_mask, N, eps, IS_RMS)
            out = centered * rstd * w
            if HAS_BIAS:
                out += b
            tl.store(y + row64 * stride_y + cols, out.to(y.dtype.element_ty), mask=mask)
            tl.store(means + row, mean, mask=row_ok)
            tl.store(rstds + row, rstd, mask=row_ok)

    @triton.jit
    def _norm_bwd_kernel(x, weight, dy, dx, dweight_partial, dbias_partial, means, rstds, M, N,
                         stride_x, stride_dy, stride_dx, rows_per_program,
                         IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
        """Rows [pid * rows_per_program, (pid + 1) * rows_per_program): dx per row, and the program's sums over its
        rows of dy * xhat (and of dy) into row pid of the partial weight (and bias) gradients."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_N)
        col_mask = cols < N
        w = tl.load(weight + cols, mask=col_mask, other=0.0).to(tl.float32)
        dweight = tl.zeros([BLOCK_N], dtype=tl.float32)
        dbias = tl.zeros([BLOCK_N], dtype=tl.float32)
        for i in range(0, rows_per_program):
            row = pid * rows_per_program + i
            row_ok = row < M
            row64 = row.to(tl.int64)
            mask = tl.where(row_ok, col_mask, False)  # not `&`: the interpreter mistypes tensor & scalar
            x_row = tl.load(x + row64 * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            dy_row = tl.load(dy + row64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(means + row, mask=row_ok, other=0.0)
            rstd = tl.load(rstds + row, mask=row_ok, other=0.0)
            x_hat = tl.where(col_mask, (x_row - mean) * rstd, 0.0)
            w_dy = w * dy_row
            # d/dx of (x - mean) * rstd: project out the directions the statistics depend on
            dx_row = w_dy - x_hat * (tl.sum(x_hat * w_dy, axis=0) / N)
            if not IS_RMS:
                dx_row -= tl.sum(w_dy, axis=0) / N
            tl.store(dx + row64 * stride_dx + cols, (dx_row * rstd).to(dx.dtype.element_ty), mask=mask)
            dweight += dy_row * x_hat
            if HAS_BIAS:
                dbias += dy_row
        tl.store(dweight_partial + pid * N + cols, dweight, mask=col_mask)
        if HAS_BIAS:
            tl.store(dbias_partial + pid * N + cols, dbias, mask=col_mask)


def _device_guard(tensor):
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _backward_programs(M: int, device: torch.device) -> int:
    """Programs of the backward: a few per SM (each keeps one partial weight-gradient row); fewer rows each means
    more partial rows for the host to sum."""
    if device.type != "cuda":
        return max(1, min(M, 4))
    return max(1, min(M, 4 * _num_sms(device)))


class _NormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, is_rms, out_dtype):
        shape = x.shape
        N = shape[-1]
        x_rows = x.reshape(-1, N)
        if x_rows.stride(-1) != 1:
            x_rows = x_rows.contiguous()
        M = x_rows.shape[0]
        y = torch.empty((M, N), device=x.device, dtype=out_dtype)
        means = torch.empty(M, device=x.device, dtype=torch.float32)
        rstds = torch.empty(M, device=x.device, dtype=torch.float32)
        rows = 4
        if M > 0:
            with _device_guard(x):
                _norm_fwd_kernel[(triton.cdiv(M, rows),)](
                    x=x_rows, weight=weight, bias=bias, y=y, means=means, rstds=rstds, M=M, N=N,
                    stride_x=x_rows.stride(0), stride_y=y.stride(0), eps=eps, IS_RMS=is_rms,
                    HAS_BIAS=bias is not None, BLOCK_N=triton.next_power_of_2(N), ROWS=rows,
                    num_warps=4 if N <= 2048 else 8)
        ctx.save_for_backward(x_rows, weight, bias, means, rstds)
        ctx.is_rms, ctx.shape = is_rms, shape
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        x_rows, weight, bias, means, rstds = ctx.saved_tensors
        M, N = x_rows.shape
        dy_rows = dy.reshape(-1, N)
        if dy_rows.stride(-1) != 1:
            dy_rows = dy_rows.contiguous()
        dx = torch.empty_like(x_rows)
        programs = _backward_programs(M, x_rows.device)
        rows_per_program = triton.cdiv(M, programs)
        programs = triton.cdiv(M, rows_per_program) if M > 0 else 1
        # every row is written by its program; with no rows no program runs, and the gradients are zeros
        alloc = torch.empty if M > 0 else torch.zeros
        dweight_partial = alloc(programs, N, device=x_rows.device, dtype=torch.float32)
        dbias_partial = alloc(programs, N, device=x_rows.device, dtype=torch.float32) if bias is not None else None
        if M > 0:
            with _device_guard(x_rows):
                _norm_bwd_kernel[(programs,)](
                    x=x_rows, weight=weight, dy=dy_rows, dx=dx, dweight_partial=dweight_partial,
                    dbias_partial=dbias_partial, means=means, rstds=rstds, M=M, N=N, stride_x=x_rows.stride(0),
                    stride_dy=dy_rows.stride(0), stride_dx=dx.stride(0), rows_per_program=rows_per_program,
                    IS_RMS=ctx.is_rms, HAS_BIAS=bias is not None, BLOCK_N=triton.next_power_of_2(N),
                    num_warps=4 if N <= 2048 else 8)
        dweight = dweight_partial.sum(0).to(weight.dtype)
        dbias = dbias_partial.sum(0).to(bias.dtype) if bias is not None else None
        return dx.view(ctx.shape), dweight, dbias, None, None, None


def can_run(x: torch.Tensor) -> bool:
    """Whether the kernels run for `x`: Triton installed, CUDA tensors (or the interpreter on CPU), not under
    torch.compile (inductor fuses torch's norms itself)."""
    return (triton is not None and (x.is_cuda or _INTERPRET) and not torch.compiler.is_compiling())


def norm_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], eps: float, is_rms: bool,
                out_dtype: torch.dtype) -> torch.Tensor:
    """LayerNorm (is_rms False) or RMSNorm over the last dimension of x, computed in float32, returned in out_dtype;
    differentiable in x, weight and bias."""
    return _NormFunction.apply(x, weight, bias, float(eps), bool(is_rms), out_dtype)


__all__ = ["can_run", "norm_triton"]
