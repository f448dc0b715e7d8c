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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_read_out_by_the_scan_equals_the_cast(dtype, monkeypatch):
    """H-LRU m > 1: a decode step whose scan writes the window in the model's dtype (`readout`) gives bit for bit the
    logits and states of the same step with the window cast from the float32 state afterwards (the path a state that
    cannot be written in place takes: here a non-contiguous copy of the same state)."""
    from hf_lrnn import modeling_lrnn

    if dtype == torch.bfloat16 and DEVICE == "cpu":
        pytest.skip("the interpreter rounds bfloat16 its own way")
    fast, _ = pair("hlru", 2)
    fast = fast.to(dtype).eval()
    ids = torch.randint(3, 37, (2, 6), device=DEVICE)
    written = []
    step_into = modeling_lrnn.scan_step_into

    def recorded(*args, readout=None, **kwargs):
        states = step_into(*args, readout=readout, **kwargs)
        written.append(states is not None and readout is not None)
        return states

    monkeypatch.setattr(modeling_lrnn, "scan_step_into", recorded)
    results = []
    for in_place in (True, False):
        with torch.no_grad():
            cache = getattr(fast(ids, use_cache=True), modeling_lrnn.CACHE_FIELD)
            if not in_place:
                for layer in cache.layers:  # the same values, not contiguous: the step runs the scan, then casts
                    layer.state = layer.state.transpose(1, 2).contiguous().transpose(1, 2)
            logits = fast(input_ids=ids[:, -1:], use_cache=True, **{modeling_lrnn.CACHE_FIELD: cache}).logits
        results.append((logits, [layer.state for layer in cache.layers]))
    layers = fast.config.num_hidden_layers
    assert written == [True] * layers + [False] * layers
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_compiled_decode_step_writes_the_cache_state_in_place(arch):
    """A decode step of the model under torch.compile (fullgraph) on the Triton backend traces each layer's step as
    the custom op that mutates the cache's state (`ops.scan_step_into`): the states keep their addresses and end as
    eager decoding leaves them, and the logits match."""
    from hf_lrnn.modeling_lrnn import CACHE_FIELD

    torch._dynamo.reset()
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    fast, _ = pair(arch, 2)
    fast.eval()
    ids = torch.randint(3, 37, (2, 6), device=DEVICE)
    with torch.no_grad():
        caches = [getattr(fast(ids, use_cache=True), CACHE_FIELD) for _ in range(2)]
        token = ids[:, -1:]
        eager = fast(input_ids=token, use_cache=True, **{CACHE_FIELD: caches[0]}).logits
        addresses = [layer.state.data_ptr() for layer in caches[1].layers]
        step = torch.compile(lambda t, c: fast(input_ids=t, use_cache=True, **{CACHE_FIELD: c}).logits,
                             fullgraph=True, backend=recording_backend)
        compiled = step(token, caches[1])
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert [layer.state.data_ptr() for layer in caches[1].layers] == addresses
    for mine, theirs in zip(caches[1].layers, caches[0].layers):
        torch.testing.assert_close(mine.state, theirs.state, rtol=1e-6, atol=1e-6)
    assert len(graphs) == 1 and graphs[0].count(f"{arch}_scan_step_into") == fast.config.num_hidden_layers
