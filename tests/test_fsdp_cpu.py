"""scripts/train.py on 2 CPU processes (torchrun, gloo) with DDP and with FSDP2: same training, sharded checkpoints
that resume exactly, a final model that loads with the Auto classes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from helpers import ROOT, cli_env, free_port, load_script

FSDP_SHIM = os.path.join(ROOT, "tests", "fsdp_on_cpu")  # sitecustomize: accelerate's FSDP on CPU processes


def torchrun_train(out, corpus, cache, fsdp: bool, *extra, nproc=2):
    """2 processes x 4 sequences per step, or 1 x 8 (the same global batches, so the same data)."""
    env = {**cli_env(), "ACCELERATE_USE_CPU": "1"}
    if fsdp:
        env.update(PYTHONPATH=FSDP_SHIM + os.pathsep + ROOT, HF_LRNN_TEST_FSDP_ON_CPU="1", ACCELERATE_USE_FSDP="true",
                   FSDP_VERSION="2", FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP")  # wraps each _no_split_modules block
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", free_port(),
               os.path.join(ROOT, "scripts", "train.py"), "--task", "lm", "--train_file", corpus,
               "--tokenizer_vocab_size", "300", "--block_size", "32", "--data_cache_dir", cache,
               "--model_type", "bdlru", "--config_overrides", "hidden_size=32,num_hidden_layers=2,block_size=2",
               "--per_device_train_batch_size", str(8 // nproc), "--learning_rate", "3e-3", "--max_steps", "6",
               "--checkpointing_steps", "3", "--checkpoints_total_limit", "0", "--eval_steps", "3",
               "--max_eval_samples", "8", "--sample_max_new_tokens", "2", "--no_plot", "--output_dir", str(out), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    lines = [f"line {i}: the quick brown fox jumps over the lazy dog number {i % 7}." for i in range(300)]
    (root / "train.txt").write_text("\n".join(lines))
    corpus, cache = str(root / "train.txt"), str(root / "cache")
    results = {"ddp": torchrun_train(root / "ddp", corpus, cache, False),
               "fsdp": torchrun_train(root / "fsdp", corpus, cache, True)}
    resumed = root / "fsdp_resumed"
    resumed.mkdir()
    os.symlink(root / "fsdp" / "checkpoints", resumed / "checkpoints")
    results["resumed"] = torchrun_train(resumed, corpus, cache, True, "--resume_from_checkpoint",
                                        str(root / "fsdp" / "checkpoints" / "step_3"))
    for name in ("ddp", "fsdp"):  # saved on 2 processes, resumed on 1 (FSDP's sharded checkpoint re-sharded)
        folder = root / f"{name}_on_one"
        folder.mkdir()
        results[f"{name}_on_one"] = torchrun_train(folder, corpus, cache, name == "fsdp", "--resume_from_checkpoint",
                                                   str(root / name / "checkpoints" / "step_3"), nproc=1)
    return root, results


def test_fsdp_trains_like_ddp_on_two_processes(runs):
    root, results = runs
    for name in ("ddp", "fsdp"):
        assert results[name]["num_processes"] == 2 and results[name]["steps"] == 6
    first = results["fsdp"]["first_batch_indices_per_process"]
    assert not set(first[0]) & set(first[1])  # each process reads its own examples
    ddp, fsdp = (load_file(root / name / "model.safetensors") for name in ("ddp", "fsdp"))
    assert ddp.keys() == fsdp.keys()
    for key in ddp:  # same data, same optimizer: the same weights up to the order of the gradient reductions
        torch.testing.assert_close(fsdp[key], ddp[key], rtol=1e-4, atol=1e-5, msg=key)
    checksums = results["fsdp"]["parameter_checksum_per_process"]
    assert checksums[0] == checksums[1]  # the sum over the shards, agreed by both processes


def test_fsdp_checkpoints_are_sharded_and_resume_exactly(runs):
    root, results = runs
    step_3 = root / "fsdp" / "checkpoints" / "step_3"
    assert (step_3 / "pytorch_model_fsdp_0").is_dir() and (step_3 / "optimizer_0").is_dir()  # sharded (DCP)
    assert not (step_3 / "model.safetensors").exists()
    final, resumed = (load_file(root / name / "model.safetensors") for name in ("fsdp", "fsdp_resumed"))
    for key in final:
        assert torch.equal(resumed[key], final[key]), key
    assert results["resumed"]["final"]["validation"]["loss"] == results["fsdp"]["final"]["validation"]["loss"]


def test_fsdp_final_model_loads_with_our_remote_code(runs):
    root, _ = runs
    folder = root / "fsdp"
    assert not [f for f in os.listdir(folder) if f.startswith("_fsdp")]  # not torch's FSDP modules
    assert (folder / "modeling_bdlru.py").exists()
    model = AutoModelForCausalLM.from_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_checkpoint_saved_on_two_processes_resumes_on_one(runs, name):
    root, results = runs
    resumed = results[f"{name}_on_one"]
    assert resumed["num_processes"] == 1 and resumed["steps"] == 6
    final, on_one = (load_file(root / folder / "model.safetensors") for folder in (name, f"{name}_on_one"))
    # global batches are cut per process, so 1 x 8 reads what 2 x 4 read; a different batch would move the weights by
    # about the learning rate. Equal up to the order of the gradient reductions in the steps after the checkpoint:
    for key in final:
        torch.testing.assert_close(on_one[key], final[key], rtol=1e-4, atol=1e-5, msg=key)


def test_scaling_report_of_the_runs(runs, tmp_path):
    """scripts/scaling_report.py over the 2-process runs and the 1-process resume: throughput per GPU from each run's
    own log, and the curves plotted."""
    root, results = runs
    report = load_script("scaling_report")
    out = tmp_path / "report"
    report.main(["--run", f"one={root / 'ddp_on_one'}", "--run", f"ddp={root / 'ddp'}", "--run",
                 f"fsdp={root / 'fsdp'}", "--output_dir", str(out)])
    rows = {r["run"]: r for r in json.loads((out / "scaling.json").read_text())["rows"]}
    assert [rows[k]["gpus"] for k in ("one", "ddp", "fsdp")] == [1, 2, 2]
    for name in ("ddp", "fsdp"):
        windows = [json.loads(line)["steps_per_s"] for line in (root / name / "metrics.jsonl").read_text().splitlines()
                   if json.loads(line)["kind"] == "train"]
        assert len(windows) == 1  # one logging window in 6 steps: the median is that window
        tokens_per_s = windows[0] * results[name]["tokens"] / results[name]["steps"]
        assert rows[name]["tokens_per_s"] == pytest.approx(tokens_per_s)
        assert rows[name]["scaling_efficiency"] == pytest.approx(
            (tokens_per_s / 2) / rows["one"]["tokens_per_s"])
    assert (out / "scaling.png").stat().st_size > 10_000
    assert (out / "scaling.md").read_text().count("\n") == 2 + 3
    with pytest.raises(SystemExit):  # an unfinished run (no results.json) is refused, naming it
        report.main(["--run", f"one={tmp_path / 'nothing'}", "--output_dir", str(out)])
