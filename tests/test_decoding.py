"""Fast decoding: the static cache (states written in place, stable addresses), transformers' compiled decoding over
it, and the captured decode step that generate() uses on CUDA."""

import pytest
import torch
from transformers import CompileConfig

from hf_lrnn.modeling_lrnn import CACHE_FIELD
from helpers import tiny_model


def prompt(batch=2, length=6, seed=0):
    return torch.randint(3, 37, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("m", [1, 2, 3])
@torch.no_grad()
def test_cache_states_keep_their_addresses(arch, m):
    """After the first forward a cache only writes into its tensors: decode steps and a continuation of several
    tokens leave every state where it was, with the values of a forward over the whole sequence."""
    model = tiny_model(arch, m=m)
    ids = prompt(length=12)
    out = model(ids[:, :5])
    cache = getattr(out, CACHE_FIELD)
    addresses = [s.data_ptr() for s in cache.states]
    logits = [out.logits]
    for t in range(5, 9):
        logits.append(model(ids[:, t:t + 1], **{CACHE_FIELD: cache}).logits)
    logits.append(model(ids[:, 9:], **{CACHE_FIELD: cache}).logits)  # a continuation (T > 1): the H-LRU read-out
    assert [s.data_ptr() for s in cache.states] == addresses  # reads the old state before it is overwritten
    torch.testing.assert_close(torch.cat(logits, 1), model(ids).logits, rtol=1e-5, atol=1e-6)
    final = getattr(model(ids), CACHE_FIELD).states
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(cache.states, final))
    cache.reset()
    assert [s.data_ptr() for s in cache.states] == addresses and all(not s.any() for s in cache.states)
    assert cache.is_compileable


def test_cache_keeps_autograd_history_when_training_through_it(arch):
    """A state with a gradient is stored as it is (not copied into the old tensor): backpropagation through a cached
    continuation reaches the first window's weights."""
    model = tiny_model(arch, m=2)
    ids = prompt(length=10)
    first = model(ids[:, :6], use_cache=True)
    cache = getattr(first, CACHE_FIELD)
    assert all(s.requires_grad for s in cache.states)
    second = model(ids[:, 6:], **{CACHE_FIELD: cache})
    grad = torch.autograd.grad(second.logits.sum(), model.model.embeddings.weight)[0]
    assert grad[ids[:, :6].unique()].abs().sum() > 0  # tokens seen only in the first window get a gradient


@pytest.mark.parametrize("m", [1, 2])
def test_transformers_compiled_decoding_equals_eager(arch, m):
    """generate() with a compile_config compiles the decode step (transformers' own path: the cache is compileable);
    greedy tokens equal the eager ones, and the step compiles a bounded number of times, not once per token."""
    torch._dynamo.reset()
    model = tiny_model(arch, m=m).eval()
    ids = prompt()
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    eager = model.generate(ids, disable_compile=True, **kw)
    config = CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True  # transformers compiles on accelerators only unless told otherwise
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = model.generate(ids, compile_config=config, return_dict_in_generate=True, **kw)
    assert torch.equal(compiled.sequences, eager)
    eager_cache = getattr(model.generate(ids, disable_compile=True, return_dict_in_generate=True, **kw), CACHE_FIELD)
    # the compiled steps do not count tokens themselves; generate's wrapper does
    assert getattr(compiled, CACHE_FIELD).get_seq_length() == eager_cache.get_seq_length() == 6 + 12 - 1
    frames = counters["stats"]["unique_graphs"]
    assert 1 <= frames <= 3, dict(counters["stats"])  # compiled (not skipped), and not recompiled per token
