"""The models on the Triton backend (interpreter on CPU, the GPU on CUDA) equal the reference backend."""

import os

import pytest
import torch

from helpers import GPU, assert_same_training_step, tiny_model
from hf_lrnn import ops

pytestmark = pytest.mark.skipif(
    not ops.triton_available() or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs Triton (CUDA, or TRITON_INTERPRET=1 on CPU)",
)
DEVICE = GPU if torch.cuda.is_available() else "cpu"


def pair(arch, m, **overrides):
    fast = tiny_model(arch, m=m, num_units=4, scan_backend="triton", **overrides).to(DEVICE)
    ref = tiny_model(arch, m=m, num_units=4, scan_backend="torch", **overrides).to(DEVICE)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@pytest.mark.parametrize("m", [1, 3])
def test_triton_backend_model_matches_reference(arch, m):
    fast, ref = pair(arch, m, selective=(m == 1))
    ids = torch.randint(3, 37, (2, 9), device=DEVICE)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding goes through the fused path too
    assert_same_training_step(fast, ref, input_ids=ids, attention_mask=mask, labels=ids)


def test_triton_backend_generation_matches_reference(arch):
    fast, ref = pair(arch, 2)
    ids = torch.randint(3, 37, (2, 6), device=DEVICE)
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(fast.generate(ids, **kw), ref.generate(ids, **kw))


def test_environment_switch_forces_a_backend(monkeypatch):
    monkeypatch.setenv("HF_LRNN_BACKEND", "triton")
    assert ops.resolve_backend(None, torch.device(DEVICE)) == "triton"
    monkeypatch.setenv("HF_LRNN_BACKEND", "torch")
    assert ops.resolve_backend(None, torch.device(DEVICE)) == "torch"


def test_decode_steps_write_the_cache_state_in_place(arch, monkeypatch):
    """Eager decoding on the Triton backend updates each layer's state tensor in place (`ops.scan_step_into`, once
    per layer and new token), keeps its address, and gives the reference backend's tokens."""
    from hf_lrnn import modeling_lrnn

    calls = []
    step_into = modeling_lrnn.scan_step_into

    def counted(*args, **kwargs):
        states = step_into(*args, **kwargs)
        calls.append(states is not None)
        return states

    monkeypatch.setattr(modeling_lrnn, "scan_step_into", counted)
    fast, ref = pair(arch, 2)
    ids = torch.randint(3, 37, (2, 6), device=DEVICE)
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, return_dict_in_generate=True, decode_graph=False,
              disable_compile=True)
    out = fast.generate(ids, **kw)
    assert calls == [True] * (3 * fast.config.num_hidden_layers)  # 3 decode steps after the prompt, every layer
    assert torch.equal(out.sequences, ref.generate(ids, **kw).sequences)
    cache = getattr(out, modeling_lrnn.CACHE_FIELD)
    addresses = [layer.state.data_ptr() for layer in cache.layers]
    with torch.no_grad():  # (with autograd the new state has history and is stored as a new tensor, by design)
        fast(input_ids=out.sequences[:, -1:], **{modeling_lrnn.CACHE_FIELD: cache}, use_cache=True)
    assert [layer.state.data_ptr() for layer in cache.layers] == addresses
