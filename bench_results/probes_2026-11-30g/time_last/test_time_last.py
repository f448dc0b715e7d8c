"""The time-last m = 1 probe kernels against hf_lrnn's float64 reference (CPU: TRITON_INTERPRET=1; or a GPU).
    TRITON_INTERPRET=1 python -m pytest -q bench_results/probes_2026-11-30g/time_last/test_time_last.py"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from time_last_scan import time_last_backward, time_last_forward, time_last_forward_m2  # noqa: E402

from hf_lrnn.scan_torch import hlru_scan_torch  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("T,block_t", [(1, 16), (13, 4), (64, 16), (50, 16)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_time_last_matches_the_reference(T, block_t, with_h0):
    dtype = torch.float64 if DEVICE == "cpu" else torch.float32
    generator = torch.Generator().manual_seed(T)
    B, N = 2, 3
    gates = (torch.randn(B, N, 2, T, generator=generator, dtype=dtype) * 2).to(DEVICE).requires_grad_()
    values = torch.randn(B, N, T, generator=generator, dtype=dtype).to(DEVICE).requires_grad_()
    h0 = torch.randn(B, N, generator=generator, dtype=dtype).to(DEVICE).requires_grad_() if with_h0 else None
    d_states = torch.randn(B, N, T, generator=generator, dtype=dtype).to(DEVICE)
    d_final = torch.randn(B, N, generator=generator, dtype=dtype).to(DEVICE)

    ref_states, ref_final = hlru_scan_torch(gates.permute(0, 3, 1, 2), values.permute(0, 2, 1),
                                            h0.unsqueeze(-1) if with_h0 else None)
    ref_states = ref_states.permute(0, 2, 1)  # [B, N, T]
    ref_final = ref_final[..., 0]
    inputs = [gates, values] + ([h0] if with_h0 else [])
    ref_grads = torch.autograd.grad((ref_states * d_states).sum() + (ref_final * d_final).sum(), inputs)

    with torch.no_grad():
        h0_32 = h0.detach().float() if with_h0 else None
        states, final = time_last_forward(gates.detach(), values.detach(), h0_32, want_final=True, block_t=block_t)
        d_gates, d_values, d_h0 = time_last_backward(gates.detach(), values.detach(), states, d_states, h0_32,
                                                     d_final.float(), block_t=block_t)
    tol = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(states, ref_states.detach(), **tol)
    torch.testing.assert_close(final.to(dtype), ref_final.detach(), **tol)
    torch.testing.assert_close(d_gates, ref_grads[0], **tol)
    torch.testing.assert_close(d_values, ref_grads[1], **tol)
    if with_h0:
        torch.testing.assert_close(d_h0.to(dtype), ref_grads[2], **tol)


@pytest.mark.parametrize("T,block_t", [(1, 16), (13, 4), (50, 16)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_time_last_m2_forward_matches_the_reference(T, block_t, with_h0):
    dtype = torch.float64 if DEVICE == "cpu" else torch.float32
    generator = torch.Generator().manual_seed(T)
    B, N = 2, 3
    gates = (torch.randn(B, N, 3, T, generator=generator, dtype=dtype) * 2).to(DEVICE)
    values = torch.randn(B, N, T, generator=generator, dtype=dtype).to(DEVICE)
    h0 = torch.randn(B, N, 2, generator=generator, dtype=dtype).to(DEVICE) if with_h0 else None
    # the reference's window: index k holds s_{-k}, the same order as (s_0, s_-1)
    ref_states, _ = hlru_scan_torch(gates.permute(0, 3, 1, 2), values.permute(0, 2, 1), h0)
    states = time_last_forward_m2(gates, values, h0.float() if with_h0 else None, block_t=block_t)
    torch.testing.assert_close(states, ref_states.permute(0, 2, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("T,block_t", [(1, 16), (2, 16), (13, 4), (50, 16), (64, 16)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_time_last_m2_backward_matches_the_reference(T, block_t, with_h0):
    """Every gradient of the m = 2 forward (logits, values, initial state) against autograd through the float64
    reference, with tiles shorter than T so that the carries cross tiles."""
    from time_last_scan import time_last_backward_m2

    dtype = torch.float64 if DEVICE == "cpu" else torch.float32
    generator = torch.Generator().manual_seed(100 + T)
    B, N = 2, 3
    gates = (torch.randn(B, N, 3, T, generator=generator, dtype=dtype) * 2).to(DEVICE).requires_grad_()
    values = torch.randn(B, N, T, generator=generator, dtype=dtype).to(DEVICE).requires_grad_()
    h0 = torch.randn(B, N, 2, generator=generator, dtype=dtype).to(DEVICE).requires_grad_() if with_h0 else None
    d_states = torch.randn(B, N, T, generator=generator, dtype=dtype).to(DEVICE)
    ref_states, _ = hlru_scan_torch(gates.permute(0, 3, 1, 2), values.permute(0, 2, 1), h0)
    inputs = [gates, values] + ([h0] if with_h0 else [])
    ref_grads = torch.autograd.grad((ref_states.permute(0, 2, 1) * d_states).sum(), inputs)
    with torch.no_grad():
        h0_32 = h0.detach().float() if with_h0 else None
        states = time_last_forward_m2(gates.detach(), values.detach(), h0_32, block_t=block_t)
        d_gates, d_values, d_h0 = time_last_backward_m2(gates.detach(), values.detach(), states, d_states, h0_32,
                                                        block_t=block_t)
    tol = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d_gates, ref_grads[0], **tol)
    torch.testing.assert_close(d_values, ref_grads[1], **tol)
    if with_h0:
        torch.testing.assert_close(d_h0.to(dtype), ref_grads[2], **tol)
