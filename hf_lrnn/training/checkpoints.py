"""Training checkpoints that are never half-written, and finding the newest one.

`save_checkpoint` lets every process write `accelerator.save_state` into `step_N.partial/`, then the main
process renames it to `step_N/` (a rename is atomic on one file system): after a crash at any moment the
folder holds the old checkpoints and maybe a `.partial` folder, which is ignored and removed next time.
Re-saving a step moves the old `step_N/` to `step_N.old/` first; a crash between the two renames leaves
`step_N.old/` complete, and it is read as step N until a new `step_N/` exists. Checkpoints beyond `keep_last`
are renamed to `.deleting` before they are removed, so a crash while deleting never leaves a half-deleted
`step_N/` that would pass for a complete one.
"""

import json
import os
import re
import shutil

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
TRAINING_STATE = "training_state.json"


OLD_PATTERN = re.compile(r"^step_(\d+)\.old$")  # the previous copy of a step that is being re-saved
STALE_SUFFIXES = (".partial", ".deleting")  # never complete: removed by the next save


def complete_checkpoints(checkpoints_dir: str) -> dict:
    """{step: path} of the complete checkpoints under `checkpoints_dir`: `step_N/` with its training state, or
    `step_N.old/` when a re-save of step N was interrupted between its two renames."""
    if os.path.exists(checkpoints_dir) and not os.path.isdir(checkpoints_dir):
        raise ValueError(f"checkpoints_dir={checkpoints_dir!r} is a file; expected a folder of step_N checkpoints")
    if not os.path.isdir(checkpoints_dir):
        return {}
    found, old = {}, {}
    for name in os.listdir(checkpoints_dir):
        path = os.path.join(checkpoints_dir, name)
        if not os.path.isfile(os.path.join(path, TRAINING_STATE)):
            continue
        match = CHECKPOINT_PATTERN.match(name)
        if match:
            found[int(match.group(1))] = path
        elif OLD_PATTERN.match(name):
            old[int(OLD_PATTERN.match(name).group(1))] = path
    return {**old, **found}


def checkpoint_steps(checkpoints_dir: str) -> list:
    """Steps of the complete checkpoints under `checkpoints_dir`, ascending."""
    return sorted(complete_checkpoints(checkpoints_dir))


def latest_checkpoint(checkpoints_dir: str):
    """Path of the newest complete checkpoint, or None."""
    checkpoints = complete_checkpoints(checkpoints_dir)
    return checkpoints[max(checkpoints)] if checkpoints else None


def save_checkpoint(accelerator, checkpoints_dir: str, step: int, state: dict, keep_last: int = 0) -> str:
    """Write the accelerator state (model, optimizer, registered scheduler, RNG) plus `state` as step_<step>/.

    Call on every process. `keep_last` > 0 removes older checkpoints beyond that many.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        raise ValueError(f"keep_last must be an integer >= 0 (0 = keep all), got {keep_last!r}")
    if os.path.exists(checkpoints_dir) and not os.path.isdir(checkpoints_dir):
        raise ValueError(f"checkpoints_dir={checkpoints_dir!r} is a file; expected a folder (it is created if missing)")
    final = os.path.join(checkpoints_dir, f"step_{step}")
    partial = final + ".partial"
    if accelerator.is_main_process:
        os.makedirs(checkpoints_dir, exist_ok=True)
        for name in os.listdir(checkpoints_dir):  # what earlier saves left when they were killed
            path = os.path.join(checkpoints_dir, name)
            old = OLD_PATTERN.match(name)
            if old is not None:
                step_path = os.path.join(checkpoints_dir, f"step_{old.group(1)}")
                if not os.path.exists(step_path) and os.path.isfile(os.path.join(path, TRAINING_STATE)):
                    os.rename(path, step_path)  # a re-save killed between its two renames: the old copy is step N
                else:
                    shutil.rmtree(path, ignore_errors=True)  # superseded by the new step N
            elif name.endswith(STALE_SUFFIXES) and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
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
            checkpoints = complete_checkpoints(checkpoints_dir)
            for old_step in sorted(checkpoints)[:-keep_last]:
                doomed = checkpoints[old_step] + ".deleting"  # never a half-deleted step_N that looks complete
                os.rename(checkpoints[old_step], doomed)
                shutil.rmtree(doomed, ignore_errors=True)
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
