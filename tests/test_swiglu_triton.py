"""The SwiGLU's activation kernel (hf_lrnn/swiglu_triton.py, through the interpreter on CPU) against a float64 direct
formula, and the models' MLPs on the Triton backend running it."""

import os

import pytest
import torch
import torch.nn.functional as F

from hf_lrnn import swiglu_triton as swiglu_module
from hf_lrnn.swiglu_triton import can_run, silu_mul_triton
from helpers import GPU

pytestmark = pytest.mark.skipif(
    swiglu_module.triton is None or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs Triton (CUDA, or TRITON_INTERPRET=1 on CPU)",
)
DEVICE = GPU if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("shape", [(1,), (3, 5, 7), (2, 1100)])  # 2200 elements: three programs, the last partial
def test_silu_mul_matches_float64_formula_with_gradients(shape):
    assert can_run(torch.zeros(1, device=DEVICE))
    generator = torch.Generator().manual_seed(0)
    gate = (torch.randn(shape, generator=generator) * 4).to(DEVICE).requires_grad_()
    up = torch.randn(shape, generator=generator).to(DEVICE).requires_grad_()
    grad = torch.randn(shape, generator=generator).to(DEVICE)
    out = silu_mul_triton(gate, up)
    grads = torch.autograd.grad(out, [gate, up], grad)
    gate64, up64 = (t.detach().double().requires_grad_() for t in (gate, up))
    expected = gate64 * torch.sigmoid(gate64) * up64
    expected_grads = torch.autograd.grad(expected, [gate64, up64], grad.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_silu_mul_is_finite_at_extreme_gates_and_refuses_mismatched_inputs():
    gate = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], device=DEVICE, requires_grad=True)
    up = torch.ones(5, device=DEVICE, requires_grad=True)
    out = silu_mul_triton(gate, up)
    out.sum().backward()
    torch.testing.assert_close(out, F.silu(gate.detach()) * up.detach())
    assert torch.isfinite(gate.grad).all() and torch.isfinite(up.grad).all()
    with pytest.raises(ValueError, match="same shape and dtype"):
        silu_mul_triton(gate, up[:2])
    with pytest.raises(ValueError, match="same shape and dtype"):
        silu_mul_triton(gate, up.double())


def test_models_mlp_on_the_triton_backend_runs_the_kernel_and_matches_torch():
    """A model on the Triton backend calls the kernel once per block (and torch's silu never); its loss and gradients
    match the same model on the torch backend."""
    from helpers import tiny_model

    losses, grads = {}, {}
    for backend in ("triton", "torch"):
        torch.manual_seed(0)
        model = tiny_model("bdlru", scan_backend=backend).to(DEVICE).train()
        calls, silu_calls = [], []
        original, original_silu = swiglu_module._SiluMulFunction.apply, F.silu
        swiglu_module._SiluMulFunction.apply = lambda *a: calls.append(1) or original(*a)
        F.silu = lambda *a, **k: silu_calls.append(1) or original_silu(*a, **k)
        try:
            torch.manual_seed(1)
            ids = torch.randint(3, 37, (2, 6), device=DEVICE)
            loss = model(ids, labels=ids).loss
            loss.backward()
        finally:
            swiglu_module._SiluMulFunction.apply, F.silu = original, original_silu
        layers = model.config.num_hidden_layers
        assert (len(calls), len(silu_calls)) == ((layers, 0) if backend == "triton" else (0, layers)), backend
        losses[backend] = loss.detach()
        grads[backend] = model.model.layers[0].mlp.gate_proj.weight.grad
    torch.testing.assert_close(losses["triton"], losses["torch"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads["triton"], grads["torch"], rtol=1e-3, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_silu_mul_at_training_size_matches_torch_on_the_gpu():
    """[8, 2048, 2048] bfloat16 (the benchmark's MLP): against torch's silu * up, forward and both gradients."""
    generator = torch.Generator().manual_seed(0)
    gate, up, grad = (torch.randn(8, 2048, 2048, generator=generator).to(DEVICE, torch.bfloat16) for _ in range(3))
    gate.requires_grad_(), up.requires_grad_()
    out = silu_mul_triton(gate, up)
    grads = torch.autograd.grad(out, [gate, up], grad)
    gate32, up32 = (t.detach().float().requires_grad_() for t in (gate, up))
    expected = F.silu(gate32) * up32
    expected_grads = torch.autograd.grad(expected, [gate32, up32], grad.float())
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)  # one bfloat16 rounding
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
