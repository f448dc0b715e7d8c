"""The backbone shared by H-LRU and BD-LRU models (arXiv 2602.12021; docs/spec.md in the hf_lrnn repository).

    token embedding (no positions) -> num_hidden_layers x LRNNBlock -> final norm -> head
    LRNNBlock: x = x + mixer(norm(x)); x = x + SwiGLU(norm(x))

Heads: causal LM, sequence classification, and the compression auto-encoder of MAD (`LRNNForCompression`).

The two architectures differ only in the mixer's shapes and scan (`LRNNMixer.blocked`); modeling_hlru.py
and modeling_bdlru.py bind this backbone to their config classes.
"""

import ctypes
import errno
import inspect
import math
import os
import re
import shutil
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import logging
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    SequenceClassifierOutputWithPast,
)

from .cache_lrnn import LRNNCache
from .decode_triton import can_fuse as decode_can_fuse
from .decode_triton import can_project as decode_can_project
from .decode_triton import _plain_linear, norm_project, project_rows
from .decoding_lrnn import CapturedDecodeStep, CudaGraph, can_replay
from .lm_loss import causal_lm_loss, resolve_loss_backend
from .norm_triton import add_norm_triton, norm_triton
from .norm_triton import can_run as norm_triton_can_run
from .ops import (bdlru_scan, bdlru_scan_time_last, hlru_scan, hlru_scan_time_last, resolve_backend, scan_step_into,
                  triton_available)
from .scan_torch import bdlru_scan_torch, hlru_scan_torch, scan_with_restarts_torch
from .swiglu_triton import can_run as swiglu_triton_can_run
from .swiglu_triton import silu_mul_triton

try:
    from transformers import initialization as init
except ImportError:  # transformers < 5.x layouts: plain torch init
    from torch.nn import init

# transformers 5.24 renamed the cache argument and output field `past_key_values` -> `cache`
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

# Auto classes that hf_lrnn defines itself (hf_lrnn/auto_lrnn.py), not transformers
CUSTOM_AUTO_CLASSES = ("AutoModelForCompression",)

logger = logging.get_logger(__name__)
_warned_triton_fallback = False


def runnable_scan_backend(backend: Optional[str], device: torch.device) -> Optional[str]:
    """The backend a model actually runs for `config.scan_backend == backend` on tensors on `device`.

    A checkpoint saved with `scan_backend="triton"` must still run wherever it is loaded: when Triton cannot run
    here (no CUDA tensors and no TRITON_INTERPRET=1, or Triton not importable), fall back to "torch" (the
    reference, same results) with a one-time warning. Every other value is passed on unchanged.
    """
    global _warned_triton_fallback
    if backend != "triton":
        return backend
    if triton_available() and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
        return backend
    if not _warned_triton_fallback:
        _warned_triton_fallback = True
        reason = "Triton is not installed" if not triton_available() else f"the tensors are on {device.type}"
        logger.warning(
            f"config.scan_backend='triton' cannot run here ({reason}, TRITON_INTERPRET is not 1): falling back "
            "to scan_backend='torch', the PyTorch reference. Set config.scan_backend = None to pick the best "
            "backend for each device without this warning."
        )
    return "torch"


# every name transformers 5.17 - 5.x passes the cache under
_CACHE_NAMES = ("cache", "past_key_values", "cache_params")


def _cache_in(kwargs):
    """The cache in generate()'s model kwargs, under whichever of `_CACHE_NAMES` holds one, or None."""
    return next((kwargs[name] for name in _CACHE_NAMES if kwargs.get(name) is not None), None)


def _pick_cache(cache, past_key_values, kwargs):
    """Accept the cache under every name transformers 5.17 - 5.x passes it."""
    for candidate in (cache, past_key_values, kwargs.pop("cache_params", None)):
        if candidate is not None:
            return candidate
    return None


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def build_norm(config) -> nn.Module:
    if config.norm_type == "rmsnorm":
        return RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class SwiGLU(nn.Module):
    """W3(silu(W1 x) * W2 x), no bias."""

    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # W1
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # W2
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)  # W3

    def forward(self, x: torch.Tensor, triton_backend: bool = False) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)  # [B, T, intermediate_size] each
        if triton_backend and swiglu_triton_can_run(gate) and gate.dtype == up.dtype:
            return self.down_proj(silu_mul_triton(gate, up))  # one kernel each way (swiglu_triton.py)
        return self.down_proj(F.silu(gate) * up)


def _zero_padded(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values [B, T, N(, m)] with the steps where mask [B, T] (bool) is False set to zero."""
    return values * mask.view(*mask.shape, *([1] * (values.dim() - 2))).to(values.dtype)


def runs_triton(config, device: torch.device) -> bool:
    """Whether a forward of a model with `config` runs the Triton backend on `device` (its scans, and the norms of
    norm_triton.py): `config.scan_backend` as `runnable_scan_backend` and `resolve_backend` settle it."""
    return resolve_backend(runnable_scan_backend(getattr(config, "scan_backend", None), device), device) == "triton"


def _projection_input(readout: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The read-out in the model's dtype for the output projection. Under autocast the projection casts its input
    itself, so it is passed as is: a cast to the (float32) residual stream's dtype first would add two copies of
    [B, T, N*m] forward and two backward, with the same result."""
    if torch.is_autocast_enabled(readout.device.type):
        return readout
    return readout.to(dtype)


def _accumulation_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for half-precision tensors, their own dtype from float32 up."""
    return torch.promote_types(t.dtype, torch.float32)


class _TimeLastInputProjection(torch.autograd.Function):
    """x [B, T, d], weight [R, d] -> [B, R, T] = weight @ x_b^T for every row b: a projection written time-last by a
    batched GEMM with the weight broadcast over the batch. Its backward writes the input's gradient as [B, T, d], the
    layout of the norm that consumes it; through torch.bmm's own backward that gradient came out transposed, and the
    next kernels copied it element by element (~1 ms of a training step on the H200)."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return torch.bmm(weight.expand(x.shape[0], -1, -1), x.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):  # grad [B, R, T]
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad.transpose(1, 2), weight.expand(x.shape[0], -1, -1))  # [B, T, d]
        if ctx.needs_input_grad[1]:  # [R, d]: per row, summed in float32 (or float64)
            grad_weight = torch.bmm(grad, x).sum(0, dtype=_accumulation_dtype(weight)).to(weight.dtype)
        return grad_x, grad_weight


class _TimeLastOutputProjection(torch.autograd.Function):
    """readout [B, K, T], weight [d, K] -> [B, T, d] = readout_b^T @ weight^T. Its backward writes the read-out's
    gradient as [B, K, T], the layout the time-last scan's backward reads (through torch.bmm's backward it came out
    transposed and the scan's host function copied it)."""

    @staticmethod
    def forward(ctx, readout, weight):
        ctx.save_for_backward(readout, weight)
        return torch.bmm(readout.transpose(1, 2), weight.t().expand(readout.shape[0], -1, -1))

    @staticmethod
    def backward(ctx, grad):  # grad [B, T, d]
        readout, weight = ctx.saved_tensors
        grad_readout = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_readout = torch.bmm(weight.t().expand(grad.shape[0], -1, -1), grad.transpose(1, 2))  # [B, K, T]
        if ctx.needs_input_grad[1]:  # [d, K]: per row, summed in float32 (or float64)
            grad_weight = torch.bmm(grad.transpose(1, 2), readout.transpose(1, 2))
            grad_weight = grad_weight.sum(0, dtype=_accumulation_dtype(weight)).to(weight.dtype)
        return grad_readout, grad_weight


def _output_projection(linear: nn.Linear, x: torch.Tensor, triton_backend: bool) -> torch.Tensor:
    """linear(x); in a decode step of a few rows on the Triton backend as one kernel over all SMs (decode_triton.py)."""
    if triton_backend and decode_can_project(x, linear):
        return project_rows(x, linear)
    return linear(x)


def _in_autocast_dtype(normed: torch.Tensor) -> torch.Tensor:
    """A norm's output in autocast's dtype, cast once for the two projections that read it (value and coefficients,
    or the SwiGLU's two inputs). Autocast runs the norm in float32 and would cast its output once per projection,
    forward and backward; the projections compute the same values either way, and their two input gradients are
    summed in autocast's dtype instead of float32. Without autocast: unchanged. The time-last projections' operands go
    through it too (autograd Functions, which autocast does not cast)."""
    if torch.is_autocast_enabled(normed.device.type):
        return normed.to(torch.get_autocast_dtype(normed.device.type))
    return normed


def _triton_norm_out_dtype(norm: nn.Module, inputs, for_projections: bool) -> torch.dtype:
    """The dtype a Triton norm writes: autocast's for an output that only feeds projections under autocast, else what
    torch's norm of `inputs` (the tensors summed before it) would return."""
    device_type = inputs[0].device.type
    if for_projections and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    out_dtype = norm.weight.dtype
    for t in inputs:
        out_dtype = torch.promote_types(out_dtype, t.dtype)
    return out_dtype


def apply_norm(norm: nn.Module, hidden_states: torch.Tensor, triton_backend: bool, for_projections: bool):
    """norm(hidden_states). On the Triton backend (CUDA, or the interpreter) the Triton kernels of norm_triton.py
    compute it (same function; faster weight gradients). for_projections: the output only feeds projections, so
    under autocast it is returned in autocast's dtype (`_in_autocast_dtype`); otherwise in the norm's own dtype."""
    if triton_backend and norm_triton_can_run(hidden_states) and norm.weight is not None:
        out_dtype = _triton_norm_out_dtype(norm, (hidden_states,), for_projections)
        return norm_triton(hidden_states, norm.weight, getattr(norm, "bias", None), norm.eps,
                           isinstance(norm, RMSNorm), out_dtype)
    normed = norm(hidden_states)
    return _in_autocast_dtype(normed) if for_projections else normed


def apply_add_norm(norm: nn.Module, hidden_states: torch.Tensor, delta: Optional[torch.Tensor], triton_backend: bool,
                   for_projections: bool):
    """(hidden_states + delta, the norm of that sum), the norm's output as `apply_norm` gives it; delta None: no add.
    On the Triton backend one kernel does both (and, backward, adds the residual's gradient to the norm's): the
    residual stream's adds cost no kernel of their own, either way."""
    if delta is None:
        return hidden_states, apply_norm(norm, hidden_states, triton_backend, for_projections)
    if triton_backend and norm_triton_can_run(hidden_states) and norm.weight is not None \
            and hidden_states.shape == delta.shape:
        out_dtype = _triton_norm_out_dtype(norm, (hidden_states, delta), for_projections)
        return add_norm_triton(hidden_states, delta, norm.weight, getattr(norm, "bias", None), norm.eps,
                               isinstance(norm, RMSNorm), out_dtype)
    hidden_states = hidden_states + delta
    return hidden_states, apply_norm(norm, hidden_states, triton_backend, for_projections)


def _is_left_padded(mask: torch.Tensor) -> bool:
    """True when every row is zeros then ones (padding only before the first real token)."""
    return bool((mask[:, 1:] >= mask[:, :-1]).all())


def _stacked_window(full: torch.Tensor, m: int) -> torch.Tensor:
    """full [B, m-1+T, N] (m-1 earlier states, then s_1..s_T) -> the window [B, T, N, m], index k holding s_{t-k}."""
    T = full.shape[1] - (m - 1)
    return torch.stack([full[:, m - 1 - k : m - 1 - k + T] for k in range(m)], dim=-1)


class _FreshWindow(torch.autograd.Function):
    """window[b, t, n, k] = states[b, t - k, n] (0 for t < k): the H-LRU read-out window of a sequence that starts
    from zeros. Autograd's backward of the pad and the stack would fill and copy a zero gradient per window entry and
    add them; this one copies the k = 0 gradient and adds each shifted k > 0 gradient onto it in place (same sums)."""

    @staticmethod
    def forward(ctx, states, m: int):
        ctx.m = m
        return _stacked_window(F.pad(states, (0, 0, m - 1, 0)), m)  # m-1 zero steps, then s_1..s_T -> [B, T, N, m]

    @staticmethod
    def backward(ctx, grad_window):
        grad_states = grad_window[..., 0].contiguous()  # [B, T, N]
        T = grad_states.shape[1]
        for k in range(1, min(ctx.m, T)):
            grad_states[:, : T - k] += grad_window[:, k:, :, k]  # s_t appears as entry k of the window at t + k
        return grad_states, None


def fresh_hlru_window(states: torch.Tensor, m: int) -> torch.Tensor:
    """states [B, T, N] -> the window [B, T, N, m] (index k holds s_{t-k}, zeros before the start)."""
    return _FreshWindow.apply(states, m)


def hlru_readout_window(states, initial_state, mask=None, order=None):
    """Gather the read-out window [B, T, N, m]: index k holds s_{t-k} (the k-th previous kept state).

    states [B, T, N]; initial_state [B, N, m] = (s_0, ..., s_{-m+1}), or None for a fresh sequence (zeros; then
    `order` gives m). With a mask [B, T] (bool), padded steps are skipped: the window at a real token reaches back
    over real tokens only.
    """
    B, T, N = states.shape
    m = initial_state.shape[-1] if initial_state is not None else order
    if m == 1 and mask is None:
        return states.unsqueeze(-1)
    # E = (s_{-m+2}, ..., s_0, s_1, ..., s_T): the m-1 newest initial states, oldest first, then the new ones
    if initial_state is None and mask is None:
        return fresh_hlru_window(states, m)
    if initial_state is None:
        full = F.pad(states, (0, 0, m - 1, 0))  # [B, m-1+T, N]: a fresh sequence starts from zeros
    else:
        prefix = initial_state[..., : m - 1].flip(-1).transpose(1, 2).to(states.dtype)  # [B, m-1, N]
        full = torch.cat([prefix, states], dim=1)  # [B, m-1+T, N]
    if mask is None:
        return _stacked_window(full, m)
    count = mask.long().cumsum(1)  # real tokens up to and including t
    real_positions = torch.sort((~mask).int(), dim=1, stable=True).indices  # real positions first, in order
    e_index = (m - 2 + count).unsqueeze(-1) - torch.arange(m, device=states.device)  # [B, T, m] index into E
    e_index = e_index.clamp(min=0)
    real_j = (e_index - (m - 1)).clamp(min=0, max=T - 1)
    full_index = torch.where(
        e_index < m - 1, e_index, m - 1 + torch.gather(real_positions, 1, real_j.view(B, -1)).view(B, T, m)
    )
    gathered = torch.gather(full, 1, full_index.view(B, T * m, 1).expand(B, T * m, N))  # [B, T*m, N]
    return gathered.view(B, T, m, N).transpose(2, 3)


# --------------------------------------------------------------------------------------------------------------
# packed documents ("padding-free" batches): several documents per row, each scanned from a zero state


class PackedDocuments(NamedTuple):
    """Where documents start inside the rows of one forward; found once per forward by `find_documents` and shared by
    every layer. Such a forward has no cache: every document is scanned from a zero state, as if it were alone.

    starts:     [B, T] bool, True at the first token of every document (column 0 too: a row starts a document)
    offsets:    [B, T] long, t minus the start of the document of token t (how far its read-out window may reach back)
    cu_seqlens: [S+1] int32, the same starts in the rows flattened to [1, B*T], then B*T (the scans' packed form)
    """

    starts: torch.Tensor
    offsets: torch.Tensor
    cu_seqlens: torch.Tensor


def find_documents(position_ids, cu_seq_lens_q, mask, B: int, T: int, device) -> Optional[PackedDocuments]:
    """The document boundaries of a packed batch, or None when every row holds one document (the ordinary path).

    position_ids: [B, T] or [1, T], restarting at 0 at every document start (as `DataCollatorWithFlattening` emits
        them). A document starts at every REAL token t > 0 (attention_mask 1, or no mask) whose position id is 0 and
        that has a real token before it in its row; only the zeros are read. So plain 0..T-1 positions, the positions
        generate() and pipelines build from the attention mask (after left padding the first real token has
        position 0, with padding only before it) and a single new token find no boundary: they cost one comparison
        and one host sync and give the ordinary result.
    cu_seq_lens_q: [S+1] integer boundaries rising from 0 to T, batch size 1 (flash-attention's packed-sequence
        kwarg, `DataCollatorWithFlattening(return_flash_attn_kwargs=True)`): documents start at cu_seq_lens_q[:-1].
        When given, position_ids are not examined.
    mask: [B, T] bool (True = real token) or None when nothing is padded. With boundaries, padding may come before
        or after the real tokens of a document (exact: padded steps get zero values, and a document's state starts
        at zero), not between two of them (a ValueError: skipping such a step exactly needs a state carried over).
    """
    if torch.device(device).type == "meta":
        return None  # shapes only: no values to read
    if torch.compiler.is_compiling():
        return None  # boundaries are read from values (and give data-dependent shapes): packed batches run eagerly
    if cu_seq_lens_q is not None:
        if (not isinstance(cu_seq_lens_q, torch.Tensor) or cu_seq_lens_q.dim() != 1 or cu_seq_lens_q.numel() < 2
                or cu_seq_lens_q.dtype.is_floating_point or cu_seq_lens_q.dtype == torch.bool):
            got = (f"{cu_seq_lens_q.dtype} {tuple(cu_seq_lens_q.shape)}" if isinstance(cu_seq_lens_q, torch.Tensor)
                   else type(cu_seq_lens_q).__name__)
            raise ValueError(f"cu_seq_lens_q must be a 1-D integer tensor [num_documents + 1] of document boundaries, "
                             f"got {got}")
        if B != 1:
            raise ValueError(f"cu_seq_lens_q needs the documents packed into one row (batch size 1, as "
                             f"DataCollatorWithFlattening packs them), got batch size {B}; pass position_ids [B, T] "
                             "that restart at 0 at every document instead")
        bounds = cu_seq_lens_q.tolist()
        if bounds[0] != 0 or bounds[-1] != T or any(b > e for b, e in zip(bounds[:-1], bounds[1:])):
            raise ValueError(f"cu_seq_lens_q must rise from 0 to the sequence length T={T}, got {bounds}")
        starts = torch.zeros(B, T, dtype=torch.bool, device=device)
        starts[0, [b for b in bounds[:-1] if b < T]] = True
    elif position_ids is not None:
        if (not isinstance(position_ids, torch.Tensor) or position_ids.dim() != 2
                or position_ids.shape[0] not in (1, B) or position_ids.shape[1] != T):
            got = tuple(position_ids.shape) if isinstance(position_ids, torch.Tensor) else type(position_ids).__name__
            raise ValueError(f"position_ids must be [batch, seq_len] = [{B}, {T}] (or [1, {T}]), restarting at 0 at "
                             f"every document start, got {got}")
        if T < 2:
            return None  # a single step (decode) cannot hold a boundary
        restart = (position_ids.to(device) == 0).expand(B, T)  # [B, T]
        if mask is None:
            starts = restart & (torch.arange(T, device=device) >= 1)
        else:
            real = mask.long()
            starts = restart & mask & (real.cumsum(1) - real > 0)  # a real token with a real token before it
    else:
        return None
    starts = starts | (torch.arange(T, device=device) == 0)  # [B, T]; every row starts a document
    flat_starts = starts.flatten().nonzero().flatten()  # the one host sync of the check
    if flat_starts.numel() == B:
        return None  # no boundary inside a row: the ordinary path, same result
    steps = torch.arange(T, device=device).expand(B, T)  # [B, T]
    document_start = torch.where(starts, steps, 0).cummax(1).values  # [B, T] the start of token t's document
    if mask is not None:
        real = mask.long()
        before = real.cumsum(1) - real  # [B, T] real tokens before t in its row
        before_in_document = before - before.gather(1, document_start)
        after_padding = F.pad(~mask[:, :-1], (1, 0), value=False)  # token t-1 is padding
        interior = mask & after_padding & ~starts & (before_in_document > 0)
        if bool(interior.any()):
            b, t = interior.nonzero()[0].tolist()
            raise ValueError(
                f"attention_mask pads inside a document (row {b}, before position {t}) while position_ids / "
                "cu_seq_lens_q mark document boundaries; in a packed batch padding may only come before or after the "
                "real tokens of a document. Expected no padding (packed batches need none: pass no attention_mask) or "
                "padding at the ends of documents"
            )
    cu_seqlens = torch.cat([flat_starts, flat_starts.new_tensor([B * T])]).to(torch.int32)  # [S+1]
    return PackedDocuments(starts=starts, offsets=steps - document_start, cu_seqlens=cu_seqlens)


def hlru_document_window(states: torch.Tensor, offsets: torch.Tensor, m: int) -> torch.Tensor:
    """The H-LRU read-out window [B, T, N, m] of packed documents: index k holds s_{t-k} while t-k lies in the document
    of token t (offsets [B, T]: t minus its document's start), else 0 (a fresh document's initial window)."""
    B, T, N = states.shape
    window = fresh_hlru_window(states, m)  # [B, T, N, m]
    inside = offsets.unsqueeze(-1) >= torch.arange(m, device=states.device)  # [B, T, m]
    return torch.where(inside.unsqueeze(2), window, 0.0)


class LRNNMixer(nn.Module):
    """The recurrent sequence mixer: projections in, a linear scan, projection out.

    H-LRU (`blocked=False`): value v_t [N], gate logits [N, m+1]; scan keeps s_t per channel and the
        read-out sees the window [s_t, ..., s_{t-m+1}] (channel-major, index n*m + k).
    BD-LRU (`blocked=True`): value v_t [N, m], gate logits [N, m, m+1]; read-out sees h_t (index n*m + j).

    With `documents` (a packed batch, `find_documents`) every document is scanned from a zero state, exactly as if it
    were alone: the rows are flattened to [1, B*T] and scanned with `cu_seqlens` on Triton, or by the reference loop
    with the state zeroed at every document start on the torch backend (all rows at once); the H-LRU window never
    reaches back into the previous document. Such a forward takes no cache.
    """

    def __init__(self, config, layer_idx: int, blocked: bool):
        super().__init__()
        self.layer_idx = layer_idx
        self.blocked = blocked
        self.num_units = N = config.num_units
        self.unit_size = m = config.unit_size
        self.gate_activation = config.gate_activation
        self.selective = config.selective
        self.config = config  # scan_backend is read at forward time, so changing it after construction works
        self.gate_shape = (N, m, m + 1) if blocked else (N, m + 1)
        self.value_shape = (N, m) if blocked else (N,)
        gate_numel = N * m * (m + 1) if blocked else N * (m + 1)
        self.value_proj = nn.Linear(config.hidden_size, N * m if blocked else N, bias=False)  # W_v
        if config.selective:
            # W_g, b_g. Not `gate_proj`: that is the SwiGLU's W1, and adapters (LoRA target_modules) match by leaf name
            self.coefficient_proj = nn.Linear(config.hidden_size, gate_numel, bias=True)
        else:
            self.gate_logits = nn.Parameter(torch.rand(self.gate_shape))  # uniform [0, 1) (docs/spec.md)
        self.out_proj = nn.Linear(N * m, config.hidden_size, bias=False)  # W_o

    def scan_backend(self, device: torch.device) -> Optional[str]:
        """The scan backend for this forward: `config.scan_backend`, read now (not at construction)."""
        return runnable_scan_backend(getattr(self.config, "scan_backend", None), device)

    def _scan(self, gates, values, initial_state, mask, in_place=False, readout_into=None):
        """Run the scan; returns (states, final_state, masked, readout). `mask` [B, T] bool or None (all real).
        `in_place`: a decode step may write the new state into `initial_state` (the cache's state tensor) and return
        that as the final state (`scan_step_into`: no copy per layer and token); `readout_into`: where such an H-LRU
        step also writes its window in the model's dtype (readout: that tensor if written, else None)."""
        if mask is not None and torch.compiler.is_compiling():
            return self._scan_masked_compiled(gates, values, initial_state, mask)
        if mask is not None and not bool(mask.all()):
            zero_start = initial_state is None or not initial_state[~mask[:, 0]].any()
            if zero_start and _is_left_padded(mask):
                # Left padding over a zero state: zero values keep the state exactly zero on padded steps,
                # which is what the unpadded row starts from. Works on every backend.
                values = _zero_padded(values, mask)
            else:
                # Padding after a non-zero state, or not only on the left: skip padded steps exactly with
                # the reference scan (rare: e.g. a padded continuation of a cached state).
                scan = bdlru_scan_torch if self.blocked else hlru_scan_torch
                states, final = scan(gates, values, initial_state, self.gate_activation, mask=mask)
                return states, final, True, None
        if in_place and initial_state is not None:
            states = scan_step_into(self.blocked, gates, values, initial_state, self.gate_activation,
                                    self.scan_backend(values.device), readout=readout_into)
            if states is not None:
                return states, initial_state, False, readout_into
        scan = bdlru_scan if self.blocked else hlru_scan
        states, final = scan(
            gates,
            values,
            initial_state=initial_state,
            gate_activation=self.gate_activation,
            output_final_state=True,
            backend=self.scan_backend(values.device),
        )
        return states, final, False, None

    def _scan_masked_compiled(self, gates, values, initial_state, mask):
        """`_scan` under torch.compile / torch.export: the same results without branching on the mask's values."""
        if initial_state is None:
            # Zero values on padded steps: exact for left padding (the state stays zero) and at every real position
            # before right padding; a hole inside a row lets the state decay instead of holding it.
            values = _zero_padded(values, mask)
            return self._scan(gates, values, None, None)
        scan = bdlru_scan_torch if self.blocked else hlru_scan_torch
        if values.shape[1] > 1:  # a padded continuation of a state: the reference loop holds padded steps exactly
            states, final = scan(gates, values, initial_state, self.gate_activation, mask=mask)
            return states, final, True, None
        # one step (a decode step): computed as if real, then a padded row keeps its state and outputs it
        states, final, _, _ = self._scan(gates, values, initial_state, None)
        keep = mask[:, 0]  # [B]
        final = torch.where(keep.view(-1, 1, 1), final, initial_state.to(final.dtype))
        held = initial_state if self.blocked else initial_state[..., 0]  # [B, N(, m)]: the state the step holds
        states = torch.where(keep.view(-1, *([1] * (states.dim() - 1))), states, held.unsqueeze(1).to(states.dtype))
        return states, final, False, None

    def _scan_documents(self, gates, values, documents: PackedDocuments):
        """Scan every document of a packed batch from a zero state; returns states [B, T, N(, m)] (no final state)."""
        B, T = values.shape[:2]
        backend = self.scan_backend(values.device)
        if resolve_backend(backend, values.device) == "triton":
            scan = bdlru_scan if self.blocked else hlru_scan
            states, _ = scan(
                gates.reshape(1, B * T, *gates.shape[2:]),  # [1, B*T, N, (m,) m+1]
                values.reshape(1, B * T, *values.shape[2:]),  # [1, B*T, N(, m)]
                gate_activation=self.gate_activation,
                backend=backend,
                cu_seqlens=documents.cu_seqlens,  # [S+1]: every row start and every document start inside a row
            )
            return states.view(values.shape)
        return scan_with_restarts_torch(self.blocked, gates, values, documents.starts, self.gate_activation)[0]

    def _scans_time_last(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> bool:
        """Whether this forward takes `_forward_time_last` (config.scan_layout = "time_last"): order 1 (H-LRU or
        BD-LRU), order or block size 2 or 4, selective gates, several steps, the Triton backend, plain nn.Linear
        projections (an adapter keeps the [B, T, N] path), and no padding (a mask with padding takes the time-first
        path, which handles it; checking costs the host sync that path's own check costs, and under torch.compile a
        mask always takes it). Packed documents take it too. On the H200 each of these scans forward+backward faster
        time-last on every grid measured (H-LRU order 4: 1.8x the [B, T, N] kernels at B1 T16384 D1024, 1.3x at B32
        T2048 D2048; bench_results/bench_scan_h200.txt) except BD-LRU block size 4 at B8 T4096 D1024 (0.97x), whose
        captured training step at d = 768 B8 T2048 takes 37.5 ms time-last against 37.8 (GPU kernels 36.9 against
        37.6 ms; bench_results/probes_2026-12-03c/models_bd4.txt)."""
        if getattr(self.config, "scan_layout", "time_last") != "time_last" or not self.selective \
                or hidden_states.shape[1] < 2:
            return False
        if self.unit_size not in (1, 2, 4):
            return False
        if not runs_triton(self.config, hidden_states.device):
            return False
        if not all(_plain_linear(p) for p in (self.value_proj, self.coefficient_proj, self.out_proj)) \
                or self.value_proj.bias is not None:
            return False
        if attention_mask is not None:
            if torch.compiler.is_compiling():
                return False
            return bool(attention_mask[:, -hidden_states.shape[1]:].all())
        return True

    def _forward_time_last(self, hidden_states: torch.Tensor, cache: Optional[LRNNCache],
                           document_starts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mixer on time-last tensors (order or block size m = 1, 2 or 4): the projections write
        [B, N*m, T] values (BD-LRU; [B, N, T] for H-LRU) and [B, N*(m+1), T] (H-LRU) or [B, N*m*(m+1), T] (BD-LRU)
        gate logits (batched GEMMs with the weight broadcast over the batch, so nothing is transposed in memory),
        `hlru_scan_time_last` or `bdlru_scan_time_last` scans them, and the output projection reads the read-out
        [B, N*m, T] as a transposed operand; the projections' backward writes each gradient in the layout its
        consumer reads (`_TimeLastInputProjection`, `_TimeLastOutputProjection`); the coefficient bias is added
        inside the scan, which also writes the read-out (H-LRU: the window).
        Same function as the [B, T, N] path (BD-LRU of block size 1 is H-LRU of order 1, with the same row order of
        its projections; H-LRU's read-out is the window (s_t, ..., s_{t-m+1}), index n*m + k; BD-LRU's the state,
        index n*m + j). With packed documents (`document_starts` [B, T]) every document starts from a zero state."""
        B, T, _ = hidden_states.shape
        N, m = self.num_units, self.unit_size
        # the projections are autograd Functions, which autocast does not cast: their operands go in its dtype here
        x, value_weight, coefficient_weight = (
            _in_autocast_dtype(t) for t in (hidden_states, self.value_proj.weight, self.coefficient_proj.weight))
        values = _TimeLastInputProjection.apply(x, value_weight)  # [B, N(*m), T], rows (n(, j))
        gates = _TimeLastInputProjection.apply(x, coefficient_weight)  # [B, N*((m*)m+1), T], rows (n, (j,) k)
        initial_state = cache.get_state(self.layer_idx) if cache is not None else None  # [B, N, m] float32 or None
        if self.blocked and m > 1:
            # the read-out: the state [B, N, m, T], index n*m + j
            readout, final_state = bdlru_scan_time_last(
                gates.view(B, N, m, m + 1, T), values.view(B, N, m, T), initial_state, self.gate_activation,
                output_final_state=cache is not None, backend="triton", document_starts=document_starts,
                gate_bias=self.coefficient_proj.bias.view(N, m, m + 1))
        else:
            # the read-out: the window [B, N, m, T] = (s_t, ..., s_{t-m+1}), which the scan writes itself
            readout, final_state = hlru_scan_time_last(
                gates.view(B, N, m + 1, T), values, initial_state, self.gate_activation,
                output_final_state=cache is not None, backend="triton", document_starts=document_starts,
                gate_bias=self.coefficient_proj.bias.view(N, m + 1), output_window=True)
        if cache is not None:  # after the scan, which read the old state
            cache.set_state(self.layer_idx, final_state)
        readout = readout.view(B, N * m, T)  # H-LRU: index n*m + k holds s_{t-k}; BD-LRU: n*m + j holds h_t[n, j]
        readout = _in_autocast_dtype(_projection_input(readout, hidden_states.dtype))
        out_weight = _in_autocast_dtype(self.out_proj.weight)
        return _TimeLastOutputProjection.apply(readout, out_weight)  # [B, T, d]

    def forward(
        self,
        hidden_states: torch.Tensor,  # [B, T, d]
        attention_mask: Optional[torch.Tensor] = None,  # [B, >=T], 1 = real token
        cache: Optional[LRNNCache] = None,
        documents: Optional[PackedDocuments] = None,  # a packed batch: document starts inside the rows
        projected: Optional[tuple] = None,  # (values, gate logits or None), as value_proj / coefficient_proj give them
    ) -> torch.Tensor:
        """hidden_states: the normed input, or with `projected` (a decode step whose block computed the norm and
        both projections in one kernel, decode_triton.py) a tensor of its shape and dtype."""
        B, T, _ = hidden_states.shape
        if projected is None and self._scans_time_last(hidden_states, attention_mask):
            return self._forward_time_last(hidden_states, cache, documents.starts if documents is not None else None)
        projected_values, projected_gates = projected if projected is not None else (None, None)
        if projected_values is None:
            projected_values = self.value_proj(hidden_states)
        values = projected_values.view(B, T, *self.value_shape)  # [B, T, N(, m)]
        if self.selective:
            if projected_gates is None:
                projected_gates = self.coefficient_proj(hidden_states)
            gates = projected_gates.view(B, T, *self.gate_shape)  # [B, T, N, (m,) m+1]
        else:
            gates = self.gate_logits.expand(B, T, *self.gate_shape)
        mask = None if attention_mask is None else attention_mask[:, -T:].bool()
        if documents is not None:
            if cache is not None:
                raise ValueError("a packed forward (document boundaries) takes no cache; LRNNModel drops it")
            if mask is not None:  # padding only at the ends of documents (find_documents checks): zero values are exact
                values = _zero_padded(values, mask)
            states = self._scan_documents(gates, values, documents)
            if self.blocked or self.unit_size == 1:
                readout = states.reshape(B, T, -1)  # [B, T, N*m], index n*m + j (or the H-LRU state itself)
            else:
                window = hlru_document_window(states, documents.offsets, self.unit_size)  # [B, T, N, m]
                readout = window.reshape(B, T, -1)  # index n*m + k holds s_{t-k}
            return self.out_proj(_projection_input(readout, hidden_states.dtype))
        initial_state = cache.get_state(self.layer_idx) if cache is not None else None

        decode_readout = None  # [B, 1, N*m]: an H-LRU decode step on Triton writes its window here (`_scan`)
        if T == 1 and not self.blocked and self.unit_size > 1 and initial_state is not None \
                and runs_triton(self.config, values.device):
            decode_readout = values.new_empty(B, 1, self.num_units * self.unit_size)
        states, final_state, masked, decode_readout = self._scan(
            gates, values, initial_state, mask, in_place=T == 1, readout_into=decode_readout)

        if self.blocked:
            readout = states.reshape(B, T, -1)  # [B, T, N*m], index n*m + j
        elif self.unit_size == 1:
            readout = states
        elif decode_readout is not None:  # the in-place step wrote the window (below) in the values' dtype
            readout = decode_readout  # [B, 1, N*m]
        elif T == 1 and not masked:
            # one step (decode): the window (s_t, ..., s_{t-m+1}) is exactly the new state
            readout = final_state.reshape(B, 1, -1)  # index n*m + k holds s_{t-k}
        else:
            window = hlru_readout_window(  # [B, T, N, m]
                states, initial_state, mask if masked else None, order=self.unit_size)
            readout = window.reshape(B, T, -1)  # index n*m + k holds s_{t-k}
        if cache is not None:  # after the read-out, which may still read the old state: the cache writes in place
            cache.set_state(self.layer_idx, final_state)  # float32 [B, N, m]
        return _output_projection(self.out_proj, _projection_input(readout, hidden_states.dtype),
                                  T == 1 and runs_triton(self.config, values.device))


class LRNNBlock(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int, blocked: bool):
        super().__init__()
        self.mixer_norm = build_norm(config)
        self.mixer = LRNNMixer(config, layer_idx, blocked)
        self.mlp_norm = build_norm(config)
        self.mlp = SwiGLU(config)

    def forward(self, hidden_states, residual_delta=None, attention_mask=None, cache=None, documents=None,
                defer_residual=False, **kwargs):
        """hidden_states [B, T, d]: the residual stream. residual_delta [B, T, d] or None: the previous block's MLP
        output, not yet added to the stream (its `defer_residual`); it is added here, inside the first norm's kernel
        on the Triton backend. Positional, so that reentrant gradient checkpointing sees it. Returns the new stream,
        or with defer_residual (stream, this block's MLP output) for the next block (or the final norm) to add."""
        triton_backend = runs_triton(self.mixer.config, hidden_states.device)
        mixer = self.mixer
        coefficient_proj = mixer.coefficient_proj if mixer.selective else None
        mixer_is_rms, mlp_is_rms = isinstance(self.mixer_norm, RMSNorm), isinstance(self.mlp_norm, RMSNorm)
        if triton_backend and documents is None and decode_can_fuse(
                hidden_states, residual_delta, self.mixer_norm, mixer.value_proj, coefficient_proj, mixer_is_rms):
            # a decode step: add, norm and both projections in one kernel (decode_triton.py)
            hidden_states, values, gates = norm_project(hidden_states, residual_delta, self.mixer_norm, mixer_is_rms,
                                                        mixer.value_proj, coefficient_proj, swiglu=False)
            mixer_out = mixer(hidden_states, attention_mask, cache, documents, projected=(values, gates))
        else:
            hidden_states, normed = apply_add_norm(self.mixer_norm, hidden_states, residual_delta, triton_backend,
                                                   for_projections=True)
            mixer_out = mixer(normed, attention_mask, cache, documents)
        mlp = self.mlp
        if triton_backend and documents is None and decode_can_fuse(
                hidden_states, mixer_out, self.mlp_norm, mlp.gate_proj, mlp.up_proj, mlp_is_rms):
            # add, norm, gate and up projections and silu(gate) * up in one kernel (decode_triton.py)
            hidden_states, activation, _ = norm_project(hidden_states, mixer_out, self.mlp_norm, mlp_is_rms,
                                                        mlp.gate_proj, mlp.up_proj, swiglu=True)
            mlp_out = _output_projection(mlp.down_proj, activation, triton_backend)
        else:
            hidden_states, normed = apply_add_norm(self.mlp_norm, hidden_states, mixer_out, triton_backend,
                                                   for_projections=True)
            mlp_out = mlp(normed, triton_backend)
        if defer_residual:
            return hidden_states, mlp_out
        return hidden_states + mlp_out


# hub arguments of save_pretrained(push_to_hub=True, ...), handed to push_to_hub() after the atomic save
_PUSH_KWARGS = ("repo_id", "commit_message", "private", "create_pr", "revision", "commit_description", "tags")
# files that save_pretrained writes (or wrote in an earlier save, e.g. shards of another size); everything else in a
# folder that is saved into again is kept
_SAVED_FILE = re.compile(
    r"^(config\.json|generation_config\.json|(model|pytorch_model)([.-][^/]*)?\.(safetensors|bin)(\.index\.json)?)$"
)


def _link_foreign_entries(old_folder: str, new_folder: str) -> None:
    """Hard-link (copy where links fail) what the earlier save did not write (and the new one did not replace) from
    old_folder into new_folder; old_folder stays complete until the swap."""
    for entry in os.listdir(old_folder):
        source, destination = os.path.join(old_folder, entry), os.path.join(new_folder, entry)
        if _SAVED_FILE.match(entry) or os.path.lexists(destination):
            continue
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, destination)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def _exchange_folders(first: str, second: str) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE). False where the system or
    the file system cannot; the caller then falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), first)


class LRNNPreTrainedModel(PreTrainedModel):
    """Weights init, cache policy and save behaviour shared by every H-LRU / BD-LRU model class."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LRNNBlock"]
    _is_stateful = True  # generate(): no assisted decoding (a recurrent state cannot be rolled back; from transformers
    # 5.25 the refusal comes from the cache, whose is_croppable is False)
    _supports_cache_class = True
    blocked = False  # BD-LRU subclasses set True
    auto_map = {}  # {"AutoConfig": "configuration_lrnn.XConfig", ...}, set by the architecture modules

    # checkpoints saved before the mixer's gate projection was renamed `gate_proj` -> `coefficient_proj`
    # (regex -> replacement, transformers' `key_mapping`; the SwiGLU's `mlp.gate_proj` is not touched)
    _legacy_key_mapping = {r"mixer\.gate_proj\.": "mixer.coefficient_proj."}

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        kwargs["key_mapping"] = {**cls._legacy_key_mapping, **(kwargs.get("key_mapping") or {})}
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # transformers remembers the renamings used at load and reverts them at save: never save the old names
        conversions = getattr(model, "_weight_conversions", None)
        if conversions:
            legacy = set(cls._legacy_key_mapping)

            def is_legacy(conversion):
                patterns = set(getattr(conversion, "source_patterns", None) or ())
                return bool(patterns) and patterns <= legacy

            model._weight_conversions = [c for c in conversions if not is_legacy(c)]
        return loaded

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own LRNNCache

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)  # gate bias 0: softmax/sigmoid coefficients start near 1/(m+1)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LRNNMixer) and not module.selective:
            init.uniform_(module.gate_logits, 0.0, 1.0)

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModel"):
        # transformers accepts only its own Auto classes here; it also calls this when an Auto class loads remote
        # code, so hf_lrnn's own Auto classes (looked up by name in config.auto_map) must be accepted too.
        name = auto_class if isinstance(auto_class, str) else auto_class.__name__
        if name in CUSTOM_AUTO_CLASSES:
            cls._auto_class = name
            return
        super().register_for_auto_class(auto_class)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, made atomic: the folder holds the complete old checkpoint or the complete
        new one, also when the process is killed in the middle of writing.

        The checkpoint is written into a fresh folder beside the target (same parent: `.{name}.tmp-{pid}`), then
        swapped in with the target in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`), and the old one, now
        at the fresh folder's path, deleted. Where the system cannot exchange (not Linux, or a file system without
        it) the target is renamed aside to `.{name}.old-{pid}` and the new folder renamed into place: between those
        two renames (microseconds) the target path does not exist, and a kill exactly there leaves the complete old
        checkpoint in `.{name}.old-{pid}` and the new one in `.{name}.tmp-{pid}`.
        Weight files of an earlier save (e.g. shards of another `max_shard_size`) never survive. Files that an
        earlier save did not write (tokenizer files, training state, sub-folders, a README) are hard-linked (or
        copied) into the new folder before the swap, so saving a model into a folder keeps what else is in it.

        A path that is an existing file raises ValueError. `push_to_hub=True` saves atomically first, then pushes with
        `push_to_hub()` (its hub arguments: repo_id (default: the folder name), commit_message, private, token,
        create_pr, revision, commit_description, tags); the model card is then written on the Hub only, not into
        the local folder. `is_main_process=False`, distributed checkpoints and a folder that holds the current
        working directory (which a rename would strand) are passed through unchanged.
        """
        # List every transformers Auto class so the folder loads with trust_remote_code=True for all heads, not only
        # the saved one; hf_lrnn's own Auto classes (AutoModelForCompression) only for a model of that head.
        self.config.auto_map = {
            auto_class: reference
            for auto_class, reference in self.auto_map.items()
            if auto_class not in CUSTOM_AUTO_CLASSES or auto_class == self._auto_class
        }
        target = os.path.abspath(os.fspath(save_directory))
        if os.path.exists(target) and not os.path.isdir(target):
            raise ValueError(f"save_pretrained needs a folder, but {target} is an existing file")
        is_main_process = kwargs.get("is_main_process", args[0] if args else True)
        cwd = os.path.abspath(os.getcwd())
        holds_cwd = cwd == target or cwd.startswith(target + os.sep)  # renaming it would strand the working dir
        if args or not is_main_process or kwargs.get("distributed_checkpoint") or holds_cwd:
            return super().save_pretrained(save_directory, *args, **kwargs)

        push_to_hub = kwargs.pop("push_to_hub", False)
        hub_kwargs = {name: kwargs.pop(name) for name in _PUSH_KWARGS if name in kwargs}
        if push_to_hub and kwargs.get("token") is not None:
            hub_kwargs["token"] = kwargs["token"]

        parent, name = os.path.split(target)
        os.makedirs(parent, exist_ok=True)
        fresh = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
        aside = os.path.join(parent, f".{name}.old-{os.getpid()}")
        for leftover in (fresh, aside):  # from an earlier save of this process that was interrupted
            if os.path.lexists(leftover):
                shutil.rmtree(leftover)
        try:
            super().save_pretrained(fresh, **kwargs)
            if os.path.isdir(target):
                _link_foreign_entries(target, fresh)
                if _exchange_folders(fresh, target):  # one atomic step: the target is new, `fresh` holds the old
                    shutil.rmtree(fresh, ignore_errors=True)
                else:
                    os.rename(target, aside)
                    os.rename(fresh, target)  # the window: target is missing between the rename above and this one
                    shutil.rmtree(aside, ignore_errors=True)
            else:
                os.rename(fresh, target)
        finally:
            if os.path.lexists(fresh):
                shutil.rmtree(fresh, ignore_errors=True)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", name)
            for shard_arg in ("max_shard_size", "variant"):
                if shard_arg in kwargs:
                    hub_kwargs[shard_arg] = kwargs[shard_arg]
            return self.push_to_hub(repo_id, **hub_kwargs)
        return None


class LRNNModel(LRNNPreTrainedModel):
    """The bare backbone: returns the final-norm hidden states [B, T, d] (and the cache)."""

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=None)
        self.layers = nn.ModuleList(
            [LRNNBlock(config, layer_idx, self.blocked) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm_f = build_norm(config)
        self.gradient_checkpointing = False
        # Training forwards check the token ids only until one has passed (see forward): the check is a host sync
        self.token_ids_checked_in_training = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,  # [B, T]
        attention_mask: Optional[torch.Tensor] = None,  # [B, past + T] or [B, T]
        inputs_embeds: Optional[torch.Tensor] = None,  # [B, T, d]
        cache: Optional[LRNNCache] = None,
        past_key_values: Optional[LRNNCache] = None,
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        position_ids: Optional[torch.LongTensor] = None,  # [B, T] or [1, T]; 0 = a document starts (find_documents)
        **kwargs,  # cu_seq_lens_q: [S+1] document boundaries of a packed row (B = 1), flash-attention's kwarg
    ):
        """Packed ("padding-free") batches: `position_ids` that restart at 0 inside a row (DataCollatorWithFlattening),
        or `cu_seq_lens_q`, mark document boundaries, and every document is then computed exactly as if it were alone
        (`find_documents` says which zeros count, and which padding may come with them). Such a forward has no cache:
        none is returned (whatever use_cache says), and a cache passed in raises ValueError (a packed row neither
        continues nor leaves a recurrent state). Position ids that never restart (0..T-1, or what generate() builds)
        change nothing. Positions are not otherwise used: the model has no positional embedding.

        Under torch.compile / torch.export nothing is read from tensor values (no graph break): the input checks are
        skipped, position_ids / cu_seq_lens_q are not read (packed batches must run eagerly), and without a cached
        state an attention mask zeroes the padded steps' values (exact for left padding).
        """
        cache = _pick_cache(cache, past_key_values, kwargs)
        given_cache = cache  # the caller's (None when the model creates one below)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids [B, T] or inputs_embeds [B, T, d]")
        # Input checks (README "What is checked"). Types, ranks, sizes and devices cost nothing; the values of input_ids
        # and attention_mask are read below with one host sync per call, skipped on decode steps (and for the ids, in
        # training once one forward has passed).
        name, inputs = ("input_ids", input_ids) if input_ids is not None else ("inputs_embeds", inputs_embeds)
        for arg, value in ((name, inputs), ("attention_mask", attention_mask)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"{arg} must be a torch.Tensor, got {type(value).__name__}")
        if use_cache is not None and not isinstance(use_cache, bool):
            raise TypeError(f"use_cache must be True, False or None, got {use_cache!r}")
        weight, d = self.embeddings.weight, self.config.hidden_size
        if input_ids is not None and (input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32)):
            raise (TypeError if input_ids.dim() == 2 else ValueError)(
                f"input_ids must be an int64 (or int32) tensor [batch, seq_len], got {input_ids.dtype} "
                f"{tuple(input_ids.shape)}"
            )
        if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != d
                                          or not inputs_embeds.is_floating_point()):
            raise (TypeError if inputs_embeds.dim() == 3 and inputs_embeds.shape[-1] == d else ValueError)(
                f"inputs_embeds must be a floating tensor [batch, seq_len, hidden_size={d}], got {inputs_embeds.dtype} "
                f"{tuple(inputs_embeds.shape)}"
            )
        for arg, value in ((name, inputs), ("attention_mask", attention_mask)):
            if value is not None and weight.device.type != "meta" and value.device != weight.device:
                raise ValueError(f"{arg} is on {value.device} but the model is on {weight.device}")
        if use_cache is None:
            use_cache = cache is not None or (self.config.use_cache and not self.training)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointing:
            use_cache, cache = False, None  # recomputation would write the state twice
        if cache is not None and not isinstance(cache, LRNNCache):
            raise ValueError(f"cache must be an LRNNCache (as returned by this model), got {type(cache).__name__}")
        if use_cache and cache is None:
            cache = LRNNCache(self.config)
        if not use_cache:
            cache = None
        B, T = inputs.shape[:2]
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(
                    f"attention_mask must be [batch, >= seq_len] = [{B}, >={T}] (1 = token, 0 = padding), "
                    f"got {tuple(attention_mask.shape)}"
                )
        if cache is not None:
            cache.check_model(self.config, B)  # another model's cache, or another batch size: shapes only, no sync
        # One host sync reads every flag: token ids in range and mask values in {0, 1} (not on a decode step, one new
        # token continuing a cache: generate() made that token from the model's own logits), and whether the mask pads
        # anything at all (an all-ones mask takes the fast path).
        # a decode step: one token continuing a state (not read from the token count, which a compiled step would
        # specialise on and recompile for at every token)
        decoding = T == 1 and cache is not None and cache.has_previous_state()
        vocab = getattr(self.embeddings, "num_embeddings", self.config.vocab_size)
        flags = {}
        # Under torch.compile the values are not read (a graph break): the checks are skipped and a mask is kept as is
        checking = not torch.compiler.is_compiling()
        # A training forward (train mode, gradients on) checks the ids only until one has passed: reading the flag
        # waits for the GPU to finish the previous step, and the launch queue then starts empty at every step (2.5 ms
        # of a 50 ms BD-LRU m=4 step on the H200; hf_lrnn's README, "What is checked"). Vocabulary mismatches show in
        # the first batch; a later out-of-range id fails as in any transformers model (CUDA's index assert, or
        # IndexError on CPU).
        training_step = self.training and torch.is_grad_enabled()
        if checking and input_ids is not None and not decoding and input_ids.device.type != "meta" \
                and not (training_step and self.token_ids_checked_in_training):
            flags["input_ids"] = ((input_ids < 0) | (input_ids >= vocab)).any()
        if checking and attention_mask is not None and T > 0 and attention_mask.device.type != "meta":
            if not decoding:
                flags["attention_mask"] = ((attention_mask != 0) & (attention_mask != 1)).any()
            flags["all_ones"] = attention_mask[:, -T:].all()
        flags = dict(zip(flags, torch.stack(list(flags.values())).tolist())) if flags else {}
        if flags.get("input_ids"):
            bad = input_ids[(input_ids < 0) | (input_ids >= vocab)]
            raise ValueError(
                f"input_ids must be token ids in [0, vocab_size={vocab}), got {bad.numel()} outside it (smallest "
                f"{bad.min().item()}, largest {bad.max().item()})"
            )
        if "input_ids" in flags and training_step:
            self.token_ids_checked_in_training = True
        if flags.get("attention_mask"):
            odd = attention_mask[(attention_mask != 0) & (attention_mask != 1)].unique()[:5].tolist()
            raise ValueError(f"attention_mask must hold only 1 (token) and 0 (padding), got values such as {odd}")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)  # after the range check: a bad id would be a CUDA device assert
        elif inputs_embeds.dtype != weight.dtype:
            inputs_embeds = inputs_embeds.to(weight.dtype)  # as the embedding would give (e.g. float64 into float32)
        if B == 0 or T == 0:  # nothing to scan: the empty result; a cache is left as it was
            hidden_states = self.norm_f(inputs_embeds)
            output = BaseModelOutputWithPast(
                last_hidden_state=hidden_states,
                hidden_states=(inputs_embeds,) * len(self.layers) + (hidden_states,) if output_hidden_states else None,
                **{CACHE_FIELD: cache},
            )
            return output if return_dict else output.to_tuple()
        if flags.get("all_ones"):
            attention_mask = None  # nothing padded: take the fast path
        mask = None if attention_mask is None else attention_mask[:, -T:].to(inputs_embeds.device).bool()
        documents = find_documents(position_ids, kwargs.get("cu_seq_lens_q"), mask, B, T, inputs_embeds.device)
        if documents is not None and cache is not None:
            if given_cache is not None:
                raise ValueError(
                    f"position_ids / cu_seq_lens_q mark {documents.cu_seqlens.numel() - 1 - B} document boundaries "
                    f"inside the rows, but a cache ({type(given_cache).__name__}) was passed: a packed forward scans "
                    "every document from a zero state and neither continues nor returns a recurrent state. Expected "
                    "no cache with packed documents (or position ids that do not restart at 0 inside a row)"
                )
            cache = None  # use_cache asked for one: a packed forward returns none

        hidden_states = inputs_embeds
        residual_delta = None  # the last block's MLP output: the next norm adds it to the stream (in its kernel)
        all_hidden_states = () if output_hidden_states else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states if residual_delta is None else hidden_states + residual_delta,)
            hidden_states, residual_delta = layer(hidden_states, residual_delta, attention_mask=attention_mask,
                                                  cache=cache, documents=documents, defer_residual=True)
        triton_backend = runs_triton(self.config, hidden_states.device)
        _, hidden_states = apply_add_norm(self.norm_f, hidden_states, residual_delta, triton_backend,
                                          for_projections=False)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if cache is not None and not torch.compiler.is_compiling():
            # Not inside compiled code: a count read there would be specialised on (a recompile per token).
            # generate()'s compiled step counts outside (LRNNForCausalLM.get_compiled_call).
            cache.advance(T)

        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, **{CACHE_FIELD: cache}
        )
        return output if return_dict else output.to_tuple()


def check_token_labels(labels, inputs) -> None:
    """labels must be integer class ids shaped like the inputs' [batch, seq_len] (values are not read: no host sync;
    an id outside the vocabulary fails in the loss)."""
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of token ids [batch, seq_len], got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels must hold integer token ids (-100 = ignored), got {labels.dtype}")
    if isinstance(inputs, torch.Tensor) and tuple(labels.shape) != tuple(inputs.shape[:2]):
        raise ValueError(f"labels must be [batch, seq_len] = {list(inputs.shape[:2])} like the inputs, got "
                         f"{list(labels.shape)}")


class LRNNWithHead(LRNNPreTrainedModel):
    """A backbone (`self.model`) under a task head; subclasses add the head and call `post_init()`."""

    base_model_class = LRNNModel

    def __init__(self, config):
        super().__init__(config)
        self.model = self.base_model_class(config)

    def get_input_embeddings(self):
        return self.model.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.model.embeddings = new_embeddings

    def run_backbone(self, input_ids, attention_mask, inputs_embeds, cache, past_key_values, use_cache,
                     output_hidden_states, kwargs, position_ids=None):
        """The backbone's outputs; position_ids and kwargs["cu_seq_lens_q"] mark packed documents (LRNNModel.forward)."""
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=_pick_cache(cache, past_key_values, kwargs),
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            position_ids=position_ids,
            cu_seq_lens_q=kwargs.get("cu_seq_lens_q"),
        )


class LRNNForCausalLM(LRNNWithHead, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}
    # generate()'s decode steps replay a CUDA graph per batch size (decoding_lrnn.py); at most this many are kept
    decode_graph_devices = ("cuda",)
    decode_graph_class = CudaGraph
    max_decode_graphs = 4

    def __init__(self, config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._decode_graphs = {}  # (batch size, device, compiled) -> CapturedDecodeStep, oldest first
        self._decode_graphs_for = None  # the weights and scan backend they were captured with
        self._decode_graphs_active = False  # True inside generate(decode_graph=True / "compile")
        self._decode_graphs_compiled = False  # True inside generate(decode_graph="compile")
        self.post_init()

    def __getstate__(self):
        # captured graphs are tied to this process's device memory: a copy (copy.deepcopy, pickle) starts without them
        state = dict(super().__getstate__())
        state.update(_decode_graphs={}, _decode_graphs_for=None, _decode_graphs_active=False,
                     _decode_graphs_compiled=False)
        return state

    def _lm_loss_function(self, device):
        """The loss for `labels` on `device`: a function assigned to the model (`model.loss_function = fn`) first,
        then the one-kernel causal-LM loss of lm_loss.py where `config.loss_backend` resolves to "triton" (given, or
        None on CUDA), else transformers' choice."""
        if (resolve_loss_backend(getattr(self.config, "loss_backend", None), device) == "triton"
                and not hasattr(self, "_loss_function")):
            return causal_lm_loss
        return self.loss_function

    def _can_use_decode_graphs(self) -> bool:
        """Captured decode steps need a device that captures graphs, the Triton scans there, the whole model on one
        device, and inference (not training)."""
        device = self.lm_head.weight.device
        return (device.type in self.decode_graph_devices and not self.training and not self._split_over_devices()
                and runs_triton(self.config, device))

    def _split_over_devices(self) -> bool:
        """Whether accelerate placed the model's modules on several devices (`device_map`)."""
        return len(set(getattr(self, "hf_device_map", {}).values())) > 1

    def _replay_decode_step(self, cache: LRNNCache, input_ids: torch.Tensor) -> torch.Tensor:
        """One token per row through the captured step for this batch size (captured now if it is the first)."""
        key = (input_ids.shape[0], input_ids.device, self._decode_graphs_compiled)
        step = self._decode_graphs.get(key)
        if step is None:
            # graphs of one device share a memory pool (None: the graph class makes one)
            pool = next((s.graph.pool for (_, d, _), s in self._decode_graphs.items() if d == input_ids.device), None)
            step = CapturedDecodeStep(self, input_ids.shape[0], input_ids.device, self.decode_graph_class, pool,
                                      compile=self._decode_graphs_compiled)
            while len(self._decode_graphs) >= max(1, self.max_decode_graphs):  # drop the oldest
                self._decode_graphs.pop(next(iter(self._decode_graphs)))
            self._decode_graphs[key] = step
        return step(cache, input_ids)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        # Put an empty LRNNCache in place before prefill so that prefill_chunk_size (which needs a cache) works;
        # the model fills it lazily with the right (beam-expanded) batch size.
        for name in _CACHE_NAMES:
            given = model_kwargs.get(name)
            if given is not None and not isinstance(given, LRNNCache):
                raise ValueError(f"{name} must be an LRNNCache (as returned by this model), got {type(given).__name__}")
            if given is not None:
                given.check_model(self.config)  # before prefill: another architecture, layer count or state shape
        if _cache_in(model_kwargs) is None:
            if generation_config.use_cache is not False:
                model_kwargs[CACHE_FIELD] = LRNNCache(self.config)
                return None
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    @staticmethod
    def _unconsumed(inputs, model_kwargs):
        """`inputs` [B, T(, d)] without the prefix that a passed LRNNCache has already consumed.

        Continuing from a returned cache, generate() is given the whole sequence again. transformers 5.23 drops the
        prefix the cache has consumed for every cache; 5.24 only for caches that are not all linear, so a recurrent
        state would consume it twice. The rule is transformers' own: the inputs are the whole sequence when they are
        as long as the attention mask (new tokens only come with the whole sequence's mask). Idempotent: a decode step
        (one new token) or inputs that are already trimmed are returned as they are.
        """
        cache = _cache_in(model_kwargs)
        seen = cache.get_seq_length() if isinstance(cache, LRNNCache) else 0
        if inputs is None or seen <= 0 or inputs.shape[1] <= seen:
            return inputs
        mask = model_kwargs.get("attention_mask")
        if mask is not None and mask.shape[-1] != inputs.shape[1]:
            return inputs
        return inputs[:, seen:]

    def generate(self, inputs=None, *args, **kwargs):
        """`GenerationMixin.generate`, after checks that transformers leaves to deep, unnamed failures: the prompt
        (`inputs` / `input_ids`) must be a [batch, seq_len] tensor with batch >= 1 and seq_len >= 1 (or `inputs_embeds`
        [batch, seq_len, hidden_size]), and `max_new_tokens` / `min_new_tokens` / `max_length` non-negative ints."""
        prompt_name, prompt = ("inputs", inputs) if inputs is not None else ("input_ids", kwargs.get("input_ids"))
        if prompt is not None:
            if not isinstance(prompt, torch.Tensor):
                raise TypeError(f"{prompt_name} must be a torch.Tensor of token ids [batch, seq_len], "
                                f"got {type(prompt).__name__}")
            if prompt.dim() != 2 or prompt.shape[0] == 0 or prompt.shape[1] == 0:
                raise ValueError(f"{prompt_name} must be [batch >= 1, seq_len >= 1] token ids, got shape "
                                 f"{list(prompt.shape)} (a single prompt needs a batch dimension: ids[None])")
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and (not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or 0 in embeds.shape[:2]):
            got = list(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"inputs_embeds must be [batch >= 1, seq_len >= 1, hidden_size] floats, got {got}")
        for name in ("max_new_tokens", "min_new_tokens", "max_length"):
            value = kwargs.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        decode_graph = kwargs.pop("decode_graph", True)
        if not isinstance(decode_graph, (bool, str)):
            raise TypeError(f"decode_graph must be True (replay captured decode steps where possible), \"compile\" "
                            f"(capture them as torch.compile generates them) or False, got {decode_graph!r}")
        if isinstance(decode_graph, str) and decode_graph != "compile":
            raise ValueError(f"decode_graph must be True, \"compile\" or False, got {decode_graph!r}")
        no_compile_config = kwargs.get("compile_config") is None and \
            getattr(kwargs.get("generation_config"), "compile_config", None) is None
        if not (decode_graph and self._can_use_decode_graphs()):
            if self._split_over_devices() and no_compile_config:
                # transformers would compile the decode step (the cache is compileable), but accelerate's hooks on a
                # split model make dynamo recompile at every block until its limit (seen on 2 H200s): run it eagerly
                kwargs.setdefault("disable_compile", True)
            return super().generate(inputs, *args, **kwargs)
        captured_for = (getattr(self.config, "scan_backend", None), tuple(p.data_ptr() for p in self.parameters()))
        if captured_for != self._decode_graphs_for:  # new weights (a .to(), a reload) or backend: capture again
            self._decode_graphs.clear()
            self._decode_graphs_for = captured_for
        if no_compile_config:
            kwargs.setdefault("disable_compile", True)  # the captured steps replace transformers' compiled ones
        self._decode_graphs_active, self._decode_graphs_compiled = True, decode_graph == "compile"
        try:
            return super().generate(inputs, *args, **kwargs)
        finally:
            self._decode_graphs_active = self._decode_graphs_compiled = False

    def _captured_step_inputs(self, input_ids, kwargs):
        """The inputs of a decode step that a captured graph will replay (`forward` decides that again), or None.

        Such a step reads only the new token and the cache: transformers' generic preparation (signature inspection,
        config lookups, slicing and copying the mask) would cost ~0.2 ms of host time per token, and at batch 1 the GPU
        waits for it, since generate() syncs with the host at every token to check its stopping criteria."""
        if kwargs.get("is_first_iteration") or kwargs.get("use_cache") is False or kwargs.get("output_hidden_states") \
                or not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            return None
        cache = _cache_in(kwargs)
        if not isinstance(cache, LRNNCache) or cache.get_seq_length() != input_ids.shape[1] - 1:
            return None  # not exactly one token past the cache (e.g. a continued cache's first step)
        new = input_ids[:, -1:]  # [B, 1]
        if not can_replay(cache, new, self.config):
            return None
        # the whole mask: the model reads its last column only if it runs the step eagerly after all
        return {"input_ids": new, CACHE_FIELD: cache, "use_cache": True, "attention_mask": kwargs.get("attention_mask")}

    def prepare_inputs_for_generation(self, input_ids, *args, inputs_embeds=None, **kwargs):
        if self._decode_graphs_active and inputs_embeds is None and not args:
            step_inputs = self._captured_step_inputs(input_ids, kwargs)
            if step_inputs is not None:
                return step_inputs
        # `inputs_embeds` is a named parameter: generate(inputs_embeds=...) looks for it in this signature
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        mask, given = kwargs.get("attention_mask"), inputs_embeds if inputs_embeds is not None else input_ids
        if isinstance(mask, torch.Tensor) and isinstance(given, torch.Tensor) and given.dim() >= 2 and (
                mask.dim() != 2 or mask.shape[0] != given.shape[0] or mask.shape[1] < given.shape[1]):
            raise ValueError(
                f"attention_mask must be [batch, seq_len] = [{given.shape[0]}, {given.shape[1]}] like the prompt "
                f"(1 = token, 0 = padding), got {tuple(mask.shape)}"
            )
        if kwargs.get("inputs_embeds") is not None and kwargs.get("is_first_iteration"):
            kwargs["inputs_embeds"] = self._unconsumed(kwargs["inputs_embeds"], kwargs)
        else:
            input_ids = self._unconsumed(input_ids, kwargs)
        model_inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        # The model reads only the mask's last T columns: passing just those keeps a decode step's input shapes the
        # same at every token (a compiled step is not recompiled for a mask that grows by one column per token)
        mask = model_inputs.get("attention_mask")
        new = model_inputs.get("inputs_embeds")
        new = model_inputs.get("input_ids") if new is None else new
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and isinstance(new, torch.Tensor) \
                and mask.shape[1] > new.shape[1] > 0:
            # a fresh contiguous copy, as transformers slices position_ids: strides are guarded on too, and at batch 1
            # `.contiguous()` would keep the slice's row stride (the full mask's length, one more at every token)
            model_inputs["attention_mask"] = mask[:, -new.shape[1]:].clone(memory_format=torch.contiguous_format)
        return model_inputs

    def create_masks_for_generate(self, config=None, inputs_embeds=None, attention_mask=None, **kwargs):
        """The mask generate() passes when the cache is compileable (transformers 5.17 - 5.23 build 4-D attention
        masks then): a recurrence reads only the 2-D padding mask [batch, seq_len], returned as it is."""
        return attention_mask

    def get_compiled_call(self, compile_config):
        """transformers' compiled decode step (generate() with a compileable cache on an accelerator, or with
        `compile_config`), counting the new tokens in the cache outside the compiled code, where the model skips it."""
        compiled = super().get_compiled_call(compile_config)

        def call(*args, **kwargs):
            outputs = compiled(*args, **kwargs)
            cache = outputs.get(CACHE_FIELD) if isinstance(outputs, dict) else None
            inputs = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
            if isinstance(cache, LRNNCache) and isinstance(inputs, torch.Tensor):
                cache.advance(inputs.shape[1])
            return outputs

        return call

    def _prefill(self, input_ids, generation_config, model_kwargs, *args, **kwargs):
        # chunked prefill (prefill_chunk_size) splits input_ids before prepare_inputs_for_generation sees them
        if model_kwargs.get("inputs_embeds") is None:
            input_ids = self._unconsumed(input_ids, model_kwargs)
        return super()._prefill(input_ids, generation_config, model_kwargs, *args, **kwargs)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        cache: Optional[LRNNCache] = None,
        past_key_values: Optional[LRNNCache] = None,
        labels: Optional[torch.LongTensor] = None,  # [B, T]; -100 = ignored; shifted inside
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        logits_to_keep=0,
        position_ids: Optional[torch.LongTensor] = None,  # [B, T]; restarting at 0 = packed documents (LRNNModel)
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self._decode_graphs_active and labels is None and inputs_embeds is None and input_ids is not None \
                and not output_hidden_states and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            given = _pick_cache(cache, past_key_values, dict(kwargs))
            if can_replay(given, input_ids, self.config):  # a decode step inside generate(): replay the captured one
                output = CausalLMOutputWithPast(logits=self._replay_decode_step(given, input_ids),
                                                **{CACHE_FIELD: given})
                return output if return_dict else output.to_tuple()
        check_token_labels(labels, input_ids if input_ids is not None else inputs_embeds)
        if not isinstance(logits_to_keep, (int, torch.Tensor)) or isinstance(logits_to_keep, bool):
            raise TypeError(f"logits_to_keep must be an int (keep the last N; 0 = all) or a tensor of positions, "
                            f"got {logits_to_keep!r}")
        outputs = self.run_backbone(input_ids, attention_mask, inputs_embeds, cache, past_key_values, use_cache,
                                    output_hidden_states, kwargs, position_ids)
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])  # [B, kept, vocab]
        loss = None
        if labels is not None:
            if kwargs.get("num_items_in_batch") is None:
                # a summed loss over the scored targets, divided by their count (at least 1): the usual mean, but a
                # batch whose labels are all -100 gives 0 (with zero gradients) instead of 0/0 = NaN; no host sync
                targets = kwargs.get("shift_labels")
                targets = labels[..., 1:] if targets is None else targets
                kwargs["num_items_in_batch"] = (targets != -100).sum().clamp(min=1)
            loss_function = self._lm_loss_function(logits.device)
            loss = loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()


# transformers' prepare_inputs_for_generation (5.17 - 5.24) calls inspect.signature(self.forward) at every new token
# for a model registered for the Auto classes, which ours are: a precomputed signature makes that a lookup
LRNNForCausalLM.forward.__signature__ = inspect.signature(LRNNForCausalLM.forward)


class LRNNForSequenceClassification(LRNNWithHead):
    """Backbone + linear `score` head on the last real token (last 1 in attention_mask, else last non-pad).

    Packed rows (position_ids restarting at 0, LRNNModel.forward) are pooled per row: the logits of a row's last document.
    """

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        cache: Optional[LRNNCache] = None,
        past_key_values: Optional[LRNNCache] = None,
        labels: Optional[torch.LongTensor] = None,  # [B] class ids, or [B, num_labels] for regression/multi-label
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        position_ids: Optional[torch.LongTensor] = None,  # [B, T]; restarting at 0 = packed documents (LRNNModel)
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.run_backbone(input_ids, attention_mask, inputs_embeds, cache, past_key_values, use_cache,
                                    output_hidden_states, kwargs, position_ids)
        hidden_states = outputs.last_hidden_state
        logits = self.score(hidden_states)  # [B, T, num_labels]
        B, T = logits.shape[:2]
        positions = torch.arange(T, device=logits.device)
        if attention_mask is not None:
            last = (positions * attention_mask[:, -T:].to(positions.device).long()).argmax(-1)
        elif input_ids is not None and self.config.pad_token_id is not None:
            last = (positions * (input_ids != self.config.pad_token_id).long()).argmax(-1)
        else:
            last = torch.full((B,), T - 1, device=logits.device)
        pooled_logits = logits[torch.arange(B, device=logits.device), last]  # [B, num_labels]
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=pooled_logits, config=self.config, **kwargs)
        output = SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sine/cosine position encodings [..., dim] (float32) of integer positions [...], as MAD's
    `posemb_sincos_1d`: the first dim//2 features sin(p * w_i), the next dim//2 cos(p * w_i),
    w_i = 10000^(-i / (dim//2 - 1)), and one zero feature when dim is odd."""
    half = dim // 2
    step = math.log(10000.0) / max(half - 1, 1)
    frequencies = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * -step)  # [dim//2]
    angles = positions.float().unsqueeze(-1) * frequencies  # [..., dim//2]
    encoding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # [..., 2 * (dim//2)]
    if dim % 2 == 1:
        encoding = F.pad(encoding, (0, 1))
    return encoding


class CompressionDecoder(nn.Module):
    """MAD's hard-coded non-expanding MLP decoder, applied to every position independently (no residual):
    norm -> Linear(d, d) -> GELU -> norm -> Linear(d, d) -> GELU."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.norm_in = build_norm(config)
        self.fc_in = nn.Linear(d, d)
        self.norm_mid = build_norm(config)
        self.fc_out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, T, d]
        x = F.gelu(self.fc_in(self.norm_in(x)))
        return F.gelu(self.fc_out(self.norm_mid(x)))


class LRNNForCompression(LRNNWithHead):
    """The compression auto-encoder of MAD (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
    Architectures"; `AutoEncoder` in mad/model/auto_encoder.py of github.com/athms/mad-lab): the model must
    reproduce its whole input from one vector, the hidden state of the last token.

        encode: input_ids [B, T] -> backbone (embedding -> blocks -> final norm) -> h [B, T, d]
                -> pooled = h at the last real token                                        [B, d]
        decode: pooled + sinusoidal(position t) for every t < T                             [B, T, d]
                -> CompressionDecoder (norm, Linear, GELU, norm, Linear, GELU)              [B, T, d]
                -> unembed_norm -> unembed Linear(d, vocab) (weight tied to the embedding
                   when config.tie_word_embeddings)                                         [B, T, vocab]
        loss:   cross-entropy of logits[:, t] against labels[:, t] (aligned, no shift; -100 ignored)

    With an attention_mask (left or right padding), the last real token is pooled and output t decodes the
    position of token t among the real tokens, so a padded row gives the unpadded row's outputs at its real
    positions (give padded positions the label -100). Without a mask the last position is pooled (as MAD does).
    Position encodings are computed on the fly, so any length works. No cache: the backbone runs without one.
    """

    _tied_weights_keys = {"unembed.weight": "model.embeddings.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.decoder = CompressionDecoder(config)
        self.unembed_norm = build_norm(config)
        self.unembed = nn.Linear(config.hidden_size, config.vocab_size)  # with a bias, as MAD's
        self.post_init()

    def get_output_embeddings(self):
        return self.unembed

    def set_output_embeddings(self, new_embeddings):
        self.unembed = new_embeddings

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,  # [B, T]
        attention_mask: Optional[torch.Tensor] = None,  # [B, T], 1 = real token
        inputs_embeds: Optional[torch.Tensor] = None,  # [B, T, d]
        labels: Optional[torch.LongTensor] = None,  # [B, T]; labels[:, t] is the target of output t; -100 = ignored
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_token_labels(labels, input_ids if input_ids is not None else inputs_embeds)
        outputs = self.run_backbone(input_ids, attention_mask, inputs_embeds, None, None, False,
                                    output_hidden_states, kwargs)
        hidden_states = outputs.last_hidden_state  # [B, T, d]
        B, T, d = hidden_states.shape
        device = hidden_states.device
        steps = torch.arange(T, device=device)  # [T]
        if attention_mask is None:
            last = torch.full((B,), T - 1, device=device)
            positions = steps.expand(B, T)  # [B, T]
        else:
            mask = attention_mask[:, -T:].to(device).long()  # [B, T]
            last = (steps * mask).argmax(-1)  # [B] index of the last real token
            positions = (mask.cumsum(1) - 1).clamp(min=0)  # [B, T] index of token t among the real tokens
        pooled = hidden_states[torch.arange(B, device=device), last]  # [B, d]

        decoder_input = pooled.unsqueeze(1) + sinusoidal_positions(positions, d).to(pooled.dtype)  # [B, T, d]
        decoded = self.decoder(decoder_input)  # [B, T, d]
        logits = self.unembed(self.unembed_norm(decoded))  # [B, T, vocab]

        loss = None
        if labels is not None:
            labels = labels.to(device)
            total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                    ignore_index=-100, reduction="sum")
            num_items = kwargs.get("num_items_in_batch")  # Trainer, with gradient accumulation
            if num_items is None:
                num_items = (labels != -100).sum()
            loss = total / torch.as_tensor(num_items, device=device).clamp(min=1)  # 0 (not NaN) if all ignored
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()
