"""Run many `scripts/train.py` jobs at once on one machine, resumably, within a time budget.

A small model (d = 128) leaves most of a GPU idle, so sweeps run `parallel` training processes side by
side. Each job writes into its own folder; a finished job has `results.json` and is skipped next time; an
unfinished one resumes from its newest checkpoint. When the time budget runs out every running job gets
SIGTERM, saves a checkpoint and exits, so a sweep can span several sessions.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from tqdm.auto import tqdm

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "scripts", "train.py")


def add_runner_arguments(parser, parallel_help: str, report_help: str) -> None:
    """The flags a sweep script hands to `run_jobs`: --parallel, --time_budget_minutes, --report_only, --extra_args."""
    parser.add_argument("--parallel", type=int, default=1, help=parallel_help)
    parser.add_argument("--time_budget_minutes", type=float, default=None,
                        help="stop every run with a checkpoint after this long (run the command again to continue)")
    parser.add_argument("--report_only", action="store_true", help=report_help)
    parser.add_argument("--extra_args", default="", help="more scripts/train.py arguments for every run (quoted)")


def check_runner_arguments(parser, args) -> None:
    """argparse errors for the flags of `add_runner_arguments`."""
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")


class GPUUtilization:
    """Samples `nvidia-smi` GPU utilisation every `interval` seconds in a thread (nothing without a GPU)."""

    def __init__(self, interval: float = 1.0):
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval):
        while not self._stop.wait(interval):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                util, memory = out.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(util), float(memory)))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return  # no GPU / no nvidia-smi

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        utils = [u for u, _ in self.samples]
        return {"gpu_util_mean_pct": sum(utils) / len(utils), "gpu_memory_max_mib": max(m for _, m in self.samples),
                "gpu_samples": len(utils)}


def train_command(job, output_dir: str, data_cache: str, num_epochs: float, batch_size: int, mixed_precision: str,
                  extra_args=()) -> list:
    """The `scripts/train.py` command line of one sweep job (a `hf_lrnn.training.mad.Job`): resumable, checkpointing
    every 500 steps, logging every 50 (the interval at which it answers SIGTERM), no per-run plot."""
    return [sys.executable, TRAIN_SCRIPT, "--task", job.task, "--task_options", job.task_options_text(),
            "--data_cache_dir", data_cache, "--model_type", job.model.model_type,
            "--config_overrides", job.model.config_overrides, "--output_dir", job.run_dir(output_dir),
            "--num_epochs", str(num_epochs), "--per_device_train_batch_size", str(batch_size),
            "--learning_rate", str(job.learning_rate), "--weight_decay", str(job.weight_decay),
            "--mixed_precision", mixed_precision, "--resume_from_checkpoint", "latest",
            "--checkpointing_steps", "500", "--logging_steps", "50", "--no_plot", *extra_args]


def run_jobs(jobs, command_of, run_dir_of, parallel: int, time_budget_s: float = None, env=None) -> dict:
    """Run `command_of(job)` for every job whose `run_dir_of(job)` has no results.json, `parallel` at a time.

    Returns {"finished": [...], "interrupted": [...], "failed": [...], "skipped": n, "wall_s": s} (lists of jobs).
    Each job's stdout/stderr go to `run_dir/train.log`.
    """
    pending = [j for j in jobs if not os.path.exists(os.path.join(run_dir_of(j), "results.json"))]
    outcome = {"finished": [], "interrupted": [], "failed": [], "skipped": len(jobs) - len(pending)}
    start = time.monotonic()
    deadline = start + time_budget_s if time_budget_s else None
    running = {}  # Popen -> (job, log file)
    stopping = False
    progress = tqdm(total=len(pending), desc="jobs", mininterval=5.0)
    while pending or running:
        if deadline and not stopping and time.monotonic() > deadline:
            stopping = True
            for process in running:
                process.send_signal(signal.SIGTERM)  # the trainer checkpoints at its next logging step
        while pending and not stopping and len(running) < parallel:
            job = pending.pop(0)
            os.makedirs(run_dir_of(job), exist_ok=True)
            log = open(os.path.join(run_dir_of(job), "train.log"), "a")
            process = subprocess.Popen(command_of(job), stdout=log, stderr=subprocess.STDOUT, env=env)
            running[process] = (job, log)
        if stopping and pending:
            outcome["interrupted"] += pending
            pending = []
        for process in [p for p in running if p.poll() is not None]:
            job, log = running.pop(process)
            log.close()
            if process.returncode == 0:
                outcome["finished"].append(job)
                progress.update(1)
            elif process.returncode == 143 or stopping:
                outcome["interrupted"].append(job)
            else:
                outcome["failed"].append(job)
                print(f"FAILED ({process.returncode}): {run_dir_of(job)}/train.log", file=sys.stderr)
        time.sleep(0.5)
    progress.close()
    outcome["wall_s"] = time.monotonic() - start
    return outcome
