"""generate() with the recurrent-state cache: every decoding mode agrees with the cache-free path."""

import re

import pytest
import torch
from transformers import TextStreamer, pipeline

import hf_lrnn
from hf_lrnn.modeling_lrnn import CACHE_FIELD
from helpers import tiny_model, tiny_tokenizer

MS = [1, 2, 3]


def prompt(batch=2, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 37, (batch, length), generator=g)


@pytest.mark.parametrize("m", MS)
def test_greedy_with_cache_equals_without(arch, m):
    model = tiny_model(arch, m=m)
    ids = prompt()
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with_cache = model.generate(ids, **kw)
    assert with_cache.shape == (2, 14)
    assert torch.equal(with_cache, model.generate(ids, use_cache=False, **kw))


@pytest.mark.parametrize("m", [1, 3])
def test_beam_search_with_cache_equals_without(arch, m):
    model = tiny_model(arch, m=m)
    ids = prompt()
    kw = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False, pad_token_id=0)
    out = model.generate(ids, **kw)
    assert out.shape == (4, 12)
    assert torch.equal(out, model.generate(ids, use_cache=False, **kw))


@pytest.mark.parametrize("m", MS)
def test_prefill_then_single_steps_equal_full_forward(arch, m):
    model = tiny_model(arch, m=m)
    ids = prompt(length=12)
    full = model(ids).logits
    out = model(ids[:, :5])
    logits = [out.logits]
    cache = getattr(out, CACHE_FIELD)
    for t in range(5, 12):
        out = model(ids[:, t : t + 1], **{CACHE_FIELD: cache})
        cache = getattr(out, CACHE_FIELD)
        logits.append(out.logits)
    assert cache.get_seq_length() == 12
    torch.testing.assert_close(torch.cat(logits, 1), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_left_padded_batch_rows_continue_as_alone(arch, m):
    model = tiny_model(arch, m=m)
    tok = tiny_tokenizer()
    texts = ["w5 w9 w11 w4", "w7 w8", "w30 w31 w32 w33 w34 w35"]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert (batch.attention_mask == 0).any()
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    out = model.generate(**batch, **kw)
    for i, text in enumerate(texts):
        alone = tok([text], return_tensors="pt")
        want = model.generate(**alone, **kw)[0, -6:]
        assert torch.equal(out[i, -6:], want), (i, out[i], want)


def test_sampling_is_reproducible_with_a_seed(arch):
    model = tiny_model(arch)
    ids = prompt()
    kw = dict(max_new_tokens=10, do_sample=True, temperature=0.8, top_k=10, top_p=0.9, pad_token_id=0)
    torch.manual_seed(123)
    a = model.generate(ids, **kw)
    torch.manual_seed(123)
    b = model.generate(ids, **kw)
    assert torch.equal(a, b)
    torch.manual_seed(123)
    c = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(a, c)
    torch.manual_seed(7)
    beam_sample = model.generate(ids, num_beams=2, **kw)
    torch.manual_seed(7)
    assert torch.equal(beam_sample, model.generate(ids, num_beams=2, **kw))


def test_stops_on_eos(arch):
    model = tiny_model(arch)
    ids = prompt(batch=1)
    first = model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=0)[0, -1].item()
    out = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=first, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + 1 and out[0, -1].item() == first


def continuation_model(arch, m):
    # untied head; no eos (a finished row would go on with padding in one run, with new tokens in two runs) and no
    # pad id (a generated token that equals it would be taken for padding when the sequence is passed back)
    return tiny_model(arch, m=m, tie_word_embeddings=False, eos_token_id=None, pad_token_id=None)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_continue_from_returned_cache(arch, m):
    model = continuation_model(arch, m)
    assert model.lm_head.weight.data_ptr() != model.model.embeddings.weight.data_ptr()
    ids = prompt()
    kw = dict(do_sample=False, return_dict_in_generate=True, output_scores=True)
    whole = model.generate(ids, max_new_tokens=10, **kw)
    whole_seen = getattr(whole, CACHE_FIELD).get_seq_length()
    assert whole_seen in (ids.shape[1] + 9, ids.shape[1] + 10)

    first = model.generate(ids, max_new_tokens=5, **kw)
    cache = getattr(first, CACHE_FIELD)
    assert isinstance(cache, hf_lrnn.LRNNCache)
    # the cache holds the state after all tokens but the last generated one (generate never feeds it back)
    assert cache.get_seq_length() == ids.shape[1] + 4
    resumed = model.generate(first.sequences, max_new_tokens=5, **{CACHE_FIELD: cache}, **kw)
    assert torch.equal(resumed.sequences, whole.sequences)
    assert len(first.scores) + len(resumed.scores) == len(whole.scores) == 10
    for step, (got, want) in enumerate(zip(first.scores + resumed.scores, whole.scores)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    assert getattr(resumed, CACHE_FIELD) is cache
    assert cache.get_seq_length() == whole_seen  # the consumed prefix was not fed again


@pytest.mark.parametrize("chunked", [False, True])
def test_continue_from_returned_cache_with_new_prompt_tokens(arch, chunked):
    """A follow-up turn: the returned sequences plus new tokens, with their full attention mask."""
    model = continuation_model(arch, 2)
    ids = prompt()
    follow_up = prompt(length=7, seed=1)
    kw = dict(do_sample=False, return_dict_in_generate=True, output_scores=True)
    first = model.generate(ids, max_new_tokens=4, **kw)
    cache = getattr(first, CACHE_FIELD)
    turn = torch.cat([first.sequences, follow_up], dim=1)
    extra = dict(prefill_chunk_size=3) if chunked else {}
    resumed = model.generate(turn, attention_mask=torch.ones_like(turn), max_new_tokens=5,
                             **{CACHE_FIELD: cache}, **extra, **kw)
    fresh = model.generate(turn, max_new_tokens=5, **kw)
    assert torch.equal(resumed.sequences, fresh.sequences)
    for got, want in zip(resumed.scores, fresh.scores):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert cache.get_seq_length() == getattr(fresh, CACHE_FIELD).get_seq_length() == turn.shape[1] + 4


def test_prefill_chunk_size(arch):
    model = tiny_model(arch, m=3)
    tok = tiny_tokenizer()
    batch = tok(["w3 w4 w5 w6 w7 w8 w9 w10 w11", "w12 w13"], return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(**batch, prefill_chunk_size=3, **kw), model.generate(**batch, **kw))


def test_text_streamer_prints_the_generation(arch, capsys):
    model = tiny_model(arch)
    tok = tiny_tokenizer()
    inputs = tok(["w3 w4 w5"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, streamer=TextStreamer(tok), pad_token_id=0)
    printed = capsys.readouterr().out
    assert tok.decode(out[0, 3:]).strip() in printed


def test_text_generation_pipeline(arch):
    model = tiny_model(arch)
    generator = pipeline("text-generation", model=model, tokenizer=tiny_tokenizer(), device="cpu")
    result = generator("w3 w4 w5", max_new_tokens=4, do_sample=False)
    text = result[0]["generated_text"]
    assert text.startswith("w3 w4 w5") and len(re.findall(r"w\d+", text)) == 7  # prompt + 4 new words


def test_assisted_decoding_is_refused(arch):
    """A recurrent state cannot be rolled back after draft verification: generate() refuses assisted decoding, from
    the model's `_is_stateful` up to transformers 5.24 and from the cache's `is_croppable` (False) since 5.25."""
    model = tiny_model(arch)
    with pytest.raises(ValueError, match="stateful|can be cropped"):
        model.generate(prompt(batch=1), assistant_model=tiny_model(arch), max_new_tokens=3, pad_token_id=0)


def test_cache_operations(arch):
    model = tiny_model(arch, m=2)
    ids = prompt(batch=3)
    cache = getattr(model(ids), CACHE_FIELD)
    states = [s.clone() for s in cache.states]
    assert cache.batch_size == 3 and cache.is_initialized and all(cache.is_linear)
    cache.reorder_cache(torch.tensor([2, 0, 1]))
    torch.testing.assert_close(cache.get_state(0), states[0][[2, 0, 1]])
    cache.batch_repeat_interleave(2)
    assert cache.batch_size == 6
    torch.testing.assert_close(cache.get_state(1)[1], cache.get_state(1)[0])
    cache.batch_select_indices(torch.tensor([0, 5]))
    assert cache.batch_size == 2
    with pytest.raises(ValueError, match="cannot be cropped"):
        cache.crop(2)
    cache.reset()
    assert cache.get_seq_length() == 0 and all(s.abs().sum() == 0 for s in cache.states)


def test_state_size_does_not_grow_with_context(arch):
    model = tiny_model(arch, m=3)
    short = getattr(model(prompt(length=4)), CACHE_FIELD)
    long = getattr(model(prompt(length=300)), CACHE_FIELD)
    assert [s.shape for s in short.states] == [s.shape for s in long.states] == [torch.Size([2, 5, 3])] * 2
    assert long.get_seq_length() == 300
