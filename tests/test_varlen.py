"""Packed ("padding-free") batches: document boundaries from position_ids / cu_seq_lens_q, exact per document; the
varlen packing of build_lm_task, ShardedBatches' position_ids, and scripts/train.py --packing varlen."""

import json
import math
import os

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithFlattening

import hf_lrnn.modeling_lrnn as modeling
from helpers import assert_same_training_step, run_train, tiny_model, tiny_tokenizer
from hf_lrnn import ops
from hf_lrnn.cache_lrnn import LRNNCache
from hf_lrnn.modeling_lrnn import CACHE_FIELD
from hf_lrnn.training.batches import ShardedBatches
from hf_lrnn.training.metrics import masked_cross_entropy
from hf_lrnn.training.text_data import build_lm_task, documents_to_blocks, train_bpe_tokenizer

LENGTHS = [[4, 1, 6, 2], [3, 7, 3]]  # two rows of 13 tokens: documents of 1 to 7 tokens, one of a single token
needs_triton = pytest.mark.skipif(
    not ops.triton_available() or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs Triton (CUDA, or TRITON_INTERPRET=1 on CPU)",
)


def packed_rows(lengths=LENGTHS, seed=0):
    """(input_ids [B, T], position_ids [B, T] restarting at 0 at every document, the documents [(row, start, ids)])."""
    generator = torch.Generator().manual_seed(seed)
    rows, positions, documents = [], [], []
    for b, row in enumerate(lengths):
        start = 0
        for n in row:
            documents.append((b, start, torch.randint(3, 37, (n,), generator=generator)))
            start += n
        rows.append(torch.cat([ids for r, _, ids in documents if r == b]))
        positions.append(torch.cat([torch.arange(n) for n in row]))
    return torch.stack(rows), torch.stack(positions), documents


def separate_logits(model, documents):
    """Each document run alone: {(row, start): logits [n, vocab]}."""
    return {(b, start): model(ids[None]).logits[0] for b, start, ids in documents}


def assert_per_document(logits, documents, alone, **tolerance):
    for b, start, ids in documents:
        torch.testing.assert_close(logits[b, start : start + len(ids)], alone[(b, start)], **tolerance)


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("m", [1, 3])
def test_packed_rows_equal_documents_run_separately_with_gradients(arch, m):
    model = tiny_model(arch, m=m, scan_backend="torch").double()
    ids, positions, documents = packed_rows()
    weights = torch.randn(*ids.shape, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    packed = model(ids, position_ids=positions).logits  # [2, 13, vocab]
    (packed * weights).sum().backward()
    packed_grads = grads(model)
    model.zero_grad()
    alone = separate_logits(model, documents)
    sum((alone[(b, s)] * weights[b, s : s + len(x)]).sum() for b, s, x in documents).backward()

    assert_per_document(packed, documents, alone, rtol=1e-12, atol=1e-12)
    for name, grad in grads(model).items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)
    # the boundaries matter: without them the state of a document leaks into the next
    assert not torch.allclose(model(ids).logits[0, 4:5], alone[(0, 4)], atol=1e-6)


def test_non_selective_gates_and_hidden_states(arch):
    model = tiny_model(arch, m=2, selective=False, scan_backend="torch").double()
    ids, positions, documents = packed_rows(seed=3)
    out = model(ids, position_ids=positions, output_hidden_states=True)
    assert_per_document(out.logits, documents, separate_logits(model, documents), rtol=1e-12, atol=1e-12)
    b, start, doc = documents[-1]
    alone = model(doc[None], output_hidden_states=True).hidden_states
    for layer, (hidden_packed, hidden_alone) in enumerate(zip(out.hidden_states, alone)):
        torch.testing.assert_close(hidden_packed[b, start:], hidden_alone[0], rtol=1e-12, atol=1e-12, msg=str(layer))


@needs_triton
def test_triton_backend_packed_rows_match_the_reference(arch):
    fast = tiny_model(arch, m=3, num_units=4, scan_backend="triton")
    ref = tiny_model(arch, m=3, num_units=4, scan_backend="torch")
    ref.load_state_dict(fast.state_dict())
    ids, positions, documents = packed_rows([[4, 1, 3], [2, 6]], seed=5)
    labels = torch.where(positions == 0, -100, ids)
    outs = assert_same_training_step(fast, ref, input_ids=ids, position_ids=positions, labels=labels)
    with torch.no_grad():
        assert_per_document(outs[0].logits, documents, separate_logits(ref.eval(), documents), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flash_kwargs", [False, True])
def test_data_collator_with_flattening_output_gives_per_document_logits_and_loss(arch, flash_kwargs):
    model = tiny_model(arch, m=3).double()
    generator = torch.Generator().manual_seed(7)
    docs = [torch.randint(3, 37, (n,), generator=generator).tolist() for n in (5, 1, 8, 3)]
    collator = DataCollatorWithFlattening(return_position_ids=not flash_kwargs, return_flash_attn_kwargs=flash_kwargs)
    batch = collator([{"input_ids": doc} for doc in docs])  # input_ids [1, 17], labels -100 at every document start
    assert ("cu_seq_lens_q" in batch) == flash_kwargs and ("position_ids" in batch) != flash_kwargs
    out = model(**batch)

    start, total, count = 0, 0.0, 0
    for doc in docs:
        alone = model(torch.tensor([doc])).logits[0]  # [n, vocab]
        torch.testing.assert_close(out.logits[0, start : start + len(doc)], alone, rtol=1e-12, atol=1e-12)
        total += torch.nn.functional.cross_entropy(alone[:-1], torch.tensor(doc[1:], dtype=torch.long), reduction="sum")
        count += len(doc) - 1
        start += len(doc)
    torch.testing.assert_close(out.loss.double(), total / count, rtol=1e-6, atol=0.0)  # the loss is computed in float32
    assert getattr(out, CACHE_FIELD) is None  # use_cache is on in eval mode, but a packed forward returns no cache


def test_position_ids_that_never_restart_change_nothing(arch):
    model = tiny_model(arch, m=2)
    ids = torch.randint(3, 37, (3, 9))
    plain = model(ids)
    for positions in (torch.arange(9).expand(3, 9), torch.arange(9)[None], torch.arange(5, 14)[None]):
        out = model(ids, position_ids=positions)
        assert torch.equal(out.logits, plain.logits)
        cache, plain_cache = getattr(out, CACHE_FIELD), getattr(plain, CACHE_FIELD)
        assert cache is not None and cache.get_seq_length() == 9  # the ordinary path, with its cache
        for layer in range(2):
            assert torch.equal(cache.get_state(layer), plain_cache.get_state(layer))
    # a continuation from a cache with positions past..past+T-1, and one decode step at position 0
    step = model(ids[:, :1], position_ids=torch.zeros(3, 1, dtype=torch.long), **{CACHE_FIELD: LRNNCache(model.config)})
    assert torch.equal(step.logits, model(ids[:, :1]).logits)
    rest = model(ids[:, 1:], position_ids=torch.arange(1, 9).expand(3, 8), **{CACHE_FIELD: getattr(step, CACHE_FIELD)})
    torch.testing.assert_close(rest.logits, plain.logits[:, 1:], rtol=1e-5, atol=1e-6)


def test_generate_passes_position_ids_and_left_padding_is_not_a_boundary(arch, monkeypatch):
    model = tiny_model(arch, m=3)
    tok = tiny_tokenizer()
    texts = ["w5 w9 w11 w4 w20 w21", "w7 w8"]
    batch = tok(texts, return_tensors="pt", padding=True)  # row 1: 4 pads, then its first real token at position 0
    seen = []
    real_find_documents = modeling.find_documents

    def spy(position_ids, *args):
        found = real_find_documents(position_ids, *args)
        seen.append((position_ids is not None, found is not None))
        return found

    monkeypatch.setattr(modeling, "find_documents", spy)
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    out = model.generate(**batch, prefill_chunk_size=3, **kw)  # the second chunk is [pad, real, real] in row 1
    assert seen and all(given for given, _ in seen) and not any(found for _, found in seen)
    for i, text in enumerate(texts):
        alone = model.generate(**tok([text], return_tensors="pt"), **kw)[0, -4:]
        assert torch.equal(out[i, -4:], alone)


def test_padding_at_document_ends_is_exact(arch):
    model = tiny_model(arch, m=3).double()
    generator = torch.Generator().manual_seed(11)
    a, b, c, d = (torch.randint(3, 37, (n,), generator=generator) for n in (3, 4, 2, 6))
    pad = torch.zeros(2, dtype=torch.long)
    # row 0: two pads, a, b, one pad (trailing); row 1: c, two pads (after c, before d), d
    ids = torch.stack([torch.cat([pad, a, b, pad[:1]]), torch.cat([c, pad, d])])
    mask = torch.stack([torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 0]), torch.tensor([1, 1, 0, 0, 1, 1, 1, 1, 1, 1])])
    positions = torch.stack([torch.tensor([0, 0, 0, 1, 2, 0, 1, 2, 3, 0]), torch.tensor([0, 1, 0, 0, 0, 1, 2, 3, 4, 5])])
    logits = model(ids, attention_mask=mask, position_ids=positions).logits
    for row, start, doc in ((0, 2, a), (0, 5, b), (1, 0, c), (1, 4, d)):
        torch.testing.assert_close(logits[row, start : start + len(doc)], model(doc[None]).logits[0],
                                   rtol=1e-12, atol=1e-12)


def test_clear_errors(arch):
    model = tiny_model(arch, m=2)
    ids, positions, _ = packed_rows()
    with pytest.raises(ValueError, match=r"position_ids must be \[batch, seq_len\] = \[2, 13\]"):
        model(ids, position_ids=positions[:, :5])
    with pytest.raises(ValueError, match=r"a cache \(LRNNCache\) was passed"):
        model(ids, position_ids=positions, **{CACHE_FIELD: LRNNCache(model.config)})
    mask = torch.ones_like(ids)
    mask[0, 2] = 0  # inside the first document (tokens 0-3) of row 0
    with pytest.raises(ValueError, match=r"attention_mask pads inside a document \(row 0, before position 3\)"):
        model(ids, attention_mask=mask, position_ids=positions)
    flat = ids[:1]
    with pytest.raises(ValueError, match="cu_seq_lens_q needs the documents packed into one row"):
        model(ids, cu_seq_lens_q=torch.tensor([0, 4, 13], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"cu_seq_lens_q must rise from 0 to the sequence length T=13, got \[0, 4, 12\]"):
        model(flat, cu_seq_lens_q=torch.tensor([0, 4, 12], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seq_lens_q must be a 1-D integer tensor"):
        model(flat, cu_seq_lens_q=torch.tensor([0.0, 13.0]))
    # use_cache with boundaries: no cache, same logits as without it
    out = model(ids, position_ids=positions, use_cache=True)
    assert getattr(out, CACHE_FIELD) is None
    assert torch.equal(out.logits, model(ids, position_ids=positions, use_cache=False).logits)


def test_sequence_classification_and_gradient_checkpointing_take_position_ids(arch):
    ids, positions, documents = packed_rows(seed=2)
    classifier = tiny_model(arch, head="classification", m=2, num_labels=3).double()
    b, start, last = documents[-1]  # the last document of row 1: the row's pooled logits are its own
    torch.testing.assert_close(classifier(ids, position_ids=positions).logits[b],
                               classifier(last[None]).logits[0], rtol=1e-12, atol=1e-12)
    model = tiny_model(arch, m=2).double()
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()  # 5.2x rename
    model.train()
    logits = model(ids, position_ids=positions).logits
    assert_per_document(logits, documents, separate_logits(model, documents), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------- data


def test_documents_to_blocks_varlen_exact():
    docs, eos = [[10, 11, 12], [20], [30, 31, 32, 33, 34], [40, 41]], 2
    concat = documents_to_blocks(docs, 4, eos)
    varlen = documents_to_blocks(docs, 4, eos, packing="varlen")
    # stream 10 11 12 2 | 20 2 30 31 | 32 33 34 2 | 40 41 2: three blocks of 4, labels one token ahead
    assert varlen["input_ids"].tolist() == concat["input_ids"].tolist() == [[10, 11, 12, 2], [20, 2, 30, 31],
                                                                            [32, 33, 34, 2]]
    assert varlen["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 0, 1], [2, 3, 4, 5]]  # continues across rows
    assert varlen["labels"].tolist() == [[11, 12, 2, -100], [2, -100, 31, 32], [33, 34, 2, -100]]
    assert concat["labels"].tolist() == [[11, 12, 2, 20], [2, 30, 31, 32], [33, 34, 2, 40]]
    with pytest.raises(ValueError, match=r"packing='packed' is invalid; expected one of \('concat', 'varlen'\)"):
        documents_to_blocks(docs, 4, eos, packing="packed")


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("varlen")
    lines = [f"doc {i}: the {'quick ' * (i % 5)}brown fox {i * 3} jumps over the lazy dog." for i in range(60)]
    (folder / "train.txt").write_text("\n".join(lines))
    train_bpe_tokenizer(lines, 300).save_pretrained(folder / "tokenizer")
    return folder


def columns(dataset, *names):
    return {name: np.asarray(dataset.with_format("numpy", columns=[name])[:][name]) for name in names}


def test_build_lm_task_varlen_rows(text_files):
    kw = dict(train_file=str(text_files / "train.txt"), tokenizer_name=str(text_files / "tokenizer"), block_size=16,
              validation_split_percentage=20, return_document_ids=True)
    concat, varlen = build_lm_task(**kw), build_lm_task(**kw, packing="varlen")
    assert varlen.options["packing"] == "varlen" and concat.options["packing"] == "concat"
    eos = varlen.tokenizer.eos_token_id
    for split in ("train", "validation"):
        c = columns(concat.train if split == "train" else concat.test["validation"], "input_ids", "labels")
        v = columns(varlen.train if split == "train" else varlen.test["validation"], "input_ids", "labels",
                    "position_ids", "document_ids")
        assert "position_ids" not in (concat.train if split == "train" else concat.test["validation"]).column_names
        np.testing.assert_array_equal(v["input_ids"], c["input_ids"])  # the same rows: nothing lost
        ids, docs, positions = (v[k].reshape(-1) for k in ("input_ids", "document_ids", "position_ids"))
        first_of_document = np.concatenate([[True], docs[1:] != docs[:-1]])  # the stream starts with document 0
        np.testing.assert_array_equal(positions == 0, first_of_document)  # restarts exactly at document starts
        np.testing.assert_array_equal(positions[1:][~first_of_document[1:]], positions[:-1][~first_of_document[1:]] + 1)
        # the labels: concat's, but -100 exactly where the input is a document's EOS (the target starts the next one)
        # (the last input's successor is not an input: it ends a document iff it is an EOS)
        document_end = np.append(docs[1:] != docs[:-1], ids[-1] == eos).reshape(v["labels"].shape)
        assert document_end.sum() > 5 and (v["input_ids"][document_end] == eos).all()
        np.testing.assert_array_equal(v["labels"] == -100, document_end)
        np.testing.assert_array_equal(v["labels"][~document_end], c["labels"][~document_end])
        assert (c["labels"] != -100).all()


def test_cache_key_includes_the_packing(text_files, tmp_path):
    kw = dict(train_file=str(text_files / "train.txt"), tokenizer_name=str(text_files / "tokenizer"), block_size=16,
              cache_dir=str(tmp_path))
    build_lm_task(**kw)
    varlen = build_lm_task(**kw, packing="varlen")
    assert "position_ids" in varlen.train.column_names and "position_ids" in varlen.test["validation"].column_names
    assert len([entry for entry in os.listdir(tmp_path) if entry.startswith("lm-")]) == 2
    again = build_lm_task(**kw, packing="varlen")  # from the cache
    assert again.train["position_ids"] == varlen.train["position_ids"]
    assert "position_ids" not in build_lm_task(**kw).train.column_names
    with pytest.raises(ValueError, match="packing='none' is invalid"):
        build_lm_task(**kw, packing="none")


def test_sharded_batches_carry_position_ids(text_files):
    task = build_lm_task(train_file=str(text_files / "train.txt"), tokenizer_name=str(text_files / "tokenizer"),
                         block_size=16, packing="varlen")
    with_positions = ShardedBatches(task.train, 4, seed=3)
    without = ShardedBatches(task.train.remove_columns("position_ids"), 4, seed=3)
    rows = columns(task.train, "input_ids", "position_ids")
    for k in (0, 1, with_positions.batches_per_epoch + 2):
        batch, plain = with_positions.batch(k), without.batch(k)
        assert "position_ids" not in plain and torch.equal(batch["input_ids"], plain["input_ids"])  # same examples
        index = with_positions.indices(k).numpy()
        assert batch["position_ids"].dtype == torch.int64
        np.testing.assert_array_equal(batch["position_ids"].numpy(), rows["position_ids"][index])
        np.testing.assert_array_equal(batch["input_ids"].numpy(), rows["input_ids"][index])


# ---------------------------------------------------------------------------------------------------- train.py


def test_train_script_packing_varlen(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    lines = [f"item {i}: a {'small ' * (i % 4)}cat sat on mat {i % 5} while the dog ran." for i in range(200)]
    (tmp_path / "train.txt").write_text("\n".join(lines))
    packed_forwards = []
    real_find_documents = modeling.find_documents

    def spy(*args):
        found = real_find_documents(*args)
        packed_forwards.append(found is not None)
        return found

    monkeypatch.setattr(modeling, "find_documents", spy)
    out = tmp_path / "run"
    run_train(out, "--task", "lm", "--task_options", "", "--train_file", str(tmp_path / "train.txt"),
              "--tokenizer_vocab_size", "300", "--block_size", "32", "--packing", "varlen", "--max_steps", "3",
              "--max_eval_samples", "8", "--data_cache_dir", str(tmp_path / "cache"), "--sample_max_new_tokens", "3")
    assert sum(packed_forwards) >= 3 + 1  # every training step and the evaluation ran packed forwards

    results = json.loads((out / "results.json").read_text())
    assert results["task_options"]["packing"] == "varlen"
    assert json.loads((out / "training_args.json").read_text())["packing"] == "varlen"
    # evaluation passed the position_ids: its loss is the packed loss of the saved model on the evaluated rows
    task = build_lm_task(train_file=str(tmp_path / "train.txt"), tokenizer_vocab_size=300, block_size=32,
                         validation_split_percentage=5.0, cache_dir=str(tmp_path / "cache"), seed=12345,
                         packing="varlen")  # the run's arguments: read from its cache
    num_rows = min(8, len(task.test["validation"]))  # --max_eval_samples 8
    rows = task.test["validation"].select(range(num_rows)).with_format("torch")[:]
    validation = results["final"]["validation"]
    assert validation["scored_tokens"] == int((rows["labels"] != -100).sum()) < num_rows * 32
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        packed = masked_cross_entropy(model(rows["input_ids"], position_ids=rows["position_ids"]).logits, rows["labels"])
        leaking = masked_cross_entropy(model(rows["input_ids"]).logits, rows["labels"])
    assert validation["loss"] == pytest.approx(packed.item(), rel=1e-5)
    assert validation["loss"] != pytest.approx(leaking.item(), rel=1e-5)
    assert math.isfinite(validation["perplexity"])
