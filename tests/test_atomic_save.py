"""Saves killed at every step leave the old checkpoint or the new one, never a mix (SIGKILL, no clean-up runs).

* `save_pretrained` over an existing checkpoint of another sharding: a child process imports hf_lrnn once and forks
  one save per kill point; each fork kills itself with SIGKILL at its point (in the middle of writing a weight file,
  after a write, just before / just after the atomic exchange that swaps the folders, in the middle of deleting the
  old folder). Afterwards the folder must load and give exactly the old or exactly the new model. A save where the
  exchange is unavailable (the two-rename fallback) completes too.
* `save_checkpoint` (the training checkpoints of scripts/train.py), a new step and a re-save of the same step, killed
  at every write, rename and removal: `latest_checkpoint` must return a complete checkpoint, old or new, and the next
  save must clean up what the killed one left.

The other atomic-save properties are in tests/test_hardening.py (stale shards of an earlier sharding removed, files
the save did not write kept, a path that is a file refused, a kill while the shards are written).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import ROOT, tiny_model

CHECKPOINTS_PY = os.path.join(ROOT, "hf_lrnn", "training", "checkpoints.py")

# ------------------------------------------------------------------------------------------------ save_pretrained
SAVE_PRETRAINED_CHILD = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    import torch
    torch.set_num_threads(1)
    import transformers.modeling_utils as modeling_utils
    import hf_lrnn
    import hf_lrnn.modeling_lrnn as modeling_lrnn

    target, old_copy, config_file, points = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    name = os.path.basename(target)
    torch.manual_seed(1)
    new = hf_lrnn.HLRUForCausalLM(hf_lrnn.HLRUConfig.from_json_file(config_file)).eval()
    old = hf_lrnn.HLRUForCausalLM.from_pretrained(old_copy).eval()
    ids = torch.randint(3, 37, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = {"old": old(ids).logits, "new": new(ids).logits}
    assert not torch.allclose(expected["old"], expected["new"])
    real_save_file, real_rename, real_rmtree = modeling_utils.safe_save_file, os.rename, shutil.rmtree
    real_exchange = modeling_lrnn._exchange_folders

    def arm(kind, k):
        '''Make this process kill itself (SIGKILL) at the k-th event of `kind`.'''
        counts = {}

        def reached(event):
            counts[event] = counts.get(event, 0) + 1
            return kind.startswith(event) and counts[event] == k

        def die():
            os.kill(os.getpid(), signal.SIGKILL)

        def save_file(tensors, filename, metadata=None):
            if kind == "write_mid" and reached("write"):
                with open(filename, "wb") as f:
                    f.write(b"\\0" * 64)  # a torn weight file
                die()
            real_save_file(tensors, filename, metadata=metadata)
            if kind == "write_after" and reached("write"):
                die()

        def rename(src, dst):
            swap = name in (os.path.basename(src), os.path.basename(dst))  # target -> aside, then fresh -> target
            if swap and kind == "rename_before" and reached("rename"):
                die()
            real_rename(src, dst)
            if swap and kind == "rename_after" and reached("rename"):
                die()

        def exchange(first, second):  # the atomic swap of the new folder and the target
            if kind == "fallback":
                return False  # as on a system without renameat2: two renames instead
            if kind == "rename_before" and reached("rename"):
                die()
            done = real_exchange(first, second)
            if kind == "rename_after" and reached("rename"):
                die()
            return done

        def rmtree(path, *args, **kwargs):
            # after the swap the old checkpoint sits at the fresh folder's path (or .NAME.old-PID in the fallback)
            if kind == "rmtree_mid" and os.path.basename(path).startswith(f".{name}.") and os.path.isdir(path):
                if reached("rmtree"):
                    os.remove(os.path.join(path, sorted(os.listdir(path))[0]))  # the old folder half deleted
                    die()
            real_rmtree(path, *args, **kwargs)

        modeling_utils.safe_save_file, os.rename, shutil.rmtree = save_file, rename, rmtree
        modeling_lrnn._exchange_folders = exchange

    def what_is_there():
        if not os.path.isdir(target):
            return "missing"
        try:
            loaded = hf_lrnn.HLRUForCausalLM.from_pretrained(target).eval()
            with torch.no_grad():
                logits = loaded(ids).logits
        except Exception as err:
            return f"broken ({type(err).__name__}: {err})"
        same = [tag for tag, want in expected.items() if torch.allclose(logits, want)]
        return same[0] if same else "a mix"

    results = {}
    for point in points:
        real_rmtree(target, ignore_errors=True)
        shutil.copytree(old_copy, target)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if point:
                    arm(*point)
                new.save_pretrained(target, max_shard_size="8KB")
            except BaseException:
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        parent = os.path.dirname(target)
        results[json.dumps(point)] = dict(killed=killed, exit_code=exit_code, state=what_is_there(),
                                          files=sorted(os.listdir(target)) if os.path.isdir(target) else None,
                                          beside=sorted(os.listdir(parent)))
        for entry in os.listdir(parent):  # what the killed save left beside the target
            if entry.startswith(f".{name}."):
                real_rmtree(os.path.join(parent, entry))
    print("RESULTS " + json.dumps(results))
    """
)

# (kind, k) -> what the folder must hold afterwards. The old checkpoint has 16KB shards, the new one 8KB shards.
SAVE_PRETRAINED_POINTS = {
    "killed_in_the_middle_of_the_first_weight_file": (("write_mid", 1), "old"),
    "killed_after_the_third_weight_file": (("write_after", 3), "old"),
    "killed_just_before_the_swap": (("rename_before", 1), "old"),
    "killed_just_after_the_swap": (("rename_after", 1), "new"),
    "killed_while_deleting_the_old_folder": (("rmtree_mid", 1), "new"),
    "not_killed": (None, "new"),
    "not_killed_two_rename_fallback": (("fallback", 0), "new"),
}


@pytest.fixture(scope="module")
def killed_saves(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed_saves")
    old = tiny_model("hlru", seed=0)
    old.save_pretrained(root / "old_copy", max_shard_size="16KB")
    old.config.to_json_file(root / "config.json")
    torch.manual_seed(1)
    type(old)(old.config).save_pretrained(root / "fresh" / "ckpt", max_shard_size="8KB")  # what a clean save writes
    (root / "child.py").write_text(SAVE_PRETRAINED_CHILD)
    points = [point for point, _ in SAVE_PRETRAINED_POINTS.values()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(root / "child.py"), str(root / "work" / "ckpt"), str(root / "old_copy"),
                           str(root / "config.json"), json.dumps(points)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS "):])
    return {name: results[json.dumps(point)] for name, (point, _) in SAVE_PRETRAINED_POINTS.items()}, root


@pytest.mark.parametrize("name", list(SAVE_PRETRAINED_POINTS))
def test_a_save_pretrained_killed_at_any_point_leaves_the_old_or_the_new_checkpoint(killed_saves, name):
    results, root = killed_saves
    result = results[name]
    point, allowed = SAVE_PRETRAINED_POINTS[name]
    killed = point is not None and point[0] != "fallback"
    assert result["killed"] == killed and result["exit_code"] in (None, 0), result
    assert result["state"] in allowed.split(" or "), result
    if result["state"] == "new":  # no shard of the old 16KB sharding survives next to the new 8KB one
        assert result["files"] == sorted(os.listdir(root / "fresh" / "ckpt")), result
    if not killed:
        assert result["beside"] == ["ckpt"], result  # a finished save leaves nothing beside the folder


# ------------------------------------------------------------------------------------- training checkpoints
SAVE_CHECKPOINT_CHILD = textwrap.dedent(
    """
    import importlib.util, json, os, shutil, signal, sys

    checkpoints_py, directory, step, tag, keep_last, point = sys.argv[1:7]
    spec = importlib.util.spec_from_file_location("checkpoints", checkpoints_py)
    checkpoints = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checkpoints)  # the module alone: no torch to import, so every kill point is cheap
    point = json.loads(point)
    counts = {}

    def reached(event):
        counts[event] = counts.get(event, 0) + 1
        return point is not None and point[0].startswith(event) and counts[event] == point[1]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class Accelerator:
        is_main_process = True

        def wait_for_everyone(self):
            pass

        def save_state(self, path):  # accelerate's files, each holding the tag of this save
            for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl"):
                with open(os.path.join(path, name), "w") as f:
                    if point and point[0] == "write_mid" and reached("write"):
                        f.write(tag[:1])
                        f.flush()
                        die()
                    f.write(tag)
                if point and point[0] == "write_after" and reached("write"):
                    die()

    real_rename, real_rmtree = os.rename, shutil.rmtree

    def rename(src, dst):
        if point and point[0] == "rename_before" and reached("rename"):
            die()
        real_rename(src, dst)
        if point and point[0] == "rename_after" and reached("rename"):
            die()

    def rmtree(path, *args, **kwargs):
        if point and point[0] == "rmtree_mid" and os.path.isdir(path) and os.listdir(path) and reached("rmtree"):
            os.remove(os.path.join(path, sorted(os.listdir(path))[0]))
            die()
        real_rmtree(path, *args, **kwargs)

    os.rename, shutil.rmtree = rename, rmtree
    checkpoints.save_checkpoint(Accelerator(), directory, int(step), {"step": int(step), "tag": tag},
                                keep_last=int(keep_last))
    """
)
FILES = ("model.safetensors", "optimizer.bin", "random_states_0.pkl")


def run_save(tmp_path, directory, step, tag, keep_last=0, point=None):
    script = tmp_path / "save_checkpoint.py"
    if not script.exists():
        script.write_text(SAVE_CHECKPOINT_CHILD)
    done = subprocess.run([sys.executable, str(script), CHECKPOINTS_PY, str(directory), str(step), tag, str(keep_last),
                           json.dumps(point)], capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, -9), done.stderr[-3000:]
    return done.returncode == -9


def read_checkpoint(path):
    """(step, tag) of a complete checkpoint whose files all carry one tag; fails on a mix or a torn file."""
    with open(os.path.join(path, "training_state.json")) as f:
        state = json.load(f)
    tags = {name: open(os.path.join(path, name)).read() for name in FILES}
    assert set(tags.values()) == {state["tag"]}, (path, state, tags)
    return state["step"], state["tag"]


# scenario -> (existing step, step saved, keep_last, the kill points that the save reaches)
SCENARIOS = {
    "new_step_dropping_the_oldest": (2, 4, 1, [("write_mid", 1), ("write_after", 2), ("write_after", 3),
                                               ("rename_before", 1), ("rename_after", 1), ("rename_after", 2),
                                               ("rmtree_mid", 1)]),
    "same_step_again": (4, 4, 0, [("write_mid", 2), ("write_after", 3), ("rename_before", 1), ("rename_after", 1),
                                  ("rename_before", 2), ("rename_after", 2), ("rmtree_mid", 1)]),
}
CHECKPOINT_CASES = [(scenario, point) for scenario, spec in SCENARIOS.items() for point in spec[3]]


@pytest.mark.parametrize("scenario, point", CHECKPOINT_CASES, ids=[f"{s}-{p[0]}{p[1]}" for s, p in CHECKPOINT_CASES])
def test_a_training_checkpoint_killed_at_any_point_leaves_a_complete_one(tmp_path, scenario, point):
    from hf_lrnn.training.checkpoints import latest_checkpoint

    existing, step, keep_last, _ = SCENARIOS[scenario]
    directory = tmp_path / "checkpoints"
    assert not run_save(tmp_path, directory, existing, "old")
    assert run_save(tmp_path, directory, step, "new", keep_last, point), "the save finished before the kill point"
    latest = latest_checkpoint(str(directory))
    assert latest is not None, sorted(os.listdir(directory))
    assert read_checkpoint(latest) in {(existing, "old"), (step, "new")}, sorted(os.listdir(directory))
    # the next save recovers: it succeeds, and leaves only complete step_N folders
    assert not run_save(tmp_path, directory, 6, "next", keep_last=0)
    assert read_checkpoint(latest_checkpoint(str(directory))) == (6, "next")
    leftovers = [n for n in os.listdir(directory) if not n.startswith("step_") or not n[5:].isdigit()]
    assert leftovers == [], sorted(os.listdir(directory))
    for name in os.listdir(directory):
        read_checkpoint(directory / name)


def test_an_unkilled_training_checkpoint_save_replaces_and_prunes(tmp_path):
    from hf_lrnn.training.checkpoints import checkpoint_steps, latest_checkpoint

    directory = tmp_path / "checkpoints"
    for step, tag in ((2, "a"), (4, "b"), (4, "c"), (6, "d")):
        assert not run_save(tmp_path, directory, step, tag, keep_last=2)
    assert checkpoint_steps(str(directory)) == [4, 6] and sorted(os.listdir(directory)) == ["step_4", "step_6"]
    assert read_checkpoint(directory / "step_4") == (4, "c")
    assert read_checkpoint(latest_checkpoint(str(directory))) == (6, "d")
