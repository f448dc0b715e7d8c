"""Deterministic generators for the synthetic tasks used to train and compare sequence models.

Every task is returned as a `SyntheticTask` holding `datasets.Dataset`s with two columns of equal length per
row, `input_ids` and `labels`. Labels are ALIGNED with the inputs (not shifted): `labels[t]` is the target of
the model's output at position t, and -100 marks a position that is not scored. All rows of one split have
the same length.

MAD tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures",
github.com/athms/mad-lab; formats follow its `mad/data/instances.py`, baselines and difficulty settings its
`configs/tasks/*.yml`; the random draws are our own, vectorised with numpy):

* in_context_recall: plain tokens [0, P) with P = vocab_size (multi_query, MAD's setting) or vocab_size - 1
  (then vocab_size - 1 is a copy token); keys are [0, K), values [K, P), K = P // 2, and each sequence has its
  own random key -> value map. A sequence is seq_len / 2 - 1 (key, value) pairs with random keys, then a probe
  pair whose key is drawn among the keys shown. It is a next-token task: `input_ids = seq[:-1]` (length
  seq_len - 1). Train: `labels = seq[1:]` (every position scored). Test (multi_query): only the positions
  whose NEXT token is the value of a key that already occurred earlier in the sequence are scored (label =
  that value; the probe value always). multi_query=False: the copy token precedes the probe pair, the input
  length is seq_len, and at test only the probe value is scored.
* noisy_in_context_recall: as in_context_recall with P = vocab_size - noise_vocab_size (- 1 without
  multi_query); each context pair slot is, with probability frac_noise, two random noise tokens of
  [P, P + noise_vocab_size) instead (at least one slot is a real pair). Noise is never scored at test (train
  labels are plain next tokens, noise included, as in MAD).
* fuzzy_in_context_recall: plain tokens [0, P), P = vocab_size - 1 (pad = vocab_size - 1; without multi_query
  P = vocab_size - 2, pad = vocab_size - 2, copy = vocab_size - 1); keys are motifs of 1..k_motif_size
  distinct tokens of [0, K), values motifs of 1..v_motif_size distinct tokens of [K, P), K = P // 2, motif
  sizes uniform. MAD's construction: (key, value) pairs are appended while the sequence is shorter than
  seq_len - len(probe pair) - (k_motif_size + v_motif_size), a designated probe pair is inserted once at a
  random offset and repeated at the end, and the sequence is left-padded so that `input_ids` has length
  seq_len (MAD pads to seq_len + 1 before the shift). Test keys always have the maximal size k_motif_size.
  Train labels are next tokens; test scores the value tokens of every pair whose key occurred earlier (the
  final probe value always). Deviation from MAD: the probe offset is drawn so that the probe always lands in
  the context (MAD can miss it and then scores the value of a key never shown).
* selective_copying: content tokens [0, vocab_size - 2), blank = vocab_size - 2, copy = vocab_size - 1.
  num_tokens_to_copy content tokens in order with seq_len - 2 * num_tokens_to_copy - 1 blanks inserted
  before them at random (as in MAD, blanks go before a content token, so the last content token is always
  directly followed by the copy token), then the copy token, then num_tokens_to_copy blanks. Labels: the
  content tokens in order at the last num_tokens_to_copy positions, -100 elsewhere. Length seq_len.
* compression: seq_len - 1 uniform tokens of [0, vocab_size - 1), then the compression token vocab_size - 1;
  labels = input_ids (every position; an auto-encoder head reconstructs the sequence from the last token).
* memorization: one fixed random injective map from keys [0, K) to values [K, vocab_size - 1),
  K = (vocab_size - 1) // 2, drawn from the seed; insert token = vocab_size - 1. A sequence is seq_len / 2
  pairs (key, insert); the label at the insert position is the key's value, -100 at keys. As in MAD, test
  sequences are new random key sequences queried against the SAME map (the facts themselves are necessarily
  all in train: the task measures what the weights store); the sequences are disjoint from train.

State tracking and length generalisation (train at one length, test at several, token tagging):

* state_tracking: the word problem of a finite group (Merrill, Petty & Sabharwal 2024). Tokens are group
  elements drawn uniformly (identity included), token id = index in a fixed enumeration: S_n (n <= 6) are the
  permutations of range(n) as image tuples in lexicographic order (identity = 0), A_n the even ones in the
  same order, Z_n the residues 0..n-1, and a direct product such as "A4xZ5" the pairs in mixed radix
  (index = index_A4 * 5 + residue). Composition is left to right: g.h applies g first, then h, i.e.
  (g.h)[i] = h[g[i]]. The label at position t is the running product g_1.g_2...g_t (every position scored;
  scoring="final": only the last).
* parity: tokens 0/1, label = running parity (XOR) of the prefix (scoring="final": only the last).
* modular_arithmetic: "modular arithmetic without brackets" of Deletang et al. 2023 (github.com/google-deepmind/
  neural_networks_chomsky_hierarchy, tasks/regular/modular_arithmetic.py): an odd-length expression
  n_0 o_1 n_1 ... o_k n_k with numbers [0, modulus) and operators "+" = modulus, "-" = modulus + 1,
  "*" = modulus + 2, evaluated with the usual precedence (multiplications first, "-" negates the following
  number) modulo `modulus`, as Deletang does. Deletang trains a single output after the whole expression; we
  tag tokens instead: the label at every number position is the value of the expression prefix ending there,
  -100 at operators, so the last label is Deletang's target (scoring="final": only that one is scored).
  Deletang's unused blank symbol is left out (vocab_size = modulus + 3). Lengths count tokens and must be odd.

Train and test are drawn from separate random streams of `seed`; a test row whose input_ids also occur in
train is redrawn, so `check_no_leakage` holds for every task.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

import datasets
import numpy as np
import pyarrow as pa

TASKS = ("in_context_recall", "fuzzy_in_context_recall", "noisy_in_context_recall", "selective_copying",
         "compression", "memorization", "state_tracking", "parity", "modular_arithmetic")
MAD_TASKS = TASKS[:6]
LENGTH_TASKS = TASKS[6:]  # trained at one length, tested at several (one test split per length)

FORMAT_VERSION = 1  # bump whenever a generator's output changes: it is part of the cache key
IGNORE_INDEX = -100

_MAD_SIZES = dict(num_train=12_800, num_test=1_280)
_LENGTH_SIZES = dict(num_train=20_000, num_test=1_000)
_DEFAULT_OPTIONS = {
    "in_context_recall": dict(vocab_size=16, seq_len=128, **_MAD_SIZES, multi_query=True),
    "fuzzy_in_context_recall": dict(vocab_size=16, seq_len=128, **_MAD_SIZES, k_motif_size=3, v_motif_size=3,
                                    multi_query=True),
    "noisy_in_context_recall": dict(vocab_size=32, seq_len=128, **_MAD_SIZES, noise_vocab_size=16, frac_noise=0.2,
                                    multi_query=True),
    "selective_copying": dict(vocab_size=16, seq_len=256, **_MAD_SIZES, num_tokens_to_copy=16),
    "compression": dict(vocab_size=16, seq_len=32, **_MAD_SIZES),
    "memorization": dict(vocab_size=256, seq_len=32, num_train=256, num_test=1_280),
    "state_tracking": dict(group="S5", train_length=16, test_lengths=(16, 32, 64, 128), **_LENGTH_SIZES,
                           scoring="all"),
    "parity": dict(train_length=16, test_lengths=(16, 32, 64, 128), **_LENGTH_SIZES, scoring="all"),
    "modular_arithmetic": dict(modulus=5, operators="+-*", train_length=15, test_lengths=(15, 31, 63, 127),
                               **_LENGTH_SIZES, scoring="all"),
}

# MAD difficulty settings (configs/tasks/*.yml): from the baseline, one option changed at a time.
_NUM_TRAIN_CHANGES = [6_400, 3_200, 1_600, 800]
_MAD_CHANGES = {
    "in_context_recall": dict(vocab_size=[32, 64, 128], seq_len=[256, 512, 1024], num_train=_NUM_TRAIN_CHANGES),
    "fuzzy_in_context_recall": dict(vocab_size=[32, 64, 128], seq_len=[256, 512, 1024],
                                    num_train=_NUM_TRAIN_CHANGES),
    "noisy_in_context_recall": dict(vocab_size=[48, 80, 144], seq_len=[256, 512, 1024], num_train=_NUM_TRAIN_CHANGES,
                                    frac_noise=[0.4, 0.6, 0.8]),
    "selective_copying": dict(vocab_size=[32, 64, 128], seq_len=[512, 1024], num_train=_NUM_TRAIN_CHANGES,
                              num_tokens_to_copy=[32, 64, 96]),
    "compression": dict(vocab_size=[32, 64, 128], seq_len=[64, 128, 256], num_train=_NUM_TRAIN_CHANGES),
    "memorization": dict(vocab_size=[512, 1024, 2048, 4096, 8192]),
}

_MAX_GROUP_ORDER = 1024
_MAX_REDRAW_ROUNDS = 200
_CHUNK_TOKENS = 1 << 20  # rows are generated in chunks of about this many tokens (bounds the memory)
_MODULAR_OPERATORS = "+-*"  # token id of operator c: modulus + _MODULAR_OPERATORS.index(c)
_FEATURES = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int64")),
                               "labels": datasets.Sequence(datasets.Value("int64"))})


@dataclass
class SyntheticTask:
    """A built task: its resolved options, the vocabulary a model needs, and the train / test datasets."""

    name: str
    options: dict  # fully resolved options (defaults filled in), JSON-serialisable
    vocab_size: int  # every input id and every label (other than -100) is < vocab_size
    head: str  # "compression" for compression, "causal_lm" otherwise
    train: datasets.Dataset  # columns "input_ids" and "labels" (lists of int, equal length)
    test: dict  # split name -> datasets.Dataset; MAD tasks {"test": ...}, length tasks {"length_<L>": ...}


# --------------------------------------------------------------------------------------------------------------
# options


def _check_task_name(name: str) -> None:
    if name not in TASKS:
        raise ValueError(f"unknown task name={name!r}; expected one of {', '.join(TASKS)}")


def default_options(name: str) -> dict:
    """The baseline options of task `name` (for MAD tasks the baseline of MAD's table of settings)."""
    _check_task_name(name)
    return dict(_DEFAULT_OPTIONS[name])


def _parse_value(name: str, key: str, text: str, default):
    """Convert `text` to the type of the default value of option `key`."""
    text = text.strip()
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(int(part) for part in text.split(":"))
        return text
    except ValueError:
        expected = {bool: "true or false", int: "an integer", float: "a number",
                    tuple: "integers separated by ':' (e.g. 16:32:64)"}[type(default)]
        raise ValueError(f"option {key}={text!r} of task {name!r} is not {expected}") from None


def parse_task_options(name: str, text: str) -> dict:
    """Parse "key=value,key=value" into a dict typed like the task's defaults ("" gives {}).

    Values: int, float, str, bool (true/false/1/0/yes/no), tuples of ints as "16:32:64". An unknown key raises
    ValueError naming the key, the task and the valid keys.
    """
    _check_task_name(name)
    defaults = _DEFAULT_OPTIONS[name]
    options = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"task option {item.strip()!r} of task {name!r} is not of the form key=value")
        if key not in defaults:
            raise ValueError(f"unknown option {key!r} for task {name!r}; valid options: {', '.join(defaults)}")
        if key in options:
            raise ValueError(f"option {key!r} of task {name!r} is given twice in {text!r}")
        options[key] = _parse_value(name, key, value, defaults[key])
    return options


def _coerce_option(name: str, key: str, value, default):
    """Check and normalise an option given to build_task to the type of its default.

    A string for a non-string option is parsed as by parse_task_options ("16:32" -> (16, 32)); a single int is
    accepted for a tuple of ints.
    """
    if isinstance(value, str) and not isinstance(default, str):
        return _parse_value(name, key, value, default)
    bad = ValueError(f"option {key}={value!r} of task {name!r} must be of type {type(default).__name__} "
                     f"(like the default {default!r})")
    is_bool = isinstance(value, (bool, np.bool_))
    if isinstance(default, bool):
        if not is_bool:
            raise bad
        return bool(value)
    if isinstance(default, int):
        if is_bool or not isinstance(value, (int, np.integer)):
            raise bad
        return int(value)
    if isinstance(default, float):
        if is_bool or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad
        return float(value)
    if isinstance(default, tuple):
        items = (value,) if isinstance(value, (int, np.integer)) and not is_bool else value
        if not isinstance(items, (tuple, list)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
            raise bad
        return tuple(int(v) for v in items)
    if not isinstance(value, str):
        raise bad
    return value


def _resolve_options(name: str, options: dict) -> dict:
    _check_task_name(name)
    defaults = _DEFAULT_OPTIONS[name]
    resolved = dict(defaults)
    for key, value in options.items():
        if key not in defaults:
            raise ValueError(f"unknown option {key!r} for task {name!r}; valid options: {', '.join(defaults)}")
        resolved[key] = _coerce_option(name, key, value, defaults[key])
    _validate_options(name, resolved)
    return resolved


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _validate_options(name: str, o: dict) -> None:
    """Raise ValueError for option values the task cannot be built with."""
    _require(o["num_train"] >= 1, f"num_train={o['num_train']} must be >= 1 (task {name!r})")
    _require(o["num_test"] >= 1, f"num_test={o['num_test']} must be >= 1 (task {name!r})")
    if name in ("in_context_recall", "noisy_in_context_recall"):
        noise = o.get("noise_vocab_size", 0)
        _require(noise >= 0, f"noise_vocab_size={noise} must be >= 0")
        frac_noise = o.get("frac_noise", 0.0)
        _require(0.0 <= frac_noise < 1.0, f"frac_noise={frac_noise} must be in [0, 1)")
        _require(frac_noise == 0.0 or noise >= 1, f"noise_vocab_size={noise} must be >= 1 when frac_noise > 0")
        minimum = 2 + noise + (0 if o["multi_query"] else 1)
        _require(o["vocab_size"] >= minimum,
                 f"vocab_size={o['vocab_size']} is too small for {name}: need >= {minimum} (one key, one value"
                 f"{', the noise tokens' if noise else ''}{'' if o['multi_query'] else ', the copy token'})")
        _require(o["seq_len"] >= 4 and o["seq_len"] % 2 == 0,
                 f"seq_len={o['seq_len']} must be even and >= 4 (at least one context pair and the probe pair)")
    elif name == "fuzzy_in_context_recall":
        k_size, v_size = o["k_motif_size"], o["v_motif_size"]
        _require(k_size >= 1, f"k_motif_size={k_size} must be >= 1")
        _require(v_size >= 1, f"v_motif_size={v_size} must be >= 1")
        n_key, n_value = _fuzzy_layout(o)[:2]
        _require(n_key >= k_size and n_value >= v_size,
                 f"vocab_size={o['vocab_size']} is too small for {name}: the key tokens ({n_key}) must number "
                 f">= k_motif_size={k_size} and the value tokens ({n_value}) >= v_motif_size={v_size}")
        _require((n_key + 1) ** k_size < 2 ** 62,
                 f"k_motif_size={k_size} is too large for vocab_size={o['vocab_size']}")
        minimum = 2 * (k_size + v_size) + 1
        _require(o["seq_len"] >= minimum,
                 f"seq_len={o['seq_len']} is too short for {name}: need >= {minimum} = 2 * (k_motif_size + "
                 f"v_motif_size) + 1")
    elif name == "selective_copying":
        n_copy = o["num_tokens_to_copy"]
        _require(n_copy >= 1, f"num_tokens_to_copy={n_copy} must be >= 1")
        _require(o["vocab_size"] >= 3, f"vocab_size={o['vocab_size']} is too small for {name}: need >= 3 "
                 "(one content token, blank, copy)")
        _require(o["seq_len"] > 2 * n_copy + 1,
                 f"seq_len={o['seq_len']} is too short for {name}: need > 2 * num_tokens_to_copy + 1 "
                 f"= {2 * n_copy + 1}")
    elif name == "compression":
        _require(o["vocab_size"] >= 2, f"vocab_size={o['vocab_size']} is too small for {name}: need >= 2")
        _require(o["seq_len"] >= 2, f"seq_len={o['seq_len']} is too short for {name}: need >= 2")
    elif name == "memorization":
        _require(o["vocab_size"] >= 4, f"vocab_size={o['vocab_size']} is too small for {name}: need >= 4 "
                 "(one key, one value, the insert token)")
        _require(o["seq_len"] >= 2 and o["seq_len"] % 2 == 0,
                 f"seq_len={o['seq_len']} must be even and >= 2 for {name}")
    else:
        lengths = (o["train_length"],) + o["test_lengths"]
        _require(len(o["test_lengths"]) >= 1, f"test_lengths={o['test_lengths']} must name at least one length")
        _require(len(set(o["test_lengths"])) == len(o["test_lengths"]),
                 f"test_lengths={o['test_lengths']} has repeated lengths")
        _require(all(length >= 1 for length in lengths),
                 f"train_length={o['train_length']} and test_lengths={o['test_lengths']} must be >= 1")
        _require(o["scoring"] in ("all", "final"), f"scoring={o['scoring']!r} must be 'all' or 'final'")
        if name == "state_tracking":
            _group(o["group"])  # raises for an unknown group
        elif name == "modular_arithmetic":
            _require(o["modulus"] >= 2, f"modulus={o['modulus']} must be >= 2")
            operators = o["operators"]
            _require(len(operators) >= 1 and set(operators) <= set(_MODULAR_OPERATORS)
                     and len(set(operators)) == len(operators),
                     f"operators={operators!r} must be distinct characters of {_MODULAR_OPERATORS!r}")
            _require(all(length % 2 == 1 for length in lengths),
                     f"train_length={o['train_length']} and test_lengths={o['test_lengths']} must be odd for "
                     f"{name} (an expression is number (operator number)*)")


def mad_variants(name: str) -> list[tuple[str, dict]]:
    """MAD's difficulty settings of a MAD task: [("baseline", {}), ("vocab_size=32", {"vocab_size": 32}), ...].

    The baseline comes first, then one option changed at a time (not a grid), as in MAD's configs/tasks:
    11 settings for (fuzzy) in-context recall and compression, 14 noisy recall, 13 selective copying,
    6 memorization. Pass the dict to `build_task` as options.
    """
    _check_task_name(name)
    if name not in MAD_TASKS:
        raise ValueError(f"task name={name!r} has no MAD difficulty settings; expected one of {', '.join(MAD_TASKS)}")
    variants = [("baseline", {})]
    for key, values in _MAD_CHANGES[name].items():
        variants += [(f"{key}={value}", {key: value}) for value in values]
    return variants


def _task_vocab_size(name: str, options: dict) -> int:
    """Vocabulary a model needs for the task with these resolved options."""
    if name in MAD_TASKS:
        return options["vocab_size"]
    if name == "state_tracking":
        return len(_group(options["group"])[0])
    if name == "parity":
        return 2
    return options["modulus"] + len(_MODULAR_OPERATORS)


# --------------------------------------------------------------------------------------------------------------
# shared numpy helpers


def _chunk_rows(width: int) -> int:
    return max(1, _CHUNK_TOKENS // max(1, width))


def _distinct_tokens(rng: np.random.Generator, n: int, shape: tuple, size: int) -> np.ndarray:
    """Uniform random ordered `size`-subsets of range(n): an array shape + (size,) of distinct values."""
    out = np.empty(shape + (size,), dtype=np.int64)
    for i in range(size):
        draw = rng.integers(0, n - i, size=shape)
        if i:
            taken = np.sort(out[..., :i], axis=-1)
            for c in range(i):  # the draw-th smallest value not taken: step over the taken ones in order
                draw += draw >= taken[..., c]
        out[..., i] = draw
    return out


def _first_occurrence(codes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """For codes [N, P]: the index of the first valid position of each row holding the same code.

    Invalid positions match nothing (their own index is returned), so `first < arange(P)` says "this code
    already occurred earlier in the row".
    """
    n_rows, n_cols = codes.shape
    position = np.broadcast_to(np.arange(n_cols), codes.shape).reshape(-1)
    row = np.repeat(np.arange(n_rows), n_cols)
    code = np.where(valid, codes, -1 - np.arange(n_cols)[None, :]).reshape(-1)
    order = np.lexsort((position, code, row))
    sorted_row, sorted_code = row[order], code[order]
    group_start = np.ones(order.size, dtype=bool)
    group_start[1:] = (sorted_row[1:] != sorted_row[:-1]) | (sorted_code[1:] != sorted_code[:-1])
    group_index = np.cumsum(group_start) - 1
    first = np.empty(order.size, dtype=np.int64)
    first[order] = position[order][group_start][group_index]
    return first.reshape(n_rows, n_cols)


def _motif_code(tokens: np.ndarray, used: np.ndarray, base: int) -> np.ndarray:
    """An integer naming each motif (tokens [..., M] where `used`), distinct for distinct motifs of any size."""
    weights = base ** np.arange(tokens.shape[-1], dtype=np.int64)
    return ((tokens + 1) * used * weights).sum(-1)


# --------------------------------------------------------------------------------------------------------------
# MAD generators: each returns (input_ids, labels) int64 arrays [count, width]


def _recall_batch(rng: np.random.Generator, count: int, o: dict, is_training: bool):
    """In-context recall, optionally with noise pairs (noisy_in_context_recall)."""
    vocab_size, seq_len, multi_query = o["vocab_size"], o["seq_len"], o["multi_query"]
    noise_vocab_size, frac_noise = o.get("noise_vocab_size", 0), o.get("frac_noise", 0.0)
    n_plain = vocab_size - noise_vocab_size - (0 if multi_query else 1)  # keys and values
    n_keys = n_plain // 2
    n_values = n_plain - n_keys
    copy_token = vocab_size - 1
    n_pairs = seq_len // 2 - 1  # context pairs before the probe pair
    rows = np.arange(count)

    keys = rng.integers(0, n_keys, size=(count, n_pairs))
    value_of_key = n_keys + rng.integers(0, n_values, size=(count, n_keys))
    values = value_of_key[rows[:, None], keys]
    is_noise = np.zeros((count, n_pairs), dtype=bool)
    pairs = np.stack([keys, values], axis=-1)
    if frac_noise > 0:
        is_noise = rng.random((count, n_pairs)) < frac_noise
        is_noise[rows, rng.integers(0, n_pairs, size=count)] = False  # at least one real pair
        noise = n_plain + rng.integers(0, noise_vocab_size, size=(count, n_pairs, 2))
        pairs = np.where(is_noise[..., None], noise, pairs)
    is_pair = ~is_noise

    # probe: a key drawn uniformly among the distinct keys shown
    shown = np.zeros((count, n_keys), dtype=bool)
    shown[np.nonzero(is_pair)[0], keys[is_pair]] = True
    probe_key = np.where(shown, rng.random((count, n_keys)), -1.0).argmax(axis=1)
    probe_value = value_of_key[rows, probe_key]
    final = [probe_key, probe_value] if multi_query else [np.full(count, copy_token), probe_key, probe_value]
    sequence = np.concatenate([pairs.reshape(count, -1), np.stack(final, axis=1)], axis=1)
    if is_training:
        return sequence[:, :-1], sequence[:, 1:]

    targets = np.full_like(sequence, IGNORE_INDEX)
    if multi_query:
        key_seen_before = _first_occurrence(keys, is_pair) < np.arange(n_pairs)
        targets[:, 1:2 * n_pairs:2] = np.where(is_pair & key_seen_before, values, IGNORE_INDEX)
    targets[:, -1] = probe_value
    return sequence[:, :-1], targets[:, 1:]


def _fuzzy_layout(o: dict):
    """(number of key tokens, number of value tokens, pad token, copy token) of fuzzy recall."""
    vocab_size, multi_query = o["vocab_size"], o["multi_query"]
    n_plain = vocab_size - (1 if multi_query else 2)
    n_keys = n_plain // 2
    pad_token = vocab_size - 1 if multi_query else vocab_size - 2
    return n_keys, n_plain - n_keys, pad_token, vocab_size - 1


def _fuzzy_recall_batch(rng: np.random.Generator, count: int, o: dict, is_training: bool):
    """Fuzzy in-context recall: the MAD construction, vectorised.

    MAD appends random (key, value) pairs while the sequence is shorter than
    limit = seq_len - len(probe pair) - (k_motif_size + v_motif_size), inserting the probe pair once when the
    length first reaches a random offset (unless its key already occurred), then appends the probe pair again.
    We draw enough candidate pairs, give repeated keys the value of their first occurrence (the probe key the
    probe value), place the probe by the cumulative lengths and keep the pairs that start before the limit.
    Unlike MAD, the probe offset is drawn so that the probe always lands inside the context (MAD can miss it
    and then scores an unseen key's value).
    """
    seq_len, k_max, v_max, multi_query = o["seq_len"], o["k_motif_size"], o["v_motif_size"], o["multi_query"]
    n_key_tokens, n_value_tokens, pad_token, copy_token = _fuzzy_layout(o)
    value_offset = n_key_tokens
    k_min = 1 if is_training else k_max  # test prompts use keys of the maximal motif size only
    rows = np.arange(count)
    key_slots, value_slots = np.arange(k_max), np.arange(v_max)

    probe_k_size = rng.integers(k_min, k_max + 1, size=count)
    probe_v_size = rng.integers(1, v_max + 1, size=count)
    probe_keys = _distinct_tokens(rng, n_key_tokens, (count,), k_max)
    probe_values = value_offset + _distinct_tokens(rng, n_value_tokens, (count,), v_max)
    probe_len = probe_k_size + probe_v_size
    limit = seq_len - probe_len - (k_max + v_max)  # >= 1 by validation
    most_pairs = -(-(seq_len - (k_min + 1) - (k_max + v_max)) // (k_min + 1)) + 1

    k_size = rng.integers(k_min, k_max + 1, size=(count, most_pairs))
    v_size_drawn = rng.integers(1, v_max + 1, size=(count, most_pairs))
    keys = _distinct_tokens(rng, n_key_tokens, (count, most_pairs), k_max)
    values_drawn = value_offset + _distinct_tokens(rng, n_value_tokens, (count, most_pairs), v_max)
    key_used = key_slots < k_size[..., None]
    key_code = _motif_code(keys, key_used, n_key_tokens + 1)
    probe_code = _motif_code(probe_keys, key_slots < probe_k_size[:, None], n_key_tokens + 1)
    is_probe_key = key_code == probe_code[:, None]

    first = _first_occurrence(key_code, np.ones_like(key_code, dtype=bool))
    v_size = np.where(is_probe_key, probe_v_size[:, None], v_size_drawn[rows[:, None], first])
    values = np.where(is_probe_key[..., None], probe_values[:, None, :], values_drawn[rows[:, None], first])
    pair_len = k_size + v_size
    start = np.cumsum(pair_len, axis=1) - pair_len  # without the inserted probe

    n_fit = (start < limit[:, None]).sum(axis=1)
    probe_offset = rng.integers(0, limit)
    probe_slot = np.minimum((start < probe_offset[:, None]).sum(axis=1), n_fit - 1)
    pair_index = np.arange(most_pairs)[None, :]
    after_probe = pair_index >= probe_slot[:, None]
    inserted = ~(is_probe_key & ~after_probe).any(axis=1)  # MAD skips the insertion if the key came already
    probe_start = start[rows, probe_slot]
    start = start + np.where(inserted[:, None] & after_probe, probe_len[:, None], 0)
    kept = start < limit[:, None]
    seen_before = (first < pair_index) | (is_probe_key & inserted[:, None] & after_probe)

    context_len = (pair_len * kept).sum(axis=1) + probe_len * inserted
    final_start = context_len + (0 if multi_query else 1)
    pad = seq_len + 1 - (final_start + probe_len)
    sequence = np.full((count, seq_len + 1), pad_token, dtype=np.int64)
    targets = np.full((count, seq_len + 1), IGNORE_INDEX, dtype=np.int64)

    begin = pad[:, None] + start
    r, p, s = np.nonzero(kept[..., None] & key_used)
    sequence[r, begin[r, p] + s] = keys[r, p, s]
    value_used = value_slots < v_size[..., None]
    r, p, s = np.nonzero(kept[..., None] & value_used)
    position = begin[r, p] + k_size[r, p] + s
    sequence[r, position] = values[r, p, s]
    if multi_query:
        scored = seen_before[r, p]
        targets[r[scored], position[scored]] = values[r, p, s][scored]

    probe_key_used = key_slots < probe_k_size[:, None]
    probe_value_used = value_slots < probe_v_size[:, None]
    for at, copies, score in ((pad + probe_start, inserted, False),  # the probe inside the context
                              (pad + final_start, np.ones(count, dtype=bool), True)):  # and at the end
        r, s = np.nonzero(copies[:, None] & probe_key_used)
        sequence[r, at[r] + s] = probe_keys[r, s]
        r, s = np.nonzero(copies[:, None] & probe_value_used)
        position = at[r] + probe_k_size[r] + s
        sequence[r, position] = probe_values[r, s]
        if score:
            targets[r, position] = probe_values[r, s]
    if not multi_query:
        sequence[rows, pad + context_len] = copy_token
    if is_training:
        return sequence[:, :-1], sequence[:, 1:]
    return sequence[:, :-1], targets[:, 1:]


def _selective_copying_batch(rng: np.random.Generator, count: int, o: dict, is_training: bool):
    vocab_size, seq_len, n_copy = o["vocab_size"], o["seq_len"], o["num_tokens_to_copy"]
    blank_token, copy_token = vocab_size - 2, vocab_size - 1
    n_blanks = seq_len - 2 * n_copy - 1
    content = rng.integers(0, vocab_size - 2, size=(count, n_copy))
    blanks_before = rng.multinomial(n_blanks, np.full(n_copy, 1.0 / n_copy), size=count)
    content_position = np.arange(n_copy) + np.cumsum(blanks_before, axis=1)
    input_ids = np.full((count, seq_len), blank_token, dtype=np.int64)
    input_ids[np.arange(count)[:, None], content_position] = content
    input_ids[:, seq_len - n_copy - 1] = copy_token
    labels = np.full((count, seq_len), IGNORE_INDEX, dtype=np.int64)
    labels[:, seq_len - n_copy:] = content
    return input_ids, labels


def _compression_batch(rng: np.random.Generator, count: int, o: dict, is_training: bool):
    vocab_size, seq_len = o["vocab_size"], o["seq_len"]
    input_ids = np.empty((count, seq_len), dtype=np.int64)
    input_ids[:, :-1] = rng.integers(0, vocab_size - 1, size=(count, seq_len - 1))
    input_ids[:, -1] = vocab_size - 1  # compression token
    return input_ids, input_ids.copy()


def memorization_map(vocab_size: int, seed: int) -> np.ndarray:
    """The fixed key -> value map of memorization: value_of_key[k] for keys k in [0, (vocab_size - 1) // 2)."""
    n_keys = (vocab_size - 1) // 2
    rng = _rng(seed, "memorization", 2)
    return n_keys + rng.permutation(vocab_size - 1 - n_keys)[:n_keys]


def _memorization_batch(rng: np.random.Generator, count: int, o: dict, is_training: bool, value_of_key):
    vocab_size, seq_len = o["vocab_size"], o["seq_len"]
    keys = rng.integers(0, len(value_of_key), size=(count, seq_len // 2))
    input_ids = np.empty((count, seq_len), dtype=np.int64)
    input_ids[:, 0::2] = keys
    input_ids[:, 1::2] = vocab_size - 1  # insert token
    labels = np.full((count, seq_len), IGNORE_INDEX, dtype=np.int64)
    labels[:, 1::2] = value_of_key[keys]
    return input_ids, labels


# --------------------------------------------------------------------------------------------------------------
# groups, parity, modular arithmetic: generators take (rng, count, options, length)


def _permutation_group(kind: str, n: int) -> list[tuple]:
    permutations = list(itertools.permutations(range(n)))
    if kind == "S":
        return permutations

    def is_even(p):
        return sum(p[i] > p[j] for i in range(n) for j in range(i + 1, n)) % 2 == 0

    return [p for p in permutations if is_even(p)]


_GROUP_CACHE: dict = {}


def _group(name: str):
    """(elements, multiplication table [order, order]) of a group name such as "S5", "A4", "Z60", "A4xZ5".

    Elements: S_n / A_n as image tuples in lexicographic order, Z_n as ints, products as tuples of factors'
    elements in mixed radix. table[i, j] = index of element_i . element_j (element_i applied first).
    """
    if name in _GROUP_CACHE:
        return _GROUP_CACHE[name]
    expected = ("a group name: S<n> (2 <= n <= 6), A<n> (3 <= n <= 6), Z<n> (n >= 1) or a direct product of "
                "these joined by 'x' such as A4xZ5")
    if not isinstance(name, str) or not name:
        raise ValueError(f"group={name!r} is not {expected}")
    factors = []
    for part in name.split("x"):
        match = re.fullmatch(r"([SAZ])(\d+)", part)
        if match is None:
            raise ValueError(f"unknown group={name!r}; expected {expected}")
        kind, n = match.group(1), int(match.group(2))
        if (kind == "S" and not 2 <= n <= 6) or (kind == "A" and not 3 <= n <= 6) or (kind == "Z" and n < 1):
            raise ValueError(f"unknown group={name!r} ({part} is out of range); expected {expected}")
        if kind == "Z":
            table = (np.arange(n)[:, None] + np.arange(n)[None, :]) % n
            factors.append((list(range(n)), table))
        else:
            elements = _permutation_group(kind, n)
            index = {p: i for i, p in enumerate(elements)}
            table = np.array([[index[tuple(h[g[i]] for i in range(n))] for h in elements] for g in elements])
            factors.append((elements, table))
    order = math.prod(len(f[0]) for f in factors)
    if order > _MAX_GROUP_ORDER:
        raise ValueError(f"group={name!r} has order {order}; expected a group of order <= {_MAX_GROUP_ORDER}")
    elements, table = factors[0][0], factors[0][1]
    if len(factors) > 1:
        elements = [(e,) for e in elements]
        for factor_elements, factor_table in factors[1:]:
            m = len(factor_elements)
            elements = [e + (f,) for e in elements for f in factor_elements]
            table = (table[:, None, :, None] * m + factor_table[None, :, None, :]).reshape(len(elements), -1)
    _GROUP_CACHE[name] = (elements, np.asarray(table, dtype=np.int64))
    return _GROUP_CACHE[name]


def group_elements(name: str) -> list:
    """The elements of group `name` in the order of their token ids (see the module docstring)."""
    return list(_group(name)[0])


def _score_final_only(labels: np.ndarray) -> np.ndarray:
    scored = np.full_like(labels, IGNORE_INDEX)
    scored[:, -1] = labels[:, -1]
    return scored


def _state_tracking_batch(rng: np.random.Generator, count: int, o: dict, length: int):
    table = _group(o["group"])[1]
    input_ids = rng.integers(0, len(table), size=(count, length))
    labels = np.empty_like(input_ids)
    labels[:, 0] = input_ids[:, 0]
    for t in range(1, length):
        labels[:, t] = table[labels[:, t - 1], input_ids[:, t]]
    return input_ids, labels if o["scoring"] == "all" else _score_final_only(labels)


def _parity_batch(rng: np.random.Generator, count: int, o: dict, length: int):
    input_ids = rng.integers(0, 2, size=(count, length))
    labels = np.cumsum(input_ids, axis=1) % 2
    return input_ids, labels if o["scoring"] == "all" else _score_final_only(labels)


def _modular_arithmetic_batch(rng: np.random.Generator, count: int, o: dict, length: int):
    modulus = o["modulus"]
    minus, times = modulus + _MODULAR_OPERATORS.index("-"), modulus + _MODULAR_OPERATORS.index("*")
    operator_ids = np.array([modulus + _MODULAR_OPERATORS.index(c) for c in o["operators"]])
    n_numbers = length // 2 + 1
    numbers = rng.integers(0, modulus, size=(count, n_numbers))
    operators = operator_ids[rng.integers(0, len(operator_ids), size=(count, n_numbers - 1))]
    input_ids = np.empty((count, length), dtype=np.int64)
    input_ids[:, 0::2] = numbers
    input_ids[:, 1::2] = operators
    labels = np.full((count, length), IGNORE_INDEX, dtype=np.int64)
    finished_terms = np.zeros(count, dtype=np.int64)  # sum of the terms closed by a + or -
    term = numbers[:, 0] % modulus  # the current product term, sign included
    labels[:, 0] = term
    for i in range(1, n_numbers):
        operator, number = operators[:, i - 1], numbers[:, i]
        is_times = operator == times
        finished_terms = np.where(is_times, finished_terms, (finished_terms + term) % modulus)
        term = np.where(is_times, term * number, np.where(operator == minus, -number, number)) % modulus
        labels[:, 2 * i] = (finished_terms + term) % modulus
    if o["scoring"] == "final":
        labels = _score_final_only(labels)
    return input_ids, labels


# --------------------------------------------------------------------------------------------------------------
# building


def _rng(seed: int, name: str, stream: int, length: int = 0) -> np.random.Generator:
    """Independent random stream per (seed, task, stream: 0 train / 1 test, length)."""
    return np.random.default_rng([seed, TASKS.index(name), stream, length])


def _generate(batch: Callable, rng: np.random.Generator, count: int, width_hint: int):
    """Call batch(rng, n) over chunks of rows (bounded memory; deterministic for a given count)."""
    chunk = _chunk_rows(width_hint)
    parts = [batch(rng, min(chunk, count - done)) for done in range(0, count, chunk)]
    input_ids = np.concatenate([part[0] for part in parts]).astype(np.int64)
    labels = np.concatenate([part[1] for part in parts]).astype(np.int64)
    return input_ids, labels


def _draw_disjoint(batch: Callable, rng: np.random.Generator, count: int, width_hint: int,
                   forbidden: set, what: str):
    """Draw `count` rows, redrawing (from the same stream) any row whose input_ids are in `forbidden`."""
    input_ids, labels = _generate(batch, rng, count, width_hint)
    for _ in range(_MAX_REDRAW_ROUNDS):
        clash = np.array([row.tobytes() in forbidden for row in input_ids], dtype=bool)
        if not clash.any():
            return input_ids, labels
        new_inputs, new_labels = _generate(batch, rng, int(clash.sum()), width_hint)
        input_ids[clash], labels[clash] = new_inputs, new_labels
    raise ValueError(f"could not draw {count} test sequences of {what} that do not occur in the training set "
                     f"({int(clash.sum())} still clash after {_MAX_REDRAW_ROUNDS} redraws): the space of "
                     "sequences is too small; lower num_train / num_test or use longer sequences")


def _to_dataset(input_ids: np.ndarray, labels: np.ndarray, fingerprint: str) -> datasets.Dataset:
    """An in-memory Dataset with int64 list columns, built from pyarrow list arrays.

    Equivalent to `Dataset.from_dict`, but given a fingerprint derived from (name, options, seed, split), so
    `datasets` need not hash the whole table (over a second for 13 M tokens).
    """
    def list_array(matrix):
        count, width = matrix.shape
        large = count * width >= 2**31
        offsets = pa.array(np.arange(0, count * width + 1, width, dtype=np.int64 if large else np.int32))
        list_type = pa.LargeListArray if large else pa.ListArray
        return list_type.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).reshape(-1)))

    table = pa.table({"input_ids": list_array(input_ids), "labels": list_array(labels)})
    table = table.cast(_FEATURES.arrow_schema)
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=_FEATURES),
                            fingerprint=fingerprint)


def _build_arrays(name: str, o: dict, seed: int):
    """(train arrays, {split: test arrays}) for a task with resolved options."""
    if name in MAD_TASKS:
        if name == "memorization":
            value_of_key = memorization_map(o["vocab_size"], seed)

            def make(rng, count, is_training):
                return _memorization_batch(rng, count, o, is_training, value_of_key)
        else:
            generator = {"in_context_recall": _recall_batch, "noisy_in_context_recall": _recall_batch,
                         "fuzzy_in_context_recall": _fuzzy_recall_batch,
                         "selective_copying": _selective_copying_batch,
                         "compression": _compression_batch}[name]

            def make(rng, count, is_training):
                return generator(rng, count, o, is_training)

        width = o["seq_len"] * max(1, o.get("k_motif_size", 1))
        train = _generate(lambda rng, n: make(rng, n, True), _rng(seed, name, 0), o["num_train"], width)
        forbidden = {row.tobytes() for row in train[0]}
        test = _draw_disjoint(lambda rng, n: make(rng, n, False), _rng(seed, name, 1), o["num_test"], width,
                              forbidden, name)
        return train, {"test": test}

    generator = {"state_tracking": _state_tracking_batch, "parity": _parity_batch,
                 "modular_arithmetic": _modular_arithmetic_batch}[name]
    train_length = o["train_length"]
    train = _generate(lambda rng, n: generator(rng, n, o, train_length), _rng(seed, name, 0, train_length),
                      o["num_train"], train_length)
    forbidden = {row.tobytes() for row in train[0]}
    tests = {}
    for length in o["test_lengths"]:
        tests[f"length_{length}"] = _draw_disjoint(
            lambda rng, n, length=length: generator(rng, n, o, length), _rng(seed, name, 1, length),
            o["num_test"], length, forbidden if length == train_length else set(), f"{name} length {length}")
    return train, tests


def _cache_key(name: str, options: dict, seed: int) -> str:
    payload = json.dumps({"name": name, "options": options, "seed": seed, "format_version": FORMAT_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _metadata(task: SyntheticTask, seed: int) -> dict:
    return {"name": task.name, "options": task.options, "seed": seed, "format_version": FORMAT_VERSION,
            "vocab_size": task.vocab_size, "head": task.head, "test_splits": list(task.test)}


def _load_cached(folder: str, name: str, options: dict, seed: int) -> SyntheticTask | None:
    metadata_path = os.path.join(folder, "task.json")
    if not os.path.exists(metadata_path):
        return None
    with open(metadata_path) as f:
        metadata = json.load(f)
    expected = {"name": name, "options": json.loads(json.dumps(options)), "seed": seed,
                "format_version": FORMAT_VERSION}
    if any(metadata.get(key) != value for key, value in expected.items()):
        return None
    train = datasets.Dataset.load_from_disk(os.path.join(folder, "train"))
    test = {split: datasets.Dataset.load_from_disk(os.path.join(folder, "test", split))
            for split in metadata["test_splits"]}
    return SyntheticTask(name, options, metadata["vocab_size"], metadata["head"], train, test)


def _save_cached(folder: str, task: SyntheticTask, seed: int) -> None:
    """Write into a temporary sibling folder, then rename it into place (safe against concurrent builders)."""
    parent = os.path.dirname(folder) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(folder) + ".tmp-", dir=parent)
    try:
        task.train.save_to_disk(os.path.join(staging, "train"))
        for split, dataset in task.test.items():
            dataset.save_to_disk(os.path.join(staging, "test", split))
        with open(os.path.join(staging, "task.json"), "w") as f:
            json.dump(_metadata(task, seed), f, indent=1)
        if os.path.exists(folder):
            if _load_cached(folder, task.name, task.options, seed) is not None:
                return  # another process wrote the same task meanwhile
            shutil.rmtree(folder)  # unreadable or stale
        try:
            os.rename(staging, folder)
        except OSError:
            if _load_cached(folder, task.name, task.options, seed) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_task(name: str, seed: int = 0, cache_dir: str | None = None, **options) -> SyntheticTask:
    """Build task `name` with `options` (missing ones from `default_options(name)`) deterministically from `seed`.

    The same (name, options, seed) gives identical datasets; train and test use separate random streams and
    no test input_ids row occurs in train. With `cache_dir`, the task is saved (`save_to_disk`) under
    cache_dir/<name>-<hash of name, options, seed, format version> with a task.json of metadata, and loaded
    from there by later calls. Bad names or options raise ValueError.
    """
    _check_task_name(name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    seed = int(seed)
    resolved = _resolve_options(name, options)
    folder = None
    if cache_dir is not None:
        folder = os.path.join(cache_dir, f"{name}-{_cache_key(name, resolved, seed)}")
        cached = _load_cached(folder, name, resolved, seed)
        if cached is not None:
            return cached

    train, tests = _build_arrays(name, resolved, seed)
    key = _cache_key(name, resolved, seed)
    task = SyntheticTask(name=name, options=resolved, vocab_size=_task_vocab_size(name, resolved),
                         head="compression" if name == "compression" else "causal_lm",
                         train=_to_dataset(*train, fingerprint=f"{key}-train"),
                         test={split: _to_dataset(*arrays, fingerprint=f"{key}-test-{split}")
                               for split, arrays in tests.items()})
    if folder is not None:
        _save_cached(folder, task, seed)
        task = _load_cached(folder, name, resolved, seed) or task
    return task


def _input_rows(dataset: datasets.Dataset) -> set:
    """The input_ids rows of a dataset as a set of bytes (int64 rows of equal length) or of tuples (ragged)."""
    column = dataset.with_format("arrow")[:]["input_ids"].combine_chunks()
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths == lengths[0]).all():
        matrix = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64).reshape(len(lengths), -1)
        return {row.tobytes() for row in matrix}
    return {tuple(np.asarray(row, dtype=np.int64).tolist()) for row in column.to_pylist()}


def check_no_leakage(task: SyntheticTask) -> None:
    """Raise ValueError if any test split has an input_ids row that also occurs in the training set.

    Applies to every task, memorization included: its test sequences are fresh key sequences (disjoint from
    the training sequences) although every key -> value fact they query is, by design, also in train.
    """
    train_rows = _input_rows(task.train)
    for split, dataset in task.test.items():
        leaked = len(_input_rows(dataset) & train_rows)
        if leaked:
            raise ValueError(f"test split {split!r} of task {task.name!r} has {leaked} distinct input_ids rows "
                             "that also occur in the training set")
