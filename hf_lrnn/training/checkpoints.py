"""Training checkpoints that are never half-written, and finding the newest one.

`save_checkpoint` lets every process write `accelerator.save_state` into `step_N.partial/`, then the main
process renames it to `step_N/` (a rename is atomic on one file system): after a crash at any moment the
folder holds the old checkpoints and maybe a `.partial` folder, which is ignored and removed next time.
"""

import json
import os
import re
import shutil

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
TRAINING_STATE = "training_state.json"


def checkpoint_steps(checkpoints_dir: str) -> list:
    """Steps of the complete checkpoints under `checkpoints_dir`, ascending."""
    if not os.path.isdir(checkpoints_dir):
        return []
    steps = []
    for name in os.listdir(checkpoints_dir):
        match = CHECKPOINT_PATTERN.match(name)
        if match and os.path.isfile(os.path.join(checkpoints_dir, name, TRAINING_STATE)):
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_checkpoint(checkpoints_dir: str):
    """Path of the newest complete checkpoint, or None."""
    steps = checkpoint_steps(checkpoints_dir)
    return os.path.join(checkpoints_dir, f"step_{steps[-1]}") if steps else None


def save_checkpoint(accelerator, checkpoints_dir: str, step: int, state: dict, keep_last: int = 0) -> str:
    """Write the accelerator state (model, optimizer, registered scheduler, RNG) plus `state` as step_<step>/.

    Call on every process. `keep_last` > 0 removes older checkpoints beyond that many.
    """
    final = os.path.join(checkpoints_dir, f"step_{step}")
    partial = final + ".partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(partial, TRAINING_STATE), "w") as f:
            json.dump(state, f, indent=1)
        if os.path.exists(final):  # re-saving a step: move the old one away first, then drop it
            shutil.rmtree(final + ".old", ignore_errors=True)
            os.rename(final, final + ".old")
        os.rename(partial, final)
        shutil.rmtree(final + ".old", ignore_errors=True)
        if keep_last > 0:
            for old_step in checkpoint_steps(checkpoints_dir)[:-keep_last]:
                shutil.rmtree(os.path.join(checkpoints_dir, f"step_{old_step}"), ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str) -> dict:
    """Restore the accelerator state from a checkpoint folder; returns its saved training state."""
    state_file = os.path.join(path, TRAINING_STATE)
    if not os.path.isfile(state_file):
        raise ValueError(
            f"resume_from_checkpoint={path!r} is not a complete checkpoint (no {TRAINING_STATE}); "
            "expected a folder written by scripts/train.py, e.g. OUTPUT_DIR/checkpoints/step_100, or 'latest'"
        )
    accelerator.load_state(path)
    with open(state_file) as f:
        return json.load(f)
