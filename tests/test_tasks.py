"""Synthetic task generators: formats checked exactly on small cases, labels recomputed by independent solvers."""

import itertools
import json
import os
import time

import numpy as np
import pytest

from hf_lrnn.training import tasks as tasks_module
from hf_lrnn.training.tasks import (MAD_TASKS, TASKS, SyntheticTask, build_task, check_no_leakage, default_options,
                                    group_elements, mad_variants, parse_task_options)

IGNORE = -100

# small sizes keep every build fast; the tests of the full MAD baselines are separate
SMALL = {name: dict(num_train=64, num_test=32) for name in MAD_TASKS}
SMALL.update({name: dict(num_train=64, num_test=16, test_lengths=(16, 32)) for name in ("state_tracking", "parity")})
SMALL["modular_arithmetic"] = dict(num_train=64, num_test=16, test_lengths=(15, 31))


def matrices(dataset):
    """(input_ids, labels) of a dataset as int numpy arrays [rows, length]."""
    columns = dataset.to_dict()
    return np.array(columns["input_ids"], dtype=np.int64), np.array(columns["labels"], dtype=np.int64)


def all_splits(task):
    return [("train", task.train)] + list(task.test.items())


def expected_length(name, options, split):
    if name in ("in_context_recall", "noisy_in_context_recall"):
        return options["seq_len"] - 1 if options["multi_query"] else options["seq_len"]
    if name in MAD_TASKS:
        return options["seq_len"]
    return options["train_length"] if split == "train" else int(split.removeprefix("length_"))


# --------------------------------------------------------------------------------------------------------------
# properties shared by every task


def test_task_names():
    assert TASKS == ("in_context_recall", "fuzzy_in_context_recall", "noisy_in_context_recall",
                     "selective_copying", "compression", "memorization", "state_tracking", "parity",
                     "modular_arithmetic")
    assert MAD_TASKS == TASKS[:6]


@pytest.mark.parametrize("name", TASKS)
def test_deterministic_and_seed_sensitive(name):
    first = build_task(name, seed=7, **SMALL[name])
    again = build_task(name, seed=7, **SMALL[name])
    other = build_task(name, seed=8, **SMALL[name])
    for (split, a), (_, b), (_, c) in zip(all_splits(first), all_splits(again), all_splits(other)):
        inputs_a, labels_a = matrices(a)
        inputs_b, labels_b = matrices(b)
        inputs_c, _ = matrices(c)
        np.testing.assert_array_equal(inputs_a, inputs_b, err_msg=split)
        np.testing.assert_array_equal(labels_a, labels_b, err_msg=split)
        assert not np.array_equal(inputs_a, inputs_c), f"{name} {split}: another seed gave the same inputs"
    # train and test come from separate streams: the test rows do not depend on how many train rows were drawn
    more_train = build_task(name, seed=7, **{**SMALL[name], "num_train": 80})
    split = list(first.test)[-1]  # for length tasks a length other than the train length (never redrawn)
    np.testing.assert_array_equal(matrices(first.test[split])[0], matrices(more_train.test[split])[0])


@pytest.mark.parametrize("name", TASKS)
def test_columns_lengths_ranges_and_options(name):
    task = build_task(name, seed=1, **SMALL[name])
    assert isinstance(task, SyntheticTask) and task.name == name
    assert task.options == {**default_options(name), **SMALL[name]}
    json.dumps(task.options)  # JSON-serialisable
    assert task.head == ("compression" if name == "compression" else "causal_lm")
    if name in MAD_TASKS:
        assert list(task.test) == ["test"]
    else:
        assert list(task.test) == [f"length_{length}" for length in task.options["test_lengths"]]
    assert len(task.train) == task.options["num_train"]
    for split, dataset in all_splits(task):
        assert dataset.column_names == ["input_ids", "labels"]
        if split != "train":
            assert len(dataset) == task.options["num_test"]
        inputs, labels = matrices(dataset)  # np.array of equal-length rows: 2-D
        assert inputs.ndim == 2 and inputs.shape == labels.shape
        assert inputs.shape[1] == expected_length(name, task.options, split), split
        assert inputs.min() >= 0 and inputs.max() < task.vocab_size
        scored = labels != IGNORE
        assert labels[scored].min() >= 0 and labels[scored].max() < task.vocab_size
        assert scored.any(axis=1).all(), f"{split}: a row without any scored position"


@pytest.mark.parametrize("name", TASKS)
def test_no_leakage(name):
    task = build_task(name, seed=2, **SMALL[name])
    check_no_leakage(task)
    train_rows = {tuple(row) for row in matrices(task.train)[0].tolist()}
    for dataset in task.test.values():
        assert not train_rows & {tuple(row) for row in matrices(dataset)[0].tolist()}


def test_check_no_leakage_detects_a_shared_row():
    task = build_task("parity", seed=0, **SMALL["parity"])
    leaky = SyntheticTask(task.name, task.options, task.vocab_size, task.head, task.train,
                          {**task.test, "length_16": task.train.select(range(5))})
    with pytest.raises(ValueError, match="length_16"):
        check_no_leakage(leaky)


def test_test_rows_clashing_with_train_are_redrawn():
    # 2**8 = 256 possible length-8 parity inputs, 150 train draws cover about 44%: clashes are certain
    task = build_task("parity", seed=0, train_length=8, test_lengths=(8, 12), num_train=150, num_test=100)
    check_no_leakage(task)
    assert len(task.test["length_8"]) == 100
    with pytest.raises(ValueError, match="do not occur in the training set"):
        build_task("parity", seed=0, train_length=4, test_lengths=(4,), num_train=2000, num_test=10)


def test_memorization_is_checked_for_leakage_too():
    # test sequences are new key sequences over the same fixed map: disjoint rows, shared facts
    task = build_task("memorization", seed=0, vocab_size=16, seq_len=4, num_train=40, num_test=40)
    check_no_leakage(task)  # 7 keys, 2 pairs: 49 sequences, so redraws were needed and sufficed


def test_mad_variants_counts_and_shape():
    counts = {"in_context_recall": 11, "fuzzy_in_context_recall": 11, "compression": 11,
              "noisy_in_context_recall": 14, "selective_copying": 13, "memorization": 6}
    for name, count in counts.items():
        variants = mad_variants(name)
        assert len(variants) == count, name
        assert variants[0] == ("baseline", {})
        for label, change in variants[1:]:
            assert len(change) == 1
            (key, value), = change.items()
            assert label == f"{key}={value}" and key in default_options(name)
            assert value != default_options(name)[key]
    assert ("vocab_size=48", {"vocab_size": 48}) in mad_variants("noisy_in_context_recall")
    assert ("num_tokens_to_copy=96", {"num_tokens_to_copy": 96}) in mad_variants("selective_copying")
    assert [v["vocab_size"] for _, v in mad_variants("memorization")[1:]] == [512, 1024, 2048, 4096, 8192]
    with pytest.raises(ValueError, match="in_context_recall"):
        mad_variants("parity")


@pytest.mark.parametrize("name", MAD_TASKS)
def test_every_mad_variant_builds(name):
    for label, change in mad_variants(name):
        options = {**change, "num_train": 16, "num_test": 8}
        task = build_task(name, seed=0, **options)
        check_no_leakage(task)
        inputs, labels = matrices(task.test["test"])
        assert inputs.shape[1] == expected_length(name, task.options, "test"), label
        assert inputs.max() < task.vocab_size and labels.max() < task.vocab_size
        for key, value in change.items():
            if key != "num_train":
                assert task.options[key] == value


def test_full_mad_baselines_sizes_and_speed():
    for name in MAD_TASKS:
        start = time.perf_counter()
        task = build_task(name, seed=12345)
        elapsed = time.perf_counter() - start
        assert elapsed < 10.0, f"{name} baseline took {elapsed:.1f} s"
        assert len(task.train) == default_options(name)["num_train"]
        assert len(task.test["test"]) == 1280
        check_no_leakage(task)
    assert default_options("memorization")["num_train"] == 256
    assert default_options("in_context_recall")["num_train"] == 12_800


# --------------------------------------------------------------------------------------------------------------
# MAD formats, each label recomputed independently


def recall_targets(sequence, n_keys, n_plain, multi_query):
    """Independent solver of (noisy) in-context recall on the full sequence (the inputs plus the last token).

    Walks the pairs; returns the per-token targets (value of a key seen before, else -100; noise never).
    """
    targets = [IGNORE] * len(sequence)
    value_of = {}
    position = 0
    body_end = len(sequence) - (2 if multi_query else 3)
    while position < body_end:
        key, value = sequence[position], sequence[position + 1]
        if key >= n_plain:  # a noise slot: two noise tokens
            assert value >= n_plain
        else:
            assert key < n_keys <= value < n_plain
            if key in value_of:
                assert value == value_of[key], "a key changed its value within a sequence"
                if multi_query:
                    targets[position + 1] = value
            value_of[key] = value
        position += 2
    if not multi_query:
        position += 1  # copy token
    key, value = sequence[position], sequence[position + 1]
    assert key in value_of and value == value_of[key], "the probe key must have occurred with that value"
    targets[position + 1] = value
    return targets


@pytest.mark.parametrize("name, options", [
    ("in_context_recall", dict(seq_len=64)),
    ("in_context_recall", dict(seq_len=32, vocab_size=32)),
    ("in_context_recall", dict(seq_len=24, multi_query=False)),
    ("noisy_in_context_recall", dict(seq_len=64)),
    ("noisy_in_context_recall", dict(seq_len=32, frac_noise=0.8)),
])
def test_recall_format(name, options):
    task = build_task(name, seed=3, num_train=100, num_test=200, **options)
    o = task.options
    noise = o.get("noise_vocab_size", 0)
    n_plain = o["vocab_size"] - noise - (0 if o["multi_query"] else 1)
    n_keys = n_plain // 2
    copy_token = o["vocab_size"] - 1
    inputs, labels = matrices(task.train)
    np.testing.assert_array_equal(labels[:, :-1], inputs[:, 1:])  # train: next-token prediction everywhere
    for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
        recall_targets(row_inputs + [row_labels[-1]], n_keys, n_plain, o["multi_query"])  # asserts the layout
    inputs, labels = matrices(task.test["test"])
    saw_noise = saw_repeat = False
    for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
        sequence = row_inputs + [row_labels[-1]]
        assert row_labels == recall_targets(sequence, n_keys, n_plain, o["multi_query"])[1:]
        is_noise = [n_plain <= t < n_plain + noise for t in row_inputs[1:]] + [False]
        assert all(label == IGNORE for label, noisy in zip(row_labels, is_noise) if noisy)
        saw_noise |= any(is_noise)
        saw_repeat |= sum(label != IGNORE for label in row_labels) > 1
        if not o["multi_query"]:
            assert row_inputs[-2] == copy_token and sum(label != IGNORE for label in row_labels) == 1
    assert saw_noise == (noise > 0)
    assert saw_repeat == o["multi_query"]


def split_runs(sequence, n_key_tokens, pad_token):
    """Independent parse of a fuzzy-recall sequence into (key motif, value motif, start of the value) triples."""
    position = 0
    while sequence[position] == pad_token:
        position += 1
    assert sequence[position] < n_key_tokens, "the first token after the padding must be a key token"
    runs = []  # (is_key, tokens, start)
    for position in range(position, len(sequence)):
        is_key = sequence[position] < n_key_tokens
        assert sequence[position] != pad_token, "padding only on the left"
        if runs and runs[-1][0] == is_key:
            runs[-1][1].append(sequence[position])
        else:
            runs.append((is_key, [sequence[position]], position))
    assert [r[0] for r in runs] == [True, False] * (len(runs) // 2) and len(runs) % 2 == 0
    return [(tuple(runs[i][1]), tuple(runs[i + 1][1]), runs[i + 1][2]) for i in range(0, len(runs), 2)]


@pytest.mark.parametrize("seq_len, vocab_size", [(128, 16), (64, 32)])
def test_fuzzy_recall_format(seq_len, vocab_size):
    task = build_task("fuzzy_in_context_recall", seed=4, seq_len=seq_len, vocab_size=vocab_size,
                      num_train=100, num_test=300)
    o = task.options
    k_max, v_max = o["k_motif_size"], o["v_motif_size"]
    pad_token = vocab_size - 1
    n_key_tokens = (vocab_size - 1) // 2
    inputs, labels = matrices(task.train)
    np.testing.assert_array_equal(labels[:, :-1], inputs[:, 1:])
    train_key_sizes = set()
    for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
        for key, value, _ in split_runs(row_inputs + [row_labels[-1]], n_key_tokens, pad_token):
            assert 1 <= len(key) <= k_max and 1 <= len(value) <= v_max
            assert len(set(key)) == len(key) and len(set(value)) == len(value)  # motifs are permutations
            train_key_sizes.add(len(key))
    assert train_key_sizes == set(range(1, k_max + 1))

    inputs, labels = matrices(task.test["test"])
    repeats = 0
    for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
        sequence = row_inputs + [row_labels[-1]]
        pairs = split_runs(sequence, n_key_tokens, pad_token)
        targets = [IGNORE] * len(sequence)
        value_of = {}
        for key, value, start in pairs:
            assert len(key) == k_max, "test keys have the maximal motif size"
            if key in value_of:
                assert value == value_of[key]
                targets[start:start + len(value)] = value
                repeats += 1
            value_of[key] = value
        assert pairs[-1][0] in [key for key, _, _ in pairs[:-1]], "the probe key occurs in the context"
        assert row_labels == targets[1:]
        assert len(row_inputs) == seq_len
    assert repeats > len(inputs)  # the final probe of every row, plus some repeats in the context


def test_shortest_sequences_keep_the_formats():
    fuzzy = build_task("fuzzy_in_context_recall", seed=1, seq_len=13, num_train=50, num_test=50)  # 2 * (3 + 3) + 1
    for _, dataset in all_splits(fuzzy):
        inputs, labels = matrices(dataset)
        assert inputs.shape[1] == 13
        for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
            pairs = split_runs(row_inputs + [row_labels[-1]], 7, 15)
            assert len(pairs) >= 2 and pairs[-1][:2] in [(k, v) for k, v, _ in pairs[:-1]]
    recall = build_task("in_context_recall", seed=1, seq_len=4, num_train=50, num_test=20)
    inputs, labels = matrices(recall.test["test"])
    assert inputs.shape[1] == 3 and (inputs[:, 0] == inputs[:, 2]).all() and (labels[:, 2] == inputs[:, 1]).all()
    assert (labels[:, :2] == IGNORE).all()
    copying = build_task("selective_copying", seed=1, seq_len=10, num_tokens_to_copy=4, num_train=50, num_test=20)
    inputs, labels = matrices(copying.train)
    assert (inputs[:, 5] == 15).all() and (labels[:, 6:] == inputs[:, :5][inputs[:, :5] != 14].reshape(-1, 4)).all()


def test_fuzzy_recall_single_query_format():
    task = build_task("fuzzy_in_context_recall", seed=5, seq_len=48, multi_query=False, num_train=8, num_test=50)
    copy_token, pad_token = task.vocab_size - 1, task.vocab_size - 2
    inputs, labels = matrices(task.test["test"])
    for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
        sequence = row_inputs + [row_labels[-1]]
        copy_at = sequence.index(copy_token)
        probe = sequence[copy_at + 1:]
        scored = [(t, label) for t, label in enumerate(row_labels) if label != IGNORE]
        key = tuple(probe[:3])
        value = tuple(probe[3:])
        assert [label for _, label in scored] == list(value) and scored[0][0] == copy_at + 3
        context = split_runs(sequence[:copy_at], (task.vocab_size - 2) // 2, pad_token)
        assert (key, value) in [(k, v) for k, v, _ in context]


def test_selective_copying_format():
    task = build_task("selective_copying", seed=6, vocab_size=16, seq_len=40, num_tokens_to_copy=6,
                      num_train=200, num_test=50)
    blank, copy = 14, 15
    for _, dataset in all_splits(task):
        inputs, labels = matrices(dataset)
        for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
            region, tail = row_inputs[:40 - 7], row_inputs[40 - 7:]
            content = [t for t in region if t != blank]
            assert len(content) == 6 and all(t < blank for t in content)
            assert tail == [copy] + [blank] * 6
            assert row_labels == [IGNORE] * 34 + content
            assert region[-1] != blank  # MAD inserts blanks before content tokens only
    first_content = [row.index(next(t for t in row if t != blank)) for row in matrices(task.train)[0].tolist()]
    assert len(set(first_content)) > 5  # the blanks are spread at random


def test_compression_format():
    task = build_task("compression", seed=7, vocab_size=16, seq_len=12, num_train=50, num_test=20)
    for _, dataset in all_splits(task):
        inputs, labels = matrices(dataset)
        np.testing.assert_array_equal(labels, inputs)
        assert (inputs[:, -1] == 15).all() and (inputs[:, :-1] < 15).all()
        assert len(np.unique(inputs[:, :-1])) == 15


def test_memorization_format_and_fixed_map():
    vocab_size = 64
    n_keys = (vocab_size - 1) // 2
    value_of = {}
    for num_train in (64, 100):  # the map depends on the seed only, not on the sizes
        task = build_task("memorization", seed=8, vocab_size=vocab_size, seq_len=16, num_train=num_train,
                          num_test=50)
        for _, dataset in all_splits(task):
            inputs, labels = matrices(dataset)
            assert (inputs[:, 1::2] == vocab_size - 1).all() and (labels[:, 0::2] == IGNORE).all()
            for key, value in zip(inputs[:, 0::2].ravel().tolist(), labels[:, 1::2].ravel().tolist()):
                assert 0 <= key < n_keys and n_keys <= value < vocab_size - 1
                assert value_of.setdefault(key, value) == value, "the key -> value map must be fixed"
    assert len(value_of) == n_keys  # every key was queried
    assert len(set(value_of.values())) == n_keys  # injective
    other = build_task("memorization", seed=9, vocab_size=vocab_size, seq_len=16, num_train=64, num_test=8)
    inputs, labels = matrices(other.train)
    assert any(value_of[k] != v for k, v in zip(inputs[:, 0::2].ravel().tolist(), labels[:, 1::2].ravel().tolist()))


# --------------------------------------------------------------------------------------------------------------
# state tracking, parity, modular arithmetic


def is_even_by_cycles(permutation):
    """Parity from the cycle decomposition (a different method from the generator's inversion count)."""
    seen, transpositions = set(), 0
    for start in range(len(permutation)):
        length, i = 0, start
        while i not in seen:
            seen.add(i)
            i = permutation[i]
            length += 1
        transpositions += max(0, length - 1)
    return transpositions % 2 == 0


def reference_group(name):
    """(elements, compose) built here independently of the generator; elements in token-id order."""
    def symmetric(n):
        return sorted(itertools.permutations(range(n)))

    def compose_permutations(g, h):  # g first, then h
        return tuple(h[g[i]] for i in range(len(g)))

    if name.startswith("S"):
        return symmetric(int(name[1:])), compose_permutations
    if name == "A4xZ5":
        a4 = [p for p in symmetric(4) if is_even_by_cycles(p)]
        elements = [(a, z) for a in a4 for z in range(5)]
        return elements, lambda g, h: (compose_permutations(g[0], h[0]), (g[1] + h[1]) % 5)
    if name.startswith("A"):
        return [p for p in symmetric(int(name[1:])) if is_even_by_cycles(p)], compose_permutations
    n = int(name[1:])
    return list(range(n)), lambda g, h: (g + h) % n


GROUP_ORDERS = {"S3": 6, "S4": 24, "S5": 120, "A4": 12, "A5": 60, "Z60": 60, "A4xZ5": 60}


@pytest.mark.parametrize("group", list(GROUP_ORDERS))
def test_state_tracking_labels_by_independent_solver(group):
    elements, compose = reference_group(group)
    assert len(elements) == GROUP_ORDERS[group]
    index = {element: i for i, element in enumerate(elements)}
    identity = elements[0]
    for g in elements:  # closure, identity first, inverses
        assert compose(identity, g) == g == compose(g, identity)
        assert any(compose(g, h) == identity for h in elements)
        for h in elements[:: max(1, len(elements) // 12)]:
            assert compose(g, h) in index
    assert group_elements(group) == elements  # the documented enumeration (token id = index)

    task = build_task("state_tracking", seed=10, group=group, train_length=12, test_lengths=(12, 24, 40),
                      num_train=60, num_test=25)
    assert task.vocab_size == len(elements)
    for split, dataset in all_splits(task):
        inputs, labels = matrices(dataset)
        for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
            product = identity
            expected = []
            for token in row_inputs:
                product = compose(product, elements[token])
                expected.append(index[product])
            assert row_labels == expected, (group, split)


def test_state_tracking_is_not_commutative_for_s3():
    # left-to-right composition: swapping the two inputs of a non-commuting pair changes the label
    elements, compose = reference_group("S3")
    task = build_task("state_tracking", seed=0, group="S3", train_length=2, test_lengths=(3,), num_train=36,
                      num_test=10)
    inputs, labels = matrices(task.train)
    checked = 0
    for (a, b), (_, label) in zip(inputs.tolist(), labels.tolist()):
        if compose(elements[a], elements[b]) != compose(elements[b], elements[a]):
            assert elements[label] == compose(elements[a], elements[b])
            checked += 1
    assert checked > 0


def test_state_tracking_final_scoring_and_groups():
    task = build_task("state_tracking", seed=0, group="A5", scoring="final", train_length=8, test_lengths=(8, 16),
                      num_train=30, num_test=10)
    full = build_task("state_tracking", seed=0, group="A5", train_length=8, test_lengths=(8, 16), num_train=30,
                      num_test=10)
    for (_, final_only), (_, every) in zip(all_splits(task), all_splits(full)):
        labels, every_labels = matrices(final_only)[1], matrices(every)[1]
        assert (labels[:, :-1] == IGNORE).all()
        np.testing.assert_array_equal(labels[:, -1], every_labels[:, -1])
    assert build_task("state_tracking", group="Z7", num_train=4, num_test=2, test_lengths=(16,)).vocab_size == 7
    assert build_task("state_tracking", group="S3xZ2", num_train=4, num_test=2, test_lengths=(16,)).vocab_size == 12


def test_parity_labels_by_independent_loop():
    task = build_task("parity", seed=11, train_length=16, test_lengths=(16, 64), num_train=200, num_test=100)
    assert task.vocab_size == 2
    for _, dataset in all_splits(task):
        inputs, labels = matrices(dataset)
        assert set(np.unique(inputs)) == {0, 1}
        for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
            parity, expected = 0, []
            for bit in row_inputs:
                parity ^= bit
                expected.append(parity)
            assert row_labels == expected


def evaluate_prefix(tokens, modulus):
    """Independent evaluator: Python's own precedence on the written-out expression, reduced mod `modulus`."""
    symbols = {modulus: "+", modulus + 1: "-", modulus + 2: "*"}
    return eval(" ".join(symbols.get(t, str(t)) for t in tokens)) % modulus


def test_modular_arithmetic_evaluator_matches_deletang_examples():
    plus, minus, times = 5, 6, 7
    assert evaluate_prefix([1, plus, 2, times, 3], 5) == 2
    assert evaluate_prefix([1, minus, 1, minus, 1], 5) == 4
    assert evaluate_prefix([0, times, 1, plus, 4, times, 3, minus, 2], 5) == 0


@pytest.mark.parametrize("modulus, operators", [(5, "+-*"), (7, "+*"), (3, "-")])
def test_modular_arithmetic_labels_by_independent_evaluator(modulus, operators):
    task = build_task("modular_arithmetic", seed=12, modulus=modulus, operators=operators, train_length=9,
                      test_lengths=(9, 21), num_train=100, num_test=60)
    assert task.vocab_size == modulus + 3
    allowed = {modulus + "+-*".index(c) for c in operators}
    for _, dataset in all_splits(task):
        inputs, labels = matrices(dataset)
        assert (inputs[:, 0::2] < modulus).all() and set(np.unique(inputs[:, 1::2])) == allowed
        for row_inputs, row_labels in zip(inputs.tolist(), labels.tolist()):
            expected = [evaluate_prefix(row_inputs[:t + 1], modulus) if t % 2 == 0 else IGNORE
                        for t in range(len(row_inputs))]
            assert row_labels == expected
    final = build_task("modular_arithmetic", seed=12, modulus=modulus, operators=operators, train_length=9,
                       test_lengths=(9, 21), num_train=100, num_test=60, scoring="final")
    labels = matrices(final.test["length_21"])[1]
    assert (labels[:, :-1] == IGNORE).all()
    np.testing.assert_array_equal(labels[:, -1], matrices(task.test["length_21"])[1][:, -1])


# --------------------------------------------------------------------------------------------------------------
# options, errors, cache


def test_parse_task_options_types():
    assert parse_task_options("in_context_recall", "vocab_size=32,seq_len=256") == {"vocab_size": 32, "seq_len": 256}
    assert parse_task_options("in_context_recall", "") == {}
    assert parse_task_options("in_context_recall", " multi_query = false , num_test=10 ") == {
        "multi_query": False, "num_test": 10}
    assert parse_task_options("noisy_in_context_recall", "frac_noise=0.4") == {"frac_noise": 0.4}
    parsed = parse_task_options("state_tracking", "group=A4xZ5,test_lengths=16:32:64,scoring=final")
    assert parsed == {"group": "A4xZ5", "test_lengths": (16, 32, 64), "scoring": "final"}
    assert isinstance(parse_task_options("noisy_in_context_recall", "frac_noise=1")["frac_noise"], float)
    assert parse_task_options("modular_arithmetic", "operators=+*") == {"operators": "+*"}


@pytest.mark.parametrize("name, text, match", [
    ("in_context_recall", "vocab=32", r"'vocab'.*in_context_recall.*vocab_size, seq_len"),
    ("in_context_recall", "seq_len=abc", "seq_len.*integer"),
    ("in_context_recall", "multi_query=maybe", "multi_query.*true or false"),
    ("state_tracking", "test_lengths=16:x", "test_lengths"),
    ("parity", "train_length", "key=value"),
    ("parity", "train_length=4,train_length=8", "twice"),
    ("nonsense", "", "in_context_recall, fuzzy_in_context_recall"),
])
def test_parse_task_options_errors(name, text, match):
    with pytest.raises(ValueError, match=match):
        parse_task_options(name, text)


@pytest.mark.parametrize("name, options, match", [
    ("language_modeling", {}, "name='language_modeling'.*in_context_recall.*modular_arithmetic"),
    ("in_context_recall", dict(vocab_size=1), "vocab_size=1 is too small"),
    ("noisy_in_context_recall", dict(vocab_size=17), "vocab_size=17 is too small"),
    ("fuzzy_in_context_recall", dict(vocab_size=6), "vocab_size=6 is too small"),
    ("selective_copying", dict(vocab_size=2), "vocab_size=2 is too small"),
    ("memorization", dict(vocab_size=3), "vocab_size=3 is too small"),
    ("in_context_recall", dict(seq_len=2), "seq_len=2"),
    ("in_context_recall", dict(seq_len=33), "seq_len=33 must be even"),
    ("fuzzy_in_context_recall", dict(seq_len=12), "seq_len=12 is too short"),
    ("selective_copying", dict(seq_len=33), "seq_len=33 is too short"),
    ("state_tracking", dict(group="S9"), "group='S9'"),
    ("state_tracking", dict(group="Q8"), "unknown group='Q8'"),
    ("modular_arithmetic", dict(train_length=16), "must be odd"),
    ("modular_arithmetic", dict(operators="+/"), "operators='\\+/'"),
    ("noisy_in_context_recall", dict(frac_noise=1.0), "frac_noise=1.0"),
    ("in_context_recall", dict(frac_noise=0.1), "unknown option 'frac_noise'.*in_context_recall"),
    ("in_context_recall", dict(seq_len="12x"), "seq_len='12x'.*integer"),
    ("in_context_recall", dict(seq_len=128.0), "seq_len=128.0.*int"),
    ("in_context_recall", dict(multi_query=1), "multi_query=1.*bool"),
    ("state_tracking", dict(group=5), "group=5.*str"),
    ("parity", dict(test_lengths=(16, 0)), "test_lengths"),
    ("parity", dict(num_train=0), "num_train=0"),
])
def test_build_task_errors(name, options, match):
    with pytest.raises(ValueError, match=match):
        build_task(name, **options)


def test_build_task_accepts_option_strings():
    # strings are parsed like parse_task_options (as scripts pass them on), single ints count as 1-tuples
    task = build_task("state_tracking", group="S3", test_lengths="8:12", train_length="8", num_train=10, num_test=4)
    assert task.options["test_lengths"] == (8, 12) and task.options["train_length"] == 8
    assert build_task("parity", test_lengths=20, num_train=10, num_test=4).options["test_lengths"] == (20,)
    assert build_task("in_context_recall", multi_query="false", seq_len=8, num_train=4,
                      num_test=4).options["multi_query"] is False


def test_build_task_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed=-1"):
        build_task("parity", seed=-1)


def test_default_options_are_a_copy_and_mad_baselines():
    options = default_options("selective_copying")
    options["seq_len"] = 1
    assert default_options("selective_copying")["seq_len"] == 256
    assert default_options("noisy_in_context_recall") == dict(vocab_size=32, seq_len=128, num_train=12800,
                                                              num_test=1280, noise_vocab_size=16, frac_noise=0.2,
                                                              multi_query=True)
    assert default_options("fuzzy_in_context_recall")["k_motif_size"] == 3
    assert default_options("state_tracking")["test_lengths"] == (16, 32, 64, 128)


def test_cache_round_trip(tmp_path, monkeypatch):
    options = dict(group="A4xZ5", num_train=50, num_test=10, test_lengths=(16, 24))
    first = build_task("state_tracking", seed=3, cache_dir=str(tmp_path), **options)
    folders = [f for f in os.listdir(tmp_path) if not f.startswith(".")]
    assert len(folders) == 1 and folders[0].startswith("state_tracking-")
    with open(tmp_path / folders[0] / "task.json") as f:
        metadata = json.load(f)
    assert metadata["seed"] == 3 and metadata["options"]["group"] == "A4xZ5" and metadata["vocab_size"] == 60

    def no_generation(*args, **kwargs):
        raise AssertionError("the second call must load from the cache")

    monkeypatch.setattr(tasks_module, "_build_arrays", no_generation)
    second = build_task("state_tracking", seed=3, cache_dir=str(tmp_path), **options)
    assert second.options == first.options and second.vocab_size == 60 and second.head == "causal_lm"
    assert list(second.test) == ["length_16", "length_24"]
    for (_, a), (_, b) in zip(all_splits(first), all_splits(second)):
        assert a.to_dict() == b.to_dict()
    with pytest.raises(AssertionError, match="cache"):  # another seed is another entry: it must generate
        build_task("state_tracking", seed=4, cache_dir=str(tmp_path), **options)
