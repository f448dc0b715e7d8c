"""The causal language-modelling loss in one Triton kernel (`config.loss_backend="triton"`, and the default on CUDA).

transformers' `ForCausalLMLoss` copies the logits [tokens, vocab] to float32, runs log_softmax and the NLL, and its
backward runs the softmax backward and copies the gradient back to the logits' dtype: four passes over a tensor that
is, at batch 8 x 2048 tokens and a 50K vocabulary, 1.6 GB in bfloat16 and 3.3 GB in float32 (about a quarter of an
H200 training step of a 125M-parameter model, see bench_results/probes_2026-11-29c/model_prof_after.txt). Here one
kernel reads each row twice (an online log-sum-exp, then the gradient) and writes the gradient of the loss with
respect to the logits in their own dtype during the forward; the backward only scales it by the incoming gradient.
The logits themselves are left as they are (the model still returns them). A label outside [0, vocab_size) other than
`ignore_index` makes the loss and its row's gradient NaN (torch's loss raises instead, which needs a host sync). The
backward scales the saved gradient in place, so a second backward through the same loss (retain_graph=True) raises
torch's in-place modification error instead of giving a wrong gradient.

Same loss as `ForCausalLMLoss`: labels shifted left by one (or `shift_labels` as given), `ignore_index` skipped,
mean over the counted tokens, or the sum divided by `num_items_in_batch` when given (gradient accumulation). The
log-sum-exp is accumulated in float32 in another order than torch's, so the loss and the gradient differ from it by
float32 rounding (relative ~1e-6) before the gradient is rounded to the logits' dtype.
"""

import os
from typing import Optional

import torch
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.utils import logging

logger = logging.get_logger(__name__)
_warned_fallback = False

try:
    import triton
    import triton.language as tl

    from .scan_triton import _device_guard
except ImportError:  # no Triton: `causal_lm_loss` falls back to ForCausalLMLoss
    triton = None


if triton is not None:

    @triton.heuristics({"WRITE_GRAD": lambda args: args["grads"] is not None})
    @triton.jit
    def _cross_entropy_kernel(logits, targets, losses, grads, scale, V, stride_row,
                              IGNORE_INDEX: tl.constexpr, BLOCK_V: tl.constexpr, WRITE_GRAD: tl.constexpr):
        """One row per program: losses[row] = logsumexp(logits[row]) - logits[row, target] (0 for an ignored
        target), and with grads: grads[row] = (softmax(logits[row]) - onehot(target)) * scale (0 if ignored)."""
        row = tl.program_id(0).to(tl.int64)
        base = logits + row * stride_row
        target = tl.load(targets + row)
        counted = target != IGNORE_INDEX
        cols = tl.arange(0, BLOCK_V)
        # pass 1: running maximum and sum of exp(x - maximum), float32
        row_max = tl.full([], float("-inf"), tl.float32)
        row_sum = tl.zeros([], dtype=tl.float32)
        for start in range(0, V, BLOCK_V):
            x = tl.load(base + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(row_max, tl.max(x, axis=0))
            row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
            row_max = new_max
        lse = row_max + tl.log(row_sum)
        in_vocab = (target >= 0) & (target < V)  # an id outside the vocabulary: NaN loss and gradient, not a fault
        safe_target = tl.where(counted & in_vocab, target, 0)
        x_target = tl.load(base + safe_target).to(tl.float32)
        x_target = tl.where(in_vocab, x_target, float("nan"))
        tl.store(losses + row, tl.where(counted, lse - x_target, 0.0))
        if WRITE_GRAD:
            # pass 2: the gradient of scale * loss with respect to this row
            row_scale = tl.where(counted, tl.load(scale), 0.0)
            row_scale = tl.where(counted & ~in_vocab, float("nan"), row_scale)
            gbase = grads + row * V
            for start in range(0, V, BLOCK_V):
                mask = start + cols < V
                x = tl.load(base + start + cols, mask=mask, other=0.0).to(tl.float32)
                g = tl.exp(x - lse) - tl.where(start + cols == safe_target, 1.0, 0.0)
                tl.store(gbase + start + cols, (g * row_scale).to(grads.dtype.element_ty), mask=mask)


def _block_v(V: int) -> int:
    return min(4096, triton.next_power_of_2(V))


class _CrossEntropyFunction(torch.autograd.Function):
    """scale * the sum of the rows' cross-entropy (logits [M, V], targets [M], scale a float32 scalar tensor); the
    gradient is computed in the forward, by the same kernel."""

    @staticmethod
    def forward(ctx, logits, targets, scale, ignore_index):
        M, V = logits.shape
        losses = torch.empty(M, device=logits.device, dtype=torch.float32)
        grads = torch.empty((M, V), device=logits.device, dtype=logits.dtype) if ctx.needs_input_grad[0] else None
        if M > 0:
            with _device_guard(logits.device):
                _cross_entropy_kernel[(M,)](
                    logits=logits, targets=targets, losses=losses, grads=grads, scale=scale, V=V,
                    stride_row=logits.stride(0), IGNORE_INDEX=ignore_index, BLOCK_V=_block_v(V), num_warps=8)
        ctx.save_for_backward(grads)
        return losses.sum() * scale

    @staticmethod
    def backward(ctx, grad_output):
        (grads,) = ctx.saved_tensors
        return grads.mul_(grad_output.to(grads.dtype)), None, None, None


def can_run(logits: torch.Tensor) -> bool:
    """Whether the kernel runs for `logits`: Triton installed, and CUDA tensors (or the interpreter on CPU)."""
    return triton is not None and (logits.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def resolve_loss_backend(loss_backend: Optional[str], device) -> str:
    """The loss `config.loss_backend` runs for logits on `device`: "torch" or "triton" as given; None: "triton" on a
    CUDA device with Triton installed, else "torch"."""
    if loss_backend is not None:
        return loss_backend
    return "triton" if triton is not None and torch.device(device).type == "cuda" else "torch"


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: Optional[torch.Tensor] = None,
    ignore_index: int = -100,
    shift_labels: Optional[torch.Tensor] = None,
    **kwargs,
) -> torch.Tensor:
    """`transformers.loss.loss_utils.ForCausalLMLoss` (same arguments, same loss) in one Triton kernel; where the
    kernel cannot run (CPU tensors without TRITON_INTERPRET=1, or no Triton), ForCausalLMLoss itself."""
    compiling = torch.compiler.is_compiling()  # inductor fuses ForCausalLMLoss itself
    if compiling or not can_run(logits):
        global _warned_fallback
        if not compiling and not _warned_fallback:
            _warned_fallback = True
            reason = "Triton is not installed" if triton is None else "CPU tensors without TRITON_INTERPRET=1"
            logger.warning(f"config.loss_backend='triton' cannot run here ({reason}): using transformers' "
                           "ForCausalLMLoss")
        return ForCausalLMLoss(logits, labels, vocab_size, num_items_in_batch, ignore_index, shift_labels, **kwargs)
    if shift_labels is None:
        labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:]
    targets = shift_labels.reshape(-1).to(device=logits.device, dtype=torch.int64).contiguous()
    logits = logits.reshape(-1, vocab_size)
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    if num_items_in_batch is None:  # mean over the counted tokens (0 of them: nan, as torch's mean)
        scale = 1.0 / (targets != ignore_index).sum().to(torch.float32)
    else:
        scale = 1.0 / torch.as_tensor(num_items_in_batch, device=logits.device).to(torch.float32)
    return _CrossEntropyFunction.apply(logits, targets, scale.reshape(()).contiguous(), ignore_index)


__all__ = ["causal_lm_loss", "can_run", "resolve_loss_backend"]
