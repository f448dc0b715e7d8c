"""The one-kernel causal-LM loss (`config.loss_backend="triton"`, hf_lrnn/lm_loss.py) against transformers'
ForCausalLMLoss: the loss and the gradient of the logits, with ignored labels, `num_items_in_batch`, given
`shift_labels`; in a model, the same loss and gradients as the default loss, the logits untouched."""

import os

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from helpers import GPU, tiny_model
from hf_lrnn import lm_loss
from hf_lrnn.lm_loss import causal_lm_loss

pytestmark = pytest.mark.skipif(
    lm_loss.triton is None or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs Triton (CUDA, or TRITON_INTERPRET=1 on CPU)",
)
DEVICE = GPU if torch.cuda.is_available() else "cpu"


def loss_and_grad(fn, logits, *args, **kwargs):
    logits = logits.detach().requires_grad_()
    loss = fn(logits, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss * 1.7, logits)  # an upstream gradient other than 1
    return loss.detach(), grad


@pytest.mark.parametrize("num_items", [None, 5, "tensor"])
@pytest.mark.parametrize("given_shift", [False, True])
@pytest.mark.parametrize("block", [None, 64])  # None: the whole row in one block; 64: five blocks, the last partial
def test_matches_for_causal_lm_loss(num_items, given_shift, block, monkeypatch):
    if block is not None:
        monkeypatch.setattr(lm_loss, "_block_v", lambda V: block)
    gen = torch.Generator().manual_seed(0)
    B, T, V = 3, 6, 300
    logits = (torch.randn(B, T, V, generator=gen) * 4).to(DEVICE)
    labels = torch.randint(0, V, (B, T), generator=gen).to(DEVICE)
    labels[0, :3] = -100  # ignored positions
    if num_items == "tensor":
        num_items = torch.tensor(11, device=DEVICE)
    kwargs = dict(num_items_in_batch=num_items)
    if given_shift:
        kwargs["shift_labels"] = torch.roll(labels, -2, dims=1)
    ref_loss, ref_grad = loss_and_grad(ForCausalLMLoss, logits, labels, V, **kwargs)
    loss, grad = loss_and_grad(causal_lm_loss, logits, labels, V, **kwargs)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    assert grad[0, :2].abs().sum() == 0 or given_shift  # rows whose shifted label is ignored get no gradient


def test_bfloat16_logits_keep_their_dtype_and_round_the_gradient_once():
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 8, 1000, generator=gen) * 3).to(DEVICE, torch.bfloat16)
    labels = torch.randint(0, 1000, (2, 8), generator=gen).to(DEVICE)
    ref_loss, ref_grad = loss_and_grad(ForCausalLMLoss, logits, labels, 1000)  # float32 inside, grad cast to bf16
    loss, grad = loss_and_grad(causal_lm_loss, logits, labels, 1000)
    assert grad.dtype == torch.bfloat16 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1e-2, atol=1e-5)  # one bf16 ulp


def test_edge_cases_as_torch():
    V = 17
    logits = torch.randn(2, 4, V, device=DEVICE)
    ignored = torch.full((2, 4), -100, device=DEVICE)
    loss, grad = loss_and_grad(causal_lm_loss, logits, ignored, V)  # no counted token: the mean is nan, as torch's
    ref_loss, ref_grad = loss_and_grad(ForCausalLMLoss, logits, ignored, V)
    assert torch.isnan(loss) and torch.isnan(ref_loss)
    assert torch.equal(torch.isnan(grad), torch.isnan(ref_grad))
    empty = torch.randn(0, 4, V, device=DEVICE)  # no rows at all
    loss, grad = loss_and_grad(causal_lm_loss, empty, torch.zeros(0, 4, dtype=torch.long, device=DEVICE), V,
                               num_items_in_batch=1)
    assert loss.item() == 0 and grad.shape == empty.shape
    with torch.no_grad():  # no gradient wanted: the kernel skips it, the loss is the same
        logits = torch.randn(2, 4, V, device=DEVICE)
        labels = torch.randint(0, V, (2, 4), device=DEVICE)
        torch.testing.assert_close(causal_lm_loss(logits, labels, V), ForCausalLMLoss(logits, labels, V))


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_model_with_the_triton_loss_trains_like_the_default(arch):
    """loss_backend="triton": the model's loss and every parameter's gradient match the default loss, the returned
    logits are the same, and a loss function assigned to the model still wins."""
    default = tiny_model(arch, m=2, loss_backend="torch").to(DEVICE).train()
    fused = tiny_model(arch, m=2, loss_backend="triton").to(DEVICE).train()
    fused.load_state_dict(default.state_dict())
    ids = torch.randint(3, 37, (2, 9), device=DEVICE)
    labels = ids.clone()
    labels[1, :4] = -100
    outputs = []
    for model in (default, fused):
        out = model(ids, labels=labels)
        out.loss.backward()
        outputs.append((out.loss.detach(), out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=1e-6, atol=1e-6)
    assert torch.equal(outputs[1][1], outputs[0][1])
    for name, grad in outputs[0][2].items():
        torch.testing.assert_close(outputs[1][2][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    fused.loss_function = lambda *args, **kwargs: torch.tensor(123.0)
    assert fused(ids, labels=labels).loss.item() == 123.0


def test_config_validates_and_saves_the_loss_backend(tmp_path):
    from hf_lrnn import HLRUConfig

    with pytest.raises(ValueError, match="loss_backend"):
        HLRUConfig(loss_backend="fused")
    config = HLRUConfig(hidden_size=32, num_hidden_layers=1, vocab_size=40, loss_backend="triton")
    config.save_pretrained(tmp_path)
    assert HLRUConfig.from_pretrained(tmp_path).loss_backend == "triton"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vocabulary_sized_rows_on_gpu():
    """A 50K vocabulary in bfloat16 (13 blocks of 4096 per row), as in training: loss and gradient as ForCausalLMLoss."""
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 512, 50304, generator=gen) * 3).to(GPU, torch.bfloat16)
    labels = torch.randint(0, 50304, (2, 512), generator=gen).to(GPU)
    labels[:, :10] = -100
    ref_loss, ref_grad = loss_and_grad(ForCausalLMLoss, logits, labels, 50304)
    loss, grad = loss_and_grad(causal_lm_loss, logits, labels, 50304)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1e-2, atol=1e-7)


def test_a_second_backward_raises_instead_of_scaling_twice():
    logits = torch.randn(2, 3, 11, device=DEVICE, requires_grad=True)
    loss = causal_lm_loss(logits, torch.randint(0, 11, (2, 3), device=DEVICE), 11)
    torch.autograd.grad(loss, logits, retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, logits)


def test_a_label_outside_the_vocabulary_gives_nan_not_a_fault():
    logits = torch.randn(1, 4, 11, device=DEVICE, requires_grad=True)
    labels = torch.tensor([[0, 3, 11 + 5, 2]], device=DEVICE)  # position 1 predicts the id 16
    loss = causal_lm_loss(logits, labels, 11)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isnan(loss)
    assert torch.isnan(grad[0, 1]).all() and not torch.isnan(grad[0, [0, 2]]).any()


def test_the_default_loss_is_the_kernel_on_cuda_and_transformers_elsewhere(monkeypatch):
    """loss_backend None: the kernel for CUDA logits (with Triton installed), transformers' loss on CPU; "torch" and
    "triton" as given; a loss function assigned to the model still wins."""
    assert lm_loss.resolve_loss_backend(None, "cuda:0") == "triton"
    assert lm_loss.resolve_loss_backend(None, torch.device("cpu")) == "torch"
    assert lm_loss.resolve_loss_backend("torch", "cuda") == "torch"
    assert lm_loss.resolve_loss_backend("triton", "cpu") == "triton"
    monkeypatch.setattr(lm_loss, "triton", None)
    assert lm_loss.resolve_loss_backend(None, "cuda") == "torch"
    monkeypatch.undo()
    model = tiny_model("hlru", m=2)
    assert model._lm_loss_function(torch.device("cuda", 0)) is causal_lm_loss
    assert model._lm_loss_function(torch.device("cpu")) == model.loss_function
    model.config.loss_backend = "torch"
    assert model._lm_loss_function(torch.device("cuda", 0)) == model.loss_function
    model.config.loss_backend = None
    model.loss_function = lambda *args, **kwargs: torch.tensor(123.0)
    assert model._lm_loss_function(torch.device("cuda", 0)) is model.loss_function
    if torch.cuda.is_available():  # the real dispatch: the same loss as transformers' through the model
        model = tiny_model("bdlru", m=2).to(DEVICE)
        reference = tiny_model("bdlru", m=2, loss_backend="torch").to(DEVICE)
        reference.load_state_dict(model.state_dict())
        ids = torch.randint(3, 37, (2, 9), device=DEVICE)
        torch.testing.assert_close(model(ids, labels=ids).loss, reference(ids, labels=ids).loss, rtol=1e-5, atol=1e-6)


def test_where_the_kernel_cannot_run_or_under_compile_it_is_transformers_loss(monkeypatch):
    """No kernel (e.g. CPU tensors without the interpreter): ForCausalLMLoss, with one warning for the whole process;
    under torch.compile: ForCausalLMLoss (inductor fuses it), without a warning."""
    warnings = []
    monkeypatch.setattr(lm_loss.logger, "warning", warnings.append)
    monkeypatch.setattr(lm_loss, "_warned_fallback", False)
    monkeypatch.setattr(lm_loss, "_CrossEntropyFunction", None)  # the kernel path would fail on None.apply
    logits = torch.randn(2, 5, 13)
    labels = torch.randint(0, 13, (2, 5))
    reference = ForCausalLMLoss(logits, labels, 13)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(causal_lm_loss(logits, labels, 13), reference) and warnings == []
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    monkeypatch.setattr(lm_loss, "can_run", lambda logits: False)
    for _ in range(2):
        assert torch.equal(causal_lm_loss(logits, labels, 13), reference)
    assert len(warnings) == 1 and "cannot run here" in warnings[0]
