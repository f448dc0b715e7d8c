"""Compare language models trained by `scripts/train.py` on the same data, tokenizer, token budget and lr sweep.

A run is one (model, learning rate). For every model the run with the lowest final validation loss is kept;
the table gives its perplexity, and the plot its validation loss against tokens and against training time
(evaluation excluded). Throughput is the steady state: the median over the logging windows after warm-up (the
first ones include compiling kernels) of tokens per second, and per model the median over its runs, since
a few seconds of training per run leave the single-window numbers noisy.
"""

import json
import math
import os
import statistics
import sys
from dataclasses import dataclass

from .models import MODEL_TYPES, parse_key_values
from .plots import read_jsonl
from .runner import TRAIN_SCRIPT


@dataclass(frozen=True)
class LMRun:
    name: str  # the --model text, e.g. "hlru:order=2" or "llama"
    model_type: str
    config_overrides: str  # the shared overrides, then the model's own (later keys win)
    learning_rate: float

    @classmethod
    def plan(cls, models, learning_rates, shared_overrides: str = ""):
        """Every (model, lr) run, sweep points outermost (each model gets its first lr before any gets a second)."""
        runs = []
        for lr in learning_rates:
            for text in models:
                model_type, _, own = text.partition(":")
                if model_type not in MODEL_TYPES:
                    raise ValueError(f"--model {text!r}: expected one of {list(MODEL_TYPES)}, optionally with ':k=v,...'")
                merged = {**parse_key_values(shared_overrides, "--config_overrides"), **parse_key_values(own, "--model")}
                overrides = ",".join(f"{k}={v}" for k, v in merged.items())
                runs.append(cls(text, model_type, overrides, lr))
        return runs

    def run_dir(self, root: str) -> str:
        folder = self.name.replace(":", "-").replace("=", "").replace(",", "-")
        return os.path.join(root, folder, f"lr{self.learning_rate:g}")

    def command(self, root: str, data_cache: str, extra_args=()) -> list:
        """The resumable `scripts/train.py` command line of this run (checkpoints every 200 steps)."""
        return [sys.executable, TRAIN_SCRIPT, "--task", "lm", "--model_type", self.model_type,
                "--config_overrides", self.config_overrides, "--learning_rate", str(self.learning_rate),
                "--output_dir", self.run_dir(root), "--data_cache_dir", data_cache,
                "--resume_from_checkpoint", "latest", "--checkpointing_steps", "200", "--logging_steps", "10",
                "--no_plot", *extra_args]


def summarize_run(folder: str):
    """A finished `scripts/train.py` run's numbers, validation curve and training-loss curve (read from its
    results.json and metrics.jsonl), or None if it has not finished. Throughput: the steady state (see above)."""
    path = os.path.join(folder, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    records = read_jsonl(os.path.join(folder, "metrics.jsonl"))
    evals = [r for r in records if r["kind"] == "eval" and r["split"] == "validation"]
    train = [r for r in records if r["kind"] == "train"]
    tokens_per_step = result["tokens"] / result["steps"]
    windows = [r["steps_per_s"] for r in train]
    steady = windows[max(1, len(windows) // 10):] or windows  # drop warm-up: the first 10 % of windows, at least one
    final = result["final"]["validation"]
    return {"parameters": result["parameters"], "steps": result["steps"], "tokens": result["tokens"],
            "num_processes": result.get("num_processes", 1), "tokens_per_step": tokens_per_step,
            "train_s": result["train_s"], "tokens_per_s": statistics.median(steady) * tokens_per_step,
            "val_loss": final["loss"], "val_perplexity": final["perplexity"],
            "best_val_loss": result["best"]["validation"]["loss"],
            "curve": [{"tokens": r["tokens"], "train_s": r["train_s"], "loss": r["loss"]} for r in evals],
            "train_curve": [{"step": r["step"], "tokens": r["tokens"], "loss": r["loss"]} for r in train]}


def run_summary(run: LMRun, root: str):
    """The finished run's summary (`summarize_run`) with its model and learning rate, or None if unfinished."""
    summary = summarize_run(run.run_dir(root))
    if summary is None:
        return None
    return {"model": run.name, "model_type": run.model_type, "learning_rate": run.learning_rate, **summary}


def best_runs(runs, root: str):
    """{model name: summary of its run with the lowest final validation loss}, in the order the models were given,
    plus every finished run's summary."""
    finished = [s for s in (run_summary(r, root) for r in runs) if s is not None]
    best = {}
    for summary in finished:
        name = summary["model"]
        if name not in best or summary["val_loss"] < best[name]["val_loss"]:
            best[name] = dict(summary)
    for name, summary in best.items():  # throughput does not depend on the lr: pool the model's runs
        summary["tokens_per_s"] = statistics.median(s["tokens_per_s"] for s in finished if s["model"] == name)
    order = list(dict.fromkeys(r.name for r in runs))
    return {name: best[name] for name in order if name in best}, finished


def format_table(best: dict, finished: list, learning_rates, reference: str = None) -> str:
    """Markdown: the best run per model, then validation perplexity for every learning rate."""
    reference = reference if reference in best else next(iter(best), None)
    ref_speed = best[reference]["tokens_per_s"] if reference else math.nan
    lines = ["| model | parameters | best lr | val loss | val perplexity | tokens | train tokens/s (median) | "
             f"tokens/s vs {reference} |", "|---|---|---|---|---|---|---|---|"]
    for name, s in best.items():
        lines.append(f"| {name} | {s['parameters'] / 1e6:.1f}M | {s['learning_rate']:g} | {s['val_loss']:.4f} | "
                     f"{s['val_perplexity']:.2f} | {s['tokens'] / 1e6:.2f}M | {s['tokens_per_s'] / 1e3:.0f}K | "
                     f"{s['tokens_per_s'] / ref_speed:.2f}x |")
    lines += ["", "| model | " + " | ".join(f"lr {lr:g}" for lr in learning_rates) + " |",
              "|---|" + "---|" * len(learning_rates)]
    for name in best:
        cells = []
        for lr in learning_rates:
            match = [s for s in finished if s["model"] == name and s["learning_rate"] == lr]
            cells.append(f"{match[0]['val_perplexity']:.2f}" if match else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(best: dict, png_path: str, title: str = "") -> None:
    """Validation loss of the best run per model against training tokens (left) and training time (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tokens, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, s) in enumerate(best.items()):
        style = dict(color=f"C{i}", ms=3, lw=1.2, label=f"{name} (lr {s['learning_rate']:g})",
                     marker="o" if s["model_type"] in ("hlru", "bdlru") else "s",
                     ls="-" if s["model_type"] in ("hlru", "bdlru") else "--")
        ax_tokens.plot([p["tokens"] / 1e6 for p in s["curve"]], [p["loss"] for p in s["curve"]], **style)
        ax_time.plot([p["train_s"] for p in s["curve"]], [p["loss"] for p in s["curve"]], **style)
    ax_tokens.set(xlabel="training tokens (M)", ylabel="validation loss (nats/token)")
    ax_time.set(xlabel="training time (s; evaluation excluded, kernel compilation included)", xscale="log")
    for ax in (ax_tokens, ax_time):
        ax.grid(alpha=0.3)
    ax_tokens.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
