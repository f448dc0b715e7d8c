"""Pure-PyTorch reference scans for H-LRU and BD-LRU (docs/spec.md in the hf_lrnn repository).

This is the ground truth every fast path is tested against: a direct loop over time, vectorised over
batch and channels, with the state held in float32 (float64 when the gate logits are float64). It runs on
any device and is differentiable through autograd.

Shapes (m = order or block size, N = channels or blocks):
    H-LRU   gates [B, T, N, m+1]     values [B, T, N]     state window [B, N, m] = (s_t, s_{t-1}, ..., s_{t-m+1})
    BD-LRU  gates [B, T, N, m, m+1]  values [B, T, N, m]  state [B, N, m] = h_t
"""

from typing import Optional

import torch

GATE_ACTIVATIONS = ("softmax", "sigmoid", "relu", "tanh", "linear", "none")

# Denominator offsets of the L1 maps (docs/spec.md, "Gate normalisation"): relu adds 0.001 per entry, the signed
# maps add eps once so that an all-zero group does not divide by zero.
RELU_EPS = 1e-3
SIGNED_EPS = 1e-6


def compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    """float64 if any input is float64 (exactness tests), float32 otherwise (the state dtype)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def normalize_gates(logits: torch.Tensor, gate_activation: str = "softmax") -> torch.Tensor:
    """Map every group of m+1 logits (last dim) to coefficients c = phi(z) / denominator.

    c[..., :m] are recurrence coefficients, c[..., m] is the input gate. Computed in float32 or
    float64 (never in a half type), so the result has dtype `compute_dtype(logits)`.
    """
    z = logits.to(compute_dtype(logits))
    if gate_activation == "softmax":
        return torch.softmax(z, dim=-1)  # max-subtracted inside: finite for any finite logits
    if gate_activation == "sigmoid":
        # sigmoid(z_i) / sum_j sigmoid(z_j) = exp(l_i - logsumexp_j l_j) with l = logsigmoid(z): the same value, but
        # computed in log space, so a group of very negative logits (sigmoid underflows to 0 below about -104 in
        # float32) gives softmax(z) instead of 0/0. The gradient through logsigmoid and softmax is stable too.
        return torch.softmax(torch.nn.functional.logsigmoid(z), dim=-1)
    # relu / tanh / linear: the denominators are >= (m+1)*RELU_EPS or SIGNED_EPS, so these are finite for any finite
    # logits (phi = relu or tanh is finite and the sum only overflows for |z| near the float maximum, where c -> 0).
    if gate_activation == "relu":
        phi = torch.relu(z)
        return phi / (phi + RELU_EPS).sum(-1, keepdim=True)
    if gate_activation == "tanh":
        phi = torch.tanh(z)
        return phi / (phi.abs().sum(-1, keepdim=True) + SIGNED_EPS)
    if gate_activation == "linear":
        return z / (z.abs().sum(-1, keepdim=True) + SIGNED_EPS)
    if gate_activation == "none":
        return z
    raise ValueError(f"gate_activation must be one of {GATE_ACTIVATIONS}, got {gate_activation!r}")


def hlru_step(gates, values, state, gate_activation="softmax"):
    """One H-LRU step. gates [B, N, m+1], values [B, N], state [B, N, m] (s_{t-1}, ..., s_{t-m}).

    Returns (s_t [B, N] in the compute dtype, new state [B, N, m] = (s_t, ..., s_{t-m+1})).
    """
    c = normalize_gates(gates, gate_activation)
    m = c.shape[-1] - 1
    state = state.to(c.dtype)
    s = (c[..., :m] * state).sum(-1) + c[..., m] * values.to(c.dtype)  # [B, N]
    return s, torch.cat([s.unsqueeze(-1), state[..., : m - 1]], dim=-1)


def bdlru_step(gates, values, state, gate_activation="softmax"):
    """One BD-LRU step. gates [B, N, m, m+1], values [B, N, m], state [B, N, m] = h_{t-1}.

    Returns (h_t [B, N, m] in the compute dtype, the same tensor as the new state).
    """
    c = normalize_gates(gates, gate_activation)
    m = c.shape[-1] - 1
    state = state.to(c.dtype)
    h = (c[..., :m] * state.unsqueeze(-2)).sum(-1) + c[..., m] * values.to(c.dtype)  # [B, N, m]
    return h, h


def _scan(step, gates, values, initial_state, gate_activation, mask, state_shape, starts=None):
    """The loop over time behind every reference scan. mask [B, T] bool: padded steps (False) leave the state as it
    is; starts [B, T] bool: the state restarts from zero before every step where it is True."""
    dtype = compute_dtype(gates, values, initial_state)
    B, T = values.shape[:2]
    if initial_state is None:
        state = torch.zeros(state_shape, device=values.device, dtype=dtype)
    else:
        state = initial_state.to(dtype)
    # Normalise all gates at once, then walk time over unbound slices: indexing gates[:, t] inside the loop would
    # make autograd allocate and fill a full-size gradient buffer for every step (quadratic in T).
    coefficients = normalize_gates(gates, gate_activation)
    keeps = [None] * T if mask is None else mask.unbind(1)
    restarts = [None] * T if starts is None else starts.unbind(1)
    outputs = []
    for coefficients_t, values_t, keep, start in zip(coefficients.unbind(1), values.unbind(1), keeps, restarts):
        if start is not None:  # a document starts: a zero state
            state = torch.where(start.view(B, *([1] * (state.dim() - 1))), 0.0, state)
        out, new_state = step(coefficients_t, values_t, state, "none")  # "none": already normalised
        if keep is not None:
            # a padded step leaves the state unchanged (and outputs the held state)
            keep = keep.view(B, *([1] * (state.dim() - 1)))
            new_state = torch.where(keep, new_state, state)
            out = new_state[..., 0] if out.dim() < state.dim() else new_state
        state = new_state
        outputs.append(out)
    if T == 0:
        # the empty result, built from the (empty) inputs so that autograd gives them empty gradients, not None
        states = values.to(dtype) + coefficients.sum(-1).to(dtype)
    else:
        states = torch.stack(outputs, dim=1)
    return states.to(values.dtype), state


def _packed(scan_fn, gates, values, initial_state, cu_seqlens, **kwargs):
    """Run scan_fn on each packed sequence of a [1, total, ...] batch delimited by cu_seqlens."""
    outs, finals = [], []
    bounds = cu_seqlens.tolist()
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        out, final = scan_fn(gates[:, start:end], values[:, start:end], h0, **kwargs)
        outs.append(out)
        finals.append(final)
    return torch.cat(outs, dim=1), torch.cat(finals, dim=0)


def hlru_scan_torch(gates, values, initial_state=None, gate_activation="softmax", cu_seqlens=None, mask=None):
    """Reference H-LRU scan: s_t = sum_i a_t^(i) s_{t-i} + g_t v_t. Returns (states [B, T, N], final [B, N, m])."""
    if cu_seqlens is not None:
        return _packed(hlru_scan_torch, gates, values, initial_state, cu_seqlens, gate_activation=gate_activation)
    B, _, N, m1 = gates.shape
    return _scan(hlru_step, gates, values, initial_state, gate_activation, mask, (B, N, m1 - 1))


def bdlru_scan_torch(gates, values, initial_state=None, gate_activation="softmax", cu_seqlens=None, mask=None):
    """Reference BD-LRU scan: h_t = A_t h_{t-1} + g_t * v_t per block. Returns (states [B, T, N, m], final [B, N, m])."""
    if cu_seqlens is not None:
        return _packed(bdlru_scan_torch, gates, values, initial_state, cu_seqlens, gate_activation=gate_activation)
    B, _, N, m, _ = gates.shape
    return _scan(bdlru_step, gates, values, initial_state, gate_activation, mask, (B, N, m))


def scan_with_restarts_torch(blocked: bool, gates, values, starts, gate_activation: str, initial_state=None):
    """The reference scan over [B, T] rows whose state restarts from zero before every step where `starts` [B, T] is
    True: each document of a row is scanned as if it were alone, exactly as the ops' `cu_seqlens` does, but all rows
    at once (T steps, not the B*T of one flattened row). initial_state [B, N, m] (or None: zeros) is the state before
    step 0, which a start there discards.

    gates [B, T, N, (m,) m+1] logits, values [B, T, N(, m)] -> (states [B, T, N(, m)] in values.dtype, final state
    [B, N, m] in the compute dtype).
    """
    B, _, N = values.shape[:3]
    step = bdlru_step if blocked else hlru_step
    m = gates.shape[-1] - 1
    return _scan(step, gates, values, initial_state, gate_activation, None, (B, N, m), starts=starts)
