"""A checkpoint saved by scripts/train.py evaluates with lm-evaluation-harness's `hf` model (CPU, no network).

    lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True \
        --include_path tests/lm_eval_tasks --tasks tiny_cloze,tiny_text --device cpu

The tasks (tests/lm_eval_tasks/) read local JSON lines: `tiny_cloze`, multiple choice (`loglikelihood` of each
choice after the question), and `tiny_text`, perplexity (`loglikelihood_rolling` of each document). The
harness's numbers are checked against log-likelihoods computed here with the same model and the tokenization
the harness uses (lm_eval/models/huggingface.py, 0.4.13):

* rolling: `tokenizer.encode(text)` with the tokenizer's defaults (our byte-level BPE adds no special token),
  prefixed with `prefix_token_id` (the BOS token, else EOS; here both are <|endoftext|>), every text token
  scored; one window, since texts shorter than `max_length` (2048 for a config without
  `max_position_embeddings` and a tokenizer with an unbounded `model_max_length`) are not split;
* multiple choice: context = the question, continuation = " " + choice; `encode(context + continuation)`
  split after `len(encode(context))` tokens; the continuation's tokens scored given everything before them.

In this process (conftest imports hf_lrnn, which registers its classes) transformers loads hf_lrnn's class
even with trust_remote_code=True; the CLI run, a fresh interpreter that never imports hf_lrnn, runs the code
saved in the checkpoint, and its numbers are checked against the same reference.
"""

import glob
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK_DIR = os.path.join(ROOT, "tests", "lm_eval_tasks")  # the YAMLs' data_files are relative to ROOT
TASKS = ["tiny_cloze", "tiny_text"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def read_jsonl(name):
    with open(os.path.join(TASK_DIR, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def subprocess_env(tmp_dir):
    env = dict(os.environ, **OFFLINE, HF_DATASETS_CACHE=os.path.join(tmp_dir, "hf_datasets"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """scripts/train.py --task lm on a small local text file, as a user would run it: model + tokenizer + code."""
    tmp = tmp_path_factory.mktemp("lm_eval_ckpt")
    rng = random.Random(0)
    words = "the a cat dog king queen sat on mat ran far away said to her him and then it was good day night".split()
    train_file = tmp / "train.txt"
    train_file.write_text("".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))).capitalize()
                                  + ".\n" for _ in range(200)))
    out = tmp / "model"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--task", "lm", "--train_file", str(train_file),
         "--tokenizer_vocab_size", "300", "--block_size", "32", "--max_steps", "3",
         "--config_overrides", "hidden_size=16,intermediate_size=32", "--per_device_train_batch_size", "4",
         "--max_eval_samples", "4", "--data_cache_dir", str(tmp / "cache"), "--output_dir", str(out),
         "--no_plot", "--cpu"],
        cwd=ROOT, env=subprocess_env(str(tmp)), check=True, capture_output=True, text=True, timeout=120)
    assert (out / "tokenizer.json").exists() and (out / "modeling_lrnn.py").exists()
    return str(out)


def sequence_loglikelihood(model, context, continuation):
    """sum of log p(continuation[i] | context + continuation[:i]) from one forward pass."""
    ids = torch.tensor([context + continuation[:-1]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, -len(continuation):].double(), dim=-1)
    return logprobs.gather(-1, torch.tensor(continuation)[:, None]).sum().item()


@pytest.fixture(scope="module")
def reference(checkpoint):
    """Our own log-likelihoods for every document of both tasks, with the checkpoint loaded as the harness loads it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True, dtype=torch.float32).eval()
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    texts = [doc["text"] for doc in read_jsonl("tiny_text.jsonl")]
    rolling = []
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids == tokenizer.encode(text, add_special_tokens=False)  # no BOS from the tokenizer itself
        assert 0 < len(ids) < 2048  # one rolling window
        rolling.append(sequence_loglikelihood(model, [prefix], ids))

    cloze = []
    for doc in read_jsonl("tiny_cloze.jsonl"):
        context = tokenizer.encode(doc["question"])
        lls = []
        for choice in doc["choices"]:
            whole = tokenizer.encode(doc["question"] + " " + choice)
            lls.append(sequence_loglikelihood(model, whole[:len(context)], whole[len(context):]))
        cloze.append(lls)
    words = sum(len(text.split()) for text in texts)
    return {
        "texts": texts, "rolling": rolling, "cloze": cloze,
        "acc": sum(max(range(len(lls)), key=lls.__getitem__) == doc["label"]
                   for lls, doc in zip(cloze, read_jsonl("tiny_cloze.jsonl"))) / len(cloze),
        "word_perplexity": math.exp(-sum(rolling) / words),
        "bits_per_byte": -sum(rolling) / sum(len(t.encode()) for t in texts) / math.log(2),
    }


def check_results(results, reference):
    cloze, text = results["tiny_cloze"], results["tiny_text"]
    assert cloze["sample_len"] == len(reference["cloze"]) == 4
    assert 0.0 <= cloze["acc,none"] <= 1.0
    assert cloze["acc,none"] == pytest.approx(reference["acc"])
    assert text["sample_len"] == len(reference["texts"]) == 3
    assert math.isfinite(text["word_perplexity,none"]) and text["word_perplexity,none"] > 1
    assert text["word_perplexity,none"] == pytest.approx(reference["word_perplexity"], rel=1e-4)
    assert text["bits_per_byte,none"] == pytest.approx(reference["bits_per_byte"], rel=1e-4)


def test_simple_evaluate_matches_our_loglikelihoods(checkpoint, reference, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(ROOT)
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={checkpoint},trust_remote_code=True,dtype=float32", tasks=TASKS,
        task_manager=TaskManager(include_path=TASK_DIR, include_defaults=False), device="cpu",
        batch_size=2, log_samples=True)  # batches of 2: right-padded rows, as on a GPU run
    check_results(out["results"], reference)

    samples = {task: sorted(out["samples"][task], key=lambda s: s["doc_id"]) for task in TASKS}
    assert len(samples["tiny_text"]) == 3 and len(samples["tiny_cloze"]) == 4
    for sample, text, ours in zip(samples["tiny_text"], reference["texts"], reference["rolling"]):
        assert sample["arguments"] == [(text,)]
        assert sample["resps"][0][0] == pytest.approx(ours, abs=1e-4)  # the real check: the same number
    for sample, doc, ours in zip(samples["tiny_cloze"], read_jsonl("tiny_cloze.jsonl"), reference["cloze"]):
        assert [tuple(a) for a in sample["arguments"]] == [(doc["question"], " " + c) for c in doc["choices"]]
        assert [resp[0][0] for resp in sample["resps"]] == pytest.approx(ours, abs=1e-4)
        assert sample["acc"] == float(max(range(len(ours)), key=ours.__getitem__) == doc["label"])


def test_lm_eval_cli(checkpoint, reference, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf",
         "--model_args", f"pretrained={checkpoint},trust_remote_code=True",  # dtype "auto": the saved float32
         "--include_path", "tests/lm_eval_tasks", "--tasks", ",".join(TASKS), "--device", "cpu",
         "--batch_size", "2", "--output_path", str(tmp_path / "out")],
        cwd=ROOT, env=subprocess_env(str(tmp_path)), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "tiny_cloze" in proc.stdout and "tiny_text" in proc.stdout  # the results table
    (results_file,) = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    with open(results_file) as f:
        check_results(json.load(f)["results"], reference)
