"""The Triton LayerNorm / RMSNorm (hf_lrnn/norm_triton.py, through the interpreter on CPU) against a float64 direct
formula: outputs, and gradients of input, weight and bias."""

import os

import pytest
import torch

from hf_lrnn import norm_triton as norm_module
from hf_lrnn.norm_triton import can_run, norm_triton
from helpers import GPU

pytestmark = pytest.mark.skipif(
    norm_module.triton is None or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs Triton (CUDA, or TRITON_INTERPRET=1 on CPU)",
)
DEVICE = GPU if torch.cuda.is_available() else "cpu"


def direct_norm(x, weight, bias, eps, is_rms):
    """The formula of the module docstring, in float64."""
    x = x.double()
    if is_rms:
        y = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    else:
        centered = x - x.mean(-1, keepdim=True)
        y = centered / torch.sqrt(centered.pow(2).mean(-1, keepdim=True) + eps)
    y = y * weight.double()
    return y + bias.double() if bias is not None else y


@pytest.mark.parametrize("is_rms", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 5), (2, 7, 48), (3, 11, 130)])
def test_norm_matches_float64_formula_with_gradients(is_rms, shape):
    assert can_run(torch.zeros(1, device=DEVICE))  # CUDA, or the interpreter (tests/conftest.py)
    generator = torch.Generator().manual_seed(0)
    N = shape[-1]
    x = (torch.randn(shape, generator=generator) * 3 + 1).to(DEVICE).requires_grad_()
    weight = (torch.rand(N, generator=generator) + 0.5).to(DEVICE).requires_grad_()
    bias = None if is_rms else torch.randn(N, generator=generator).to(DEVICE).requires_grad_()
    grad = torch.randn(shape, generator=generator).to(DEVICE)
    y = norm_triton(x, weight, bias, 1e-5, is_rms, torch.float32)
    inputs = [x, weight] + ([bias] if bias is not None else [])
    grads = torch.autograd.grad(y, inputs, grad)
    x64 = x.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_() if bias is not None else None
    expected = direct_norm(x64, w64, b64, 1e-5, is_rms)
    expected_grads = torch.autograd.grad(expected, [x64, w64] + ([b64] if b64 is not None else []), grad.double())
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_norm_of_no_rows_gives_zero_weight_gradients():
    """An empty input (e.g. a batch of zero-length sequences): empty output, and zero weight and bias gradients, not
    the contents of an unwritten buffer."""
    for _ in range(3):  # reuse freed memory, which an unwritten buffer would show
        junk = torch.full((4096,), 1e6, device=DEVICE)
        del junk
        x = torch.randn(2, 0, 8, device=DEVICE, requires_grad=True)
        weight = torch.ones(8, device=DEVICE, requires_grad=True)
        bias = torch.zeros(8, device=DEVICE, requires_grad=True)
        y = norm_triton(x, weight, bias, 1e-5, False, torch.float32)
        y.sum().backward()
        assert y.shape == (2, 0, 8)
        assert torch.equal(weight.grad, torch.zeros(8, device=DEVICE))
        assert torch.equal(bias.grad, torch.zeros(8, device=DEVICE))


def test_norm_writes_the_requested_dtype_and_keeps_input_gradient_dtype():
    """Under autocast the models ask for bfloat16 outputs of a float32 residual stream: the output is the float32
    result in bfloat16 (to one bfloat16 step: the interpreter's conversion is not the GPU's rounding), and the input
    gradient is float32 like the input."""
    x = torch.randn(4, 9, 16, device=DEVICE, requires_grad=True)
    weight, bias = torch.rand(16, device=DEVICE) + 0.5, torch.randn(16, device=DEVICE)
    y = norm_triton(x, weight, bias, 1e-5, False, torch.bfloat16)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    expected = direct_norm(x.detach(), weight, bias, 1e-5, False)
    torch.testing.assert_close(y.double(), expected, rtol=8e-3, atol=1e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_models_on_the_triton_backend_use_the_norm_kernels():
    """Every norm of a model on the Triton backend runs the kernels: the norm modules' own forward is never
    called (it still is on the torch backend)."""
    from helpers import tiny_model

    for backend, expected_calls in (("triton", 0), ("torch", 5)):
        model = tiny_model("hlru", scan_backend=backend).to(DEVICE).train()
        calls = []
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.register_forward_hook(lambda *args: calls.append(1))
        ids = torch.randint(3, 37, (2, 6), device=DEVICE)
        model(ids, labels=ids).loss.backward()
        assert len(calls) == expected_calls, backend


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("is_rms", [False, True])
def test_norm_at_training_size_matches_torch_on_the_gpu(is_rms):
    """B8 T2048 d768 (the benchmark's model rows): many rows per backward program; against torch's norm in float32."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 2048, 768, generator=generator) * 2).to(DEVICE).requires_grad_()
    weight = (torch.rand(768, generator=generator) + 0.5).to(DEVICE).requires_grad_()
    bias = None if is_rms else torch.randn(768, generator=generator).to(DEVICE).requires_grad_()
    grad = torch.randn(8, 2048, 768, generator=generator).to(DEVICE)
    inputs = [x, weight] + ([bias] if bias is not None else [])
    y = norm_triton(x, weight, bias, 1e-5, is_rms, torch.float32)
    grads = torch.autograd.grad(y, inputs, grad)
    if is_rms:
        expected = torch.nn.functional.rms_norm(x, (768,), weight, 1e-5)
    else:
        expected = torch.nn.functional.layer_norm(x, (768,), weight, bias, 1e-5)
    expected_grads = torch.autograd.grad(expected, inputs, grad)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-2)  # weight gradients: sums over 16K rows
