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
    # marked as static addresses (torch._dynamo.mark_static_address), so that inductor's CUDA graphs let a compiled
    # step write them in place (checked on the GPU: tests/test_models_gpu.py)
    assert all(getattr(s, "_dynamo_static_input_type", None) == "unguarded" for s in cache.states)


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


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("m", [1, 2])
def test_transformers_compiled_decoding_equals_eager(arch, m, batch):
    """generate() with a compile_config compiles the decode step (transformers' own path: the cache is compileable);
    greedy tokens equal the eager ones, and the step compiles a bounded number of times, not once per token."""
    torch._dynamo.reset()
    model = tiny_model(arch, m=m).eval()
    ids = prompt(batch=batch)
    # with a mask (transformers 5.17 passes it to every step; 5.24 drops an all-ones one)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
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


def test_transformers_compiled_decoding_does_not_recompile_for_another_prompt_length(arch):
    """The compiled decode step sees one token and the state, never the prompt: prompts of other lengths reuse it."""
    torch._dynamo.reset()
    model = tiny_model(arch, m=2).eval()
    config = CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True
    counters = torch._dynamo.utils.counters
    graphs = []
    for length in (6, 9, 13):
        ids = prompt(length=length, seed=length)
        kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
        counters.clear()
        compiled = model.generate(ids, compile_config=config, **kw)
        graphs.append(counters["stats"]["unique_graphs"])
        assert torch.equal(compiled, model.generate(ids, disable_compile=True, **kw))
    assert graphs[0] >= 1 and graphs[1:] == [0, 0], graphs


def test_a_model_split_over_devices_is_not_auto_compiled(monkeypatch):
    """generate() of a model that accelerate split over several devices tells transformers not to compile the decode
    step (its hooks make dynamo recompile at every block), unless a compile_config asks for it; one device: untouched."""
    from transformers import GenerationMixin

    seen = []
    original = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("disable_compile"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    model = tiny_model("hlru", m=2).eval()
    ids = prompt()
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
    model.generate(ids, **kw)
    model.hf_device_map = {"model.embeddings": 0, "model.layers": 1}  # as from_pretrained(device_map=...) sets it
    model.generate(ids, **kw)
    config = CompileConfig()
    model.generate(ids, compile_config=config, **kw)
    model.generate(ids, disable_compile=False, **kw)  # the caller's choice stands
    assert seen == [None, True, None, False]


# ------------------------------------------------------------------- captured decode steps (decoding_lrnn.py)
# On CPU the capture is replaced by a graph that re-runs the captured step eagerly: everything but the CUDA graph
# itself (binding caches to the step's state tensors, counting, batch sizes, re-capture) is exercised. The real graphs
# run in tests/test_models_gpu.py-style GPU tests below.


class EagerGraph:
    captures = 0

    def __init__(self, device, pool=None):
        self.pool = pool

    def capture(self, step):
        EagerGraph.captures += 1
        self.step = step
        self.output = step()
        return self.output

    def replay(self):
        self.output.copy_(self.step())


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    from hf_lrnn.modeling_lrnn import LRNNForCausalLM

    monkeypatch.setattr(LRNNForCausalLM, "decode_graph_class", EagerGraph)
    monkeypatch.setattr(LRNNForCausalLM, "_can_use_decode_graphs", lambda self: True)
    EagerGraph.captures = 0
    return EagerGraph


@pytest.mark.parametrize("m", [1, 2, 3])
def test_captured_steps_equal_eager_decoding(arch, m, graphs_on_cpu):
    model = tiny_model(arch, m=m).eval()
    ids = prompt(batch=3)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row
    for kw in (dict(do_sample=False), dict(num_beams=3, do_sample=False), dict(do_sample=True, top_k=5)):
        kw.update(max_new_tokens=7, pad_token_id=0, attention_mask=mask, return_dict_in_generate=True)
        torch.manual_seed(0)
        eager = model.generate(ids, decode_graph=False, **kw)
        torch.manual_seed(0)
        replayed = model.generate(ids, **kw)
        assert torch.equal(replayed.sequences, eager.sequences), kw
        assert getattr(replayed, CACHE_FIELD).get_seq_length() == getattr(eager, CACHE_FIELD).get_seq_length()
    assert graphs_on_cpu.captures == 2  # batch 3, and 9 rows for the beams; the sampling run reused batch 3


def test_captured_steps_per_batch_size_and_weights(graphs_on_cpu):
    model = tiny_model("hlru", m=2).eval()
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
    for batch in (1, 2, 1, 2):
        model.generate(prompt(batch=batch), **kw)
    assert graphs_on_cpu.captures == 2
    model.max_decode_graphs = 1  # the oldest is dropped
    model.generate(prompt(batch=4), **kw)
    model.generate(prompt(batch=1), **kw)
    assert graphs_on_cpu.captures == 4 and len(model._decode_graphs) == 1
    model.to(torch.bfloat16)  # new weight tensors: the steps are captured again
    eager = model.generate(prompt(batch=1), decode_graph=False, **kw)
    assert torch.equal(model.generate(prompt(batch=1), **kw), eager) and graphs_on_cpu.captures == 5
    with pytest.raises(ValueError, match="decode_graph must be True, \"compile\" or False, got 'yes'"):
        model.generate(prompt(), decode_graph="yes", **kw)
    with pytest.raises(TypeError, match="decode_graph must be True"):
        model.generate(prompt(), decode_graph=1, **kw)


def test_two_caches_decoding_in_turn_stay_apart(graphs_on_cpu):
    """Two conversations of the same batch size alternate through one captured step: each keeps its own state."""
    model = tiny_model("bdlru", m=2).eval()
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    first, second = prompt(seed=1), prompt(seed=2)
    out_a, out_b = model.generate(first, **kw), model.generate(second, **kw)
    cont_a = model.generate(out_a.sequences, **{CACHE_FIELD: getattr(out_a, CACHE_FIELD)}, **kw).sequences
    cont_b = model.generate(out_b.sequences, **{CACHE_FIELD: getattr(out_b, CACHE_FIELD)}, **kw).sequences
    for start, continued in ((first, cont_a), (second, cont_b)):
        whole = model.generate(start, decode_graph=False, **{**kw, "max_new_tokens": 8}).sequences
        assert torch.equal(continued, whole)


def test_copies_of_a_model_start_without_captured_steps(graphs_on_cpu):
    """copy.deepcopy and pickle of a model that has captured steps: the copy has none (a CUDA graph cannot be
    copied) and captures its own, and both decode alike."""
    import copy
    import pickle

    model = tiny_model("hlru", m=2).eval()
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    expected = model.generate(prompt(), **kw)
    assert model._decode_graphs
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not twin._decode_graphs and twin._decode_graphs_for is None
        assert torch.equal(twin.generate(prompt(), **kw), expected) and twin._decode_graphs
    assert model._decode_graphs  # the original keeps its own


def test_captured_steps_skip_the_generic_input_preparation(graphs_on_cpu, monkeypatch):
    """A replayed decode step takes its inputs straight from the cache and the new token: transformers' generic
    prepare_inputs_for_generation runs for the prompt only (with a left-padded row, greedy and sampling alike), and
    the tokens are those of eager decoding, where it runs at every step."""
    from transformers import GenerationMixin

    calls = []
    generic = GenerationMixin.prepare_inputs_for_generation

    def counted(self, *args, **kwargs):
        calls.append(kwargs.get("is_first_iteration"))
        return generic(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "prepare_inputs_for_generation", counted)
    model = tiny_model("hlru", m=2).eval()
    ids = prompt(batch=2)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    for kw in (dict(do_sample=False), dict(do_sample=True, top_k=5)):
        kw.update(max_new_tokens=6, min_new_tokens=6, pad_token_id=0, attention_mask=mask)
        torch.manual_seed(0)
        eager = model.generate(ids, decode_graph=False, **kw)
        assert len(calls) >= 6  # eager decoding prepares every step generically
        calls.clear()
        torch.manual_seed(0)
        replayed = model.generate(ids, **kw)
        assert torch.equal(replayed, eager), kw
        assert len(calls) == 1, calls  # the prompt only
        calls.clear()


def test_can_replay_trusts_only_a_captured_steps_own_states(graphs_on_cpu):
    """A cache bound to a captured step passes `can_replay` by identity of its states; once a state is replaced (a
    reorder, another dtype) the full shape / dtype / device check decides again."""
    from hf_lrnn.decoding_lrnn import can_replay

    model = tiny_model("bdlru", m=2).eval()
    out = model.generate(prompt(batch=2), max_new_tokens=3, do_sample=False, pad_token_id=0,
                         return_dict_in_generate=True)
    cache = getattr(out, CACHE_FIELD)
    step = next(iter(model._decode_graphs.values()))
    assert cache._captured_states == (model.config, step.states)
    assert all(layer.state is state for layer, state in zip(cache.layers, step.states))
    token = torch.zeros(2, 1, dtype=torch.long)
    assert can_replay(cache, token, model.config)
    assert not can_replay(cache, torch.zeros(3, 1, dtype=torch.long), model.config)  # another batch size
    assert not can_replay(cache, torch.zeros(2, 2, dtype=torch.long), model.config)  # two tokens
    assert not can_replay(cache, token, tiny_model("bdlru", m=3).config)  # another model's state shape
    cache.layers[0].state = cache.layers[0].state.double()  # no longer the step's tensor, and the wrong dtype
    assert not can_replay(cache, token, model.config)
    cache.layers[0].state = cache.layers[0].state.float()  # a copy of the right kind: replayable (copied in)
    assert can_replay(cache, token, model.config)


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_compiled_captured_steps_equal_eager_decoding(arch, graphs_on_cpu):
    """generate(decode_graph="compile") captures the step as torch.compile (fullgraph) generates it: compiled once per
    batch size (not per token, not again for a new prompt), kept apart from the eager captured steps, and greedy tokens
    equal eager decoding's."""
    torch._dynamo.reset()
    model = tiny_model(arch, m=2).eval()
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    counters = torch._dynamo.utils.counters
    counters.clear()
    for seed in (0, 1):
        ids = prompt(batch=2, seed=seed)
        compiled = model.generate(ids, decode_graph="compile", **kw)
        assert torch.equal(compiled, model.generate(ids, decode_graph=False, **kw)), seed
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert graphs_on_cpu.captures == 1 and [key[2] for key in model._decode_graphs] == [True]
    model.generate(prompt(batch=2), **kw)  # the eager captured step: a step of its own
    assert graphs_on_cpu.captures == 2 and sorted(key[2] for key in model._decode_graphs) == [False, True]
    assert counters["stats"]["unique_graphs"] == 1
