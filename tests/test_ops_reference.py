"""The torch reference scans against a direct, element-by-element float64 loop written from docs/spec.md."""

import math

import pytest
import torch

from hf_lrnn import ops
from hf_lrnn.scan_torch import GATE_ACTIVATIONS

torch.manual_seed(0)


def direct_coefficients(z, activation):
    """docs/spec.md gate table, one group of m+1 logits (a list of 0-d tensors) at a time."""
    if activation == "softmax":
        e = [torch.exp(x - max(z)) for x in z]
        return [x / sum(e) for x in e]
    if activation == "sigmoid":
        p = [1 / (1 + torch.exp(-x)) for x in z]
        return [x / sum(p) for x in p]
    if activation == "relu":
        p = [torch.clamp(x, min=0) for x in z]
        return [x / sum(y + 0.001 for y in p) for x in p]
    if activation == "tanh":
        p = [torch.tanh(x) for x in z]
        return [x / (sum(abs(y) for y in p) + 1e-6) for x in p]
    if activation == "linear":
        return [x / (sum(abs(y) for y in z) + 1e-6) for x in z]
    return list(z)  # none


def direct_hlru(gates, values, h0, activation):
    B, T, N, m1 = gates.shape
    m = m1 - 1
    out = [[[None] * N for _ in range(T)] for _ in range(B)]
    final = [[None] * N for _ in range(B)]
    for b in range(B):
        for n in range(N):
            # history[-i] = s_{t-i}
            zero = torch.zeros((), dtype=torch.float64)
            history = [h0[b, n, k] for k in reversed(range(m))] if h0 is not None else [zero] * m
            for t in range(T):
                c = direct_coefficients([gates[b, t, n, i] for i in range(m1)], activation)
                s = sum(c[i - 1] * history[-i] for i in range(1, m + 1)) + c[m] * values[b, t, n]
                history.append(s)
                out[b][t][n] = s
            final[b][n] = torch.stack([history[-1 - k] for k in range(m)])
    states = torch.stack([torch.stack([torch.stack(out[b][t]) for t in range(T)]) for b in range(B)])
    return states, torch.stack([torch.stack(final[b]) for b in range(B)])


def direct_bdlru(gates, values, h0, activation):
    B, T, N, m, _ = gates.shape
    out = [[[None] * N for _ in range(T)] for _ in range(B)]
    final = [[None] * N for _ in range(B)]
    for b in range(B):
        for n in range(N):
            h = [h0[b, n, j] for j in range(m)] if h0 is not None else [torch.zeros((), dtype=torch.float64)] * m
            for t in range(T):
                new = []
                for j in range(m):
                    c = direct_coefficients([gates[b, t, n, j, k] for k in range(m + 1)], activation)
                    new.append(sum(c[k] * h[k] for k in range(m)) + c[m] * values[b, t, n, j])
                h = new
                out[b][t][n] = torch.stack(h)
            final[b][n] = torch.stack(h)
    states = torch.stack([torch.stack([torch.stack(out[b][t]) for t in range(T)]) for b in range(B)])
    return states, torch.stack([torch.stack(final[b]) for b in range(B)])


def make_inputs(blocked, B, T, N, m, with_h0, dtype=torch.float64):
    gate_shape = (B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)
    value_shape = (B, T, N, m) if blocked else (B, T, N)
    gates = (torch.randn(gate_shape, dtype=dtype) * 1.5).requires_grad_()
    values = torch.randn(value_shape, dtype=dtype).requires_grad_()
    h0 = torch.randn(B, N, m, dtype=dtype).requires_grad_() if with_h0 else None
    return gates, values, h0


def grads_of(fn, gates, values, h0, d_states, d_final):
    states, final = fn()
    loss = (states * d_states).sum() + (final * d_final).sum()
    inputs = [gates, values] + ([h0] if h0 is not None else [])
    return states, final, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("blocked", [False, True], ids=["hlru", "bdlru"])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_reference_matches_direct_loop_softmax(blocked, m, with_h0):
    B, T, N = 2, 6, 2
    gates, values, h0 = make_inputs(blocked, B, T, N, m, with_h0)
    op = ops.bdlru_scan if blocked else ops.hlru_scan
    direct = direct_bdlru if blocked else direct_hlru
    d_states = torch.randn((B, T, N, m) if blocked else (B, T, N), dtype=torch.float64)
    d_final = torch.randn(B, N, m, dtype=torch.float64)
    ref = grads_of(
        lambda: op(gates, values, h0, "softmax", output_final_state=True, backend="torch"),
        gates, values, h0, d_states, d_final,
    )
    exp = grads_of(lambda: direct(gates, values, h0, "softmax"), gates, values, h0, d_states, d_final)
    assert ref[0].dtype == torch.float64
    torch.testing.assert_close(ref[0], exp[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref[1], exp[1], rtol=1e-12, atol=1e-12)
    for got, want in zip(ref[2], exp[2]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("blocked", [False, True], ids=["hlru", "bdlru"])
@pytest.mark.parametrize("activation", GATE_ACTIVATIONS)
def test_reference_matches_direct_loop_every_activation(blocked, activation):
    B, T, N, m = 2, 5, 2, 3
    gates, values, h0 = make_inputs(blocked, B, T, N, m, with_h0=True)
    op = ops.bdlru_scan if blocked else ops.hlru_scan
    direct = direct_bdlru if blocked else direct_hlru
    d_states = torch.randn((B, T, N, m) if blocked else (B, T, N), dtype=torch.float64)
    d_final = torch.randn(B, N, m, dtype=torch.float64)
    ref = grads_of(
        lambda: op(gates, values, h0, activation, output_final_state=True, backend="torch"),
        gates, values, h0, d_states, d_final,
    )
    exp = grads_of(lambda: direct(gates, values, h0, activation), gates, values, h0, d_states, d_final)
    torch.testing.assert_close(ref[0], exp[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ref[1], exp[1], rtol=1e-10, atol=1e-10)
    for got, want in zip(ref[2], exp[2]):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("blocked", [False, True], ids=["hlru", "bdlru"])
def test_reference_gradcheck(blocked):
    gates, values, h0 = make_inputs(blocked, 1, 4, 2, 2, with_h0=True)
    op = ops.bdlru_scan if blocked else ops.hlru_scan

    def fn(g, v, h):
        states, final = op(g, v, h, "sigmoid", output_final_state=True, backend="torch")
        return states, final

    assert torch.autograd.gradcheck(fn, (gates, values, h0))


@pytest.mark.parametrize("blocked", [False, True], ids=["hlru", "bdlru"])
@pytest.mark.parametrize("m", [1, 3, 5])
def test_stability_bound_softmax_long_sequence(blocked, m):
    """Proposition 1: with L1-normalised positive gates, max|state| <= max|value| for any T."""
    B, T, N = 2, 4096, 4
    gates, values, _ = make_inputs(blocked, B, T, N, m, with_h0=False, dtype=torch.float32)
    with torch.no_grad():
        gates = gates * 4  # sharp gates: near-1 recurrence coefficients are the risky case
        op = ops.bdlru_scan if blocked else ops.hlru_scan
        states, final = op(gates, values, output_final_state=True, backend="torch")
    assert torch.isfinite(states).all()
    assert states.abs().max() <= values.abs().max() * (1 + 1e-5)
    assert final.abs().max() <= values.abs().max() * (1 + 1e-5)


@pytest.mark.parametrize("blocked", [False, True], ids=["hlru", "bdlru"])
def test_half_precision_inputs_return_input_dtype_and_float32_state(blocked):
    gates, values, h0 = make_inputs(blocked, 2, 7, 3, 2, with_h0=True, dtype=torch.float32)
    op = ops.bdlru_scan if blocked else ops.hlru_scan
    ref, ref_final = op(gates.double(), values.double(), h0.double(), output_final_state=True, backend="torch")
    for dtype in (torch.bfloat16, torch.float16):
        states, final = op(gates.to(dtype), values.to(dtype), h0, output_final_state=True, backend="torch")
        assert states.dtype == dtype and final.dtype == torch.float32
        torch.testing.assert_close(states.double(), ref, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(final.double(), ref_final, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("blocked", [False, True], ids=["hlru", "bdlru"])
def test_cu_seqlens_equals_separate_sequences(blocked):
    lengths = [3, 5, 1]
    m, N = 2, 3
    gates, values, _ = make_inputs(blocked, 1, sum(lengths), N, m, with_h0=False)
    h0 = torch.randn(len(lengths), N, m, dtype=torch.float64)
    op = ops.bdlru_scan if blocked else ops.hlru_scan
    cu = torch.tensor([0, 3, 8, 9])
    packed, packed_final = op(gates, values, h0, output_final_state=True, backend="torch", cu_seqlens=cu)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        one, one_final = op(gates[:, s:e], values[:, s:e], h0[i : i + 1], output_final_state=True, backend="torch")
        torch.testing.assert_close(packed[:, s:e], one)
        torch.testing.assert_close(packed_final[i : i + 1], one_final)


def test_chunked_calls_with_state_equal_one_call():
    gates, values, h0 = make_inputs(False, 2, 10, 3, 4, with_h0=True)
    full, full_final = ops.hlru_scan(gates, values, h0, output_final_state=True, backend="torch")
    a, state = ops.hlru_scan(gates[:, :4], values[:, :4], h0, output_final_state=True, backend="torch")
    b, final = ops.hlru_scan(gates[:, 4:], values[:, 4:], state, output_final_state=True, backend="torch")
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    torch.testing.assert_close(final, full_final)


def test_hlru_order_one_equals_bdlru_block_one():
    gates, values, h0 = make_inputs(False, 2, 9, 3, 1, with_h0=True)
    h, hf = ops.hlru_scan(gates, values, h0, output_final_state=True, backend="torch")
    b, bf = ops.bdlru_scan(gates.unsqueeze(-2), values.unsqueeze(-1), h0, output_final_state=True, backend="torch")
    torch.testing.assert_close(h, b.squeeze(-1))
    torch.testing.assert_close(hf, bf)


def test_masked_reference_holds_state_on_padded_steps():
    from hf_lrnn.scan_torch import bdlru_scan_torch, hlru_scan_torch

    for scan, blocked in ((hlru_scan_torch, False), (bdlru_scan_torch, True)):
        gates, values, h0 = make_inputs(blocked, 1, 6, 2, 3, with_h0=True)
        mask = torch.tensor([[True, False, False, True, True, False]])
        keep = mask[0].nonzero().squeeze(-1)
        got, got_final = scan(gates, values, h0, "softmax", mask=mask)
        want, want_final = scan(gates[:, keep], values[:, keep], h0, "softmax")
        torch.testing.assert_close(got[:, keep], want)
        torch.testing.assert_close(got_final, want_final)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ops.hlru_scan(torch.randn(2, 3, 4, 3), torch.randn(2, 3, 5)), "values must have shape"),
        (lambda: ops.hlru_scan(torch.randn(2, 3, 4), torch.randn(2, 3)), "gates must have shape"),
        (lambda: ops.hlru_scan(torch.randn(2, 3, 4, 1), torch.randn(2, 3, 4)), "must be >= 2"),
        (lambda: ops.bdlru_scan(torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2)), "gates must have shape"),
        (lambda: ops.hlru_scan(torch.randn(2, 3, 4, 3), torch.randn(2, 3, 4), gate_activation="gelu"), "gelu"),
        (lambda: ops.hlru_scan(torch.randn(2, 3, 4, 3).int(), torch.randn(2, 3, 4)), "torch.int32"),
        (lambda: ops.hlru_scan(torch.randn(2, 3, 4, 3), torch.randn(2, 3, 4), torch.randn(2, 4, 3)), "initial_state"),
        (lambda: ops.hlru_scan(torch.randn(2, 3, 4, 3), torch.randn(2, 3, 4), backend="cuda"), "backend"),
        (
            lambda: ops.hlru_scan(torch.randn(1, 5, 4, 3), torch.randn(1, 5, 4), cu_seqlens=torch.tensor([0, 2, 4])),
            "cu_seqlens",
        ),
    ],
)
def test_bad_inputs_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_default_backend_on_cpu_is_torch(monkeypatch):
    monkeypatch.delenv("HF_LRNN_BACKEND", raising=False)
    assert ops.resolve_backend(None, torch.device("cpu")) == "torch"
    monkeypatch.setenv("HF_LRNN_BACKEND", "torch")
    assert ops.resolve_backend(None, torch.device("cuda")) == "torch"
    assert math.isfinite(ops.hlru_scan(torch.randn(1, 2, 1, 2), torch.randn(1, 2, 1))[0].sum().item())
