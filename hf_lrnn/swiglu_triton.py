"""The SwiGLU's activation, silu(gate) * up, in one Triton kernel each way, for the models on the Triton backend.

Why: eager PyTorch runs it as two kernels forward (silu, then the product) and three backward (the product's two
gradients and silu's), each a pass over [tokens, intermediate_size] tensors, and autograd keeps silu(gate) alive for
the backward as well as gate and up. Here the forward reads gate and up once and writes the product; the backward reads
gate, up and the incoming gradient once and writes both gradients; only gate and up are kept.

Same function as `F.silu(gate) * up`, float32 inside, results in the inputs' dtype:
    out    = gate * sigmoid(gate) * up
    d_gate = d_out * up * sigmoid(gate) * (1 + gate * (1 - sigmoid(gate)))
    d_up   = d_out * gate * sigmoid(gate)
"""

import torch

# Whether the kernels run for a tensor: the norms' rule (Triton installed, CUDA tensors or the interpreter on CPU, not
# under torch.compile, where inductor fuses the two ops itself)
from .norm_triton import can_run

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl

    from .scan_triton import _device_guard
except ImportError:  # the models use torch's ops
    triton = None

BLOCK = 1024  # elements per program: 8 bfloat16 per thread with 4 warps

if triton is not None:

    @triton.jit
    def _silu_mul_fwd_kernel(gate, up, out, numel, BLOCK: tl.constexpr):
        """out = silu(gate) * up over BLOCK elements per program, computed in float32, written in out's dtype."""
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        g = tl.load(gate + offsets, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(up + offsets, mask=mask, other=0.0).to(tl.float32)
        silu = g / (1.0 + tl.exp(-g))
        tl.store(out + offsets, (silu * u).to(out.dtype.element_ty), mask=mask)

    @triton.jit
    def _silu_mul_bwd_kernel(gate, up, d_out, d_gate, d_up, numel, BLOCK: tl.constexpr):
        """d_gate and d_up of out = silu(gate) * up from d_out, one pass."""
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        g = tl.load(gate + offsets, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(up + offsets, mask=mask, other=0.0).to(tl.float32)
        d = tl.load(d_out + offsets, mask=mask, other=0.0).to(tl.float32)
        sigmoid = 1.0 / (1.0 + tl.exp(-g))
        tl.store(d_gate + offsets, (d * u * sigmoid * (1.0 + g * (1.0 - sigmoid))).to(d_gate.dtype.element_ty),
                 mask=mask)
        tl.store(d_up + offsets, (d * g * sigmoid).to(d_up.dtype.element_ty), mask=mask)


class _SiluMulFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate)
        numel = gate.numel()
        if numel > 0:
            with _device_guard(gate.device):
                _silu_mul_fwd_kernel[(triton.cdiv(numel, BLOCK),)](gate=gate, up=up, out=out, numel=numel,
                                                                   BLOCK=BLOCK, num_warps=4)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, d_out):
        gate, up = ctx.saved_tensors
        d_out = d_out.contiguous()
        d_gate, d_up = torch.empty_like(gate), torch.empty_like(up)
        numel = gate.numel()
        if numel > 0:
            with _device_guard(gate.device):
                _silu_mul_bwd_kernel[(triton.cdiv(numel, BLOCK),)](gate=gate, up=up, d_out=d_out, d_gate=d_gate,
                                                                   d_up=d_up, numel=numel, BLOCK=BLOCK, num_warps=4)
        return d_gate, d_up


def silu_mul_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate and up of the same shape and dtype, differentiable in both."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"silu_mul_triton: gate and up must have the same shape and dtype, got {tuple(gate.shape)} "
                         f"{gate.dtype} and {tuple(up.shape)} {up.dtype}")
    return _SiluMulFunction.apply(gate, up)


__all__ = ["can_run", "silu_mul_triton"]
