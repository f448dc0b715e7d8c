"""Regression tests for hardening fixes: generation bases, scan backend at forward time, adapter-friendly
module names, generate() continuation from a returned cache, and atomic save_pretrained."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import GenerationMixin

import hf_lrnn
from helpers import tiny_model


# -- 1. GenerationMixin among the own bases of the generative classes ----------------------------------------
@pytest.mark.parametrize("cls", [hf_lrnn.HLRUForCausalLM, hf_lrnn.BDLRUForCausalLM])
def test_generation_mixin_is_a_direct_base(cls):
    assert GenerationMixin in cls.__bases__
    assert cls.can_generate()


# -- 2. config.scan_backend is read at forward time; a "triton" checkpoint runs anywhere ----------------------
def test_scan_backend_set_after_construction_is_used(arch, monkeypatch):
    from hf_lrnn import modeling_lrnn

    seen = []
    # the time-last ops where config.scan_layout is "time_last" (the default): H-LRU m = 2, BD-LRU block size 2
    for name in ("hlru_scan", "bdlru_scan", "hlru_scan_time_last", "bdlru_scan_time_last"):
        original = getattr(modeling_lrnn, name)

        def recording(*args, _original=original, **kwargs):
            seen.append(kwargs.get("backend"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(modeling_lrnn, name, recording)
    model = tiny_model(arch, m=2)
    ids = torch.randint(3, 37, (2, 5))
    assert model.config.scan_backend is None
    reference = model(ids).logits
    assert seen and set(seen) == {None}
    for backend in ("torch", "triton"):
        seen.clear()
        model.config.scan_backend = backend
        logits = model(ids).logits
        assert seen and set(seen) == {backend}, (backend, seen)
        torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)


def test_triton_checkpoint_loads_and_runs_on_cpu_without_interpreter(tmp_path):
    model = tiny_model("hlru", m=2, scan_backend="triton")
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(3, 37, (2, 6))
    model.config.scan_backend = "torch"
    torch.save({"ids": ids, "logits": model(ids).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import os, torch
        assert "TRITON_INTERPRET" not in os.environ
        from transformers import AutoModelForCausalLM
        import hf_lrnn
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ckpt")!r}).eval()
        assert model.config.scan_backend == "triton"
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        logits = model(expected["ids"]).logits
        torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-6)
        model(expected["ids"])  # the warning is given once only
        print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "HF_LRNN_BACKEND")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout
    assert done.stderr.count("falling back") == 1, done.stderr[-3000:]


# -- 3. module names that adapters (LoRA target_modules) can tell apart ---------------------------------------
MIXER_TARGETS = ["value_proj", "coefficient_proj", "out_proj"]


def peft_style_match(module_name, targets):
    """How peft matches a list of target_modules: the whole name, or a `.`-separated suffix of it."""
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def test_mixer_and_mlp_linear_names_are_distinct(arch):
    model = tiny_model(arch, m=2)
    mixer_leaves, mlp_leaves = set(), set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if ".mixer." in name:
                mixer_leaves.add(name.rsplit(".", 1)[-1])
            elif ".mlp." in name:
                mlp_leaves.add(name.rsplit(".", 1)[-1])
    assert mixer_leaves == {"value_proj", "coefficient_proj", "out_proj"}
    assert mlp_leaves == {"gate_proj", "up_proj", "down_proj"}
    assert not mixer_leaves & mlp_leaves


@pytest.mark.parametrize("selective", [True, False])
def test_mixer_target_modules_hit_only_the_mixer(arch, selective):
    model = tiny_model(arch, m=2, selective=selective)
    hits = [name for name, _ in model.named_modules() if peft_style_match(name, MIXER_TARGETS)]
    expected = len(MIXER_TARGETS) if selective else len(MIXER_TARGETS) - 1
    assert len(hits) == expected * model.config.num_hidden_layers
    for name in hits:
        assert ".mixer." in name and isinstance(model.get_submodule(name), torch.nn.Linear), name
    mlp_hits = [name for name, _ in model.named_modules() if peft_style_match(name, ["gate_proj"])]
    assert mlp_hits and all(".mlp." in name for name in mlp_hits)


def test_checkpoint_with_the_old_mixer_gate_name_still_loads(arch, tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_model(arch, m=2)
    model.save_pretrained(tmp_path)
    (weights_file,) = tmp_path.glob("*.safetensors")
    state = load_file(weights_file)
    renamed = {k.replace("mixer.coefficient_proj.", "mixer.gate_proj."): v for k, v in state.items()}
    assert renamed.keys() != state.keys()
    save_file(renamed, weights_file, metadata={"format": "pt"})
    loaded = type(model).from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 37, (2, 7))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    loaded.save_pretrained(tmp_path / "resaved")  # saved under the new name, not mapped back
    (resaved,) = (tmp_path / "resaved").glob("*.safetensors")
    assert load_file(resaved).keys() == state.keys()


# -- 5. atomic save_pretrained ----------------------------------------------------------------------------------
def saved_files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("sizes", [("8KB", "50GB"), ("50GB", "8KB"), ("8KB", "16KB")])
def test_resave_with_another_shard_size_leaves_no_stale_weights(arch, tmp_path, sizes):
    first, second = tiny_model(arch, seed=0), tiny_model(arch, seed=1)
    target = tmp_path / "ckpt"
    first.save_pretrained(target, max_shard_size=sizes[0])
    second.save_pretrained(target, max_shard_size=sizes[1])
    second.save_pretrained(tmp_path / "fresh", max_shard_size=sizes[1])
    assert saved_files(target) == saved_files(tmp_path / "fresh")
    assert saved_files(tmp_path) == ["ckpt", "fresh"]  # no temporary or old folder left beside it
    loaded = type(second).from_pretrained(target).eval()
    ids = torch.randint(3, 37, (2, 6))
    torch.testing.assert_close(loaded(ids).logits, second(ids).logits)


def test_resave_keeps_files_the_save_did_not_write(tmp_path):
    from helpers import tiny_tokenizer

    target = tmp_path / "ckpt"
    tiny_model("hlru").save_pretrained(target, max_shard_size="8KB")
    tiny_tokenizer().save_pretrained(target)
    (target / "checkpoint-10").mkdir()
    (target / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (target / "notes.txt").write_text("keep me")
    tiny_model("hlru", seed=1).save_pretrained(target)
    names = saved_files(target)
    assert "tokenizer.json" in names and "notes.txt" in names
    assert (target / "checkpoint-10" / "trainer_state.json").read_text() == "{}"
    assert "model.safetensors" in names and not any(n.startswith("model-0") for n in names)
    assert "model.safetensors.index.json" not in names


def test_save_onto_a_file_raises(tmp_path):
    path = tmp_path / "model.bin"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")):
        tiny_model("hlru").save_pretrained(path)
    assert path.read_text() == "not a folder"


def test_push_to_hub_kwargs_save_then_push(tmp_path, monkeypatch):
    model = tiny_model("bdlru")
    pushed = []
    monkeypatch.setattr(type(model), "push_to_hub", lambda self, repo_id, **kw: pushed.append((repo_id, kw)) or "url")
    target = tmp_path / "my-model"
    model.save_pretrained(target, push_to_hub=True, commit_message="hi", private=True, token="t",
                          max_shard_size="8KB")
    assert pushed == [("my-model", dict(commit_message="hi", private=True, token="t", max_shard_size="8KB"))]
    assert (target / "config.json").exists() and (target / "model.safetensors.index.json").exists()
    pushed.clear()
    model.save_pretrained(target, push_to_hub=True, repo_id="org/other")
    assert pushed == [("org/other", {})]


KILLED_SAVE = """
import os, sys, time, torch
import transformers.modeling_utils as modeling_utils
import hf_lrnn

real_save_file = modeling_utils.safe_save_file

def slow_save_file(tensors, filename, metadata=None):
    real_save_file(tensors, filename, metadata=metadata)
    print("wrote", os.path.basename(filename), flush=True)
    time.sleep(0.5)

modeling_utils.safe_save_file = slow_save_file
torch.manual_seed(1)
model = hf_lrnn.HLRUForCausalLM(hf_lrnn.HLRUConfig(**{config!r})).eval()
print("start", flush=True)
model.save_pretrained(sys.argv[1], max_shard_size="8KB")
print("done", flush=True)
"""


@pytest.mark.parametrize("kill_after", [0, 1, 3, None])
def test_a_killed_save_leaves_the_old_or_the_new_checkpoint(tmp_path, kill_after):
    import signal

    old = tiny_model("hlru", seed=0)
    target = tmp_path / "ckpt"
    old.save_pretrained(target, max_shard_size="16KB")
    config = {k: v for k, v in old.config.to_diff_dict().items() if k not in ("auto_map", "architectures",
                                                                               "transformers_version", "model_type")}
    script = tmp_path / "save.py"
    script.write_text(KILLED_SAVE.format(config=config))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True, env=env)
    writes = 0
    killed = False
    for line in child.stdout:
        if kill_after is not None and (
            (kill_after == 0 and line.startswith("start")) or (line.startswith("wrote") and writes + 1 == kill_after)
        ):
            child.send_signal(signal.SIGKILL)
            killed = True
            break
        writes += line.startswith("wrote")
    child.wait(timeout=120)
    assert killed == (kill_after is not None)
    assert kill_after is not None or child.returncode == 0
    assert kill_after is None or writes >= kill_after - 1  # the save had more shards than the kill point

    torch.manual_seed(1)
    new = type(old)(old.config).eval()
    loaded = type(old).from_pretrained(target).eval()
    ids = torch.randint(3, 37, (2, 6))
    logits = loaded(ids).logits
    expected = new if kill_after is None else old  # the swap is the last step: a kill before it keeps the old one
    torch.testing.assert_close(logits, expected(ids).logits)
    assert not torch.allclose(old(ids).logits, new(ids).logits)


def test_saving_into_the_working_directory_keeps_it(tmp_path, monkeypatch):
    """--output_dir . must not rename the folder the process is standing in (the save is then not atomic)."""
    model = tiny_model("hlru")
    monkeypatch.chdir(tmp_path)
    model.save_pretrained(".")
    assert os.path.samefile(os.getcwd(), tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_all_ignored_labels_give_loss_zero_not_nan(arch):
    model = tiny_model(arch).train()
    ids = torch.randint(3, 37, (2, 6))
    out = model(ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    labels = ids.clone()
    labels[:, :3] = -100  # partly scored: still the plain mean over the scored next tokens
    expected = torch.nn.functional.cross_entropy(model(ids).logits[:, :-1].reshape(-1, 37), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(model(ids, labels=labels).loss, expected)
