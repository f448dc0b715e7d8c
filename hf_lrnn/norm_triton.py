"""LayerNorm and RMSNorm in Triton, for the models' norms on the Triton backend.

Why: in a training step under autocast, torch's LayerNorm reads the float32 residual stream and writes a float32
output that autocast then casts to bfloat16 for the projections, and its backward computes the input gradient and the
weight and bias gradients in two kernels, the second a column reduction that is slow at these shapes (1.9 ms of a
47 ms BD-LRU m = 4 step on the H200, bench_results/probes_2026-11-29c/model_prof_after.txt in the hf_lrnn repository).
Here the forward writes its output directly in the dtype the projections read, and the backward runs one pass over
the rows that writes the input gradient and accumulates each program's weight (and bias) gradient in registers; the
host sums those partial rows (one small reduction). `add_norm_triton` also takes the residual add before a norm into
the same pass (forward: the sum and its norm; backward: the residual gradient added to the norm's input gradient),
which saves a kernel each way per block, and in a decode step.

Same function as `torch.nn.LayerNorm` / the models' `RMSNorm` (modeling_lrnn.py), float32 inside:
    LayerNorm: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias      (biased variance, over the last dim)
    RMSNorm:   y = x / sqrt(mean(x^2) + eps) * weight
The statistics are computed in two passes over a row held in registers, so results differ from torch's (Welford)
by float32 rounding.
"""

import os
from typing import Optional, Tuple

import torch

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl

    from .scan_triton import _device_guard, _num_sms
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

    # HAS_BIAS / HAS_DELTA / ... are passed by the launches, not set by `triton.heuristics`: a heuristic costs several
    # microseconds of Python per launch, and a training step launches these kernels 100 times (the steps are
    # host-bound on some hosts)
    @triton.jit
    def _norm_fwd_kernel(x, delta, total, weight, bias, y, means, rstds, M, N, stride_x, stride_delta, stride_total,
                         stride_y, eps, IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DELTA: tl.constexpr,
                         BLOCK_N: tl.constexpr, ROWS: tl.constexpr):
        """ROWS rows per program: y = (x - mean) * rstd * weight (+ bias), written in y's dtype; mean and rstd
        (float32, per row) are saved for the backward. HAS_DELTA: the row normalised is total = x + delta, written in
        total's dtype and normalised as written (what `norm(x + delta)` computes)."""
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
            if HAS_DELTA:
                x_row += tl.load(delta + row64 * stride_delta + cols, mask=mask, other=0.0).to(tl.float32)
                x_row = x_row.to(total.dtype.element_ty)
                tl.store(total + row64 * stride_total + cols, x_row, mask=mask)
                x_row = x_row.to(tl.float32)
            mean, rstd, centered = _row_statistics(x_row, col_mask, N, eps, IS_RMS)
            out = centered * rstd * w
            if HAS_BIAS:
                out += b
            tl.store(y + row64 * stride_y + cols, out.to(y.dtype.element_ty), mask=mask)
            tl.store(means + row, mean, mask=row_ok)
            tl.store(rstds + row, rstd, mask=row_ok)

    @triton.jit
    def _norm_bwd_kernel(x, weight, dy, d_total, dx, d_delta, dweight_partial, dbias_partial, means, rstds, M, N,
                         stride_x, stride_dy, stride_d_total, stride_dx, stride_d_delta, rows_per_program,
                         IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_D_TOTAL: tl.constexpr,
                         WRITE_D_DELTA: tl.constexpr, BLOCK_N: tl.constexpr):
        """Rows [pid * rows_per_program, (pid + 1) * rows_per_program): dx per row, and the program's sums over its
        rows of dy * xhat (and of dy) into row pid of the partial weight (and bias) gradients. HAS_D_TOTAL: the
        normalised row was a sum that other ops also read; their gradient is added to dx. WRITE_D_DELTA: dx is
        written a second time in the summand's dtype."""
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
            dx_row *= rstd
            if HAS_D_TOTAL:
                dx_row += tl.load(d_total + row64 * stride_d_total + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(dx + row64 * stride_dx + cols, dx_row.to(dx.dtype.element_ty), mask=mask)
            if WRITE_D_DELTA:
                tl.store(d_delta + row64 * stride_d_delta + cols, dx_row.to(d_delta.dtype.element_ty), mask=mask)
            dweight += dy_row * x_hat
            if HAS_BIAS:
                dbias += dy_row
        tl.store(dweight_partial + pid * N + cols, dweight, mask=col_mask)
        if HAS_BIAS:
            tl.store(dbias_partial + pid * N + cols, dbias, mask=col_mask)


def _backward_programs(M: int, device: torch.device) -> int:
    """Programs of the backward: a few per SM (each keeps one partial weight-gradient row); fewer rows each means
    more partial rows for the host to sum."""
    if device.type != "cuda":
        return max(1, min(M, 4))
    return max(1, min(M, 4 * _num_sms(device)))


def _rows(t: torch.Tensor, N: int) -> torch.Tensor:
    """t as [M, N] rows with unit column stride (a copy only if it has not)."""
    rows = t.reshape(-1, N)
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _norm_forward(x, delta, weight, bias, eps, is_rms, out_dtype):
    """(x rows, total rows or None, y rows, means, rstds): the forward launch; total = x + delta when delta is
    given."""
    N = x.shape[-1]
    x_rows = _rows(x, N)
    M = x_rows.shape[0]
    delta_rows = _rows(delta, N) if delta is not None else None
    total = torch.empty((M, N), device=x.device, dtype=torch.promote_types(x.dtype, delta.dtype)) \
        if delta is not None else None
    y = torch.empty((M, N), device=x.device, dtype=out_dtype)
    means = torch.empty(M, device=x.device, dtype=torch.float32)
    rstds = torch.empty(M, device=x.device, dtype=torch.float32)
    rows = 4
    if M > 0:
        with _device_guard(x.device):
            _norm_fwd_kernel[(triton.cdiv(M, rows),)](
                x=x_rows, delta=delta_rows, total=total, weight=weight, bias=bias, y=y, means=means, rstds=rstds,
                M=M, N=N, stride_x=x_rows.stride(0), stride_delta=delta_rows.stride(0) if delta is not None else 0,
                stride_total=N, stride_y=N, eps=eps, IS_RMS=is_rms, HAS_BIAS=bias is not None,
                HAS_DELTA=delta is not None, BLOCK_N=triton.next_power_of_2(N), ROWS=rows,
                num_warps=4 if N <= 2048 else 8)
    return x_rows, total, y, means, rstds


def _norm_backward(x_rows, weight, bias, means, rstds, is_rms, dy, d_total, delta_dtype):
    """(dx rows, d delta rows or None, d weight, d bias or None): the backward launch. d_total: the gradient that
    other readers of a summed row send back (None if none); delta_dtype: the summand's dtype, or None without one."""
    M, N = x_rows.shape
    dy_rows = _rows(dy, N) if dy is not None else torch.zeros_like(x_rows)
    d_total_rows = _rows(d_total, N) if d_total is not None else None
    dx = torch.empty_like(x_rows)
    write_d_delta = delta_dtype is not None and delta_dtype != dx.dtype
    d_delta = torch.empty((M, N), device=dx.device, dtype=delta_dtype) if write_d_delta else None
    programs = _backward_programs(M, x_rows.device)
    rows_per_program = triton.cdiv(M, programs)
    programs = triton.cdiv(M, rows_per_program) if M > 0 else 1
    # every row is written by its program; with no rows no program runs, and the gradients are zeros
    alloc = torch.empty if M > 0 else torch.zeros
    dweight_partial = alloc(programs, N, device=x_rows.device, dtype=torch.float32)
    dbias_partial = alloc(programs, N, device=x_rows.device, dtype=torch.float32) if bias is not None else None
    if M > 0:
        with _device_guard(x_rows.device):
            _norm_bwd_kernel[(programs,)](
                x=x_rows, weight=weight, dy=dy_rows, d_total=d_total_rows, dx=dx, d_delta=d_delta,
                dweight_partial=dweight_partial, dbias_partial=dbias_partial, means=means, rstds=rstds, M=M, N=N,
                stride_x=x_rows.stride(0), stride_dy=dy_rows.stride(0),
                stride_d_total=d_total_rows.stride(0) if d_total is not None else 0, stride_dx=N, stride_d_delta=N,
                rows_per_program=rows_per_program, IS_RMS=is_rms, HAS_BIAS=bias is not None,
                HAS_D_TOTAL=d_total is not None, WRITE_D_DELTA=write_d_delta, BLOCK_N=triton.next_power_of_2(N),
                num_warps=4 if N <= 2048 else 8)
    dweight = dweight_partial.sum(0).to(weight.dtype)
    dbias = dbias_partial.sum(0).to(bias.dtype) if bias is not None else None
    if delta_dtype is not None and not write_d_delta:
        d_delta = dx  # the same gradient, already in the summand's dtype
    return dx, d_delta, dweight, dbias


class _NormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, is_rms, out_dtype):
        x_rows, _, y, means, rstds = _norm_forward(x, None, weight, bias, eps, is_rms, out_dtype)
        ctx.save_for_backward(x_rows, weight, bias, means, rstds)
        ctx.is_rms = is_rms
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x_rows, weight, bias, means, rstds = ctx.saved_tensors
        dx, _, dweight, dbias = _norm_backward(x_rows, weight, bias, means, rstds, ctx.is_rms, dy, None, None)
        return dx.view(dy.shape), dweight, dbias, None, None, None


class _AddNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, weight, bias, eps, is_rms, out_dtype):
        _, total, y, means, rstds = _norm_forward(x, delta, weight, bias, eps, is_rms, out_dtype)
        ctx.set_materialize_grads(False)  # an unread sum's gradient stays None: no zero tensor filled and read
        ctx.save_for_backward(total, weight, bias, means, rstds)
        ctx.is_rms, ctx.delta_dtype = is_rms, delta.dtype
        return total.view(x.shape), y.view(x.shape)

    @staticmethod
    def backward(ctx, d_total, dy):
        total, weight, bias, means, rstds = ctx.saved_tensors
        dx, d_delta, dweight, dbias = _norm_backward(total, weight, bias, means, rstds, ctx.is_rms, dy, d_total,
                                                     ctx.delta_dtype)
        shape = d_total.shape if d_total is not None else dy.shape
        return dx.view(shape), d_delta.view(shape), dweight, dbias, None, None, None


def can_run(x: torch.Tensor) -> bool:
    """Whether the kernels run for `x`: Triton installed, CUDA tensors (or the interpreter on CPU), not under
    torch.compile (inductor fuses torch's norms itself)."""
    return (triton is not None and (x.is_cuda or _INTERPRET) and not torch.compiler.is_compiling())


def norm_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], eps: float, is_rms: bool,
                out_dtype: torch.dtype) -> torch.Tensor:
    """LayerNorm (is_rms False) or RMSNorm over the last dimension of x, computed in float32, returned in out_dtype;
    differentiable in x, weight and bias."""
    return _NormFunction.apply(x, weight, bias, float(eps), bool(is_rms), out_dtype)


def add_norm_triton(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    eps: float, is_rms: bool, out_dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """(total, norm(total)) with total = x + delta (same shape; in their promoted dtype) and the norm as in
    `norm_triton`, in one pass: a residual add and the norm after it. The backward adds the gradient that reaches
    `total` from its other readers to the norm's input gradient in the same pass. Differentiable in x, delta, weight
    and bias."""
    if x.shape != delta.shape:
        raise ValueError(f"add_norm_triton: x and delta must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(delta.shape)}")
    return _AddNormFunction.apply(x, delta, weight, bias, float(eps), bool(is_rms), out_dtype)


__all__ = ["add_norm_triton", "can_run", "norm_triton"]
