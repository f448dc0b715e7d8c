"""Baselines through scripts/train.py (transformers' Llama and Mamba) and the language-model comparison script."""

import json
import os
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM

from hf_lrnn.training.lm_compare import LMRun, best_runs
from hf_lrnn.training.models import build_config

from helpers import ROOT, cli_env, read_jsonl, run_train

TINY_LM = "hidden_size=32,num_hidden_layers=2"


def write_corpus(folder):
    lines = [f"line {i}: the quick brown fox jumps over the lazy dog number {i % 7}." for i in range(300)]
    (folder / "train.txt").write_text("\n".join(lines))
    return str(folder / "train.txt")


def lm_args(tmp_path):
    return ["--task", "lm", "--train_file", write_corpus(tmp_path), "--tokenizer_vocab_size", "300",
            "--block_size", "32", "--max_steps", "4", "--eval_steps", "2", "--logging_steps", "1",
            "--max_eval_samples", "8", "--data_cache_dir", str(tmp_path / "cache"), "--sample_max_new_tokens", "3"]


def test_baseline_configs_take_our_shape_and_check_their_fields():
    llama = build_config("llama", 300, "hidden_size=128,num_hidden_layers=3")
    ours = build_config("bdlru", 300, "hidden_size=128,num_hidden_layers=3")
    assert llama.model_type == "llama" and llama.intermediate_size == ours.intermediate_size
    assert llama.num_attention_heads == 2 and llama.tie_word_embeddings and llama.num_hidden_layers == 3
    assert build_config("llama", 300, "hidden_size=128,num_attention_heads=4").num_attention_heads == 4  # overrides win
    assert build_config("mamba", 300, "use_mambapy=true").use_mambapy is True
    with pytest.raises(ValueError, match="config_overrides: unknown field.*'order'"):
        build_config("llama", 300, "order=2")
    with pytest.raises(ValueError, match="model_type must be one of"):
        build_config("gpt2", 300)


@pytest.mark.parametrize("model_type", ["llama", "mamba"])
def test_train_script_trains_a_baseline_with_the_same_records(tmp_path, model_type):
    out = tmp_path / model_type
    run_train(out, *lm_args(tmp_path), "--model_type", model_type, "--config_overrides", TINY_LM)
    results = json.loads((out / "results.json").read_text())
    assert results["model_type"] == model_type and results["steps"] == 4
    assert results["tokens"] == 4 * 8 * 32 and results["train_s"] > 0
    records = read_jsonl(out / "metrics.jsonl")
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["tokens"] for r in train_records] == [s * 8 * 32 for s in (1, 2, 3, 4)]
    times = [r["train_s"] for r in train_records]
    assert times == sorted(times)
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == model_type
    assert not (out / "README.md").exists()  # the card templates describe our architectures only


def test_a_baseline_is_not_pushed_and_has_no_compression_head(tmp_path):
    for extra in (["--push_to_hub", "--hub_model_id", "me/llama"], ["--task", "compression"]):
        with pytest.raises(SystemExit):
            run_train(tmp_path / "x", "--model_type", "llama", *extra)


def test_plan_merges_shared_and_own_overrides():
    runs = LMRun.plan(["hlru:order=2,hidden_size=64", "llama"], (1e-3, 2e-3), "hidden_size=32,num_hidden_layers=2")
    assert [r.name for r in runs] == ["hlru:order=2,hidden_size=64", "llama"] * 2  # sweep points outermost
    assert runs[0].config_overrides == "hidden_size=64,num_hidden_layers=2,order=2"  # the model's own win
    assert runs[1].config_overrides == "hidden_size=32,num_hidden_layers=2"
    assert len({r.run_dir("root") for r in runs}) == 4
    with pytest.raises(ValueError, match="--model 'gpt2'"):
        LMRun.plan(["gpt2"], (1e-3,))


def test_compare_script_trains_reports_the_best_lr_and_skips_finished_runs(tmp_path):
    corpus = write_corpus(tmp_path)
    out = tmp_path / "compare"
    command = [sys.executable, os.path.join(ROOT, "scripts", "lm_compare.py"), "--output_dir", str(out),
               "--model", "hlru:order=2", "--model", "llama", "--config_overrides", TINY_LM,
               "--learning_rates", "1e-3,1e-2",
               "--extra_args", f"--train_file {corpus} --tokenizer_vocab_size 300 --block_size 32 --max_steps 4 "
                               "--eval_steps 2 --per_device_train_batch_size 8 --max_eval_samples 8 "
                               "--sample_max_new_tokens 2 --cpu"]
    for call in range(2):
        done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        summary = json.loads((out / "lm_compare.json").read_text())
        assert summary["this_call"]["finished"] == (4 if call == 0 else 0)  # the second call trains nothing
    assert (out / "lm_compare.png").stat().st_size > 0
    # the best run per model is the lr with the lowest final validation loss, read from the runs' own results
    for name in ("hlru:order=2", "llama"):
        finals = {}
        for lr in (1e-3, 1e-2):
            folder = LMRun(name, name.split(":")[0], "", lr).run_dir(str(out))
            finals[lr] = json.loads(open(os.path.join(folder, "results.json")).read())["final"]["validation"]["loss"]
        best = summary["best"][name]
        assert best["learning_rate"] == min(finals, key=finals.get)
        assert best["val_loss"] == pytest.approx(finals[best["learning_rate"]])
        assert best["tokens"] == 4 * 8 * 32 and best["tokens_per_s"] > 0
        assert [p["tokens"] for p in best["curve"]] == [2 * 8 * 32, 4 * 8 * 32]
    table = (out / "lm_compare.md").read_text()
    assert "4/4 runs finished" in table and "| llama |" in table and "1.00x" in table
    runs = LMRun.plan(["hlru:order=2", "llama"], (1e-3, 1e-2), TINY_LM)
    assert list(best_runs(runs, str(out))[0]) == ["hlru:order=2", "llama"]


@pytest.mark.parametrize("script,required", [("lm_compare.py", ["--model", "llama"]), ("mad.py", ["--model", "hlru"])])
def test_sweep_scripts_refuse_a_parallel_below_one(tmp_path, script, required):
    """Both sweep scripts take the runner's flags from one place (hf_lrnn.training.runner.add_runner_arguments),
    with its check: an argparse error naming --parallel, before any run starts."""
    command = [sys.executable, os.path.join(ROOT, "scripts", script), *required, "--output_dir", str(tmp_path),
               "--parallel", "0"]
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--parallel must be >= 1, got 0" in done.stderr
    assert not os.listdir(tmp_path)
