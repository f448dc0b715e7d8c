"""The Triton LayerNorm / RMSNorm (hf_lrnn/norm_triton.py, through the interpreter on CPU) against a float64 direct
formula: outputs, and gradients of input, weight and bias."""

import os

import pytest
import torch

from hf_lrnn import norm_triton as norm_module
from hf_lrnn.norm_triton import add_norm_triton, can_run, norm_triton
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
@pytest.mark.parametrize("is_rms", [False, True])
@pytest.mark.parametrize("used", ["both", "sum only", "norm only"])
def test_add_norm_matches_float64_formula_with_gradients(is_rms, used):
    """(x + delta, norm(x + delta)) in one pass, against the float64 formula: both outputs, and the gradients of x,
    delta, weight and bias when the sum and the norm are both read downstream (a residual stream), or only one."""
    generator = torch.Generator().manual_seed(1)
    shape, N = (2, 7, 48), 48
    x = (torch.randn(shape, generator=generator) * 3 + 1).to(DEVICE).requires_grad_()
    delta = torch.randn(shape, generator=generator).to(DEVICE).requires_grad_()
    weight = (torch.rand(N, generator=generator) + 0.5).to(DEVICE).requires_grad_()
    bias = None if is_rms else torch.randn(N, generator=generator).to(DEVICE).requires_grad_()
    grad_total, grad_y = (torch.randn(shape, generator=generator).to(DEVICE) for _ in range(2))
    inputs = [x, delta, weight] + ([bias] if bias is not None else [])

    def loss(total, y):
        return (total * grad_total).sum() * (used != "norm only") + (y * grad_y).sum() * (used != "sum only")

    total, y = add_norm_triton(x, delta, weight, bias, 1e-5, is_rms, torch.float32)
    grads = torch.autograd.grad(loss(total, y), inputs, allow_unused=True)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    total64 = inputs64[0] + inputs64[1]
    y64 = direct_norm(total64, inputs64[2], inputs64[3] if bias is not None else None, 1e-5, is_rms)
    expected_grads = torch.autograd.grad(loss(total64, y64), inputs64, allow_unused=True)
    torch.testing.assert_close(total.double(), total64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        got = torch.zeros_like(want) if got is None else got.double()
        want = torch.zeros_like(got) if want is None else want
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_add_norm_backward_fills_no_zero_gradient_for_an_unread_sum():
    """The final norm's sum is read by nothing: its gradient stays None (no zero tensor filled and read)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordOps(TorchDispatchMode):
        names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            RecordOps.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    x, delta = (torch.randn(2, 3, 8, device=DEVICE, requires_grad=True) for _ in range(2))
    weight = torch.ones(8, device=DEVICE, requires_grad=True)
    _, y = add_norm_triton(x, delta, weight, None, 1e-5, True, torch.float32)
    with RecordOps():
        y.sum().backward()
    assert not [name for name in RecordOps.names if "zero" in name or "fill" in name], RecordOps.names


def test_add_norm_of_a_float32_stream_and_a_bfloat16_delta():
    """Under autocast the residual stream is float32 and the mixer's output bfloat16: the sum is float32 (as
    `x + delta` promotes), the norm comes out in bfloat16, and delta's gradient comes back in bfloat16, x's in
    float32."""
    x = torch.randn(3, 5, 32, device=DEVICE, requires_grad=True)
    delta = torch.randn(3, 5, 32, device=DEVICE).to(torch.bfloat16).requires_grad_()
    weight, bias = torch.rand(32, device=DEVICE) + 0.5, torch.randn(32, device=DEVICE)
    total, y = add_norm_triton(x, delta, weight, bias, 1e-5, False, torch.bfloat16)
    assert total.dtype == torch.float32 and y.dtype == torch.bfloat16
    torch.testing.assert_close(total, x + delta.float(), rtol=0, atol=0)
    expected = direct_norm(x.detach() + delta.detach().float(), weight, bias, 1e-5, False)
    torch.testing.assert_close(y.double(), expected, rtol=8e-3, atol=1e-2)
    (total.sum() + y.float().sum()).backward()
    assert x.grad.dtype == torch.float32 and delta.grad.dtype == torch.bfloat16
    torch.testing.assert_close(delta.grad.float(), x.grad, rtol=8e-3, atol=1e-2)
    with pytest.raises(ValueError, match="same shape"):
        add_norm_triton(x, delta[:, :1], weight, bias, 1e-5, False, torch.bfloat16)


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


def test_a_block_on_the_triton_backend_adds_the_mixer_output_inside_the_norm_kernel():
    """LRNNBlock's residual add before its second norm runs in the norm kernel: on the Triton backend the block's
    forward dispatches one aten add (the last residual; the scan and the norms are Triton kernels); its output agrees
    with the torch backend's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from hf_lrnn import HLRUConfig
    from hf_lrnn.modeling_lrnn import LRNNBlock

    class CountAdds(TorchDispatchMode):
        adds = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten.add:
                CountAdds.adds += 1
            return func(*args, **(kwargs or {}))

    outputs = {}
    for backend in ("triton", "torch"):
        config = HLRUConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1, order=2, scan_backend=backend)
        torch.manual_seed(0)
        block = LRNNBlock(config, 0, blocked=False).to(DEVICE)
        x = torch.randn(2, 5, 32, device=DEVICE)
        CountAdds.adds = 0
        with torch.no_grad(), CountAdds():
            outputs[backend] = block(x)
        if backend == "triton":
            assert CountAdds.adds == 1
    torch.testing.assert_close(outputs["triton"], outputs["torch"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_a_model_on_the_triton_backend_adds_every_residual_inside_the_norm_kernels(arch):
    """Each block hands its MLP output to the next block's first norm (and the last to the final norm), whose kernel
    adds it to the stream: a forward dispatches no aten add at all; the hidden states it reports (the stream before
    each block, then the final norm's output) and the logits equal the torch backend's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from helpers import tiny_model

    class CountAdds(TorchDispatchMode):
        adds = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_):
                CountAdds.adds += 1
            return func(*args, **(kwargs or {}))

    ids = torch.randint(3, 37, (2, 6), device=DEVICE)
    outputs = {}
    for backend in ("triton", "torch"):
        torch.manual_seed(0)
        model = tiny_model(arch, scan_backend=backend).to(DEVICE).eval()
        CountAdds.adds = 0
        with torch.no_grad(), CountAdds():
            model(ids)
        if backend == "triton":
            assert CountAdds.adds == 0
        with torch.no_grad():
            outputs[backend] = model(ids, output_hidden_states=True)
    assert len(outputs["triton"].hidden_states) == model.config.num_hidden_layers + 1
    for got, want in zip(outputs["triton"].hidden_states + (outputs["triton"].logits,),
                         outputs["torch"].hidden_states + (outputs["torch"].logits,)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_add_norm_at_training_size_matches_torch_on_the_gpu():
    """B8 T2048 d768 under the models' dtypes (float32 stream, bfloat16 delta and output): against `x + delta` and
    torch's LayerNorm, outputs and every gradient."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 2048, 768, generator=generator) * 2).to(DEVICE).requires_grad_()
    delta = torch.randn(8, 2048, 768, generator=generator).to(DEVICE, torch.bfloat16).requires_grad_()
    weight = (torch.rand(768, generator=generator) + 0.5).to(DEVICE).requires_grad_()
    bias = torch.randn(768, generator=generator).to(DEVICE).requires_grad_()
    grad_total, grad_y = (torch.randn(8, 2048, 768, generator=generator).to(DEVICE) for _ in range(2))
    inputs = [x, delta, weight, bias]
    total, y = add_norm_triton(x, delta, weight, bias, 1e-5, False, torch.bfloat16)
    grads = torch.autograd.grad((total * grad_total).sum() + (y.float() * grad_y).sum(), inputs)
    expected_total = x + delta
    expected = torch.nn.functional.layer_norm(expected_total, (768,), weight, bias, 1e-5)
    # autograd hands the bfloat16 output its gradient rounded to bfloat16: the float32 reference gets the same one,
    # or the weight and bias gradients (sums over 16K rows) differ by the rounding, not by the kernel
    grad_y_as_seen = grad_y.to(torch.bfloat16).float()
    expected_grads = torch.autograd.grad((expected_total * grad_total).sum() + (expected * grad_y_as_seen).sum(),
                                         inputs)
    torch.testing.assert_close(total, expected_total, rtol=0, atol=0)
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=2e-2)  # bfloat16 output
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=5e-2)
