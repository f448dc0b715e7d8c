"""Pushing to the Hub (hf_lrnn.training.hub, model cards, scripts/push_to_hub.py) against a local test Hub.

tests/hub_server.py serves the Hub API on 127.0.0.1 from memory; nothing leaves the machine. The pushed repo
is loaded back in a fresh process where hf_lrnn cannot be imported (remote code only), as a user would.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from helpers import tiny_config, tiny_model, tiny_tokenizer
from helpers import HIDE_HF_LRNN
from hf_lrnn.training.hub import HubPushError, InvalidRepoIdError, push_to_hub
from hf_lrnn.training.model_card import write_model_card
from hub_server import HubServer

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_write_token"
LM_RESULTS = {"final": {"validation": {"step": 40, "loss": 1.25, "perplexity": 3.4903}}, "steps": 40,
              "parameters": 123}
TASK_RESULTS = {"task": "selective_copying", "final": {"test": {"step": 40, "loss": 0.1, "accuracy": 0.975}}}
TRAINING_ARGS = {"max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 5e-4, "seed": 0,
                 "block_size": 64, "output_dir": "/somewhere/local", "hub_token": "hf_secret"}


@pytest.fixture
def hub():
    server = HubServer(tokens={TOKEN}).start()
    yield server
    server.stop()


def save_model(folder: Path, arch="bdlru", repo_id=None, results=LM_RESULTS):
    """A tiny causal LM + tokenizer + results/metrics + model card in `folder`, as a training run leaves it."""
    model = tiny_model(arch, m=2)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "training_args.json").write_text(json.dumps(TRAINING_ARGS))
    (folder / "metrics.jsonl").write_text('{"kind": "eval", "step": 40, "loss": 1.25}\n')
    (folder / "checkpoints" / "step_40").mkdir(parents=True)  # training state: must not be uploaded
    (folder / "checkpoints" / "step_40" / "optimizer.bin").write_bytes(b"\0" * 64)
    write_model_card(folder, model_type=arch, config=model.config, training_args=TRAINING_ARGS, results=results,
                     dataset_name=None, repo_id=repo_id)
    return model


def folder_bytes(folder: Path) -> dict:
    """{relative path: bytes} of every file, plus every directory (to see anything created or removed)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def uploadable(folder: Path) -> set:
    return {k for k, v in folder_bytes(folder).items() if v is not None and not k.startswith("checkpoints")}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hub_env(hub, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1,localhost", PYTHONPATH="")
    return env


REMOTE_SCRIPT = HIDE_HF_LRNN + textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    repo_id, logits_file = sys.argv[1:3]
    model = AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=True)
    ids = tokenizer(["w3 w4 w5 w6", "w7 w8 w9 w10"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.save({"ids": ids, "logits": model(ids).logits}, logits_file)
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, ids.shape[1] + 3), out.shape
    print("REMOTE_OK", type(model).__name__)
    """
)


def test_push_then_load_from_the_hub_without_hf_lrnn(hub, tmp_path):
    folder = tmp_path / "model"
    model = save_model(folder, "bdlru", repo_id="org/tiny-bdlru")
    before = folder_bytes(folder)
    url = push_to_hub(folder, "org/tiny-bdlru", token=TOKEN, endpoint=hub.url)
    assert url == f"{hub.url}/org/tiny-bdlru"
    assert folder_bytes(folder) == before
    files = hub.repos["org/tiny-bdlru"].files("main")
    assert set(files) == uploadable(folder)  # everything but the training checkpoints
    assert {"model.safetensors", "config.json", "modeling_bdlru.py", "modeling_lrnn.py", "tokenizer.json",
            "results.json", "metrics.jsonl", "README.md"} <= set(files)
    assert json.loads(files["config.json"])["auto_map"]["AutoModelForCausalLM"] == "modeling_bdlru.BDLRUForCausalLM"

    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run([sys.executable, str(script), "org/tiny-bdlru", str(tmp_path / "logits.pt")],
                            cwd=tmp_path, env=hub_env(hub, tmp_path), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK BDLRUForCausalLM" in result.stdout
    remote = torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        torch.testing.assert_close(remote["logits"], model(remote["ids"]).logits, rtol=0, atol=0)

    readme = hf_hub_download("org/tiny-bdlru", "README.md", endpoint=hub.url, cache_dir=tmp_path / "cache")
    card = ModelCard.load(readme)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert {"bdlru", "linear-rnn", "custom_code"} <= set(card.data.tags)
    model_index = card.data.to_dict()["model-index"]
    metrics = {m["type"]: m["value"] for r in model_index[0]["results"] for m in r["metrics"]}
    assert metrics["perplexity"] == pytest.approx(3.4903)
    assert 'from_pretrained("org/tiny-bdlru", trust_remote_code=True)' in card.text
    # the folder has a tokenizer
    assert 'tokenizer = AutoTokenizer.from_pretrained("org/tiny-bdlru", trust_remote_code=True)' in card.text


def test_revision_and_private_push(hub, tmp_path):
    folder = tmp_path / "model"
    save_model(folder, "hlru")
    url = push_to_hub(folder, "org/tiny-hlru", revision="experiment", private=True, token=TOKEN, endpoint=hub.url)
    assert url.endswith("/org/tiny-hlru/tree/experiment")
    repo = hub.repos["org/tiny-hlru"]
    assert repo.private
    assert set(repo.files("experiment")) == uploadable(folder) and repo.files("main") == {}
    api = HfApi(endpoint=hub.url, token=TOKEN)
    assert set(api.list_repo_files("org/tiny-hlru", revision="experiment")) == uploadable(folder)
    with pytest.raises(HfHubHTTPError):  # private: no anonymous reads
        HfApi(endpoint=hub.url, token=False).list_repo_files("org/tiny-hlru", revision="experiment")
    # pushing to the same branch again adds a commit on it; main stays untouched
    (folder / "results.json").write_text(json.dumps(TASK_RESULTS))
    push_to_hub(folder, "org/tiny-hlru", revision="experiment", token=TOKEN, endpoint=hub.url)
    assert json.loads(repo.files("experiment")["results.json"]) == TASK_RESULTS and repo.files("main") == {}


@pytest.mark.parametrize("failure", ["unreachable", "bad_token", "bad_repo_id", "server_error"])
def test_failed_push_leaves_the_folder_alone_and_says_how_to_retry(hub, tmp_path, failure):
    folder = tmp_path / "model"
    save_model(folder, "bdlru")
    before = folder_bytes(folder)
    kwargs = dict(repo_id="org/flaky", token=TOKEN, endpoint=hub.url)
    if failure == "unreachable":
        kwargs["endpoint"] = f"http://127.0.0.1:{closed_port()}"
        expected = ["could not reach the Hub at " + kwargs["endpoint"], "/api/repos/create"]
    elif failure == "bad_token":
        kwargs["token"] = "hf_not_a_valid_token"
        expected = ["authentication failed", "HTTP 401", "--token", "HF_TOKEN"]
    elif failure == "bad_repo_id":
        kwargs["repo_id"] = "not a repo id"
        expected = ["repo_id", "'not a repo id'", "ORG/NAME"]
    else:
        hub.fail_next_commit = 500
        expected = ["server error", "HTTP 500", "/api/models/org/flaky/commit/main", "no partial upload"]

    with pytest.raises(HubPushError) as info:
        push_to_hub(folder, kwargs.pop("repo_id"), **kwargs)
    message = str(info.value)
    for text in expected:
        assert text in message, message
    assert f"python scripts/push_to_hub.py {folder} " in message and "--token YOUR_TOKEN" in message, message
    assert "hf_not_a_valid_token" not in message and TOKEN not in message  # tokens are never echoed
    bad_id = failure == "bad_repo_id"
    assert isinstance(info.value, InvalidRepoIdError) == isinstance(info.value, ValueError) == bad_id
    assert folder_bytes(folder) == before
    assert "org/flaky" not in hub.repos or hub.repos["org/flaky"].files("main") == {}

    if failure == "server_error":  # the retry completes and the Hub then holds exactly the folder's files
        push_to_hub(folder, "org/flaky", token=TOKEN, endpoint=hub.url)
        files = hub.repos["org/flaky"].files("main")
        assert set(files) == uploadable(folder)
        assert all(files[path] == (folder / path).read_bytes() for path in files)
        assert folder_bytes(folder) == before


@pytest.mark.parametrize("kind", ["lm", "task", "none"])
def test_model_card_parses_and_round_trips(arch, kind, tmp_path):
    results = {"lm": LM_RESULTS, "task": TASK_RESULTS, "none": None}[kind]
    model = tiny_model(arch, m=3)
    model.save_pretrained(tmp_path)
    dataset_name = {"lm": "org/corpus (default)", "task": "synthetic task (seq_len=64)", "none": None}[kind]
    path = write_model_card(tmp_path, model_type=arch, config=model.config, training_args=TRAINING_ARGS,
                            results=results, dataset_name=dataset_name, repo_id="org/card")
    card = ModelCard.load(path)
    assert ModelCard(card.content).data.to_dict() == card.data.to_dict()
    assert ModelCard.load(path).content == card.content
    data = card.data
    assert data.library_name == "transformers" and data.license == "apache-2.0"
    assert data.pipeline_tag == "text-generation"
    assert {arch, "linear-rnn", "custom_code"} <= set(data.tags)
    equation = "s_t = sum_{i=1..m} a_t^(i) s_{t-i} + g_t v_t" if arch == "hlru" else "h_t = A_t h_{t-1} + g_t * v_t"
    size_row = "| order (m) | 3 |" if arch == "hlru" else "| block_size (m) | 3 |"
    for text in (equation, size_row, "| hidden_size (d) | 16 |", "import hf_lrnn", "trust_remote_code=True",
                 "model.generate(", "@misc{dubinin2026improved", "arXiv:2602.12021", "| learning_rate | 0.0005 |"):
        assert text in card.text, text
    assert "/somewhere/local" not in card.text and "hf_secret" not in card.text  # no local paths, no tokens
    is_lm = kind != "task"  # selective_copying is not language modelling: there block_size is no sequence length
    assert ("| block_size | 64 |" in card.text) == ("| tokens seen (steps x batch x block_size) | 20,480 |" in
                                                   card.text) == is_lm
    assert "| effective batch (sequences per step) | 8 |" in card.text
    if kind == "none":
        assert data.eval_results is None and "No evaluation results" in card.text
    else:
        split, metric, value = ("validation", "perplexity", 3.4903) if kind == "lm" else ("test", "accuracy", 0.975)
        found = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
        assert found[(split, metric)] == pytest.approx(value)
        assert f"| {split} | {metric} | {value:.4g} |" in card.text
    assert data.datasets == (["org/corpus"] if kind == "lm" else None)  # Hub ids only, not descriptions


def test_model_card_of_a_compression_model_has_no_pipeline_tag(tmp_path):
    config = tiny_config("bdlru").to_dict()
    config["architectures"] = ["BDLRUForCompression"]
    flat = {"final": {"loss": 0.5, "accuracy": 0.8}}  # metrics without a split
    card = ModelCard.load(write_model_card(tmp_path, model_type="bdlru", config=config, training_args=None,
                                           results=flat, dataset_name=None, repo_id=None))
    assert card.data.pipeline_tag is None and "bdlru" in card.data.tags
    assert {(r.dataset_split, r.metric_type) for r in card.data.eval_results} == {("evaluation", "accuracy"),
                                                                                 ("evaluation", "loss")}
    assert "AutoModelForCompression" in card.text and "model.generate(" not in card.text


def test_cli_pushes_and_fails_cleanly(hub, tmp_path):
    folder = tmp_path / "run"
    save_model(folder, "hlru", results=TASK_RESULTS)
    (folder / "README.md").unlink()  # the script writes the card itself
    env = hub_env(hub, tmp_path)
    script = str(REPO_ROOT / "scripts" / "push_to_hub.py")

    def run(*args, token=TOKEN):
        command = [sys.executable, script, *map(str, args)] + (["--token", token] if token else [])
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)

    ok = run(folder, "org/cli-hlru", "--revision", "v1", "--commit_message", "first push")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert f"{hub.url}/org/cli-hlru/tree/v1" in ok.stdout
    files = hub.repos["org/cli-hlru"].files("v1")
    assert set(files) == uploadable(folder)
    card = ModelCard(files["README.md"].decode())
    assert "hlru" in card.data.tags and "selective_copying" in card.data.tags
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["accuracy"] == pytest.approx(0.975)

    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    bad = run(not_a_model, "org/cli-hlru")
    assert bad.returncode != 0 and "no config.json" in bad.stderr and "Traceback" not in bad.stderr

    (not_a_model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    bad = run(not_a_model, "org/cli-hlru")
    assert bad.returncode != 0 and "model_type='llama'" in bad.stderr and "Traceback" not in bad.stderr
    assert not (not_a_model / "README.md").exists()

    denied = run(folder, "org/cli-hlru", token="hf_wrong")
    assert denied.returncode == 1 and "authentication failed" in denied.stderr and "Traceback" not in denied.stderr
    assert f"python scripts/push_to_hub.py {folder} org/cli-hlru" in denied.stderr


def test_train_script_pushes_at_the_end_and_keeps_the_local_run_when_the_push_fails(hub, tmp_path):
    """scripts/train.py --push_to_hub: model, tokenizer, metrics and card land in one repo; a failed push keeps the run."""
    text = "\n".join(f"verse {i}: to be or not to be, that is question {i % 9}." for i in range(400))
    (tmp_path / "train.txt").write_text(text)
    env = {**hub_env(hub, tmp_path), "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("TRITON_INTERPRET", None)

    def train(out, token):
        command = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), "--train_file", str(tmp_path / "train.txt"),
                   "--tokenizer_vocab_size", "300", "--block_size", "32", "--max_steps", "2", "--cpu",
                   "--config_overrides", "hidden_size=16,intermediate_size=32", "--per_device_train_batch_size", "4",
                   "--max_eval_samples", "4", "--sample_max_new_tokens", "2", "--no_plot",
                   "--data_cache_dir", str(tmp_path / "cache"), "--output_dir", str(out),
                   "--push_to_hub", "--hub_model_id", "team/verse-bdlru", "--hub_token", token]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    done = train(tmp_path / "run", TOKEN)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "pushed to" in done.stdout
    pushed = set(hub.repos["team/verse-bdlru"].files())
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "results.json", "metrics.jsonl",
            "modeling_bdlru.py"} <= pushed
    assert not any(name.startswith("checkpoints/") for name in pushed)

    failed = train(tmp_path / "run2", "hf_wrong_token")
    assert failed.returncode != 0
    assert "the push failed" in failed.stderr and "401" in failed.stderr and "push_to_hub.py" in failed.stderr
    assert {"model.safetensors", "tokenizer.json", "README.md"} <= set(os.listdir(tmp_path / "run2"))


TOKENIZER_SCRIPT = HIDE_HF_LRNN + textwrap.dedent(
    """
    import sys
    from transformers import AutoTokenizer
    folder, flag = sys.argv[1:3]
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=flag == "true")
    print("IDS", tokenizer("w3 w4 w5")["input_ids"])
    """
)


@pytest.mark.parametrize("trust_remote_code", ["true", "false"])
def test_a_saved_tokenizer_loads_without_hf_lrnn_and_without_a_prompt(tmp_path, trust_remote_code):
    # AutoTokenizer (transformers 5.2x) reads the model's config first; that config names remote code, so with the
    # flag unset transformers asks whether to run it. Either value of the flag (README) loads the plain fast tokenizer
    # without asking, also where hf_lrnn is not installed.
    folder = tmp_path / "model"
    save_model(folder)
    script = tmp_path / "tokenizer.py"
    script.write_text(TOKENIZER_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(folder), trust_remote_code], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr
    assert f"IDS {tiny_tokenizer()('w3 w4 w5')['input_ids']}" in result.stdout
