"""Public functional API: `hlru_scan` and `bdlru_scan` (docs/spec.md in the hf_lrnn repository, "Scan API").

Both take gate LOGITS; the L1 normalisation happens inside (fused into the Triton kernels on GPU).
States accumulate in float32 (float64 on the torch backend when the gates are float64); outputs come back in
the dtype of `values`.

Backends:
    "torch"   the pure-PyTorch reference (scan_torch.py), any device, differentiable through autograd.
    "triton"  fused Triton kernels (scan_triton.py): CUDA tensors, or CPU tensors under TRITON_INTERPRET=1.
    None      the best available: "triton" for CUDA tensors when Triton imports, "torch" otherwise.
The environment variable HF_LRNN_BACKEND=torch|triton overrides the choice made for `backend=None`.
"""

import os
import re
from typing import Optional, Tuple

import torch

from . import decode_triton
# `from .x import`, not `from . import x`: transformers copies a checkpoint's remote code by the first form only
from .scan_time_last import time_last_backward, time_last_forward, time_last_scan
from .scan_torch import GATE_ACTIVATIONS, bdlru_scan_torch, hlru_scan_torch, scan_with_restarts_torch

try:
    from .scan_triton import bdlru_scan_triton, hlru_scan_triton
    from .scan_triton import _ACT_ID, can_step_in_place, scan_backward, scan_forward, scan_step_in_place

    TRITON_IMPORT_ERROR = None
except ImportError as err:  # no Triton installed: the reference path still works everywhere
    hlru_scan_triton = bdlru_scan_triton = None
    TRITON_IMPORT_ERROR = err

BACKENDS = ("torch", "triton")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def triton_available() -> bool:
    return hlru_scan_triton is not None


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """Pick the backend for tensors on `device`; `backend=None` means the best available."""
    if backend is None:
        backend = os.environ.get("HF_LRNN_BACKEND") or None
    if backend is None:
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "triton":
        if not triton_available():
            raise ValueError(f"backend='triton' needs Triton, which failed to import: {TRITON_IMPORT_ERROR}")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend='triton' needs CUDA tensors (got device {device}) or TRITON_INTERPRET=1 set before "
                "Triton is imported"
            )
    return backend


# ----------------------------------------------------------------------------------------------------------------
# The Triton backend as torch custom ops, so that torch.compile (fullgraph=True) and torch.export see one opaque op
# per scan instead of Python that reads tensor values and launches kernels: `<ns>::hlru_scan_fwd` / `_bwd` and
# `<ns>::bdlru_scan_fwd` / `_bwd`, each with a fake (meta) implementation (shapes and dtypes only) and the forward
# ops with an autograd formula that calls the backward op. Eager calls keep the autograd Function of scan_triton.py
# (no dispatch cost per call); both run the same host code and kernels.
#
# This file is also copied into every saved checkpoint and may then be imported a second time, under another
# module name (remote code: `transformers_modules.<folder>.ops`), in the same process as the installed package, and
# re-executed when the folder's code changes. An op name can be registered only once, so every import registers
# its ops under its own namespace: `hf_lrnn` for the installed package, `hf_lrnn_<sanitised package name>` for a
# copy, with a numeric suffix when that namespace is already taken.
# ----------------------------------------------------------------------------------------------------------------
_FWD_SCHEMA = (
    "(Tensor gates, Tensor values, Tensor? initial_state, int act, bool want_final, Tensor? cu_seqlens, "
    "int? chunk_size) -> (Tensor, Tensor)"
)
_BWD_SCHEMA = (
    "(Tensor gates, Tensor values, Tensor states, Tensor? initial_state, Tensor d_states, Tensor? d_final, int act, "
    "Tensor? cu_seqlens, int? chunk_size) -> (Tensor, Tensor, Tensor)"
)
_STEP_INTO_SCHEMA = "(Tensor gates, Tensor values, Tensor(a!) state, Tensor(b!)? readout, int act) -> Tensor"


def _op_exists(namespace: str, name: str) -> bool:
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _op_namespace(module_name: str) -> str:
    """The namespace of this import's custom ops: not yet used by any other import of this file."""
    package = module_name.rpartition(".")[0] or module_name
    base = "hf_lrnn" if package == "hf_lrnn" else "hf_lrnn_" + re.sub(r"[^0-9A-Za-z_]", "_", package)
    namespace, k = base, 1
    while _op_exists(namespace, "hlru_scan_fwd") or _op_exists(namespace, "bdlru_scan_fwd"):
        k += 1
        namespace = f"{base}_{k}"
    return namespace


def _num_states(values: torch.Tensor, cu_seqlens: Optional[torch.Tensor]) -> int:
    return values.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


def _define_triton_ops(namespace: str, blocked: bool):
    """Define `<namespace>::{h,bd}lru_scan_{fwd,bwd,step_into}`; returns (forward op, backward op, step op)."""
    name = "bdlru_scan" if blocked else "hlru_scan"

    @torch.library.custom_op(f"{namespace}::{name}_fwd", mutates_args=(), schema=_FWD_SCHEMA)
    def scan_fwd(gates, values, initial_state, act, want_final, cu_seqlens, chunk_size):
        """(states [B, T, N(, m)] in values.dtype, final state [S, N, m] float32, or [0] without want_final)."""
        states, final, _ = scan_forward(blocked, gates, values, initial_state, act, want_final, cu_seqlens, chunk_size)
        if final is None:
            final = values.new_empty((0,), dtype=torch.float32)
        return states, final

    @scan_fwd.register_fake
    def _(gates, values, initial_state, act, want_final, cu_seqlens, chunk_size):
        N, m = values.shape[2], gates.shape[-1] - 1
        final_shape = (_num_states(values, cu_seqlens), N, m) if want_final else (0,)
        return values.new_empty(values.shape), values.new_empty(final_shape, dtype=torch.float32)

    @torch.library.custom_op(f"{namespace}::{name}_bwd", mutates_args=(), schema=_BWD_SCHEMA)
    def scan_bwd(gates, values, states, initial_state, d_states, d_final, act, cu_seqlens, chunk_size):
        """(d gates in gates.dtype, d values in values.dtype, d initial state float32 [S, N, m] or [0] without one)."""
        dg, dv, dh0 = scan_backward(blocked, gates, values, states, initial_state, d_states, d_final, act, cu_seqlens,
                                    chunk_size)
        if dh0 is None:
            dh0 = values.new_empty((0,), dtype=torch.float32)
        return dg, dv, dh0

    @scan_bwd.register_fake
    def _(gates, values, states, initial_state, d_states, d_final, act, cu_seqlens, chunk_size):
        N, m = values.shape[2], gates.shape[-1] - 1
        dh0_shape = (_num_states(values, cu_seqlens), N, m) if initial_state is not None else (0,)
        return gates.new_empty(gates.shape), values.new_empty(values.shape), values.new_empty(dh0_shape, dtype=torch.float32)

    def setup_context(ctx, inputs, output):
        gates, values, initial_state, act, want_final, cu_seqlens, chunk_size = inputs
        ctx.save_for_backward(gates, values, output[0], initial_state, cu_seqlens)
        ctx.act, ctx.want_final, ctx.chunk_size = act, want_final, chunk_size

    def backward(ctx, d_states, d_final):
        gates, values, states, initial_state, cu_seqlens = ctx.saved_tensors
        if d_states is None:
            d_states = torch.zeros_like(states)
        d_final = d_final if ctx.want_final else None  # the [0] placeholder has no gradient to pass on
        dg, dv, dh0 = scan_bwd(gates, values, states, initial_state, d_states, d_final, ctx.act, cu_seqlens,
                               ctx.chunk_size)
        dh0 = dh0.to(initial_state.dtype) if initial_state is not None else None
        return dg, dv, dh0, None, None, None, None

    scan_fwd.register_autograd(backward, setup_context=setup_context)

    # A decode step that writes the new state into `state` (declared mutated: inductor then updates the cache's
    # tensor itself, with no copy back), and for H-LRU the new window into `readout` if given. Callers check
    # `can_step_in_place` first; no autograd.
    @torch.library.custom_op(f"{namespace}::{name}_step_into", mutates_args=("state", "readout"),
                             schema=_STEP_INTO_SCHEMA)
    def scan_step(gates, values, state, readout, act):
        """The states [B, 1, N(, m)] in values.dtype; the new state is written into `state`."""
        return scan_step_in_place(blocked, gates, values, state, act, readout)

    @scan_step.register_fake
    def _(gates, values, state, readout, act):
        return values.new_empty(values.shape)

    return scan_fwd, scan_bwd, scan_step


_NORM_PROJECT_SCHEMA = (
    "(Tensor x, Tensor? delta, Tensor norm_weight, Tensor? norm_bias, float eps, bool is_rms, Tensor w_a, "
    "Tensor? w_b, Tensor? bias_b, bool swiglu) -> (Tensor, Tensor, Tensor)"
)


def _define_norm_project_op(namespace: str):
    """`<namespace>::norm_project`: decode_triton's fused (add +) norm + projections of a decode step, for
    torch.compile; what is not there (no delta: the total; swiglu or no w_b: b) comes back as a [0] placeholder (an
    op's outputs may not alias its inputs). Inference only: no autograd formula."""

    @torch.library.custom_op(f"{namespace}::norm_project", mutates_args=(), schema=_NORM_PROJECT_SCHEMA)
    def norm_project_op(x, delta, norm_weight, norm_bias, eps, is_rms, w_a, w_b, bias_b, swiglu):
        total, a, b = decode_triton.norm_project_tensors(x, delta, norm_weight, norm_bias, eps, is_rms, w_a, w_b,
                                                         bias_b, swiglu)
        placeholder = x.new_empty((0,))
        return total if total is not None else placeholder, a, b if b is not None else placeholder

    @norm_project_op.register_fake
    def _(x, delta, norm_weight, norm_bias, eps, is_rms, w_a, w_b, bias_b, swiglu):
        B = x.shape[0]
        total = x.new_empty(x.shape) if delta is not None else x.new_empty((0,))
        b = x.new_empty((B, w_b.shape[0])) if w_b is not None and not swiglu else x.new_empty((0,))
        return total, x.new_empty((B, w_a.shape[0])), b

    return norm_project_op


_TIME_LAST_FWD_SCHEMA = (
    "(Tensor gates, Tensor values, Tensor? initial_state, str act, bool want_final, Tensor? starts, "
    "Tensor? gate_bias, bool window) -> (Tensor, Tensor)"
)
_TIME_LAST_BWD_SCHEMA = (
    "(Tensor gates, Tensor values, Tensor states, Tensor? initial_state, Tensor d_states, Tensor? d_final, str act, "
    "Tensor? starts, Tensor? gate_bias, bool window) -> (Tensor, Tensor, Tensor, Tensor)"
)


def _define_time_last_ops(namespace: str):
    """`<namespace>::hlru_scan_time_last_{fwd,bwd}` (scan_time_last.py; H-LRU, and BD-LRU of block size 2 or 4 for
    5-D gates), the forward with its autograd formula, for torch.compile; eager calls take scan_time_last's autograd
    Function, without the op's dispatch layers (as `hlru_scan`'s eager calls take scan_triton's)."""

    @torch.library.custom_op(f"{namespace}::hlru_scan_time_last_fwd", mutates_args=(), schema=_TIME_LAST_FWD_SCHEMA)
    def time_last_fwd(gates, values, initial_state, act, want_final, starts, gate_bias, window):
        """(states [B, N, T] (window: [B, N, m, T]) in values.dtype, final window [B, N, m] float32, or [0] without
        want_final)."""
        states, final = time_last_forward(gates, values, initial_state, act, want_final, starts, gate_bias, window)
        return states, final if final is not None else values.new_empty((0,), dtype=torch.float32)

    @time_last_fwd.register_fake
    def _(gates, values, initial_state, act, want_final, starts, gate_bias, window):
        B, N, T = values.shape[0], values.shape[1], values.shape[-1]
        m = gates.shape[2] if gates.dim() == 5 else gates.shape[2] - 1
        return values.new_empty((B, N, m, T) if window else values.shape), \
            values.new_empty((B, N, m) if want_final else (0,), dtype=torch.float32)

    @torch.library.custom_op(f"{namespace}::hlru_scan_time_last_bwd", mutates_args=(), schema=_TIME_LAST_BWD_SCHEMA)
    def time_last_bwd(gates, values, states, initial_state, d_states, d_final, act, starts, gate_bias, window):
        """(d gates, d values, d initial state float32 or [0], d gate_bias float32 or [0])."""
        dg, dv, dh0, d_bias = time_last_backward(gates, values, states, initial_state, d_states, d_final, act, starts,
                                                 gate_bias, window)
        empty = values.new_empty((0,), dtype=torch.float32)
        return dg, dv, dh0 if dh0 is not None else empty, d_bias if d_bias is not None else empty

    @time_last_bwd.register_fake
    def _(gates, values, states, initial_state, d_states, d_final, act, starts, gate_bias, window):
        dh0_shape = tuple(initial_state.shape) if initial_state is not None else (0,)
        bias_shape = tuple(gate_bias.shape) if gate_bias is not None else (0,)
        return gates.new_empty(gates.shape), values.new_empty(values.shape), \
            values.new_empty(dh0_shape, dtype=torch.float32), values.new_empty(bias_shape, dtype=torch.float32)

    def setup_context(ctx, inputs, output):
        gates, values, initial_state, act, want_final, starts, gate_bias, window = inputs
        ctx.save_for_backward(gates, values, output[0], initial_state, starts, gate_bias)
        ctx.act, ctx.want_final, ctx.window = act, want_final, window

    def backward(ctx, d_states, d_final):
        gates, values, states, initial_state, starts, gate_bias = ctx.saved_tensors
        if d_states is None:
            d_states = torch.zeros_like(states)
        d_final = d_final if ctx.want_final else None  # the [0] placeholder has no gradient to pass on
        dg, dv, dh0, d_bias = time_last_bwd(gates, values, states, initial_state, d_states, d_final, ctx.act, starts,
                                            gate_bias, ctx.window)
        dh0 = dh0.to(initial_state.dtype) if initial_state is not None else None
        d_bias = d_bias.to(gate_bias.dtype) if gate_bias is not None else None
        return dg, dv, dh0, None, None, None, d_bias, None

    time_last_fwd.register_autograd(backward, setup_context=setup_context)
    return time_last_fwd


if TRITON_IMPORT_ERROR is None:
    OP_NAMESPACE = _op_namespace(__name__)
    hlru_scan_fwd_op, hlru_scan_bwd_op, hlru_scan_step_into_op = _define_triton_ops(OP_NAMESPACE, blocked=False)
    bdlru_scan_fwd_op, bdlru_scan_bwd_op, bdlru_scan_step_into_op = _define_triton_ops(OP_NAMESPACE, blocked=True)
    if decode_triton.triton is not None:
        decode_triton.norm_project_op = _define_norm_project_op(OP_NAMESPACE)
    hlru_scan_time_last_op = _define_time_last_ops(OP_NAMESPACE)
else:
    OP_NAMESPACE = None
    hlru_scan_fwd_op = hlru_scan_bwd_op = bdlru_scan_fwd_op = bdlru_scan_bwd_op = None
    hlru_scan_step_into_op = bdlru_scan_step_into_op = hlru_scan_time_last_op = None


def _described(value) -> str:
    """A tensor's dtype, shape and device (or the type of what is not a tensor), for error messages."""
    if not isinstance(value, torch.Tensor):
        return type(value).__name__
    return f"{value.dtype} {tuple(value.shape)} on {value.device}"


def _check_arguments(op, gates, values, gate_activation, output_final_state):
    """What every scan checks first: the activation's name, floating tensors, a bool output_final_state."""
    if gate_activation not in GATE_ACTIVATIONS:
        raise ValueError(f"{op}: gate_activation must be one of {GATE_ACTIVATIONS}, got {gate_activation!r}")
    for name, t in (("gates", gates), ("values", values)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{op}: {name} must be float32, bfloat16, float16 or float64, got {t.dtype}")
    if not isinstance(output_final_state, bool):
        raise ValueError(f"{op}: output_final_state must be True or False, got {output_final_state!r}")


def _check(op, gates, values, initial_state, gate_activation, cu_seqlens, blocked, output_final_state=False):
    """Validate the inputs of `op` (blocked: BD-LRU shapes); returns (B, T, N, m). Every problem is a ValueError
    that names the argument, what it got and what was expected. Empty inputs (B = 0 or T = 0) are valid and give
    the empty result. Host syncs: none, except reading `cu_seqlens` (once per call; skipped while torch.compile
    traces, which then checks its shape, dtype and device only)."""
    gate_dims = "[B, T, N, m, m+1]" if blocked else "[B, T, N, m+1]"
    value_dims = "[B, T, N, m]" if blocked else "[B, T, N]"
    _check_arguments(op, gates, values, gate_activation, output_final_state)
    if gates.dim() != (5 if blocked else 4):
        raise ValueError(f"{op}: gates must have shape {gate_dims}, got {tuple(gates.shape)}")
    if values.dim() != (4 if blocked else 3):
        raise ValueError(f"{op}: values must have shape {value_dims}, got {tuple(values.shape)}")
    B, T, N = gates.shape[:3]
    m = gates.shape[-1] - 1
    if m < 1:
        raise ValueError(f"{op}: the last dim of gates is m+1 and must be >= 2, got {gates.shape[-1]}")
    expected_gates = (B, T, N) + ((m, m + 1) if blocked else (m + 1,))
    if tuple(gates.shape) != expected_gates:
        raise ValueError(f"{op}: gates must have shape {gate_dims} = {expected_gates}, got {tuple(gates.shape)}")
    expected_values = (B, T, N) + ((m,) if blocked else ())
    if tuple(values.shape) != expected_values:
        raise ValueError(
            f"{op}: values must have shape {value_dims} = {expected_values} to match gates {tuple(gates.shape)}, "
            f"got {tuple(values.shape)}"
        )
    if gates.device != values.device:
        raise ValueError(f"{op}: gates are on {gates.device} but values on {values.device}")
    num_states = B
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor):
            raise ValueError(
                f"{op}: cu_seqlens must be a 1-D int32/int64 torch.Tensor [num_seqs+1], got {type(cu_seqlens).__name__}"
            )
        if B != 1:
            raise ValueError(f"{op}: with cu_seqlens the batch size must be 1 (packed sequences), got {B}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"{op}: cu_seqlens must be a 1-D int32/int64 tensor [num_seqs+1], got {cu_seqlens.dtype} "
                f"{tuple(cu_seqlens.shape)}"
            )
        if cu_seqlens.device.type == "meta" or cu_seqlens.device not in (values.device, torch.device("cpu")):
            raise ValueError(f"{op}: cu_seqlens is on {cu_seqlens.device}; expected {values.device} (as values) or cpu")
        if torch.compiler.is_compiling():
            # no host sync while tracing (fullgraph=True): the values of the boundaries are not checked
            num_states = cu_seqlens.shape[0] - 1
        else:
            bounds = cu_seqlens.tolist()  # one host sync per call (packed sequences only)
            if bounds[0] != 0 or bounds[-1] != T or any(b > e for b, e in zip(bounds[:-1], bounds[1:])):
                raise ValueError(f"{op}: cu_seqlens must rise from 0 to T={T}, got {bounds}")
            num_states = len(bounds) - 1
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise ValueError(f"{op}: initial_state must be a torch.Tensor or None, got {type(initial_state).__name__}")
        if tuple(initial_state.shape) != (num_states, N, m):
            raise ValueError(
                f"{op}: initial_state must have shape [{'num_seqs' if cu_seqlens is not None else 'B'}, N, m] = "
                f"{(num_states, N, m)}, got {tuple(initial_state.shape)}"
            )
        if initial_state.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{op}: initial_state must be a floating tensor, got {initial_state.dtype}")
        if initial_state.device != values.device:
            raise ValueError(f"{op}: initial_state is on {initial_state.device} but values on {values.device}")
    return B, T, N, m


def _run(op, blocked, gates, values, initial_state, gate_activation, output_final_state, backend, cu_seqlens):
    """Validate, then run the chosen backend of `op`."""
    _check(op, gates, values, initial_state, gate_activation, cu_seqlens, blocked, output_final_state)
    if resolve_backend(backend, values.device) == "triton":
        if torch.compiler.is_compiling():  # traced: one opaque custom op per scan (no graph break)
            scan = bdlru_scan_fwd_op if blocked else hlru_scan_fwd_op
            states, final = scan(gates, values, initial_state, _ACT_ID[gate_activation], output_final_state,
                                 cu_seqlens, None)
            return states, (final if output_final_state else None)
        # eager: the autograd Function directly (the same kernels and launch plan, without the op dispatch)
        scan = bdlru_scan_triton if blocked else hlru_scan_triton
        return scan(gates, values, initial_state, gate_activation, output_final_state, cu_seqlens)
    scan = bdlru_scan_torch if blocked else hlru_scan_torch
    states, final = scan(gates, values, initial_state, gate_activation, cu_seqlens)
    return states, (final if output_final_state else None)


def scan_step_into(blocked, gates, values, state, gate_activation, backend=None,
                   readout: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """A decode step of `hlru_scan` (blocked=False) or `bdlru_scan` that writes its final state into `state` [B, N, m]
    (a cache's float32 state tensor) instead of returning it: the states [B, 1, N(, m)], or None where that is not
    available (then run the scan and store its final state; `readout` is then untouched). Triton's per-thread
    kernels, without autograd; traced by torch.compile as one custom op that mutates `state` (and `readout`).

    readout: H-LRU only, a contiguous tensor of B x N x m elements (e.g. [B, 1, N*m] in the model's dtype) that
    receives the new window (s_t, ..., s_{t-m+1}) as `state.to(readout.dtype)` would give it: a model's read-out
    without a cast kernel of its own."""
    if values.shape[1] != 1 or resolve_backend(backend, values.device) != "triton":
        return None
    if state.requires_grad or (torch.is_grad_enabled() and (gates.requires_grad or values.requires_grad)):
        return None
    compiling = torch.compiler.is_compiling()
    if not compiling and state.is_inference() and not torch.is_inference_mode_enabled():
        return None  # as torch refuses an in-place write there
    op = "bdlru_scan" if blocked else "hlru_scan"
    B, _, N, m = _check(op, gates, values, state, gate_activation, None, blocked, True)
    if readout is not None and (blocked or not isinstance(readout, torch.Tensor) or not readout.is_floating_point()
                                or readout.numel() != B * N * m or not readout.is_contiguous()
                                or readout.device != values.device):
        got = _described(readout)
        raise ValueError(f"scan_step_into: readout must be None for BD-LRU, or for H-LRU a contiguous floating tensor "
                         f"of B*N*m = {B * N * m} elements on {values.device}, got {got}" + (" (BD-LRU)" if blocked else ""))
    if compiling:
        if not can_step_in_place(blocked, gates, values, state):
            return None
        step = bdlru_scan_step_into_op if blocked else hlru_scan_step_into_op
        return step(gates, values, state, readout, _ACT_ID[gate_activation])
    return scan_step_in_place(blocked, gates, values, state, gate_activation, readout)


def hlru_scan(
    gates: torch.Tensor,
    values: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    gate_activation: str = "softmax",
    output_final_state: bool = False,
    backend: Optional[str] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """H-LRU of order m: s_t = sum_{i=1..m} a_t^(i) s_{t-i} + g_t v_t, with (a_t, g_t) = normalise(gates_t).

    Args:
        gates: [B, T, N, m+1] logits; entries 0..m-1 are the recurrence coefficients (entry i-1 multiplies
            s_{t-i}), entry m is the input gate.
        values: [B, T, N].
        initial_state: [B, N, m] = (s_0, s_{-1}, ..., s_{-m+1}); zeros if None.
        gate_activation: one of softmax, sigmoid, relu, tanh, linear, none.
        output_final_state: also return the final window [B, N, m] = (s_T, ..., s_{T-m+1}) in float32
            (float64 on the torch backend when the gates are float64).
        backend: "torch", "triton" or None (best available).
        cu_seqlens: [S+1] boundaries of S sequences packed along T (B must be 1); initial_state and the
            final state are then [S, N, m].
    Returns:
        (states [B, T, N] in values.dtype, final_state or None)
    """
    args = (gates, values, initial_state, gate_activation, output_final_state, backend, cu_seqlens)
    return _run("hlru_scan", False, *args)


def bdlru_scan(
    gates: torch.Tensor,
    values: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    gate_activation: str = "softmax",
    output_final_state: bool = False,
    backend: Optional[str] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """BD-LRU with block size m: h_t[n] = A_t[n] @ h_{t-1}[n] + g_t[n] * v_t[n], each row of [A | g] normalised.

    Args:
        gates: [B, T, N, m, m+1] logits; row j holds A_t[n, j, 0..m-1] and the input gate g_t[n, j] last.
        values: [B, T, N, m].
        initial_state: [B, N, m] = h_0; zeros if None.
        gate_activation, output_final_state, backend, cu_seqlens: as for `hlru_scan`.
    Returns:
        (states [B, T, N, m] in values.dtype, final_state [B, N, m] in float32 (as for `hlru_scan`) or None)
    """
    args = (gates, values, initial_state, gate_activation, output_final_state, backend, cu_seqlens)
    return _run("bdlru_scan", True, *args)


def _check_optional_tensor(op: str, name: str, value, dims: str, shape: tuple, device, mask: bool = False):
    """A ValueError unless `value` is None or a tensor of `shape` on `device`: floating, or bool if `mask`; `dims`
    names the shape's axes in the message (e.g. "[B, N, m]")."""
    if value is None:
        return
    kind = "bool" if mask else "floating"
    dtype_ok = isinstance(value, torch.Tensor) and (value.dtype == torch.bool if mask else value.dtype in _FLOAT_DTYPES)
    if not dtype_ok or tuple(value.shape) != tuple(shape) or value.device != device:
        raise ValueError(f"{op}: {name} must be None or a {kind} tensor {dims} = {tuple(shape)} on {device}, got "
                         f"{_described(value)}")


def hlru_scan_time_last(
    gates: torch.Tensor,
    values: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    gate_activation: str = "softmax",
    output_final_state: bool = False,
    backend: Optional[str] = None,
    document_starts: Optional[torch.Tensor] = None,
    gate_bias: Optional[torch.Tensor] = None,
    output_window: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`hlru_scan` of order m = 1, 2 or 4 on time-last tensors, the layout in which the Triton scan streams at close
    to the memory bandwidth (scan_time_last.py): s_t = a1_t s_{t-1} + ... + am_t s_{t-m} + g_t v_t. At m = 1 it is
    also BD-LRU of block size 1.

    Args:
        gates: [B, N, m+1, T] logits: channel n's row of lag-1 logits over time, (lag-2 logits,) then its input-gate
            logits (what `torch.bmm(W.expand(B, -1, -1), x.transpose(1, 2))` gives for a projection W whose rows
            are ordered (n, j), as the models' coefficient projections are).
        values: [B, N, T].
        initial_state: [B, N, m] = (s_0, ..., s_{-m+1}); zeros if None.
        gate_activation, output_final_state, backend: as for `hlru_scan`.
        document_starts: [B, T] bool or None: documents packed in the rows; the window restarts from zero before
            every step where it is True (each document scanned as if alone, as `hlru_scan`'s cu_seqlens does; a
            start at step 0 discards the initial window).
        gate_bias: [N, m+1] or None: added to every step's logits (gates[b, n, j, t] + gate_bias[n, j]), inside
            the kernels on the Triton backend, so that a projection written time-last needs no pass of its own to
            add its bias; differentiable.
        output_window: return the window [B, N, m, T] = (s_t, ..., s_{t-m+1}) at every step (zero before a document's
            start, the initial window before step 0) instead of the states: the H-LRU read-out, written by the scan
            itself (at m = 2 without a separate stack of the states and the states shifted by one step).
    Returns:
        (states [B, N, T] (output_window: window [B, N, m, T]) in values.dtype, final window [B, N, m] =
        (s_T, ..., s_{T-m+1}) in float32 or None)
    """
    op = "hlru_scan_time_last"
    _check_arguments(op, gates, values, gate_activation, output_final_state)
    if not isinstance(output_window, bool):
        raise ValueError(f"{op}: output_window must be True or False, got {output_window!r}")
    if gates.dim() != 4 or gates.shape[2] not in (2, 3, 5):
        raise ValueError(f"{op}: gates must have shape [B, N, m+1, T] with m = 1, 2 or 4 (use hlru_scan for other m), "
                         f"got {tuple(gates.shape)}")
    B, N, m1, T = gates.shape
    if tuple(values.shape) != (B, N, T):
        raise ValueError(f"{op}: values must have shape [B, N, T] = {(B, N, T)} to match gates {tuple(gates.shape)}, "
                         f"got {tuple(values.shape)}")
    if gates.device != values.device:
        raise ValueError(f"{op}: gates are on {gates.device} but values on {values.device}")
    _check_optional_tensor(op, "initial_state", initial_state, "[B, N, m]", (B, N, m1 - 1), values.device)
    _check_optional_tensor(op, "document_starts", document_starts, "[B, T]", (B, T), values.device, mask=True)
    _check_optional_tensor(op, "gate_bias", gate_bias, "[N, m+1]", (N, m1), values.device)
    if resolve_backend(backend, values.device) == "triton":
        if torch.compiler.is_compiling():  # traced: one opaque custom op (no graph break)
            states, final = hlru_scan_time_last_op(gates, values, initial_state, gate_activation, output_final_state,
                                                   document_starts, gate_bias, output_window)
            return states, (final if output_final_state else None)
        # eager: the autograd Function directly (the same kernels, without the op dispatch)
        return time_last_scan(gates, values, initial_state, gate_activation, output_final_state, document_starts,
                              gate_bias, output_window)
    # the reference on the [B, T, N] layout; transposed copies, exact
    if gate_bias is not None:
        gates = gates + gate_bias[:, :, None].to(gates.dtype)
    gates, values = gates.permute(0, 3, 1, 2), values.transpose(1, 2)
    if document_starts is None:
        states, final = hlru_scan_torch(gates, values, initial_state, gate_activation)
    else:
        states, final = scan_with_restarts_torch(False, gates, values, document_starts, gate_activation, initial_state)
    states = states.transpose(1, 2).contiguous()  # [B, N, T]
    if output_window:
        states = _time_last_window(states, initial_state, document_starts, m1 - 1)
    return states, (final if output_final_state else None)


def bdlru_scan_time_last(
    gates: torch.Tensor,
    values: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    gate_activation: str = "softmax",
    output_final_state: bool = False,
    backend: Optional[str] = None,
    document_starts: Optional[torch.Tensor] = None,
    gate_bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`bdlru_scan` of block size m = 1, 2 or 4 on time-last tensors (scan_time_last.py): h_t[n] = A_t[n] @
    h_{t-1}[n] + g_t[n] * v_t[n], each row of [A | g] normalised over its m+1 logits. At m = 1 it is
    `hlru_scan_time_last`.

    Args:
        gates: [B, N, m, m+1, T] logits: block n's row j holds A_t[n, j, 0..m-1], then the input gate g_t[n, j], each
            a row over time (what a gate projection with rows ordered (n, j, k) writes time-last).
        values: [B, N, m, T].
        initial_state: [B, N, m] = h_0; zeros if None.
        gate_activation, output_final_state, backend: as for `hlru_scan`.
        document_starts: [B, T] bool or None: documents packed in the rows; the state restarts from zero before
            every step where it is True (as `hlru_scan_time_last`'s).
        gate_bias: [N, m, m+1] or None: added to every step's logits, inside the kernels on the Triton backend;
            differentiable.
    Returns:
        (states [B, N, m, T] in values.dtype, final state [B, N, m] in float32 or None)
    """
    op = "bdlru_scan_time_last"
    _check_arguments(op, gates, values, gate_activation, output_final_state)
    if gates.dim() != 5 or gates.shape[2] not in (1, 2, 4) or gates.shape[3] != gates.shape[2] + 1:
        raise ValueError(f"{op}: gates must have shape [B, N, m, m+1, T] with m = 1, 2 or 4 (use bdlru_scan for other "
                         f"m), got {tuple(gates.shape)}")
    B, N, m, _, T = gates.shape
    if tuple(values.shape) != (B, N, m, T):
        raise ValueError(f"{op}: values must have shape [B, N, m, T] = {(B, N, m, T)} to match gates "
                         f"{tuple(gates.shape)}, got {tuple(values.shape)}")
    if gates.device != values.device:
        raise ValueError(f"{op}: gates are on {gates.device} but values on {values.device}")
    _check_optional_tensor(op, "initial_state", initial_state, "[B, N, m]", (B, N, m), values.device)
    _check_optional_tensor(op, "document_starts", document_starts, "[B, T]", (B, T), values.device, mask=True)
    _check_optional_tensor(op, "gate_bias", gate_bias, "[N, m, m+1]", (N, m, m + 1), values.device)
    if m == 1:  # H-LRU of order 1
        states, final = hlru_scan_time_last(gates.reshape(B, N, 2, T), values.reshape(B, N, T), initial_state,
                                            gate_activation, output_final_state, backend, document_starts,
                                            gate_bias.reshape(N, 2) if gate_bias is not None else None)
        return states.reshape(B, N, 1, T), final
    if resolve_backend(backend, values.device) == "triton":
        if torch.compiler.is_compiling():  # traced: one opaque custom op (no graph break)
            states, final = hlru_scan_time_last_op(gates, values, initial_state, gate_activation, output_final_state,
                                                   document_starts, gate_bias, False)
            return states, (final if output_final_state else None)
        return time_last_scan(gates, values, initial_state, gate_activation, output_final_state, document_starts,
                              gate_bias)
    # the reference on the [B, T, N, m] layout; transposed copies, exact
    if gate_bias is not None:
        gates = gates + gate_bias[..., None].to(gates.dtype)
    gates, values = gates.permute(0, 4, 1, 2, 3), values.permute(0, 3, 1, 2)
    if document_starts is None:
        states, final = bdlru_scan_torch(gates, values, initial_state, gate_activation)
    else:
        states, final = scan_with_restarts_torch(True, gates, values, document_starts, gate_activation, initial_state)
    return states.permute(0, 2, 3, 1).contiguous(), (final if output_final_state else None)


def _time_last_window(states: torch.Tensor, initial_state: Optional[torch.Tensor],
                      document_starts: Optional[torch.Tensor], m: int) -> torch.Tensor:
    """[B, N, T] states -> [B, N, m, T] windows (s_t, ..., s_{t-m+1}), the reference's: lag k is the states shifted
    by k steps, the initial window's first k entries (most recent first) before step 0, zero where a document starts
    within the last k steps."""
    B, N, T = states.shape
    lags = [states]
    for k in range(1, m):
        before = initial_state[..., :k].flip(-1).to(states.dtype) if initial_state is not None \
            else states.new_zeros(B, N, k)
        shifted = torch.cat([before, states], dim=-1)[..., :T]  # [B, N, T]: s_{t-k}
        if document_starts is not None:
            reset = torch.zeros_like(document_starts)
            for j in range(k):  # a start at step t - j, j < k, is after step t - k
                reset[:, j:] |= document_starts[:, :T - j]
            shifted = shifted.masked_fill(reset[:, None, :], 0.0)
        lags.append(shifted)
    return torch.stack(lags, dim=2)


__all__ = ["hlru_scan", "bdlru_scan", "hlru_scan_time_last", "bdlru_scan_time_last", "resolve_backend",
           "triton_available", "GATE_ACTIVATIONS", "BACKENDS"]
