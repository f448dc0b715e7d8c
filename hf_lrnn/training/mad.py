"""The MAD protocol (Poli et al. 2024, github.com/athms/mad-lab) over `scripts/train.py` runs.

A job is one training run: (model, task, difficulty variant, learning rate, weight decay). For every
(model, task, variant) the best run of the lr x weight-decay sweep is kept (by final test accuracy, as MAD's
`analysis.py` does); a task's MAD score is the mean of those over its variants; the overall score the mean
over tasks. MAD's published scores use torchmetrics' default *macro* accuracy (mean per-class recall);
both macro and micro (plain token) accuracy are reported here.
"""

import json
import math
import os
from dataclasses import dataclass, field

from .tasks import MAD_TASKS, mad_variants

METRICS = ("macro_accuracy", "accuracy")


@dataclass(frozen=True)
class ModelSpec:
    """`hlru:order=2` -> model_type "hlru", config_overrides "order=2"."""

    model_type: str
    config_overrides: str = ""

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        model_type, _, overrides = text.partition(":")
        if model_type not in ("hlru", "bdlru"):
            raise ValueError(f"--model {text!r}: expected 'hlru[:k=v,...]' or 'bdlru[:k=v,...]'")
        return cls(model_type, overrides)

    @property
    def label(self) -> str:
        return self.model_type + (f"[{self.config_overrides}]" if self.config_overrides else "")

    @property
    def folder(self) -> str:
        return self.model_type + ("-" + self.config_overrides.replace("=", "").replace(",", "-")
                                  if self.config_overrides else "")


@dataclass(frozen=True)
class Job:
    model: ModelSpec
    task: str
    variant: str  # e.g. "baseline" or "vocab_size=32"
    task_options: tuple = field(default=())  # ((key, value), ...) of the variant
    learning_rate: float = 5e-4
    weight_decay: float = 0.0

    def run_dir(self, root: str) -> str:
        return os.path.join(root, self.model.folder, self.task, self.variant.replace("=", "-"),
                            f"lr{self.learning_rate:g}_wd{self.weight_decay:g}")

    def task_options_text(self) -> str:
        return ",".join(f"{k}={':'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                        for k, v in self.task_options)


def plan_jobs(models, tasks=MAD_TASKS, variants="all", learning_rates=(1e-4, 5e-4, 1e-3), weight_decays=(0.0, 0.1)):
    """Every job of the protocol; `variants` is "all" (MAD's difficulty settings) or "baseline"."""
    if variants not in ("all", "baseline"):
        raise ValueError(f"variants must be 'all' or 'baseline', got {variants!r}")
    # sweep points outermost: run in this order, every setting gets its first sweep point before any gets a second
    jobs = []
    for lr in learning_rates:
        for wd in weight_decays:
            for model in models:
                for task in tasks:
                    task_variants = mad_variants(task) if variants == "all" else mad_variants(task)[:1]
                    for name, options in task_variants:
                        jobs.append(Job(model, task, name, tuple(sorted(options.items())), lr, wd))
    return jobs


def read_result(job: Job, root: str):
    """The run's results.json as a dict, or None if it has not finished."""
    path = os.path.join(job.run_dir(root), "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def mad_scores(jobs, results, metric="macro_accuracy", split="test"):
    """{model label: {"tasks": {task: {"score", "variants": {variant: best}, "complete"}}, "score": mean}}.

    `results[i]` is the results.json of `jobs[i]` (None when missing). A variant's value is the best final
    `metric` over its finished sweep runs; a task counts as complete when every run of every variant finished.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    table = {}
    for job, result in zip(jobs, results):
        task_entry = table.setdefault(job.model.label, {"tasks": {}})["tasks"].setdefault(
            job.task, {"variants": {}, "complete": True})
        best = task_entry["variants"].setdefault(job.variant, None)
        if result is None:
            task_entry["complete"] = False
            continue
        value = result["final"][split][metric]
        if best is None or value > best["value"]:
            task_entry["variants"][job.variant] = {"value": value, "learning_rate": job.learning_rate,
                                                   "weight_decay": job.weight_decay, "steps": result["steps"]}
    for model_entry in table.values():
        task_scores = []
        for task_entry in model_entry["tasks"].values():
            values = [v["value"] for v in task_entry["variants"].values() if v is not None]
            task_entry["score"] = sum(values) / len(values) if values else math.nan
            if values:
                task_scores.append(task_entry["score"])
        model_entry["score"] = sum(task_scores) / len(task_scores) if task_scores else math.nan
    return table


def format_table(scores: dict, tasks) -> str:
    """A markdown table: one row per model, one column per task (x 100), then the average."""
    header = "| model | " + " | ".join(tasks) + " | avg |"
    lines = [header, "|" + "---|" * (len(tasks) + 2)]
    for label, entry in scores.items():
        cells = []
        for task in tasks:
            task_entry = entry["tasks"].get(task)
            if task_entry is None or math.isnan(task_entry["score"]):
                cells.append("-")
            else:
                cells.append(f"{100 * task_entry['score']:.1f}" + ("" if task_entry["complete"] else "*"))
        avg = entry["score"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'-' if math.isnan(avg) else f'{100 * avg:.1f}'} |")
    return "\n".join(lines)


def plot_scores(scores: dict, tasks, png_path: str, title: str = "") -> None:
    """Grouped bars: the MAD score of every model on every task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(scores)
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks) + 2), 3.8))
    for i, label in enumerate(labels):
        values = [scores[label]["tasks"].get(t, {}).get("score", math.nan) for t in tasks]
        ax.bar([j + i * width for j in range(len(tasks))], [100 * v for v in values], width, label=label)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(tasks))])
    ax.set_xticklabels([t.replace("_", "\n") for t in tasks], fontsize=7)
    ax.set(ylabel="score (best over sweep, mean over variants)", ylim=(0, 102), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
